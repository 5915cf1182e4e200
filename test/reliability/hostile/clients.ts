import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { type AddressInfo, connect as netConnect, createServer as createNetServer, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { type ConnectionOptions, connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { Pki } from '../../support/tls-fixtures.ts';
import { sleep } from '../support.ts';
import type { Mode } from './settings.ts';
import type { SidecarProcess } from './sidecar-process.ts';

/**
 * The hostile suite's clients: well-behaved TLS connections to the sidecar under attack, one-shot exchanges, a
 * TLS client over a raw socket, and the legitimate traffic that must never fail while the attacks run.
 */

let pki: Pki;
let sidecar: SidecarProcess;

/** Points the clients at the sidecar under attack and its PKI: the suite's beforeAll calls it once started. */
export function useTarget(target: { pki: Pki; sidecar: SidecarProcess }): void {
  ({ pki, sidecar } = target);
}

export const certFor = (mode: Mode, withCert = mode !== 'standard') =>
  withCert ? { cert: pki.client.certPem, key: pki.client.keyPem } : {};

/** A TLS connection as a well-behaved client opens it (client certificate on flexible and strict). */
export function openTls(mode: Mode, extra: ConnectionOptions = {}): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: sidecar.ports[mode],
      ca: pki.ca.certPem,
      servername: 'localhost',
      ...certFor(mode),
      ...extra,
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('TLS handshake timed out (15 s)'));
    }, 15_000);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

export interface Exchange {
  text: string;
  /** The server ended the connection (FIN, reset, or an error while writing to it). */
  closedByServer: boolean;
  error?: string;
  ms: number;
}

/** Reads a socket until the server closes it or `timeoutMs` passes (then destroys it). */
export function readUntilClose(socket: Duplex, timeoutMs: number, started = Date.now()): Promise<Exchange> {
  return new Promise((resolve) => {
    let text = '';
    let error: string | undefined;
    const timer = setTimeout(() => finish(false), timeoutMs);
    const finish = (closedByServer: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ text, closedByServer, error, ms: Date.now() - started });
    };
    socket.on('data', (d: Buffer) => {
      if (text.length < 1 << 20) text += d.toString('latin1');
    });
    socket.on('error', (err: NodeJS.ErrnoException) => (error = err.code ?? err.message));
    socket.on('close', () => finish(true));
  });
}

/** Writes `payload` on a fresh TLS connection to `mode` and reads until the server closes it. */
export async function exchange(mode: Mode, payload: Buffer | string, timeoutMs = 15_000): Promise<Exchange> {
  const socket = await openTls(mode);
  const started = Date.now();
  const reading = readUntilClose(socket, timeoutMs, started);
  socket.write(typeof payload === 'string' ? Buffer.from(payload, 'latin1') : payload);
  return reading;
}

export const statusOf = (text: string) => Number(/^HTTP\/1\.[01] (\d{3}) /.exec(text)?.[1] ?? 0);
export const responseCount = (text: string) => text.match(/HTTP\/1\.1 \d{3} /g)?.length ?? 0;

/** Runs `task` over `items` with at most `limit` at a time. */
export async function pool<T, R>(
  items: readonly T[],
  limit: number,
  task: (item: T, i: number) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await task(items[i]!, i);
      }
    }),
  );
  return results;
}

/**
 * A TLS client over a stream of our own, so that raw bytes can be slipped between its TLS records: `raw` is
 * the TCP connection, `tls` the client on top of it.
 */
export function tlsOverRaw(mode: Mode): Promise<{ raw: Socket; tls: TLSSocket }> {
  return new Promise((resolve, reject) => {
    const raw = netConnect(sidecar.ports[mode], '127.0.0.1');
    const pipe = new Duplex({
      read() {},
      write(chunk: Buffer, _encoding, callback) {
        if (raw.destroyed) return callback();
        raw.write(chunk, () => callback());
      },
    });
    raw.on('data', (d: Buffer) => pipe.push(d));
    raw.on('end', () => pipe.push(null));
    raw.on('error', () => pipe.destroy());
    const tls = tlsConnect({ socket: pipe, ca: pki.ca.certPem, servername: 'localhost', ...certFor(mode) });
    tls.on('error', () => undefined);
    tls.once('secureConnect', () => resolve({ raw, tls }));
    raw.once('close', () => reject(new Error('closed before the handshake completed')));
  });
}

