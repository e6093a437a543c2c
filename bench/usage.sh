#!/usr/bin/env bash
# Benchmark: what usage accounting costs the Worker: recording one model call, and the usage
# route's queries (total, and by bead, agent, model and day) with 1,000 and 10,000 runs
# recorded over 30 days, on the SQL the TownContainer runs, in SQLite natively
# (worker/src/usage/tests.rs `bench_usage`, release build). Prints a markdown table.
#   bench/usage.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --quiet --release -p gastown-worker --lib bench_usage -- --ignored --nocapture 2>&1 |
  grep '^|'
