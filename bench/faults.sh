#!/usr/bin/env bash
# The fault suite as one table (fault, outcome, data lost). Runs the fault cases, all
# on real parts with only the LLM scripted (tests/tests/faults.rs, and the cases that live
# beside their subject in control_server.rs (the SIGTERM drain) and isolation.rs (agents, gates)), and prints the row each case
# writes once its assertions have passed. A case that fails prints no row: it shows as FAILED
# and the script exits non-zero. Builds the control server and the Worker first. About 4 min.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p gastown-container
scripts/build-worker >/dev/null 2>&1 || scripts/build-worker

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# One test at a time, so rows of tests running at once never share a line (a row may follow
# libtest's "test name ... " on its line: rows are taken from anywhere in a line).
run() { cargo test --quiet -p gastown-e2e --test "$1" -- --nocapture --test-threads=1 "${@:2}" >>"$log" 2>&1 || status=1; }
run faults
run control_server shutdown_saves_unpushed_work shutdown_mid_turn
run isolation agents_run_under_their_own_uids gates_run_under_their_own_uid

printf '%-64s | %-100s | %s\n' "fault" "outcome" "data lost"
printf '%s\n' "$(printf -- '-%.0s' {1..190})"
trim() { local s="$1"; s="${s#"${s%%[![:space:]]*}"}"; printf '%s' "${s%"${s##*[![:space:]]}"}"; }
grep -ho 'FAULT | .*' "$log" | sort -u | while IFS='|' read -r _ fault outcome lost; do
    printf '%-64s | %-100s | %s\n' "$(trim "$fault")" "$(trim "$outcome")" "$(trim "$lost")"
done
if [ "$status" -ne 0 ]; then
    echo
    echo "FAILED cases (their rows are missing above):"
    grep -E '^test .* FAILED|panicked at' "$log" || true
fi
exit "$status"
