#!/usr/bin/env bash
# Benchmark: twelve agents on one shard against twelve on three (three rigs of four beads, four
# agents per shard): time from the slings to every agent at work and to every bead merged, and
# the Kilo memory of each shard (tests/benches/shards.rs). Everything real but the LLM;
# loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p gastown-container
scripts/build-worker >/dev/null 2>&1 || scripts/build-worker
cargo bench --quiet -p gastown-e2e --bench shards
