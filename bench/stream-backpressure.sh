#!/usr/bin/env bash
# Measures whether a slow live-stream client holds the sender back through the Worker: the
# built Worker under `wrangler dev` with CONTAINER_URL pointing at bench/stream/sender.py (a
# stand-in sender, so the volume is large), and bench/stream/slow_client.py opening
# /api/towns/t1/container/agents/a1/stream?ticket=abc and reading nothing for 20 s.
# Bounded buffering shows as the sender's total standing still while the client pauses.
# Measured 2026-11-30 (wrangler 4.86.0): the total stood at 21.2 MB for the 20 s (kernel socket
# buffers and workerd's), then the flow resumed at about 500 MB/s once the client read.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-worker >/dev/null 2>&1 || scripts/build-worker
work=$(mktemp -d)
python3 bench/stream/sender.py >"$work/sender.log" 2>&1 &
sender=$!
GASTOWN_WORKER_PREBUILT=1 WRANGLER_SEND_METRICS=false XDG_CONFIG_HOME="$work/xdg" WRANGLER_LOG_PATH="$work/wlog" \
  setsid node_modules/.bin/wrangler dev --port 8795 --ip 127.0.0.1 --persist-to "$work/state" \
  --var CONTAINER_URL:http://127.0.0.1:9911 >"$work/wrangler.log" 2>&1 &
wrangler=$!
trap 'kill -TERM -- -"$wrangler" 2>/dev/null || true; kill "$sender" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 120); do grep -q "Ready on" "$work/wrangler.log" && break; sleep 0.5; done
timeout 60 python3 bench/stream/slow_client.py 8795 20
sleep 1
cat "$work/sender.log"
