#!/usr/bin/env bash
# Benchmark: time from sling to the agent's first model request on a new rig, then on a warm rig
# just after a merge, split into scheduler delay, fetch, checkout, session and Kilo start-up
# (tests/benches/worker_sling.rs).
# Everything real but the LLM; loopback only. Builds the control server and the Worker first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p gastown-container
scripts/build-worker >/dev/null 2>&1 || scripts/build-worker
cargo bench --quiet -p gastown-e2e --bench worker_sling
