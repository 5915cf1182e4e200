import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import {
  type AddressInfo,
  connect as netConnect,
  createServer as createNetServer,
  type Server as NetServer,
  type Socket,
} from 'node:net';
import { Duplex } from 'node:stream';
import {
  type ConnectionOptions,
  connect as tlsConnect,
  createServer as createTlsServer,
  type TLSSocket,
} from 'node:tls';
import { promisify } from 'node:util';
import { freePort } from '../../local/controlplane/local-control-plane.ts';
import { issueServer } from '../../operator/pki/issue.ts';
import { waitFor } from '../support/cluster.ts';
import { pemFiles } from '../support/openssl.ts';
import { makePki, type Pki, startMockUpstream, tlsDir } from '../support/tls-fixtures.ts';
import { SIDECAR_NODE_OPTIONS } from '../../sidecar/flags.ts';
import { CLI, prng, reportSummary, SEED, sleep } from './support.ts';

/**
 * The real sidecar (`mtls-operator sidecar`, its own process) under attack, in front of a mock upstream, while
 * a legitimate mTLS client keeps making requests: malformed heads, smuggling bodies, forged identity headers,
 * oversized heads, random bytes and broken TLS records, a handshake flood, slowloris at every stage, a pipelined
 * flood and clients that never read. Every attack is bounded in count and in time; everything is on loopback.
 * Replay a failure with REL_SEED=<seed>.
 *
 * Invariants checked throughout: every legitimate request succeeds (the flood stays far below the sidecar's
 * connection cap of 10,000 per listener, so no failure at all is allowed); the process stays up with a bounded
 * RSS; no byte of a refused request reaches the upstream (a TCP relay in front of the mock scans every byte for
 * the tags the attacks carry); every request the upstream does receive carries exactly one X-Client-Verify, set
 * by the sidecar, and nothing a client forged.
 *
 * A second part scans every listener's TLS with openssl s_client (and hand-made ClientHellos for what the local
 * OpenSSL can no longer offer): nothing below TLS 1.2, and TLS 1.2 only with ECDHE + AEAD ciphers.
 */

const MODES = ['standard', 'flexible', 'strict'] as const;
type Mode = (typeof MODES)[number];
/** Short timeouts, so that the slow attacks are cut off within a test's time. */
const TIMEOUTS = { handshake: 2_000, headers: 2_000, request: 4_000, idle: 8_000, upstream: 5_000 };
/** How late a timeout may be observed (a sweep interval, a busy event loop on two shared cores). */
const SLACK_MS = 8_000;
const RSS_LIMIT_MIB = 250;
const MAX_HEADER_BYTES = 16 * 1024;

const summary = {
  malformed: 0,
  refusedStatus: 0,
  refusedClosed: 0,
  malformedBodies: 0,
  forged: 0,
  floods: 0,
  floodConnections: 0,
  weakAccepted: [] as string[],
  weakTried: [] as string[],
  accepted12: new Set<string>(),
  legacyRefused: 0,
  legacyTried: 0,
  /** Weak families the local openssl cannot offer (covered by the raw ClientHellos only). */
  opensslCannotOffer: [] as string[],
};

// ---- the upstream, seen through a relay that scans every byte ---------------------------------------------

/** A TCP relay in front of the mock: it is the sidecar's upstream, and records every tag it relays. */
class Relay {
  /** `MALFORMED-<n>` / `SMUGGLED-<n>` tags seen in bytes that reached the upstream. */
  readonly seen = new Set<string>();
  /** Every byte of the upstream connections whose first request targets /forwarded-*, by that path. */
  readonly recorded = new Map<string, string>();
  readonly open = new Set<Socket>();
  connections = 0;
  readonly server: NetServer;
  readonly port: number;
  private constructor(server: NetServer, port: number) {
    this.server = server;
    this.port = port;
  }

  static async start(target: number, port: number): Promise<Relay> {
    const server = createNetServer();
    const relay = new Relay(server, port);
    server.on('connection', (socket) => {
      relay.connections++;
      relay.open.add(socket);
      const upstream = netConnect(target, '127.0.0.1');
      let tail = '';
      let recording: string | null | undefined;
      socket.on('data', (chunk: Buffer) => {
        if (recording === undefined)
          recording = /^[A-Z]+ (\/forwarded-[^ ]+)/.exec(chunk.toString('latin1'))?.[1] ?? null;
        if (recording) relay.recorded.set(recording, (relay.recorded.get(recording) ?? '') + chunk.toString('latin1'));
        const text = tail + chunk.toString('latin1');
        for (const m of text.matchAll(/(?:MALFORMED|SMUGGLED)-\d+/g)) relay.seen.add(m[0]);
        tail = text.slice(-24);
        upstream.write(chunk);
      });
      upstream.pipe(socket);
      const done = () => {
        relay.open.delete(socket);
        socket.destroy();
        upstream.destroy();
      };
      socket.on('close', done);
      socket.on('error', done);
      upstream.on('close', done);
      upstream.on('error', done);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', resolve);
    });
    return relay;
  }
}

/**
 * What the upstream received that it must not have: a request without exactly one X-Client-Verify of the
 * sidecar's (SUCCESS | NONE), any header a client forged (the attacks tag forged values FORGED-<n>), any
 * identity header in its underscore spelling, or a request smuggled inside a refused one.
 */
function upstreamViolations(requests: readonly IncomingMessage[]): string[] {
  const problems: string[] = [];
  for (const req of requests) {
    const verify: string[] = [];
    const raw = req.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase();
      const value = raw[i + 1]!;
      if (/FORGED/.test(name + value)) problems.push(`${req.url}: forged header reached the upstream: ${name}`);
      if (name.includes('_') && /^x.(client.verify|forwarded.client.cert|forwarded.proto)$/.test(name))
        problems.push(`${req.url}: underscore identity header reached the upstream: ${name}`);
      if (name === 'x-client-verify') verify.push(value);
    }
    if (verify.length !== 1 || !['SUCCESS', 'NONE'].includes(verify[0]!))
      problems.push(`${req.url}: x-client-verify ${JSON.stringify(verify)}`);
    if (/SMUGGLED|MALFORMED/.test(req.url ?? '')) problems.push(`${req.url}: a refused request reached the upstream`);
  }
  return problems;
}

// ---- the sidecar process ---------------------------------------------------------------------------------

interface SidecarProcess {
  child: ChildProcess;
  pid: number;
  ports: Record<Mode, number>;
  admin: number;
  logBytes: number;
  refusedLines: number;
  lastLines: string[];
  startedAt: number;
}

async function startSidecarProcess(dir: string, upstreamPort: number, modes: readonly Mode[]): Promise<SidecarProcess> {
  const ports = {} as Record<Mode, number>;
  const args = [CLI, 'sidecar'];
  for (const mode of modes) {
    ports[mode] = await freePort();
    args.push('--listen', `${mode}=${ports[mode]}`);
  }
  const admin = await freePort();
  args.push(
    ...['--upstream', `127.0.0.1:${upstreamPort}`, '--tls-dir', dir, '--admin', `127.0.0.1:${admin}`],
    ...['--handshake-timeout', String(TIMEOUTS.handshake), '--headers-timeout', String(TIMEOUTS.headers)],
    ...['--request-timeout', String(TIMEOUTS.request), '--idle-timeout', String(TIMEOUTS.idle)],
    ...['--upstream-timeout', String(TIMEOUTS.upstream)],
  );
  // With the Node options the injector gives the sidecar container, so memory is measured as deployed.
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_OPTIONS: SIDECAR_NODE_OPTIONS },
  });
  const proc: SidecarProcess = {
    child,
    pid: child.pid!,
    ports,
    admin,
    logBytes: 0,
    refusedLines: 0,
    lastLines: [],
    startedAt: Date.now(),
  };
  let partial = '';
  const onLog = (d: Buffer) => {
    proc.logBytes += d.length;
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      if (line.includes('"message":"refused"')) proc.refusedLines++;
      proc.lastLines.push(line.slice(0, 400));
      if (proc.lastLines.length > 40) proc.lastLines.shift();
    }
  };
  child.stdout!.on('data', onLog);
  child.stderr!.on('data', onLog);
  await waitFor('the sidecar to be ready', async () => (await fetch(`http://127.0.0.1:${admin}/readyz`)).ok, {
    timeoutMs: 30_000,
  });
  return proc;
}

function rssMiB(pid: number): number {
  const kib = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
  return kib / 1024;
}

/** Samples a process's VmRSS every 100 ms. */
class RssSampler {
  peak = 0;
  samples = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly pid: number;
  constructor(pid: number) {
    this.pid = pid;
    this.timer = setInterval(() => this.sample(), 100);
    this.timer.unref();
    this.sample();
  }
  sample(): void {
    try {
      this.peak = Math.max(this.peak, rssMiB(this.pid));
      this.samples++;
    } catch {
      // the process is gone: the liveness assertions report it
    }
  }
  stop(): void {
    clearInterval(this.timer);
  }
}

/**
 * Whether the sidecar process still holds the server side of the connection from `clientPort` to `serverPort`
 * (its socket inode among the process's file descriptors): a client that does not read cannot see a close.
 */
