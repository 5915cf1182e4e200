import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { freePort } from '../../local/controlplane/local-control-plane.ts';
import { waitFor } from '../support/cluster.ts';
import { makePki, type Pki, tlsDir } from '../support/tls-fixtures.ts';
import { CLI, reportSummary, sleep } from './support.ts';

/**
 * The sidecar and nginx (Debian's, as a reverse proxy with the same certificates) side by side on request-framing
 * cases from public corpora (test/reliability/fixtures/framing-corpus.json: llhttp's request tests, defparam/smuggler's
 * Transfer-Encoding gadgets, http-garden's bug payloads and fuzzer seeds; each source cited there with its commit). Each proxy forwards to its own recording
 * upstream: a Node HTTP server, whose parser is llhttp in its strict mode.
 *
 * For every case: the sidecar's verdict is the same as nginx's or stricter (it never forwards a request nginx
 * refuses), and when both forward, the requests the upstream parsed from the sidecar's bytes have the same method,
 * target, end-to-end headers, body and trailers as those it parsed from nginx's (or are a prefix of them: refusing a
 * pipelined request nginx took is stricter). The upstream's parser must never reject what the sidecar sent.
 */

interface Corpus {
  sources: Record<string, { repository: string; path: string; commit: string }>;
  cases: { source: string; name: string; request: string }[];
  smugglerGadgets: {
    source: string;
    fixed: Record<string, string>;
    perByte: Record<string, string>;
    bytes: number[];
    userAgent: string;
    contentType: string;
  };
  /** http-garden's payloads as written in its sources. */
  httpGarden: { source: string; name: string; payload: string }[];
}

const corpus = JSON.parse(readFileSync(new URL('./fixtures/framing-corpus.json', import.meta.url), 'utf8')) as Corpus;

interface Case {
  source: string;
  name: string;
  bytes: Buffer;
}

/** The corpus cases, the smuggler gadgets expanded as smuggler's render_template writes them. */
function cases(): Case[] {
  const out: Case[] = corpus.cases.map((c) => ({ ...c, bytes: Buffer.from(c.request, 'latin1') }));
  const g = corpus.smugglerGadgets;
  const gadgets: [string, string][] = Object.entries(g.fixed);
  for (const [name, template] of Object.entries(g.perByte))
    for (const b of g.bytes)
      gadgets.push([`${name}-${b.toString(16).padStart(2, '0')}`, template.replace('%c', String.fromCharCode(b))]);
  // A body that is complete under either reading: 13 bytes by Content-Length, "abc" when dechunked.
  const body = '3\r\nabc\r\n0\r\n\r\n';
  for (const [name, gadget] of gadgets) {
    const request =
      `POST /smuggler?cb=${name} HTTP/1.1\r\n${gadget}\r\nHost: localhost\r\nUser-Agent: ${g.userAgent}\r\n` +
      `Content-type: ${g.contentType}\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    out.push({ source: g.source, name, bytes: Buffer.from(request, 'latin1') });
  }
  for (const c of corpus.httpGarden) out.push({ ...c, bytes: Buffer.from(withHost(c.payload), 'latin1') });
  return out;
}

/**
 * An HTTP/1.1 request with no Host line gets 'Host: localhost' as its last header line (both proxies would refuse
 * it for that alone, and the case is about something else); anything else is left as it is.
 */
function withHost(payload: string): string {
  const blank = payload.indexOf('\r\n\r\n');
  if (blank < 0 || !/^[^\r\n]* HTTP\/1\.1\r\n/.test(payload)) return payload;
  if (/\r\nhost[ \t]*:/i.test(payload.slice(0, blank + 2))) return payload;
  return `${payload.slice(0, blank + 2)}Host: localhost\r\n${payload.slice(blank + 2)}`;
}

// ---- recording upstreams ---------------------------------------------------------------------------------

interface Received {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  trailers: Record<string, string | undefined>;
  body: string;
}

/** Headers a proxy removes, adds or re-frames by design: not compared. */
const NOT_COMPARED = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'upgrade',
  'content-length',
  'transfer-encoding',
  'x-client-verify',
  'x-forwarded-client-cert',
  'x-forwarded-proto',
  'x-forwarded-for',
]);

/** What must match between the two proxies' forwarded requests. */
const essence = (r: Received) =>
  JSON.stringify({
    method: r.method,
    url: r.url,
    headers: Object.fromEntries(
      Object.entries(r.headers)
        .filter(([k]) => !NOT_COMPARED.has(k))
        .sort(([a], [b]) => a.localeCompare(b)),
    ),
    trailers: r.trailers,
    body: r.body,
  });

class Upstream {
  readonly received: Received[] = [];
  /** What the upstream's (strict llhttp) parser refused. */
  readonly parseErrors: string[] = [];
  readonly server: Server;
  port = 0;
  constructor() {
    // Host is not required: nginx drops an empty $http_host when it turns an HTTP/1.0 request into 1.1.
    this.server = createServer({ requireHostHeader: false }, (req, res) => {
      let body = '';
      req.setEncoding('latin1');
      req.on('data', (d: string) => (body += d));
      req.on('end', () => {
        this.received.push({ method: req.method!, url: req.url!, headers: req.headers, trailers: req.trailers, body });
        res.end('ok');
      });
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      // A connection closed inside a request (the proxy gave up on an incomplete one) is no parse error.
      if (err.code !== 'HPE_INVALID_EOF_STATE' && err.code !== 'ECONNRESET')
        this.parseErrors.push(err.code ?? err.message);
      socket.destroy();
    });
  }
  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }
  reset(): void {
    this.received.length = 0;
    this.parseErrors.length = 0;
  }
}

// ---- the two proxies -------------------------------------------------------------------------------------

async function startSidecar(pki: Pki, upstream: number): Promise<{ child: ChildProcess; port: number }> {
  const port = await freePort();
  const admin = await freePort();
  const child = spawn(
    process.execPath,
    [
      ...[CLI, 'sidecar', '--listen', `standard=${port}`, '--upstream', `127.0.0.1:${upstream}`],
      ...['--tls-dir', await tlsDir(pki), '--admin', `127.0.0.1:${admin}`],
      ...['--headers-timeout', '2000', '--request-timeout', '3000', '--idle-timeout', '3000'],
    ],
    { stdio: 'ignore' },
  );
  await waitFor('the sidecar to be ready', async () => (await fetch(`http://127.0.0.1:${admin}/readyz`)).ok, {
    timeoutMs: 30_000,
  });
  return { child, port };
}

