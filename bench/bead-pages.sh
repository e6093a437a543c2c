#!/usr/bin/env bash
# Benchmark: a rig's bead pages (list-50 unfiltered, by status, by assignee), a lookup and a
# create at 0, 10,000 and 100,000 beads, on the SQL the RigDO runs, in SQLite natively
# (worker/src/rig/tests.rs `bench_bead_pages`, release build). Prints a markdown table.
# The goal: flat within 2x from 0 to 100,000 beads (each page has an index for its filter and
# order; the plans are checked by the suite's `bead_pages_and_lookups_use_an_index...`).
#   bench/bead-pages.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --quiet --release -p gastown-worker --lib bench_bead_pages -- --ignored --nocapture 2>&1 |
  grep '^|'