function sidecarHolds(pid: number, serverPort: number, clientPort: number): boolean {
  const hex = (n: number) => `:${n.toString(16).toUpperCase().padStart(4, '0')}`;
  const inodes = new Set<string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(file, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9 && cols[1]!.endsWith(hex(serverPort)) && cols[2]!.endsWith(hex(clientPort)))
        if (cols[9] !== '0') inodes.add(`socket:[${cols[9]}]`);
    }
  }
  if (inodes.size === 0) return false;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (inodes.has(readlinkSync(`/proc/${pid}/fd/${fd}`))) return true;
    } catch {
      // closed while listing
    }
  }
  return false;
}

// ---- clients ---------------------------------------------------------------------------------------------

let pki: Pki;
let sidecar: SidecarProcess;

const certFor = (mode: Mode, withCert = mode !== 'standard') =>
  withCert ? { cert: pki.client.certPem, key: pki.client.keyPem } : {};

/** A TLS connection as a well-behaved client opens it (client certificate on flexible and strict). */
function openTls(mode: Mode, extra: ConnectionOptions = {}): Promise<TLSSocket> {
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

interface Exchange {
  text: string;
  /** The server ended the connection (FIN, reset, or an error while writing to it). */
  closedByServer: boolean;
  error?: string;
  ms: number;
}

/** Reads a socket until the server closes it or `timeoutMs` passes (then destroys it). */
function readUntilClose(socket: Duplex, timeoutMs: number, started = Date.now()): Promise<Exchange> {
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
async function exchange(mode: Mode, payload: Buffer | string, timeoutMs = 15_000): Promise<Exchange> {
  const socket = await openTls(mode);
  const started = Date.now();
  const reading = readUntilClose(socket, timeoutMs, started);
  socket.write(typeof payload === 'string' ? Buffer.from(payload, 'latin1') : payload);
  return reading;
}

const statusOf = (text: string) => Number(/^HTTP\/1\.[01] (\d{3}) /.exec(text)?.[1] ?? 0);
const responseCount = (text: string) => text.match(/HTTP\/1\.1 \d{3} /g)?.length ?? 0;

/** Runs `task` over `items` with at most `limit` at a time. */
async function pool<T, R>(items: readonly T[], limit: number, task: (item: T, i: number) => Promise<R>): Promise<R[]> {
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
function tlsOverRaw(mode: Mode): Promise<{ raw: Socket; tls: TLSSocket }> {
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
async function captureClientHello(): Promise<Buffer> {
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

interface LegitKind {
  mode: Mode;
  cert: boolean;
  keepAlive: boolean;
}
const LEGIT_KINDS: LegitKind[] = [
  { mode: 'strict', cert: true, keepAlive: true },
  { mode: 'flexible', cert: true, keepAlive: false },
  { mode: 'standard', cert: false, keepAlive: false },
  { mode: 'strict', cert: true, keepAlive: false },
  { mode: 'flexible', cert: false, keepAlive: true },
  { mode: 'standard', cert: true, keepAlive: true },
];

/** A well-behaved client making requests one after another for as long as the attacks last. */
class LegitTraffic {
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

// ---- the malformed corpus --------------------------------------------------------------------------------

type Rnd = ReturnType<typeof prng>;

interface Malformed {
  id: number;
  kind: string;
  bytes: Buffer;
  /** Statuses the sidecar may answer with (or it closes the connection without an answer). */
  expect: readonly number[];
}

const tag = (id: number) => `MALFORMED-${id}`;

/** A request head (with its blank line), tagged in the target and a header, with some ordinary headers. */
function headWith(id: number, rnd: Rnd, extra: string[], requestLine = `GET /${tag(id)} HTTP/1.1`, host = true) {
  const lines = [...(host ? ['Host: localhost'] : []), `X-Tag: ${tag(id)}`];
  for (const h of ['Accept: */*', 'User-Agent: hostile/1.0', `X-Client-Verify: FORGED-${id}`, 'X-Seq: 1']) {
    if (rnd.next() < 0.5) lines.push(h);
  }
  for (const line of extra) lines.splice(rnd.int(0, lines.length), 0, line);
  return `${requestLine}\r\n${lines.join('\r\n')}\r\n\r\n`;
}

const randomBytes = (rnd: Rnd, n: number, exclude: number[] = []) => {
  const out: number[] = [];
  while (out.length < n) {
    const b = rnd.int(0, 255);
    if (!exclude.includes(b)) out.push(b);
  }
  return Buffer.from(out).toString('latin1');
};

const MALFORMED_KINDS: { kind: string; expect: number[]; make: (id: number, rnd: Rnd) => string }[] = [
  {
    kind: 'Content-Length and Transfer-Encoding',
    expect: [400],
    make: (id, rnd) =>
      headWith(
        id,
        rnd,
        rnd.next() < 0.5
          ? ['Content-Length: 5', 'Transfer-Encoding: chunked']
          : ['transfer-encoding: CHUNKED', `content-length: ${rnd.int(0, 99)}`],
        `POST /${tag(id)} HTTP/1.1`,
      ) + '0\r\n\r\n',
  },
  {
    kind: 'conflicting Content-Length',
    expect: [400],
    make: (id, rnd) => {
      const a = rnd.int(0, 50);
      return headWith(
        id,
        rnd,
        [`Content-Length: ${a}`, `Content-Length: ${a + rnd.int(1, 9)}`],
        `POST /${tag(id)} HTTP/1.1`,
      );
    },
  },
  {
    kind: 'invalid Content-Length',
    expect: [400],
    make: (id, rnd) =>
      headWith(
        id,
        rnd,
        [
          `Content-Length: ${rnd.pick(['+5', '-1', '0x10', '5 5', '', '5.0', '1e3', '1234567890123456', '5\xa0', '\xa05', '5,5'])}`,
        ],
        `POST /${tag(id)} HTTP/1.1`,
      ),
  },
  {
    kind: 'Transfer-Encoding not ending in chunked',
    expect: [400],
    make: (id, rnd) =>
      headWith(
        id,
        rnd,
        [
          `Transfer-Encoding: ${rnd.pick(['chunked, gzip', 'gzip', 'identity', 'chunked, chunked', 'xchunked', '"chunked"', 'chunked;q=1', 'chunked\xa0', '\xa0chunked', ' , ', 'chunk ed'])}`,
        ],
        `POST /${tag(id)} HTTP/1.1`,
      ) + '0\r\n\r\n',
  },
  {
    kind: 'Transfer-Encoding: chunked twice',
    expect: [400],
    make: (id, rnd) =>
      headWith(id, rnd, ['Transfer-Encoding: chunked', 'Transfer-Encoding: chunked'], `POST /${tag(id)} HTTP/1.1`) +
      '0\r\n\r\n',
  },
  {
    kind: 'obs-fold',
    expect: [400],
    make: (id, rnd) => headWith(id, rnd, ['X-Folded: a', `${rnd.pick([' ', '\t'])}folded-${rnd.int(0, 9)}`]),
  },
  {
    kind: 'whitespace before the colon',
    expect: [400],
    make: (id, rnd) =>
      headWith(id, rnd, [
        `${rnd.pick(['Transfer-Encoding', 'Content-Length', 'X-Client-Verify', 'X-A'])}${rnd.pick([' ', '\t', '  '])}: 1`,
      ]),
  },
  {
    kind: 'bare CR or LF',
    expect: [400],
    make: (id, rnd) => {
      const bare = rnd.pick(['\r', '\n']);
      return rnd.next() < 0.5
        ? headWith(id, rnd, [`X-A: 1${bare}X-B: 2`])
        : headWith(id, rnd, []).replace('\r\n', bare);
    },
  },
  {
    kind: 'control character',
    expect: [400],
    make: (id, rnd) => {
      const value = `v${rnd.pick(['\x00', '\x01', '\x07', '\x08', '\x0b', '\x0c', '\x1b', '\x1f', '\x7f'])}v`;
      return rnd.next() < 0.7
        ? headWith(id, rnd, [`X-Ctl: ${value}`])
        : headWith(id, rnd, [], `GET /${tag(id)}${value} HTTP/1.1`);
    },
  },
  {
    kind: 'HTTP/1.0 with Transfer-Encoding',
    expect: [400],
    make: (id, rnd) => headWith(id, rnd, ['Transfer-Encoding: chunked'], `POST /${tag(id)} HTTP/1.0`) + '0\r\n\r\n',
  },
  {
    kind: 'unsupported HTTP version',
    expect: [505],
    make: (id, rnd) =>
      headWith(id, rnd, [], `GET /${tag(id)} ${rnd.pick(['HTTP/2.0', 'HTTP/0.9', 'HTTP/3.0', 'HTTP/2.1'])}`),
  },
  {
    kind: 'HTTP/2 connection preface',
    expect: [505],
    make: (id) => `PRI * HTTP/2.0\r\nX-Tag: ${tag(id)}\r\n\r\nSM\r\n\r\n`,
  },
  {
    kind: 'CONNECT',
    expect: [405],
    make: (id, rnd) =>
      headWith(id, rnd, [], `CONNECT 127.0.0.1:22 HTTP/1.1`).replace('Host: localhost', 'Host: 127.0.0.1:22'),
  },
  {
    kind: 'malformed request line',
    expect: [400],
    make: (id, rnd) =>
      headWith(
        id,
        rnd,
        [],
        rnd
          .pick([
            'GET  /T HTTP/1.1',
            'GET\t/T HTTP/1.1',
            'GET /T http/1.1',
            'GET /T',
            'GET /T HTTP/1.1 ',
            ' GET /T HTTP/1.1',
            'GET /T HTTP/1.10',
            '/T HTTP/1.1',
            'GET /T HTTPS/1.1',
            'G(ET /T HTTP/1.1',
            'GET /T HTTP/1.1/',
          ])
          .replace('T', tag(id)),
      ),
  },
  {
    kind: 'invalid header name',
    expect: [400],
    make: (id, rnd) =>
      headWith(id, rnd, [`X${rnd.pick(['(', ')', ',', '/', '[', '"', '@', '\xe9', '{', '=', '\\'])}A: 1`]),
  },
  {
    kind: 'Host missing or twice',
    expect: [400],
    make: (id, rnd) =>
      rnd.next() < 0.5 ? headWith(id, rnd, [], undefined, false) : headWith(id, rnd, ['Host: evil.example']),
  },
  {
    kind: 'h2c upgrade',
    expect: [400],
    make: (id, rnd) =>
      headWith(id, rnd, ['Connection: Upgrade, HTTP2-Settings', 'Upgrade: h2c', 'HTTP2-Settings: AAMAAABkAAQAAP__']),
  },
  {
    kind: 'too many header lines',
    expect: [431],
    make: (id, rnd) =>
      headWith(
        id,
        rnd,
        Array.from({ length: rnd.int(101, 600) }, (_, i) => `a${i}: v`),
      ),
  },
  {
    kind: 'oversized head',
    expect: [431],
    make: (id, rnd) => headWith(id, rnd, [`X-Big: ${'b'.repeat(rnd.int(MAX_HEADER_BYTES + 1, 64 * 1024))}`]),
  },
  {
    kind: 'random bytes as a request line',
    expect: [400],
    make: (id, rnd) => `${randomBytes(rnd, rnd.int(1, 120), [10, 13])}\r\nX-Tag: ${tag(id)}\r\n\r\n`,
  },
  {
    kind: 'blank lines, then garbage',
    expect: [400],
    make: (id, rnd) => `${'\r\n'.repeat(rnd.int(1, 5))}GARBAGE ${tag(id)}\r\nHost: localhost\r\n\r\n`,
  },
];

function malformedCorpus(rnd: Rnd, count: number): Malformed[] {
  const corpus: Malformed[] = [];
  for (let id = 0; id < count; id++) {
    // Every kind at least once, then a seeded mix.
    const kind = id < MALFORMED_KINDS.length ? MALFORMED_KINDS[id]! : rnd.pick(MALFORMED_KINDS);
    // A well-formed request pipelined behind the bad one, with forged identity headers: it must never run.
    const smuggled = `GET /SMUGGLED-${id} HTTP/1.1\r\nHost: localhost\r\nX-Client-Verify: FORGED-${id}\r\n\r\n`;
    corpus.push({
      id,
      kind: kind.kind,
      bytes: Buffer.from(kind.make(id, rnd) + smuggled, 'latin1'),
      expect: kind.expect,
    });
  }
  return corpus;
}

// ---- raw TLS probes (ClientHellos built by hand) ---------------------------------------------------------

const u16 = (n: number) => Buffer.from([(n >> 8) & 0xff, n & 0xff]);
const u24 = (n: number) => Buffer.from([(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);

/** A ClientHello for `version` (0x0300 SSLv3 ... 0x0303 TLS 1.2) offering exactly `suites`. */
function clientHello(version: number, suites: readonly number[]): Buffer {
  const list16 = (values: number[]) => Buffer.concat([u16(values.length * 2), ...values.map(u16)]);
  const ext = (type: number, body: Buffer) => Buffer.concat([u16(type), u16(body.length), body]);
  const extensions =
    version >= 0x0301
      ? Buffer.concat([
          ext(0x000a, list16([0x001d, 0x0017, 0x0018])), // supported_groups
          ext(0x000b, Buffer.from([1, 0])), // ec_point_formats: uncompressed
          ext(0x000d, list16([0x0403, 0x0503, 0x0804, 0x0805, 0x0401, 0x0501, 0x0201, 0x0203])),
          ext(0xff01, Buffer.from([0])), // renegotiation_info
        ])
      : Buffer.alloc(0);
  const body = Buffer.concat([
    u16(version),
    Buffer.alloc(32, 0x5a),
    Buffer.from([0]), // no session id
    u16(suites.length * 2),
    ...suites.map(u16),
    Buffer.from([1, 0]), // compression: null
    ...(extensions.length ? [u16(extensions.length), extensions] : []),
  ]);
  const handshake = Buffer.concat([Buffer.from([1]), u24(body.length), body]);
  return Buffer.concat([Buffer.from([0x16]), u16(Math.min(version, 0x0301)), u16(handshake.length), handshake]);
}

interface ProbeResult {
  accepted: boolean;
  /** ServerHello's version and suite, or the alert's description. */
  version?: number;
  suite?: number;
  alert?: number;
}

/** Sends a ClientHello and reads the first record back: a ServerHello (accepted) or an alert / a close. */
function probe(port: number, hello: Buffer): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const socket = netConnect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const done = (result: ProbeResult) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done({ accepted: false }), 10_000);
    socket.on('error', () => done({ accepted: false }));
    socket.on('close', () => done({ accepted: false }));
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf[0] === 0x15 && buf.length >= 7) return done({ accepted: false, alert: buf[6] });
      if (buf[0] === 0x16 && buf.length >= 5 + 4 + 2 + 32 + 1) {
        if (buf[5] !== 2) return done({ accepted: false });
        const sessionId = buf[43]!;
        if (buf.length < 44 + sessionId + 2) return;
        return done({ accepted: true, version: buf.readUInt16BE(9), suite: buf.readUInt16BE(44 + sessionId) });
      }
      if (buf.length >= 7 && buf[0] !== 0x15 && buf[0] !== 0x16) done({ accepted: false });
    });
    socket.write(hello);
  });
}

/** Weak TLS 1.2 cipher families, by IANA id, with their OpenSSL names where the local openssl may offer them. */
const WEAK: { family: string; suites: number[]; openssl: string }[] = [
  { family: 'RC4', suites: [0x0004, 0x0005, 0xc007, 0xc011], openssl: 'RC4' },
  { family: '3DES', suites: [0x000a, 0xc008, 0xc012, 0x0016], openssl: '3DES' },
  { family: 'DES', suites: [0x0009, 0x0015], openssl: 'DES' },
  { family: 'EXPORT', suites: [0x0003, 0x0006, 0x0008, 0x0014], openssl: 'EXP' },
  { family: 'NULL', suites: [0x0001, 0x0002, 0x003b, 0xc006, 0xc010], openssl: 'eNULL' },
  { family: 'aNULL', suites: [0x0034, 0x003a, 0x00a6, 0xc018, 0xc019, 0xc015], openssl: 'aNULL' },
  { family: 'CBC-SHA1', suites: [0xc009, 0xc00a, 0xc013, 0xc014, 0x002f, 0x0035], openssl: 'SHA1' },
  {
    family: 'CBC-SHA256/384',
    suites: [0xc023, 0xc024, 0xc027, 0xc028, 0x003c, 0x003d],
    openssl: 'SHA256:SHA384:!AESGCM:!CHACHA20:!AESCCM:!ARIAGCM',
  },
  { family: 'static RSA key exchange', suites: [0x009c, 0x009d, 0x002f, 0x0035], openssl: 'kRSA' },
  { family: 'MD5', suites: [0x0004, 0x0001], openssl: 'MD5' },
];

/** TLS 1.2 suites a server must accept (the probe's positive control): ECDHE-ECDSA / ECDHE-RSA with AES-GCM. */
const STRONG_SUITES = [0xc02b, 0xc02f, 0xc02c, 0xc030];

const STRONG_NAME = /^ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/;

const run = promisify(execFile);

/** openssl s_client with stdin closed: it handshakes, prints, and exits. Resolves with its output. */
function sClient(args: string[]): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    const child = spawn('openssl', ['s_client', ...args], { stdio: ['pipe', 'pipe', 'pipe'], timeout: 15_000 });
    child.stdin.on('error', () => undefined);
    child.stdin.end('\n');
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('close', (code) => resolve({ ok: code === 0 && /Cipher(suite)?( is|:) (?!\(NONE\))\S+/.test(out), out }));
  });
}