async function startNginx(pki: Pki, upstream: number): Promise<{ child: ChildProcess; port: number; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'framing-nginx-'));
  const port = await freePort();
  writeFileSync(join(dir, 'server.pem'), pki.server.certPem);
  writeFileSync(join(dir, 'server.key'), pki.server.keyPem);
  writeFileSync(join(dir, 'ca.pem'), pki.ca.certPem);
  // A reverse proxy as it is usually configured: Host passed on, keep-alive to the upstream, client
  // certificates verified when offered; timeouts short so that an incomplete request ends quickly.
  writeFileSync(
    join(dir, 'nginx.conf'),
    `worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_header_timeout 3s; client_body_timeout 3s; keepalive_timeout 3s;
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${dir}/server.pem; ssl_certificate_key ${dir}/server.key;
    ssl_client_certificate ${dir}/ca.pem; ssl_verify_client optional;
    location / {
      proxy_pass http://127.0.0.1:${upstream}; proxy_http_version 1.1;
      proxy_set_header Host $http_host; proxy_set_header Connection "";
    }
  }
}
`,
  );
  const child = spawn('/usr/sbin/nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore' });
  await waitFor(
    'nginx to listen',
    () =>
      new Promise<boolean>((resolve) => {
        const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(false));
      }),
    { timeoutMs: 15_000 },
  );
  return { child, port, dir };
}

/**
 * Sends `bytes` on a fresh TLS connection and reads until the server closes it, it has been quiet for a while
 * after answering, or 3.5 s pass (a request neither proxy considers complete). Returns the first status, 0 if none.
 */
function send(pki: Pki, port: number, bytes: Buffer): Promise<number> {
  return new Promise((resolve) => {
    let text = '';
    let quiet: NodeJS.Timeout | undefined;
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      ca: pki.ca.certPem,
      servername: 'localhost',
      cert: pki.client.certPem,
      key: pki.client.keyPem,
    });
    const finish = () => {
      clearTimeout(cap);
      clearTimeout(quiet);
      socket.destroy();
      resolve(Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0));
    };
    const cap = setTimeout(finish, 3_500);
    socket.once('secureConnect', () => socket.write(bytes));
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      clearTimeout(quiet);
      quiet = setTimeout(finish, 400);
    });
    socket.on('error', () => undefined);
    socket.on('close', finish);
  });
}

/** "nginx/1.22.1", as `nginx -v` prints it. */
const nginxVersion = () =>
  /nginx\/[\d.]+/.exec(spawnSync('/usr/sbin/nginx', ['-v'], { encoding: 'utf8' }).stderr)?.[0] ?? 'nginx';

// ---- the comparison --------------------------------------------------------------------------------------

type Outcome = 'same' | 'both refused' | 'sidecar stricter' | 'violation';

