#!/usr/bin/env bash
# Benchmark: sling -> merged on main, for 1 bead and for 5 beads slung at once
# (tests/benches/town_merge.rs). Everything real but the LLM; loopback only. Builds the control
# server and the Worker first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p gastown-container
scripts/build-worker >/dev/null 2>&1 || scripts/build-worker
cargo bench --quiet -p gastown-e2e --bench town_merge
