#!/usr/bin/env bash
# Benchmark: what usage accounting costs the control server: 8 agents (one Kilo process each)
# make 30 model calls apiece against the scripted model while the control server reads, spools
# and sends each call's usage to a loopback stand-in for the Worker; its CPU and RSS over the run
# (tests/benches/accounting.rs). Prints a table. Needs scripts/setup; about 5 GB of memory.
#   bench/accounting.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p gastown-container
GASTOWN_CONTAINER_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/gastown-container" cargo bench --quiet -p gastown-e2e --bench accounting
