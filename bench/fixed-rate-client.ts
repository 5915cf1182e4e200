/**
 * An open-loop HTTP/1.1 load generator for latency at a fixed rate: request i is due at start + i / rate on
 * keep-alive connection i mod C, and its latency counts from when it fell due (to within the 1 ms pacer),
 * not from when it could be sent, so a slow answer that holds up the next request shows in the figures.
 * Runs as its own process so the benchmark can pin it to a core:
 *   node bench/fixed-rate-client.ts PORT RATE SECONDS CONNECTIONS [CA CERT KEY]
 * With CA/CERT/KEY it speaks TLS with that client certificate; prints one JSON line of microseconds.
 */
import { readFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

const [portText, rateText, secondsText, connectionsText, caFile, certFile, keyFile] = process.argv.slice(2);
const port = Number(portText);
const rate = Number(rateText);
const total = Math.round(rate * Number(secondsText));
const connections = Number(connectionsText);
const warmup = Math.min(Math.round(rate / 2), Math.floor(total / 5)); // the first half second is not counted
const REQUEST = Buffer.from('GET / HTTP/1.1\r\nhost: bench\r\n\r\n');
const HEAD_END = Buffer.from('\r\n\r\n');

interface Conn {
  socket: Socket;
  /** Due times (ms, performance.now()) of requests sent and not yet answered, oldest first. */
  inFlight: number[];
  /** Requests due while this connection was busy: sent one at a time as answers come back. */
  queued: number[];
  buffered: Buffer;
}

const latencies: number[] = [];
let errors = 0;
let answered = 0;

async function open(): Promise<Conn> {
  const socket = caFile
    ? tlsConnect({
        host: '127.0.0.1',
        port,
        ca: readFileSync(caFile),
        cert: readFileSync(certFile!),
        key: readFileSync(keyFile!),
        servername: 'localhost',
      })
    : netConnect({ host: '127.0.0.1', port });
  socket.setNoDelay(true);
  await new Promise<void>((resolve, reject) => {
    socket.once(caFile ? 'secureConnect' : 'connect', () => resolve());
    socket.once('error', reject);
  });
  const conn: Conn = { socket, inFlight: [], queued: [], buffered: Buffer.alloc(0) };
  socket.on('data', (chunk: Buffer) => onData(conn, chunk));
  socket.on('error', () => undefined);
  socket.on('close', () => {
    errors += conn.inFlight.length + conn.queued.length;
    conn.inFlight.length = 0;
    conn.queued.length = 0;
  });
  return conn;
}

/** Responses are `Content-Length` framed (the mock's and the proxies' are); several may arrive in one read. */
function onData(conn: Conn, chunk: Buffer): void {
  let buf = conn.buffered.length ? Buffer.concat([conn.buffered, chunk]) : chunk;
  for (;;) {
    const end = buf.indexOf(HEAD_END);
    if (end < 0) break;
    const length = Number(/content-length:\s*(\d+)/i.exec(buf.toString('latin1', 0, end))?.[1] ?? 0);
    if (buf.length < end + 4 + length) break;
    const ok = buf.toString('latin1', 9, 12) === '200';
    buf = buf.subarray(end + 4 + length);
    const due = conn.inFlight.shift()!;
    if (!ok) errors++;
    else if (answered++ >= warmup) latencies.push((performance.now() - due) * 1000);
    const next = conn.queued.shift();
    if (next !== undefined) send(conn, next);
  }
  conn.buffered = buf;
}

function send(conn: Conn, due: number): void {
  conn.inFlight.push(due);
  conn.socket.write(REQUEST);
}

const pool = await Promise.all(Array.from({ length: connections }, () => open()));
const start = performance.now();
let next = 0;
await new Promise<void>((resolve) => {
  // A 1 ms pacer (a busy loop would take the core from the mock it shares): each tick sends what fell due
  // since the last one, and latency counts from that tick, so time spent queued behind a slow answer counts.
  const timer = setInterval(() => {
    const now = performance.now();
    while (next < total && start + (next * 1000) / rate <= now) {
      const conn = pool[next % connections]!;
      if (conn.inFlight.length === 0) send(conn, now);
      else conn.queued.push(now);
      next++;
    }
    const pending = pool.reduce((n, c) => n + c.inFlight.length + c.queued.length, 0);
    // Bounded: at most the run's length plus 10 s for the last answers.
    if ((next >= total && pending === 0) || now - start > (total / rate) * 1000 + 10_000) {
      clearInterval(timer);
      resolve();
    }
  }, 1);
});
for (const conn of pool) conn.socket.destroy();
latencies.sort((a, b) => a - b);
const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * q))] ?? NaN;
process.stdout.write(
  JSON.stringify({ sent: next, measured: latencies.length, errors, p50: at(0.5), p99: at(0.99), p999: at(0.999) }) +
    '\n',
);