/** The first flight of a real Node TLS client (a ClientHello offering TLS 1.3 and 1.2), captured once. */
export async function captureClientHello(): Promise<Buffer> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const hello = new Promise<Buffer>((resolve) =>
    server.once('connection', (c) => {
      let buf = Buffer.alloc(0);
      c.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
          resolve(buf);
          c.destroy();
        }
      });
    }),
  );
  const client = tlsConnect({
    port: (server.address() as AddressInfo).port,
    host: '127.0.0.1',
    servername: 'localhost',
    rejectUnauthorized: false,
  });
  client.on('error', () => undefined);
  try {
    return await hello;
  } finally {
    client.destroy();
    server.close();
  }
}

// ---- legitimate traffic ----------------------------------------------------------------------------------

export interface LegitKind {
  mode: Mode;
  cert: boolean;
  keepAlive: boolean;
}
export const LEGIT_KINDS: LegitKind[] = [
  { mode: 'strict', cert: true, keepAlive: true },
  { mode: 'flexible', cert: true, keepAlive: false },
  { mode: 'standard', cert: false, keepAlive: false },
  { mode: 'strict', cert: true, keepAlive: false },
  { mode: 'flexible', cert: false, keepAlive: true },
  { mode: 'standard', cert: true, keepAlive: true },
];

/** A well-behaved client making requests one after another for as long as the attacks last. */
export class LegitTraffic {
  sent = 0;
  ok = 0;
  readonly failures: string[] = [];
  private stopped = false;
  private running: Promise<void> = Promise.resolve();
  private readonly agent = new HttpsAgent({ keepAlive: true, maxSockets: 1 });

  start(): void {
    this.running = this.run();
  }

  private async run(): Promise<void> {
    // Bounded in count and time even if nobody calls stop().
    const deadline = Date.now() + 15 * 60_000;
    for (let i = 0; !this.stopped && i < 100_000 && Date.now() < deadline; i++) {
      await this.one(i);
      await sleep(10);
    }
  }

  private async one(i: number): Promise<void> {
    const kind = LEGIT_KINDS[i % LEGIT_KINDS.length]!;
    const path = `/legit/${i}`;
    const post = i % 7 === 3;
    this.sent++;
    const result = await new Promise<{ status?: number; body?: string; error?: string }>((resolve) => {
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port: sidecar.ports[kind.mode],
          path,
          method: post ? 'POST' : 'GET',
          ca: pki.ca.certPem,
          servername: 'localhost',
          ...certFor(kind.mode, kind.cert),
          agent: kind.keepAlive ? this.agent : false,
          timeout: 20_000,
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode, body }));
          res.on('error', (err) => resolve({ error: err.message }));
        },
      );
      req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
      req.on('timeout', () => req.destroy(new Error('timeout (20 s)')));
      req.end(post ? 'p'.repeat(2048) : undefined);
    });
    const expected = kind.cert && kind.mode !== 'standard' ? 'SUCCESS' : 'NONE';
    let problem = result.error;
    if (!problem && result.status !== 200) problem = `status ${result.status}`;
    if (!problem) {
      const seen = JSON.parse(result.body!) as { url: string; headers: Record<string, string>; bodyBytes: number };
      if (seen.url !== path) problem = `answered ${seen.url}`;
      else if (seen.headers['x-client-verify'] !== expected)
        problem = `x-client-verify ${seen.headers['x-client-verify']}`;
      else if (expected === 'SUCCESS' && !seen.headers['x-forwarded-client-cert']?.includes('Subject="CN=billing"'))
        problem = 'no XFCC';
      else if (post && seen.bodyBytes !== 2048) problem = `body ${seen.bodyBytes} bytes`;
    }
    if (problem) {
      if (this.failures.length < 20)
        this.failures.push(
          `#${i} ${kind.mode}${kind.cert ? '+cert' : ''}${kind.keepAlive ? ' keep-alive' : ''}: ${problem}`,
        );
      else this.failures.push('…');
    } else this.ok++;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
    this.agent.destroy();
  }
}
