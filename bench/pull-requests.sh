#!/usr/bin/env bash
# Benchmark: sling -> pull request opened, and sling -> pull request merged with green checks,
# for 1 bead and for 5 beads slung at once (tests/benches/pull_requests.rs). Everything real but
# the LLM and the forge (the loopback forge stand-in); loopback only. Builds the control server
# and the Worker first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p gastown-container
scripts/build-worker >/dev/null 2>&1 || scripts/build-worker
cargo bench --quiet -p gastown-e2e --bench pull_requests