const negotiated = (out: string) => /Ciphersuite: (\S+)|Cipher is (\S+)/.exec(out)?.slice(1).find(Boolean);

// ---- the tests -------------------------------------------------------------------------------------------

describe('reliability: the sidecar under hostile clients', () => {
  let mock: Awaited<ReturnType<typeof startMockUpstream>>;
  let relay: Relay;
  let legit: LegitTraffic;
  let rss: RssSampler;
  let clientHelloBytes: Buffer;
  let files: Record<string, string>;
  const rnd = prng(SEED);
  const started = Date.now();

  const alive = async () => {
    expect(sidecar.child.exitCode).toBeNull();
    expect(sidecar.child.signalCode).toBeNull();
    expect((await fetch(`http://127.0.0.1:${sidecar.admin}/healthz`)).status).toBe(200);
  };

  beforeAll(async () => {
    pki = await makePki();
    mock = await startMockUpstream();
    relay = await Relay.start(mock.port, await freePort());
    sidecar = await startSidecarProcess(await tlsDir(pki), relay.port, MODES);
    rss = new RssSampler(sidecar.pid);
    clientHelloBytes = await captureClientHello();
    files = pemFiles({ 'ca.pem': pki.ca.certPem, 'c.pem': pki.client.certPem, 'k.pem': pki.client.keyPem });
    legit = new LegitTraffic();
    legit.start();
  });

  afterAll(async () => {
    await legit?.stop();
    rss?.stop();
    sidecar?.child.kill('SIGKILL');
    for (const socket of relay?.open ?? []) socket.destroy();
    relay?.server.close();
    mock?.server.closeAllConnections();
    mock?.server.close();
    const accepted12 = [...summary.accepted12].sort().join(':') || 'none';
    reportSummary(
      `sidecar-hostile (seed ${SEED}): malformed requests ${summary.malformed} / refused ` +
        `${summary.refusedStatus + summary.refusedClosed} (${summary.refusedStatus} answered 4xx/505, ` +
        `${summary.refusedClosed} closed) / reached upstream ${relay?.seen.size ?? '?'}; ` +
        `smuggling bodies ${summary.malformedBodies}; forged identity headers ${summary.forged}; ` +
        `upstream requests with a forged or missing identity ${mock ? upstreamViolations(mock.requests).length : '?'}; ` +
        `floods survived ${summary.floods} ` +
        `(${summary.floodConnections} hostile connections); legitimate requests sent ${legit?.sent ?? 0} / ` +
        `failed ${(legit?.sent ?? 0) - (legit?.ok ?? 0)}; peak RSS ${rss?.peak.toFixed(1)} MiB; ` +
        `TLS below 1.2 refused ${summary.legacyRefused}/${summary.legacyTried}; weak ciphers accepted ` +
        `${summary.weakAccepted.length} (${summary.weakTried.length} families x listeners tried; raw ClientHellos only ` +
        `for ${summary.opensslCannotOffer.join('/') || 'none'})` +
        `${summary.weakAccepted.length ? `: ${summary.weakAccepted.join(', ')}` : ''}; TLS 1.2 ciphers accepted: ${accepted12}; ` +
        `${((Date.now() - started) / 1000).toFixed(0)} s`,
    );
  });

  it('refuses a seeded corpus of malformed request heads with 4xx (or a close), and none reaches the upstream', async () => {
    const corpus = malformedCorpus(rnd, 180);
    const results = await pool(corpus, 6, async (m, i) => {
      const mode = MODES[i % MODES.length]!;
      return { m, mode, result: await exchange(mode, m.bytes) };
    });
    const problems: string[] = [];
    for (const { m, mode, result } of results) {
      summary.malformed++;
      const status = statusOf(result.text);
      const what = `#${m.id} ${m.kind} on ${mode}`;
      if (!result.closedByServer) problems.push(`${what}: connection left open after ${result.ms} ms`);
      if (status === 0 && result.text === '' && result.closedByServer) summary.refusedClosed++;
      else if (m.expect.includes(status)) summary.refusedStatus++;
      else problems.push(`${what}: answered ${JSON.stringify(result.text.slice(0, 80))}, expected ${m.expect}`);
      if (responseCount(result.text) > 1) problems.push(`${what}: the pipelined request was answered too`);
    }
    expect(problems).toEqual([]);
    expect(summary.refusedStatus).toBeGreaterThan(corpus.length / 2);
    // The relay saw none of the tags, so not one byte of a refused request (or of the request behind it) went on.
    expect([...relay.seen]).toEqual([]);
    expect(upstreamViolations(mock.requests)).toEqual([]);
    await alive();
  }, 120_000);

  it('refuses bodies with bad chunked framing before the request behind them can be smuggled', async () => {
    const bodies = [
      () => `zz\r\n`,
      () => `1${'0'.repeat(rnd.int(12, 30))}\r\n`,
      () => `3\r\nabcdef\r\n0\r\n\r\n`,
      () => `5\r\nab\r\n0\r\n\r\n`,
      () => `5\nhello\n0\n\n`,
      () => `0\n\n`,
      () => `-1\r\n`,
      () => `0x5\r\nhello\r\n0\r\n\r\n`,
      () => `5;a\nhello\r\n0\r\n\r\n`,
      () => `5;a=\x00\r\nhello\r\n0\r\n\r\n`,
      () => `0\r\nX-T: 1\r\n folded\r\n\r\n`,
      (id: number) => `0\r\nGET /SMUGGLED-${id} HTTP/1.1\r\n\r\n`,
      () => `0\r\nX-T: \x00\r\n\r\n`,
      () => `5\r\nhello\r0\r\n\r\n`,
      () => `5\r\nhello\r\n0\r\n\n`,
      () => ` 5\r\nhello\r\n0\r\n\r\n`,
    ];
    const cases = Array.from({ length: 48 }, (_, i) => {
      const id = 10_000 + i;
      const head =
        `POST /body-${id} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n` +
        `X-Client-Verify: FORGED-${id}\r\n\r\n`;
      const smuggled =
        `GET /SMUGGLED-${id} HTTP/1.1\r\nHost: localhost\r\nX-Client-Verify: FORGED-${id}\r\n` +
        `X-Forwarded-Client-Cert: Hash=FORGED-${id}\r\n\r\n`;
      return { id, bytes: head + bodies[i % bodies.length]!(id) + smuggled };
    });
    const before = mock.requests.length;
    const problems: string[] = [];
    await pool(cases, 6, async ({ id, bytes }, i) => {
      const mode = MODES[i % MODES.length]!;
      // Head and body in one write for half of them, in two for the others (the body then meets a live upstream).
      const socket = await openTls(mode);
      const reading = readUntilClose(socket, 15_000);
      const split = i % 2 ? bytes.indexOf('\r\n\r\n') + 4 : bytes.length;
      socket.write(Buffer.from(bytes.slice(0, split), 'latin1'));
      if (split < bytes.length) {
        await sleep(50);
        socket.write(Buffer.from(bytes.slice(split), 'latin1'));
      }
      const result = await reading;
      summary.malformedBodies++;
      const status = statusOf(result.text);
      if (!(status === 400 || (status === 0 && result.closedByServer)))
        problems.push(`#${id} (${mode}): answered ${JSON.stringify(result.text.slice(0, 60))}`);
      if (responseCount(result.text) > 1) problems.push(`#${id}: more than one response`);
    });
    expect(problems).toEqual([]);
    // Heads (POST /body-*) may have gone on; a request smuggled in a body, or a forged header, never.
    expect(upstreamViolations(mock.requests.slice(before))).toEqual([]);
    expect([...relay.seen]).toEqual([]);
    await alive();
  }, 120_000);

  it('forwards well-formed requests with forged identity headers in any spelling, with its own identity only', async () => {
    const spellings = [
      'X-Client-Verify: SUCCESS',
      'x-client-verify: FORGED-%',
      'X_Client_Verify: FORGED-%',
      'X-Client_Verify: FORGED-%',
      'X-FORWARDED-CLIENT-CERT: Hash=FORGED-%;Subject="CN=admin"',
      'x_forwarded_client_cert: Hash=FORGED-%',
      'X-Forwarded-Proto: FORGED-%',
      'X_Forwarded_Proto: FORGED-%',
    ];
    const before = mock.requests.length;
    // strict refuses a client without a certificate, so it always gets one.
    const jobs = Array.from({ length: 60 }, (_, i) => ({
      i,
      mode: MODES[i % 3]!,
      withCert: i % 2 === 0 || i % 3 === 2,
    }));
    const problems: string[] = [];
    await pool(jobs, 4, async ({ i, mode, withCert }) => {
      const socket = await openTls(mode, withCert ? {} : { cert: undefined, key: undefined });
      const reading = readUntilClose(socket, 15_000);
      // Three pipelined requests per connection, the last one closing it.
      let text = '';
      for (let r = 0; r < 3; r++) {
        const forged = [rnd.pick(spellings), rnd.pick(spellings)].map((h) => h.replace('%', String(i)));
        text +=
          `GET /forged/${i}/${r} HTTP/1.1\r\nHost: localhost\r\n${forged.join('\r\n')}\r\n` +
          (r === 2 ? 'Connection: close\r\n' : '') +
          '\r\n';
        summary.forged += 2;
      }
      socket.write(text);
      const result = await reading;
      if (responseCount(result.text) !== 3) problems.push(`#${i}: ${responseCount(result.text)} responses`);
      const verify = [...result.text.matchAll(/"x-client-verify":"([^"]*)"/g)].map((m) => m[1]);
      const expected = withCert && mode !== 'standard' ? 'SUCCESS' : 'NONE';
      if (verify.length !== 3 || verify.some((v) => v !== expected))
        problems.push(`#${i} ${mode}: x-client-verify ${verify}, expected ${expected}`);
      if (/FORGED/.test(result.text)) problems.push(`#${i}: a forged value was echoed by the upstream`);
    });
    expect(problems).toEqual([]);
    expect(upstreamViolations(mock.requests.slice(before))).toEqual([]);
  }, 60_000);

  it('refuses oversized heads with 431 (or a close) without buffering them, and accepts 100 header lines', async () => {
    const results: string[] = [];
    // One huge header, a 1 MiB head in one write, and an endless head written until the server gives up.
    const huge = await exchange(
      'strict',
      `GET /${tag(20_000)} HTTP/1.1\r\nHost: a\r\nX-Huge: ${'h'.repeat(40_000)}\r\n\r\n`,
    );
    results.push(`40 KB header: ${statusOf(huge.text) || (huge.closedByServer ? 'closed' : 'open')}`);
    expect(statusOf(huge.text) === 431 || (huge.text === '' && huge.closedByServer)).toBe(true);
    const mib = await exchange(
      'flexible',
      `GET /${tag(20_001)} HTTP/1.1\r\nHost: a\r\nX-A: ${'m'.repeat(1 << 20)}\r\n\r\n`,
    );
    expect(statusOf(mib.text) === 431 || (mib.text === '' && mib.closedByServer)).toBe(true);

    const endless = await openTls('standard');
    const reading = readUntilClose(endless, 30_000);
    let written = 0;
    endless.write(`GET /${tag(20_002)} HTTP/1.1\r\nHost: a\r\n`);
    const line = Buffer.from(`X-Endless: ${'e'.repeat(1_000)}\r\n`);
    while (!endless.destroyed && written < 8 << 20) {
      if (!endless.write(line)) await new Promise((resolve) => setTimeout(resolve, 5));
      written += line.length;
      if (written % (64 * 1024) < line.length) await sleep(1);
    }
    const endlessResult = await reading;
    expect(endlessResult.closedByServer).toBe(true);
    expect([0, 431]).toContain(statusOf(endlessResult.text));

    // The boundary: 100 header lines are accepted, 101 are not.
    const filler = (n: number) => Array.from({ length: n }, (_, i) => `x-h${i}: v\r\n`).join('');
    const ok = await exchange('standard', `GET /hundred HTTP/1.1\r\nHost: a\r\n${filler(98)}Connection: close\r\n\r\n`);
    expect(statusOf(ok.text)).toBe(200);
    const tooMany = await exchange('standard', `GET /${tag(20_003)} HTTP/1.1\r\nHost: a\r\n${filler(100)}\r\n`);
    expect(statusOf(tooMany.text)).toBe(431);
    expect([...relay.seen]).toEqual([]);
    summary.floods++;
    await alive();
  }, 90_000);

  it('closes connections that send random bytes or broken TLS records instead of a handshake', async () => {
    const hello = clientHelloBytes;
    const variants: { name: string; bytes: (r: Rnd) => Buffer }[] = [
      { name: 'random bytes', bytes: (r) => Buffer.from(randomBytes(r, r.int(1, 4096)), 'latin1') },
      {
        name: 'handshake record with a random body',
        bytes: (r) => {
          const n = r.int(1, 2000);
          return Buffer.concat([
            Buffer.from([0x16, 0x03, r.pick([0x01, 0x03])]),
            u16(n),
            Buffer.from(randomBytes(r, n), 'latin1'),
          ]);
        },
      },
      {
        name: 'ClientHello with flipped bits',
        bytes: (r) => {
          const b = Buffer.from(hello);
          for (let k = r.int(1, 8); k > 0; k--) {
            const at = r.int(5, b.length - 1);
            b[at] = b[at]! ^ (1 << r.int(0, 7));
          }
          return b;
        },
      },
      { name: 'truncated ClientHello, then silence', bytes: (r) => hello.subarray(0, r.int(1, hello.length - 1)) },
      {
        name: 'SSLv2 hello',
        bytes: () =>
          Buffer.from(
            '802e0100020015000000100700c00500800300800100800600400400800200801a2b3c4d5e6f70819293a4b5c6d7e8',
            'hex',
          ),
      },
      { name: 'plain HTTP', bytes: () => Buffer.from(`GET /${tag(30_000)} HTTP/1.1\r\nHost: a\r\n\r\n`) },
      { name: 'alert before hello', bytes: () => Buffer.from('15030300020228', 'hex') },
      { name: 'ChangeCipherSpec first', bytes: () => Buffer.from('140303000101', 'hex') },
      {
        name: 'application data first',
        bytes: (r) => Buffer.concat([Buffer.from('1703030040', 'hex'), Buffer.from(randomBytes(r, 64), 'latin1')]),
      },
      {
        name: 'empty handshake records',
        bytes: () => Buffer.concat(Array.from({ length: 2000 }, () => Buffer.from('1603030000', 'hex'))),
      },
      {
        name: 'oversized record length',
        bytes: (r) => Buffer.concat([Buffer.from('160303ffff', 'hex'), Buffer.from(randomBytes(r, 1024), 'latin1')]),
      },
      { name: 'two ClientHellos', bytes: () => Buffer.concat([hello, hello]) },
    ];
    const jobs = Array.from({ length: 144 }, (_, i) => ({
      i,
      variant: variants[i % variants.length]!,
      mode: MODES[i % 3]!,
    }));
    const problems: string[] = [];
    await pool(jobs, 36, async ({ i, variant, mode }) => {
      const socket = netConnect(sidecar.ports[mode], '127.0.0.1');
      summary.floodConnections++;
      const reading = readUntilClose(socket, TIMEOUTS.handshake + 2 * SLACK_MS);
      socket.on('connect', () => socket.write(variant.bytes(rnd)));
      const result = await reading;
      if (!result.closedByServer) problems.push(`#${i} ${variant.name} on ${mode}: still open after ${result.ms} ms`);
      if (/HTTP\/1\.1 200/.test(result.text)) problems.push(`#${i} ${variant.name}: answered 200`);
    });
    expect(problems).toEqual([]);

    // Garbage between the records of an established (and working) mTLS connection.
    const garbage: ((r: Rnd) => Buffer)[] = [
      (r) => Buffer.from(randomBytes(r, r.int(1, 512)), 'latin1'),
      (r) => Buffer.concat([Buffer.from('1703030100', 'hex'), Buffer.from(randomBytes(r, 256), 'latin1')]),
      () => clientHello(0x0303, STRONG_SUITES),
      () => Buffer.from('15030300020150', 'hex'),
    ];
    await pool(
      Array.from({ length: 24 }, (_, i) => i),
      8,
      async (i) => {
        const mode = MODES[i % 3]!;
        const { raw, tls } = await tlsOverRaw(mode);
        summary.floodConnections++;
        const first = new Promise<string>((resolve) => {
          tls.once('data', (d: Buffer) => resolve(d.toString('latin1')));
          setTimeout(() => resolve('no answer within 15 s'), 15_000);
        });
        tls.write(`GET /before-garbage/${i} HTTP/1.1\r\nHost: a\r\n\r\n`);
        const answer = await first;
        if (statusOf(answer) !== 200) problems.push(`garbage #${i} on ${mode}: first request: ${answer.slice(0, 40)}`);
        // A fatal TLS error ends the connection at once (well within the idle timeout it would otherwise wait for).
        const closed = readUntilClose(raw, SLACK_MS);
        raw.write(garbage[i % garbage.length]!(rnd));
        const result = await closed;
        tls.destroy();
        if (!result.closedByServer) problems.push(`garbage #${i} on ${mode}: connection left open for ${result.ms} ms`);
      },
    );
    expect(problems).toEqual([]);
    expect([...relay.seen]).toEqual([]);
    summary.floods++;
    await alive();
  }, 120_000);

  it('survives a flood of abandoned handshakes, and closes the ones left hanging within the handshake timeout', async () => {
    const hello = clientHelloBytes;
    const problems: string[] = [];
    let maxOpen = 0;
    let open = 0;
    // 4 waves of 200 concurrent connections: each sends a real ClientHello (the server does its key exchange and
    // signs), then half hang up at the first answer and half stay silent until the server gives up on them.
    for (let wave = 0; wave < 4; wave++) {
      await Promise.all(
        Array.from({ length: 200 }, async (_, i) => {
          const mode = MODES[(wave + i) % 3]!;
          const socket = netConnect(sidecar.ports[mode], '127.0.0.1');
          summary.floodConnections++;
          open++;
          maxOpen = Math.max(maxOpen, open);
          const hangUp = i % 2 === 0;
          if (hangUp) socket.once('data', () => socket.destroy());
          const reading = readUntilClose(socket, TIMEOUTS.handshake + 2 * SLACK_MS);
          socket.on('connect', () => socket.write(hello));
          const result = await reading;
          open--;
          if (!hangUp && !result.closedByServer)
            problems.push(`wave ${wave} #${i} (${mode}): silent handshake still open after ${result.ms} ms`);
        }),
      );
    }
    expect(problems.slice(0, 10)).toEqual([]);
    expect(maxOpen).toBeLessThan(10_000); // far below the per-listener cap: no legitimate client may be refused

    // Complete handshakes that never send a request: closed after the headers timeout.
    const idle = await pool(
      Array.from({ length: 60 }, (_, i) => MODES[i % 3]!),
      30,
      async (mode) => {
        summary.floodConnections++;
        return readUntilClose(await openTls(mode), TIMEOUTS.headers + 2 * SLACK_MS);
      },
    );
    expect(idle.filter((r) => !r.closedByServer).length).toBe(0);
    summary.floods++;
    await alive();
  }, 120_000);

  it('cuts off slowloris clients at every stage: handshake, head, body', async () => {
    const hello = clientHelloBytes;
    const trickle = async (socket: Duplex, bytes: Buffer, everyMs: number, closed: () => boolean) => {
      for (let k = 0; k < bytes.length && !closed(); k++) {
        socket.write(bytes.subarray(k, k + 1));
        await sleep(everyMs);
      }
    };
    const outcomes: { stage: string; result: Exchange; limit: number }[] = [];
    const tasks: Promise<void>[] = [];
    // The ClientHello a byte at a time (the handshake timeout must end it).
    for (let i = 0; i < 20; i++) {
      tasks.push(
        (async () => {
          const socket = netConnect(sidecar.ports[MODES[i % 3]!], '127.0.0.1');
          summary.floodConnections++;
          const reading = readUntilClose(socket, TIMEOUTS.handshake + 2 * SLACK_MS);
          await new Promise((resolve) => socket.once('connect', resolve));
          void trickle(socket, hello, 100, () => socket.destroyed);
          outcomes.push({ stage: 'handshake', result: await reading, limit: TIMEOUTS.handshake + SLACK_MS });
        })(),
      );
    }
    // A request head a byte at a time (the headers timeout: 408 or a close).
    for (let i = 0; i < 40; i++) {
      tasks.push(
        (async () => {
          const socket = await openTls(MODES[i % 3]!);
          summary.floodConnections++;
          const reading = readUntilClose(socket, TIMEOUTS.headers + 2 * SLACK_MS);
          const head = Buffer.from(
            `GET /${tag(40_000 + i)} HTTP/1.1\r\nHost: localhost\r\nX-Slow: ${'s'.repeat(60)}\r\n\r\n`,
          );
          void trickle(socket, head, 150, () => socket.destroyed);
          outcomes.push({ stage: 'head', result: await reading, limit: TIMEOUTS.headers + SLACK_MS });
        })(),
      );
    }
    // A body a byte at a time (the request timeout).
    for (let i = 0; i < 20; i++) {
      tasks.push(
        (async () => {
          const socket = await openTls(MODES[i % 3]!);
          summary.floodConnections++;
          const reading = readUntilClose(socket, TIMEOUTS.request + 2 * SLACK_MS);
          socket.write(`POST /slow-body/${i} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n`);
          void trickle(socket, Buffer.alloc(1000, 0x62), 150, () => socket.destroyed);
          outcomes.push({ stage: 'body', result: await reading, limit: TIMEOUTS.request + SLACK_MS });
        })(),
      );
    }
    await Promise.all(tasks);
    const problems = outcomes
      .filter(({ result, limit }) => !result.closedByServer || result.ms > limit)
      .map(({ stage, result }) => `${stage}: ${result.closedByServer ? 'closed' : 'still open'} after ${result.ms} ms`);
    expect(problems).toEqual([]);
    for (const { stage, result } of outcomes) {
      if (stage !== 'handshake') expect([0, 408]).toContain(statusOf(result.text));
    }
    expect([...relay.seen]).toEqual([]);
    summary.floods++;
    await alive();
  }, 120_000);

  it('answers a pipelined flood in order, then refuses the malformed request inside it and nothing after', async () => {
    const parseResponses = (buf: Buffer) => {
      const out: { status: number; body: string }[] = [];
      let at = 0;
      for (;;) {
        const end = buf.indexOf('\r\n\r\n', at);
        if (end < 0) break;
        const head = buf.toString('latin1', at, end);
        const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
        if (end + 4 + length > buf.length) break;
        out.push({ status: statusOf(head + ' '), body: buf.toString('utf8', end + 4, end + 4 + length) });
        at = end + 4 + length;
      }
      return out;
    };
    const flood = async (mode: Mode, c: number, requests: string[]) => {
      const socket = await openTls(mode);
      summary.floodConnections++;
      const chunks: Buffer[] = [];
      socket.on('data', (d: Buffer) => chunks.push(d));
      const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
      socket.on('error', () => undefined);
      socket.write(requests.join(''));
      await Promise.race([closed, sleep(60_000)]);
      socket.destroy();
      return parseResponses(Buffer.concat(chunks));
    };
    const N = 500;
    const results = await Promise.all(
      [0, 1, 2, 3].map((c) => {
        const mode = MODES[c % 3]!;
        const requests = Array.from(
          { length: N },
          (_, i) =>
            `GET /pipe/${c}/${i} HTTP/1.1\r\nHost: localhost\r\nX-Client-Verify: FORGED-${c}\r\n` +
            (i === N - 1 ? 'Connection: close\r\n' : '') +
            '\r\n',
        );
        return flood(mode, c, requests).then((responses) => ({ c, mode, responses }));
      }),
    );
    for (const { c, mode, responses } of results) {
      expect(responses.length).toBe(N);
      const expected = mode === 'standard' ? 'NONE' : 'SUCCESS';
      responses.forEach((r, i) => {
        const seen = JSON.parse(r.body) as { url: string; headers: Record<string, string> };
        if (r.status !== 200 || seen.url !== `/pipe/${c}/${i}` || seen.headers['x-client-verify'] !== expected)
          throw new Error(`connection ${c} response ${i}: ${r.status} ${seen.url} ${seen.headers['x-client-verify']}`);
      });
    }
    // 50 good requests, one malformed, 50 more: exactly 50 answers, then the refusal, and the connection ends;
    // nothing behind the malformed request reaches the upstream.
    const mixed = [
      ...Array.from({ length: 50 }, (_, i) => `GET /mixed/${i} HTTP/1.1\r\nHost: localhost\r\n\r\n`),
      `POST /${tag(50_000)} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      ...Array.from({ length: 50 }, (_, i) => `GET /SMUGGLED-${50_001 + i} HTTP/1.1\r\nHost: localhost\r\n\r\n`),
    ];
    const answers = await flood('strict', 9, mixed);
    expect(answers.slice(0, 50).map((a) => a.status)).toEqual(Array(50).fill(200));
    // 400 is the answer to the malformed request; nothing behind it is read.
    expect(answers.slice(50).map((a) => a.status)).toEqual([400]);
    expect([...relay.seen]).toEqual([]);
    summary.floods++;
    await alive();
  }, 120_000);

  // Regression: a refused request after a completed one on the same keep-alive connection once got a silent
  // close instead of its 4xx (the "response started" flag outlived the response).
  it('answers a refused request on a kept-alive connection with its 4xx, not a silent close', async () => {
    const socket = await openTls('standard');
    const first = new Promise<string>((resolve) => socket.once('data', (d: Buffer) => resolve(d.toString('latin1'))));
    socket.write('GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n');
    expect(statusOf(await first)).toBe(200);
    const reading = readUntilClose(socket, 15_000);
    socket.write(`GET /${tag(60_000)} HTTP/1.1\r\nHost: localhost\r\nX Bad: 1\r\n\r\n`);
    const result = await reading;
    expect(result.closedByServer).toBe(true);
    expect(statusOf(result.text)).toBe(400);
  }, 30_000);

  it('keeps memory bounded with clients that never read their responses', async () => {
    const sockets: TLSSocket[] = [];
    for (let i = 0; i < 20; i++) {
      const socket = await openTls(MODES[i % 3]!);
      summary.floodConnections++;
      socket.on('error', () => undefined);
      socket.pause(); // never reads: the sidecar must stop reading the upstream instead of buffering
      socket.write(`GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n`.repeat(100));
      sockets.push(socket);
    }
    // Each would be 100 x 4 MiB; held for a few seconds while RSS is sampled.
    for (let t = 0; t < 30; t++) {
      await sleep(200);
      rss.sample();
    }
    expect(rss.peak).toBeLessThan(RSS_LIMIT_MIB);
    // One upstream connection per client connection at most: nothing fans out.
    expect(relay.open.size).toBeLessThanOrEqual(sockets.length + 10);
    for (const socket of sockets) socket.destroy();
    summary.floods++;
    await alive();
  }, 60_000);

  // Regression: once a response had started, no deadline applied; a client that stopped reading held its TLS
  // connection and the upstream connection behind it forever (a slow-read attack).
  it('cuts off a client that stops reading a response (nothing moved for the idle timeout)', async () => {
    const socket = await openTls('strict');
    summary.floodConnections++;
    socket.on('error', () => undefined);
    let received = 0;
    socket.on('data', (d: Buffer) => {
      received += d.length;
      socket.pause();
    });
    socket.write('GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n');
    const clientPort = socket.localPort!;
    await waitFor('the first bytes of the response', async () => received > 0, { timeoutMs: 10_000 });
    const deadline = Date.now() + TIMEOUTS.idle + SLACK_MS;
    while (Date.now() < deadline && sidecarHolds(sidecar.pid, sidecar.ports.strict, clientPort)) await sleep(250);
    const held = sidecarHolds(sidecar.pid, sidecar.ports.strict, clientPort);
    socket.destroy();
    expect({ heldAfterMs: TIMEOUTS.idle + SLACK_MS, held }).toEqual({
      heldAfterMs: TIMEOUTS.idle + SLACK_MS,
      held: false,
    });
  }, 60_000);

  it('served every legitimate request during the attacks, stayed up, and kept memory and logs bounded', async () => {
    await legit.stop();
    rss.sample();
    await alive();
    expect(legit.failures).toEqual([]);
    expect(legit.sent).toBeGreaterThan(300);
    expect(legit.ok).toBe(legit.sent);
    expect(rss.peak).toBeLessThan(RSS_LIMIT_MIB);
    expect(rss.samples).toBeGreaterThan(100);
    expect(upstreamViolations(mock.requests)).toEqual([]);
    expect([...relay.seen]).toEqual([]);
    // Refusals are rate-limited (a burst of 50, then 10 per second): a flood cannot fill a disk.
    const seconds = (Date.now() - sidecar.startedAt) / 1000;
    expect(sidecar.refusedLines).toBeLessThanOrEqual(50 + 10 * seconds + 10);
    expect(sidecar.logBytes).toBeLessThan(4 << 20);
  }, 60_000);

  describe('TLS scan with openssl s_client and hand-made ClientHellos', () => {
    let control: { port: number; close: () => void };
    let rsaSidecar: SidecarProcess;
    const sslv3Supported = async () =>
      (await run('openssl', ['s_client', '-help']).catch((e) => e)).stderr?.includes('-ssl3');

    beforeAll(async () => {
      // A permissive server (anything down to TLS 1.0 and SECLEVEL 0): the probes must succeed against it,
      // or a "refused" from the sidecar would prove nothing.
      const server = createTlsServer({
        key: pki.server.keyPem,
        cert: pki.server.certPem,
        minVersion: 'TLSv1',
        ciphers: 'ALL:COMPLEMENTOFALL:@SECLEVEL=0',
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      server.on('secureConnection', (s) => s.end());
      server.on('tlsClientError', () => undefined);
      control = { port: (server.address() as AddressInfo).port, close: () => server.close() };
      // The same sidecar with an RSA server key: the ECDHE-RSA and static-RSA suites only show up with one.
      const rsa = await issueServer({
        algorithm: 'RSA-2048',
        validityMs: 86_400_000,
        ca: pki.ca,
        dnsNames: ['localhost'],
        now: new Date(),
      });
      rsaSidecar = await startSidecarProcess(
        await tlsDir(pki, { 'tls.crt': rsa.certPem, 'tls.key': rsa.keyPem }),
        relay.port,
        ['standard'],
      );
    }, 60_000);

    afterAll(() => {
      control?.close();
      rsaSidecar?.child.kill('SIGKILL');
    });

    const listeners = () => [
      ...MODES.map((mode) => ({ name: mode, port: sidecar.ports[mode], mode })),
      { name: 'standard (RSA-2048 key)', port: rsaSidecar.ports.standard, mode: 'standard' as Mode },
    ];
    const certArgs = (mode: Mode) => (mode === 'standard' ? [] : ['-cert', files['c.pem']!, '-key', files['k.pem']!]);

    it('refuses SSLv3, TLS 1.0 and TLS 1.1 on every listener; TLS 1.2 and 1.3 work', async () => {
      // Positive controls: the local openssl can speak TLS 1.0/1.1 (at SECLEVEL 0), the raw probes are understood.
      const legacy = ['-tls1', '-tls1_1'];
      for (const flag of legacy) {
        const r = await sClient([
          '-connect',
          `127.0.0.1:${control.port}`,
          flag,
          '-cipher',
          'ALL:@SECLEVEL=0',
          '-brief',
        ]);
        expect({ flag, ok: r.ok }).toEqual({ flag, ok: true });
      }
      for (const version of [0x0301, 0x0302]) {
        expect((await probe(control.port, clientHello(version, [0xc009, 0xc00a, 0xc013, 0x002f]))).accepted).toBe(true);
      }
      const withSsl3 = await sslv3Supported();
      const problems: string[] = [];
      for (const { name, port, mode } of listeners()) {
        for (const flag of [...legacy, ...(withSsl3 ? ['-ssl3'] : [])]) {
          summary.legacyTried++;
          const r = await sClient([
            '-connect',
            `127.0.0.1:${port}`,
            flag,
            '-cipher',
            'ALL:@SECLEVEL=0',
            ...certArgs(mode),
            '-brief',
          ]);
          if (r.ok) problems.push(`${name}: openssl ${flag} accepted`);
          else summary.legacyRefused++;
        }
        // SSLv3 (which the local openssl cannot offer any more), TLS 1.0 and 1.1 as raw ClientHellos.
        for (const version of [0x0300, 0x0301, 0x0302]) {
          summary.legacyTried++;
          const result = await probe(
            port,
            clientHello(version, [...STRONG_SUITES, 0xc009, 0xc013, 0x002f, 0x000a, 0x0005]),
          );
          if (result.accepted) problems.push(`${name}: ClientHello 0x${version.toString(16)} accepted`);
          else summary.legacyRefused++;
        }
        for (const flag of ['-tls1_2', '-tls1_3']) {
          const r = await sClient([
            '-connect',
            `127.0.0.1:${port}`,
            flag,
            '-CAfile',
            files['ca.pem']!,
            ...certArgs(mode),
            '-brief',
          ]);
          if (!r.ok || !r.out.includes(`Protocol version: TLSv1.${flag.slice(-1)}`))
            problems.push(`${name}: ${flag} failed`);
        }
      }
      expect(problems).toEqual([]);
    }, 120_000);

    it('refuses every weak TLS 1.2 cipher family on every listener, offered by openssl and by raw ClientHellos', async () => {
      // The raw probe's positive controls: strong suites accepted by the sidecar, weak ones by the permissive server.
      expect((await probe(sidecar.ports.standard, clientHello(0x0303, STRONG_SUITES))).accepted).toBe(true);
      expect((await probe(control.port, clientHello(0x0303, [0xc009, 0xc00a]))).accepted).toBe(true);
      const problems: string[] = [];
      for (const weak of WEAK) {
        const offerable = await run('openssl', ['ciphers', '-tls1_2', `${weak.openssl}:@SECLEVEL=0`]).then(
          () => true,
          () => false,
        );
        if (!offerable) summary.opensslCannotOffer.push(weak.family);
      }
      for (const { name, port, mode } of listeners()) {
        for (const weak of WEAK) {
          summary.weakTried.push(`${weak.family}@${name}`);
          const raw = await probe(port, clientHello(0x0303, weak.suites));
          if (raw.accepted) {
            problems.push(`${name}: ${weak.family} accepted (suite 0x${raw.suite?.toString(16)})`);
            summary.weakAccepted.push(`${weak.family}@${name}`);
          }
          const r = await sClient([
            '-connect',
            `127.0.0.1:${port}`,
            '-tls1_2',
            '-cipher',
            `${weak.openssl}:@SECLEVEL=0`,
            ...certArgs(mode),
            '-brief',
          ]);
          if (r.ok) {
            problems.push(`${name}: openssl ${weak.family} accepted (${negotiated(r.out)})`);
            summary.weakAccepted.push(`${weak.family}@${name} (openssl ${negotiated(r.out)})`);
          }
        }
      }
      expect(problems).toEqual([]);
    }, 180_000);

    it('accepts only ECDHE + AEAD ciphers with TLS 1.2 (every cipher the local openssl knows, one at a time)', async () => {
      const all = (await run('openssl', ['ciphers', '-tls1_2', 'ALL:COMPLEMENTOFALL:@SECLEVEL=0'])).stdout
        .trim()
        .split(':')
        .filter((c) => !c.startsWith('TLS_'));
      expect(all.length).toBeGreaterThan(30);
      const problems: string[] = [];
      for (const { name, port, mode } of listeners()) {
        const accepted = (
          await pool(all, 4, async (cipher) => {
            const r = await sClient([
              '-connect',
              `127.0.0.1:${port}`,
              '-tls1_2',
              '-cipher',
              `${cipher}:@SECLEVEL=0`,
              ...certArgs(mode),
              '-brief',
            ]);
            return r.ok ? cipher : undefined;
          })
        ).filter((c): c is string => !!c);
        for (const cipher of accepted) {
          summary.accepted12.add(cipher);
          if (!STRONG_NAME.test(cipher)) problems.push(`${name}: ${cipher}`);
        }
        if (accepted.length === 0) problems.push(`${name}: no TLS 1.2 cipher accepted at all`);
      }
      expect(problems).toEqual([]);
    }, 240_000);
  });

  // Issue 19: what reaches the upstream is re-serialised from what the sidecar parsed, never the client's bytes.
  describe('forwards exactly what it understood (issue 19)', () => {
    /** Sends `request` (which asks to close) and returns the answer's status and the bytes the upstream got. */
    const forward = async (path: string, request: string) => {
      const result = await exchange('standard', request);
      return { status: statusOf(result.text), upstream: relay.recorded.get(path) ?? '' };
    };
    const headOf = (upstream: string) => upstream.slice(0, upstream.indexOf('\r\n\r\n') + 2);
    const linesNamed = (upstream: string, name: string) =>
      headOf(upstream)
        .split('\r\n')
        .filter((l) => l.toLowerCase().startsWith(`${name}:`));

    // Refused since the framing differential suite met http-garden's bare ",chunked" (nginx answers 501): the
    // sidecar never forwards what nginx refuses.
    it('1. refuses ",chunked", "chunked,", ", chunked , " and an extra empty line, and forwards nothing of them', async () => {
      const smuggled = 'GET /admin-19 HTTP/1.1\r\nHost: localhost\r\nX-Client-Verify: SUCCESS\r\n\r\n';
      const body = `${smuggled.length.toString(16)}\r\n${smuggled}\r\n0\r\n\r\n`;
      const variants = [
        ['Transfer-Encoding: ,chunked'],
        ['Transfer-Encoding: chunked,'],
        ['Transfer-Encoding: , chunked , '],
        ['Transfer-Encoding: chunked', 'Transfer-Encoding:'],
      ];
      for (const [i, lines] of variants.entries()) {
        const path = `/forwarded-te-${i}`;
        const { status, upstream } = await forward(
          path,
          `POST ${path} HTTP/1.1\r\nHost: localhost\r\n${lines.join('\r\n')}\r\nConnection: close\r\n\r\n${body}`,
        );
        expect({ lines, status, upstream }).toEqual({ lines, status: 400, upstream: '' });
      }
    }, 60_000);

    it('2. drops chunked trailers, identity and framing fields included', async () => {
      const path = '/forwarded-trailers';
      const { status, upstream } = await forward(
        path,
        `POST ${path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n` +
          '3\r\nabc\r\n0\r\nX-Client-Verify: FORGED-19\r\nX-Forwarded-Client-Cert: Hash=FORGED-19\r\n' +
          'Content-Length: 5\r\nTransfer-Encoding: chunked\r\nHost: FORGED-19\r\n\r\n',
      );
      expect(status).toBe(200);
      expect(upstream.slice(headOf(upstream).length + 2)).toBe('3\r\nabc\r\n0\r\n\r\n');
    }, 30_000);

    it('3. answers 505 to HTTP/1.2 and forwards nothing of it', async () => {
      const path = '/forwarded-version';
      const { status, upstream } = await forward(path, `GET ${path} HTTP/1.2\r\nHost: localhost\r\n\r\n`);
      expect({ status, upstream }).toEqual({ status: 505, upstream: '' });
    }, 30_000);

    it('4. refuses junk after a chunk size, and forwards sizes re-serialised without extensions', async () => {
      const junk = await forward(
        '/forwarded-size-junk',
        'POST /forwarded-size-junk HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5 6\r\nhello\r\n0\r\n\r\n',
      );
      expect(junk.status).toBe(400);
      expect(junk.upstream).not.toContain('5 6');
      const path = '/forwarded-size';
      const { status, upstream } = await forward(
        path,
        `POST ${path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n` +
          '005;ext="x"\r\nhello\r\n0;last\r\n\r\n',
      );
      expect(status).toBe(200);
      expect(upstream.slice(headOf(upstream).length + 2)).toBe('5\r\nhello\r\n0\r\n\r\n');
    }, 30_000);

    it('5. removes Connection, what it names, Keep-Alive, Proxy-Connection and TE (but trailers)', async () => {
      const path = '/forwarded-hop';
      const { status, upstream } = await forward(
        path,
        `POST ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\n` +
          'Proxy-Connection: keep-alive\r\nTE: trailers, deflate\r\nContent-Length: 2\r\nX-End: 1\r\n\r\nok',
      );
      expect(status).toBe(200);
      const head = headOf(upstream).toLowerCase();
      expect(head).not.toMatch(/x-hop|keep-alive|proxy-connection|deflate/);
      expect(linesNamed(upstream, 'connection')).toEqual(['connection: close']);
      expect(linesNamed(upstream, 'te')).toEqual(['te: trailers']);
      expect(linesNamed(upstream, 'x-end')).toEqual(['X-End: 1']);
      const named = await forward(
        '/forwarded-hop-cl',
        'POST /forwarded-hop-cl HTTP/1.1\r\nHost: localhost\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\nok',
      );
      expect(named).toEqual({ status: 400, upstream: '' });
    }, 30_000);

    it('6. forwards one Content-Length for equal duplicates, and refuses an invalid Host with 400', async () => {
      const path = '/forwarded-cl';
      const { status, upstream } = await forward(
        path,
        `POST ${path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok`,
      );
      expect(status).toBe(200);
      expect(linesNamed(upstream, 'content-length')).toEqual(['Content-Length: 2']);
      for (const [i, host] of ['a.test/evil', 'user@a.test', 'a b', ''].entries()) {
        const bad = `/forwarded-host-${i}`;
        expect({ host, ...(await forward(bad, `GET ${bad} HTTP/1.1\r\nHost: ${host}\r\n\r\n`)) }).toEqual({
          host,
          status: 400,
          upstream: '',
        });
      }
    }, 60_000);

    it('7. upgrades "websocket, h2c" as websocket, accepts leading zeros, and refuses a bare-LF head with 400 (not 408)', async () => {
      const socket = await openTls('standard');
      let text = '';
      socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
      const until = (pattern: RegExp) =>
        new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 10_000);
          const check = () => {
            if (!pattern.test(text) && !socket.destroyed) return;
            clearTimeout(timer);
            socket.off('data', check);
            resolve();
          };
          socket.on('data', check);
          socket.once('close', check);
        });
      const upgraded = until(/\r\n\r\n/);
      socket.write(
        'GET /forwarded-ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket, h2c\r\n\r\n',
      );
      await upgraded;
      const echoed = until(/echo:ping/);
      socket.write('ping');
      await echoed;
      socket.destroy();
      expect(statusOf(text)).toBe(101);
      expect(text).toContain('echo:ping');
      const ws = relay.recorded.get('/forwarded-ws') ?? '';
      expect(linesNamed(ws, 'upgrade')).toEqual(['upgrade: websocket']);

      const path = '/forwarded-zeros-ok';
      const ok = await forward(
        path,
        `POST ${path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n` +
          '0000000000005\r\nhello\r\n0\r\n\r\n',
      );
      expect(ok.status).toBe(200);
      const cl = await forward(
        '/forwarded-zeros-cl',
        'POST /forwarded-zeros-cl HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0000000000000005\r\nConnection: close\r\n\r\nhello',
      );
      expect(cl.status).toBe(200);
      expect(linesNamed(cl.upstream, 'content-length')).toEqual(['content-length: 5']);

      const bareLf = await exchange('standard', 'GET /forwarded-lf HTTP/1.1\nHost: localhost\n\n');
      expect(statusOf(bareLf.text)).toBe(400);
    }, 60_000);
  });

  describe('an upstream that drops a kept-alive connection under a request', () => {
    let flaky: NetServer;
    let flakySidecar: SidecarProcess;
    /** Requests the upstream received, by "METHOD /path". */
    const arrivals = new Map<string, number>();

    beforeAll(async () => {
      // Answers the first request on each connection (keeping it alive), then drops the connection under the
      // next one without a word: what an upstream restarting, or closing an idle connection, looks like.
      flaky = createNetServer((socket) => {
        let buf = '';
        let served = 0;
        socket.on('error', () => undefined);
        socket.on('data', (d: Buffer) => {
          buf += d.toString('latin1');
          for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
            const [method, path] = buf.slice(0, end).split(' ');
            buf = buf.slice(end + 4);
            const key = `${method} ${path}`;
            arrivals.set(key, (arrivals.get(key) ?? 0) + 1);
            if (served++ > 0) return void socket.destroy();
            socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
          }
        });
      });
      const port = await freePort();
      await new Promise<void>((resolve) => flaky.listen(port, '127.0.0.1', resolve));
      flakySidecar = await startSidecarProcess(await tlsDir(pki), port, ['standard']);
    }, 60_000);

    afterAll(() => {
      flakySidecar?.child.kill('SIGKILL');
      flaky?.close();
    });

    /** Two requests on one connection: the second meets the dropped upstream connection. */
    const secondOnReusedConnection = async (request: string) => {
      const socket = tlsConnect({
        host: '127.0.0.1',
        port: flakySidecar.ports.standard,
        ca: pki.ca.certPem,
        servername: 'localhost',
      });
      await new Promise((resolve) => socket.once('secureConnect', resolve));
      const first = new Promise<string>((resolve) => socket.once('data', (d: Buffer) => resolve(d.toString())));
      socket.write('GET /warm HTTP/1.1\r\nHost: localhost\r\n\r\n');
      expect(statusOf(await first)).toBe(200);
      const reading = readUntilClose(socket, 15_000);
      socket.write(request);
      return statusOf((await reading).text);
    };

    it('retries an idempotent request once on a fresh upstream connection', async () => {
      const status = await secondOnReusedConnection(
        'GET /idempotent HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n',
      );
      expect(status).toBe(200);
      expect(arrivals.get('GET /idempotent')).toBe(2);
    }, 30_000);

    // RFC 9110 9.2.2: only idempotent requests are retried automatically (nginx's proxy_next_upstream does not
    // retry POST/LOCK/PATCH either): the upstream may have acted before its connection dropped.
    it('does not run a non-idempotent request twice when the upstream drops the connection under it', async () => {
      const status = await secondOnReusedConnection(
        'POST /charge HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n',
      );
      expect({ arrivals: arrivals.get('POST /charge'), status }).toEqual({ arrivals: 1, status: 502 });
    }, 30_000);
  });
});
