// Load generator for bench/worker.sh: runs a bounded number of requests against one route at a
// fixed concurrency (loopback only) and prints one table row per route.
// Usage: node bench/worker-load.mjs <base-url> <internal-key> <requests> <concurrency>
const [base, key, total = "2000", conc = "8"] = process.argv.slice(2);
const url = new URL(base);
if (!["127.0.0.1", "localhost", "[::1]"].includes(url.hostname)) {
  console.error("worker-load: refusing a non-loopback target");
  process.exit(2);
}
const N = Number(total), C = Number(conc);
const headers = { "X-Internal-API-Key": key, "content-type": "application/json" };

async function call(method, path, body) {
  const res = await fetch(base + path, { method, headers, body: body && JSON.stringify(body) });
  const json = await res.json();
  if (!json.success) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json.data;
}

async function run(name, fn) {
  // Warm up: the Durable Object and the isolate.
  for (let i = 0; i < 20; i++) await fn(i);
  const lat = [];
  let next = 0, errors = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: C }, async () => {
    while (next < N) {
      const i = next++;
      const s = performance.now();
      try { await fn(i); } catch (e) { errors++; if (errors === 1) console.error(String(e)); }
      lat.push(performance.now() - s);
    }
  }));
  const secs = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))].toFixed(1);
  console.log(`| ${name.padEnd(34)} | ${String(N).padStart(8)} | ${String(C).padStart(4)} | ${q(0.5).padStart(8)} | ${q(0.99).padStart(8)} | ${(N / secs).toFixed(0).padStart(7)} | ${String(errors).padStart(6)} |`);
}

const rig = `bench-${Date.now()}`;
const bead = await call("POST", `/api/rigs/${rig}/beads`, { type: "issue", title: "read me" });
console.log(`| ${"route".padEnd(34)} | requests | conc | p50 (ms) | p99 (ms) |   req/s | errors |`);
console.log(`|${"-".repeat(36)}|----------|------|----------|----------|---------|--------|`);
await run(`GET /api/rigs/:rig/beads/:bead`, () => call("GET", `/api/rigs/${rig}/beads/${bead.id}`));
await run(`POST /api/rigs/:rig/beads`, (i) => call("POST", `/api/rigs/${rig}/beads`, { type: "issue", title: `bench ${i}` }));