/** The verdict of one case from what each upstream received (a pure decision). */
function compare(
  sidecar: Pick<Upstream, 'received' | 'parseErrors'>,
  nginx: Pick<Upstream, 'received' | 'parseErrors'>,
): { outcome: Outcome; why?: string } {
  if (sidecar.parseErrors.length)
    return { outcome: 'violation', why: `the upstream's parser refused what the sidecar sent: ${sidecar.parseErrors}` };
  // nginx forwarding bytes the upstream could not parse counts as nginx forwarding.
  const nginxForwarded = nginx.received.length > 0 || nginx.parseErrors.length > 0;
  if (sidecar.received.length === 0) return { outcome: nginxForwarded ? 'sidecar stricter' : 'both refused' };
  if (!nginxForwarded) return { outcome: 'violation', why: 'the sidecar forwarded a request nginx refused' };
  return sameRequests(sidecar.received, nginx.received);
}

/** The sidecar's forwarded requests are nginx's, or a prefix of them. */
function sameRequests(sidecar: readonly Received[], nginx: readonly Received[]): { outcome: Outcome; why?: string } {
  for (let i = 0; i < sidecar.length; i++) {
    const ours = essence(sidecar[i]!);
    const theirs = nginx[i] ? essence(nginx[i]!) : 'nothing';
    if (ours !== theirs) return { outcome: 'violation', why: `request ${i + 1}: sidecar ${ours} / nginx ${theirs}` };
  }
  return { outcome: sidecar.length === nginx.length ? 'same' : 'sidecar stricter' };
}

describe('reliability: framing, the sidecar against nginx on public corpora', () => {
  let pki: Pki;
  const upstreams = { sidecar: new Upstream(), nginx: new Upstream() };
  let sidecar: Awaited<ReturnType<typeof startSidecar>>;
  let nginx: Awaited<ReturnType<typeof startNginx>>;

  beforeAll(async () => {
    pki = await makePki();
    await upstreams.sidecar.listen();
    await upstreams.nginx.listen();
    sidecar = await startSidecar(pki, upstreams.sidecar.port);
    nginx = await startNginx(pki, upstreams.nginx.port);
  }, 60_000);

  afterAll(async () => {
    sidecar?.child.kill('SIGKILL');
    nginx?.child.kill('SIGTERM');
    if (nginx) nginx.child.once('exit', () => rmSync(nginx.dir, { recursive: true, force: true }));
    for (const u of Object.values(upstreams)) {
      u.server.closeAllConnections();
      u.server.close();
    }
    await sleep(100);
  });

  it('never forwards what nginx refuses, and forwards what both take as the same request', async () => {
    const all = cases();
    const counts: Record<Outcome, number> = { same: 0, 'both refused': 0, 'sidecar stricter': 0, violation: 0 };
    const bySource: Record<string, Record<Outcome, number>> = {};
    const problems: string[] = [];
    const stricter: string[] = [];
    for (const c of all) {
      upstreams.sidecar.reset();
      upstreams.nginx.reset();
      const [sidecarStatus, nginxStatus] = await Promise.all([
        send(pki, sidecar.port, c.bytes),
        send(pki, nginx.port, c.bytes),
      ]);
      await sleep(50); // what an upstream is still parsing
      const { outcome, why } = compare(upstreams.sidecar, upstreams.nginx);
      counts[outcome]++;
      const perSource = (bySource[c.source] ??= { same: 0, 'both refused': 0, 'sidecar stricter': 0, violation: 0 });
      perSource[outcome]++;
      const label = `${c.source} "${c.name}" (sidecar ${sidecarStatus || 'no answer'}, nginx ${nginxStatus || 'no answer'})`;
      if (outcome === 'violation') problems.push(`${label}: ${why}`);
      if (outcome === 'sidecar stricter') stricter.push(label);
    }
    const sources = Object.entries(corpus.sources)
      .map(([key, s]) => {
        const n = bySource[key] ?? { same: 0, 'both refused': 0, 'sidecar stricter': 0, violation: 0 };
        const total = Object.values(n).reduce((a, b) => a + b, 0);
        return (
          `${key} ${total} [same ${n.same}, both refused ${n['both refused']}, stricter ${n['sidecar stricter']}, ` +
          `looser ${n.violation}] (${s.repository} ${s.path} @ ${s.commit.slice(0, 12)})`
        );
      })
      .join(', ');
    reportSummary(
      `framing (sidecar vs ${nginxVersion()}): cases ${all.length}; ` +
        `same request forwarded ${counts.same}, both refused ${counts['both refused']}, sidecar stricter ` +
        `${counts['sidecar stricter']}, looser or different ${counts.violation}; sources: ${sources}`,
    );
    if (stricter.length) process.stdout.write(`framing: the sidecar is stricter on:\n  ${stricter.join('\n  ')}\n`);
    expect(problems).toEqual([]);
    // A differential run in which nothing was forwarded would prove nothing.
    expect(counts.same).toBeGreaterThan(10);
  }, 900_000);
});
