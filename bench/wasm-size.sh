#!/usr/bin/env bash
# Worker wasm size: builds the release Worker (scripts/build-worker) and prints a markdown table
# of build/index_bg.wasm, raw and gzipped (gzip -9), next to worker-build's output before
# wasm-opt; then, when twiggy is installed (`cargo install twiggy`), the 10 largest items of that
# pre-wasm-opt copy, the only one with function names (the name section itself is not listed).
#   bench/wasm-size.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

export GASTOWN_WORKER_WASM_WITH_NAMES="$TMP/with-names.wasm"
unset GASTOWN_WORKER_PREBUILT
scripts/build-worker >"$TMP/build.log" 2>&1 || { cat "$TMP/build.log"; exit 1; }

row() {
  local raw gz
  raw=$(stat -c %s "$2")
  gz=$(gzip -9 <"$2" | wc -c)
  awk -v n="$1" -v r="$raw" -v g="$gz" \
    'BEGIN { printf "| %-40s | %10d | %8.1f | %10d | %8.1f |\n", n, r, r / 1024, g, g / 1024 }'
}
echo "| wasm                                     |  raw bytes |  raw KiB |  gzip -9 B | gzip KiB |"
echo "|------------------------------------------|------------|----------|------------|----------|"
row "build/index_bg.wasm (deployed)" build/index_bg.wasm
row "before wasm-opt (with name section)" "$GASTOWN_WORKER_WASM_WITH_NAMES"

if command -v twiggy >/dev/null; then
  echo
  echo "Largest items before wasm-opt (twiggy top; shallow bytes):"
  echo
  echo "|      bytes |      % | item |"
  echo "|------------|--------|------|"
  twiggy top -n 12 -f csv "$GASTOWN_WORKER_WASM_WITH_NAMES" | node -e '
    const lines = require("fs").readFileSync(0, "utf8").trim().split("\n").slice(1);
    const rows = [];
    for (const line of lines) {
      // Name,ShallowSize,ShallowSizePercent,...: the name may be quoted and hold commas.
      const m = line.match(/^("(?:[^"]|"")*"|[^,]*),(\d+),([\d.]+)/);
      if (!m) continue;
      const name = m[1].startsWith("\"") ? m[1].slice(1, -1).replace(/""/g, "\"") : m[1];
      if (name === "\"function names\" subsection" || /^\.\.\. and \d+ more/.test(name)) continue;
      if (name.startsWith("Σ")) continue;
      rows.push([Number(m[2]), Number(m[3]), name]);
    }
    for (const [bytes, pct, name] of rows.slice(0, 10)) {
      const item = (name.length > 110 ? name.slice(0, 107) + "..." : name).replace(/\|/g, "\\|");
      const cells = [String(bytes).padStart(10), pct.toFixed(2).padStart(5) + "%", `\`${item}\``];
      console.log(`| ${cells.join(" | ")} |`);
    }'
else
  echo
  echo "(twiggy is not installed: \`cargo install twiggy\` adds the largest items)"
fi
