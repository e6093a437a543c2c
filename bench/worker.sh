#!/usr/bin/env bash
# Worker benchmark: release wasm size (raw and gzipped), then p50/p99 latency and throughput
# of one read route and one write route under `wrangler dev` at a fixed concurrency.
# Loopback only; the request count is bounded. Builds the Worker first (scripts/build-worker).
#   bench/worker.sh [requests per route, default 2000] [concurrency, default 8]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
REQUESTS="${1:-2000}"
CONCURRENCY="${2:-8}"
cd "$ROOT"

scripts/build-worker >/dev/null 2>&1 || scripts/build-worker
WASM="build/index_bg.wasm"
RAW=$(stat -c %s "$WASM")
GZ=$(gzip -9c "$WASM" | wc -c)
echo "| artifact            |      bytes |      KiB |"
echo "|---------------------|------------|----------|"
awk -v r="$RAW" -v g="$GZ" 'BEGIN {
  printf "| wasm (raw)          | %10d | %8.1f |\n", r, r / 1024
  printf "| wasm (gzip -9)      | %10d | %8.1f |\n", g, g / 1024 }'
echo

TMP="$(mktemp -d)"
KEY="bench-$RANDOM$RANDOM"
printf 'INTERNAL_API_SECRET=%s\n' "$KEY" > "$TMP/env"
PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
INSPECTOR=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
# setsid: wrangler and workerd in a new process group whose id the child writes itself ($! is
# not the group's id when setsid forks).
export WRANGLER_SEND_METRICS=false XDG_CONFIG_HOME="$TMP/xdg" WRANGLER_LOG_PATH="$TMP/logs" GASTOWN_WORKER_PREBUILT=1
setsid bash -c 'echo $$ > "$0/pgid"; exec node_modules/.bin/wrangler dev --ip 127.0.0.1 --port "$1" \
  --inspector-port "$2" --persist-to "$0/state" --env-file "$0/env" --show-interactive-dev-session=false \
  --log-level warn >"$0/wrangler.out" 2>&1' "$TMP" "$PORT" "$INSPECTOR" &
cleanup() {
  PGID=$(cat "$TMP/pgid" 2>/dev/null || true)
  if [ -n "$PGID" ]; then
    kill -TERM -- "-$PGID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 -- "-$PGID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$PGID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

for _ in $(seq 1 300); do
  if curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null || { cat "$TMP/wrangler.out"; exit 1; }

echo "wrangler dev (workerd, local), $(nproc) cores, $REQUESTS requests per route, concurrency $CONCURRENCY:"
node bench/worker-load.mjs "http://127.0.0.1:$PORT" "$KEY" "$REQUESTS" "$CONCURRENCY"
