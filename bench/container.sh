#!/usr/bin/env bash
# Control server benchmarks with the real Kilo CLI: RSS, start latency, worktree creation on
# 20,000 files, Kilo memory with AGENTS_PER_SERVER=1 and 8. Prints a table (tests/benches/container.rs).
# Needs scripts/setup; takes a few minutes and about 6 GB of memory (8 Kilo processes).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p gastown-container
GASTOWN_CONTAINER_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/gastown-container" cargo bench --quiet -p gastown-e2e --bench container
