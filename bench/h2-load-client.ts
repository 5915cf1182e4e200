/**
 * A purpose-built load client for the HTTP/2 row of bench:sidecar-h2 (run pinned to the load core): gRPC-shaped
 * unary calls (POST, content-type application/grpc, te: trailers, a 5-byte message) on `connections` HTTP/2
 * connections with `streams` calls in flight on each, for `seconds`, over TLS with a client certificate, or
 * h2c straight to the upstream (its own ceiling). Prints {rps, calls, p50, p99, errors} (latencies in microseconds).
 * Usage: node bench/h2-load-client.ts PORT SECONDS CONNECTIONS STREAMS [CA CERT KEY]
 */
import { connect, type ClientHttp2Session } from 'node:http2';
import { readFileSync } from 'node:fs';

const [port, seconds, connections, streams, ca, cert, key] = process.argv.slice(2);
const tls = ca !== undefined;
const MESSAGE = Buffer.from([0, 0, 0, 0, 0]);
const HEADERS = {
  ':method': 'POST',
  ':path': '/bench.Echo/Unary',
  'content-type': 'application/grpc',
  te: 'trailers',
};
const latencies = new Float64Array(4_000_000);
let done = 0;
let errors = 0;
let running = true;

function call(session: ClientHttp2Session): void {
  if (!running || session.destroyed) return;
  const started = performance.now();
  const req = session.request(HEADERS);
  let ok = false;
  req.on('response', (headers) => (ok = headers[':status'] === 200));
  req.on('data', () => undefined);
  req.on('error', () => undefined);
  req.on('close', () => {
    if (ok && req.rstCode === 0) {
      if (done < latencies.length) latencies[done] = (performance.now() - started) * 1000;
      done++;
    } else errors++;
    call(session);
  });
  req.end(MESSAGE);
}

const sessions: ClientHttp2Session[] = [];
for (let i = 0; i < Number(connections); i++) {
  const session = tls
    ? connect(`https://localhost:${port}`, {
        ca: readFileSync(ca!),
        cert: readFileSync(cert!),
        key: readFileSync(key!),
        servername: 'localhost',
      })
    : connect(`http://127.0.0.1:${port}`);
  session.on('error', () => errors++);
  sessions.push(session);
}
await Promise.all(
  sessions.map(
    (s) =>
      new Promise((resolve, reject) => {
        s.once('connect', resolve);
        s.once('error', reject);
      }),
  ),
);
const start = performance.now();
for (const session of sessions) for (let i = 0; i < Number(streams); i++) call(session);
await new Promise((resolve) => setTimeout(resolve, Number(seconds) * 1000));
running = false;
const elapsed = (performance.now() - start) / 1000;
const sorted = latencies.subarray(0, Math.min(done, latencies.length)).sort();
const at = (q: number) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] ?? 0);
process.stdout.write(
  JSON.stringify({ rps: Math.round(done / elapsed), calls: done, p50: at(0.5), p99: at(0.99), errors }) + '\n',
);
for (const session of sessions) session.destroy();
