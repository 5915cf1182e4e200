/**
 * The TCP row of bench:sidecar-h2: a sink upstream that counts bytes and, when the stream ends, answers with the
 * count; and a TLS client (with a client certificate) that streams 64 KiB writes for SECONDS, half-closes, and
 * prints {mbPerSecond, bytes} from the count the sink saw.
 * Usage: node bench/tcp-throughput.ts sink PORT  |  node bench/tcp-throughput.ts client PORT SECONDS CA CERT KEY
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { connect } from 'node:tls';

const [role, port, seconds, ca, cert, key] = process.argv.slice(2);

if (role === 'sink') {
  createServer({ allowHalfOpen: true }, (socket) => {
    let bytes = 0;
    socket.on('data', (d: Buffer) => (bytes += d.length));
    socket.on('end', () => socket.end(String(bytes)));
    socket.on('error', () => undefined);
  }).listen(Number(port), '127.0.0.1');
} else {
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const socket = connect({
    host: '127.0.0.1',
    port: Number(port),
    servername: 'localhost',
    ca: readFileSync(ca!),
    cert: readFileSync(cert!),
    key: readFileSync(key!),
  });
  await new Promise((resolve) => socket.once('secureConnect', resolve));
  const start = performance.now();
  const until = start + Number(seconds) * 1000;
  while (performance.now() < until) {
    if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve));
  }
  let answer = '';
  socket.on('data', (d: Buffer) => (answer += d.toString()));
  await new Promise((resolve) => {
    socket.once('close', resolve);
    socket.end();
  });
  const elapsed = (performance.now() - start) / 1000;
  const bytes = Number(answer);
  process.stdout.write(JSON.stringify({ mbPerSecond: Math.round(bytes / 2 ** 20 / elapsed), bytes }) + '\n');
}
