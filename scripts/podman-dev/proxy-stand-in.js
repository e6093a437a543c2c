// A stand-in for wrangler's container networking sidecar (cloudflare/proxy-everything), which
// workerd starts beside every local container and which cannot be pulled here (Docker Hub is
// not reachable). Only what workerd asks of it is done; the user container shares this
// container's network namespace, so its ports are this process's 127.0.0.1.
//   GET /ca        the CA of the real sidecar's TLS interception: none here (empty answer)
//   PUT /egress    workerd's egress settings: accepted and logged (no egress interception:
//                  the container reaches what its network reaches, nothing is routed to workerd)
//   CONNECT h:p    ingress: a tunnel to 127.0.0.1:p (the container's port). A refused dial
//                  (the server inside not listening yet) answers 502 with "connection refused".
// Built by scripts/build-image as localhost/gastown-stand-in/proxy-everything:dev.
'use strict';
const http = require('http');
const net = require('net');

const args = process.argv.slice(2);
const at = args.indexOf('--http-ingress-address');
const [host, port] = (at >= 0 ? args[at + 1] : '0.0.0.0:39001').split(':');
console.log('proxy stand-in:', JSON.stringify(args));

const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', () => {
    console.log('proxy stand-in:', req.method, req.url, body.slice(0, 300));
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('');
  });
});

server.on('connect', (req, client, head) => {
  const target = Number(req.url.split(':').pop());
  const upstream = net.connect(target, '127.0.0.1', () => {
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length) upstream.write(head);
    upstream.pipe(client);
    client.pipe(upstream);
  });
  upstream.on('error', (e) => {
    const refused = e.code === 'ECONNREFUSED' ? 'connection refused' : e.message;
    client.end(`HTTP/1.1 502 Bad Gateway\r\ncontent-length: ${refused.length}\r\n\r\n${refused}`);
  });
  client.on('error', () => upstream.destroy());
});

server.listen(Number(port), host);
// PID 1 of its container: stop on SIGTERM (workerd stops it that way).
process.on('SIGTERM', () => process.exit(0));
