/**
 * The TCP row of bench:sidecar-h2: a sink upstream that counts bytes and, when the stream ends, answers with the
 * count; and a TLS client (with a client certificate) that streams 64 KiB writes for SECONDS, half-closes, and
 * prints {mbPerSecond, bytes} from the count the sink saw. `tls-sink` is the same sink behind Node's TLS with a
 * client certificate required and no relay: on the proxy's core it is the client's own ceiling.
 * Usage: node bench/tcp-throughput.ts sink PORT | tls-sink PORT CERT KEY CA | client PORT SECONDS CA CERT KEY
 */
import { readFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { connect, createServer as createTlsServer } from 'node:tls';

const [role, port, seconds, ca, cert, key] = process.argv.slice(2);

function count(socket: Socket): void {
  let bytes = 0;
  socket.on('data', (d: Buffer) => (bytes += d.length));
  socket.on('end', () => socket.end(String(bytes)));
  socket.on('error', () => undefined);
}

if (role === 'sink') {
  createServer({ allowHalfOpen: true }, count).listen(Number(port), '127.0.0.1');
} else if (role === 'tls-sink') {
  const [, , tlsCert, tlsKey, tlsCa] = process.argv.slice(2);
  const options = { cert: readFileSync(tlsCert!), key: readFileSync(tlsKey!), ca: readFileSync(tlsCa!) };
  createTlsServer({ ...options, requestCert: true, rejectUnauthorized: true, allowHalfOpen: true }, count).listen(
    Number(port),
    '127.0.0.1',
  );
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
