#!/usr/bin/env bash
# Benchmark: bursts of 1, 6 and 12 beads slung at once, then one sling on the warm
# town: time to every agent's first model request, to every bead merged, and the Kilo memory
# held afterwards (tests/benches/burst.rs). Everything real but the LLM; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p gastown-container
scripts/build-worker >/dev/null 2>&1 || scripts/build-worker
for pool in 1 6; do
  echo "### WARM_POOL_SIZE=$pool"
  WARM_POOL_SIZE=$pool cargo bench --quiet -p gastown-e2e --bench burst
  echo
done
