/**
 * The sidecar side by side with nginx and HAProxy (Debian's), in one run, on this machine:
 *   - keep-alive requests/s through each proxy (ab -k -E, 1 KiB body, TLS 1.3, client certificate),
 *   - full mTLS handshakes/s (openssl s_time -new with a client certificate),
 *   - added latency p50/p99 at a fixed rate (bench/fixed-rate-client.ts: open loop, keep-alive) against
 *     the same client going straight to the mock,
 *   - CPU seconds per 1,000 requests and peak RSS of the proxy process(es),
 * with ECDSA P-256 and RSA-2048 certificates. One core each: the proxy is pinned to core 0 (one worker /
 * thread / process); the load tools and the mock upstream (an nginx returning 1 KiB) share core 1. Beside
 * them, a bare Node TLS byte relay (bench/node-tls-relay.ts) shows the floor of any Node sidecar. Then the
 * whole machine: two sidecar workers against nginx with two workers and HAProxy with two threads, loaded by
 * two ab processes. Median of MTLS_BENCH_RUNS (default 3) runs, the proxies taking turns within each run.
 * Writes its section of bench/RESULTS.md and bench/results/sidecar.json.
 * Needs nginx, haproxy, apache2-utils (ab), openssl, taskset: installed from Debian when missing (as root).
 * Run: npm run bench:sidecar
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { stripTypeScriptTypes } from 'node:module';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../operator/controlplane/local-control-plane.ts';
import { issueCA, issueClient, issueServer } from '../operator/pki/issue.ts';
import type { KeyAlgorithm } from '../operator/pki/x509.ts';
import { SIDECAR_NODE_OPTIONS } from '../sidecar/flags.ts';
import { writeSecretVolume } from '../sidecar/secret-volume.ts';
import { writeResultsSection } from './results-file.ts';

const execFileAsync = promisify(execFile);
const RUNS = Number(process.env.MTLS_BENCH_RUNS ?? 3);
const REQUESTS = Number(process.env.MTLS_BENCH_REQUESTS ?? 20_000);
const ROOT = new URL('..', import.meta.url).pathname;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const DAY = 86_400_000;
/** One core for the proxy, the other for the load tools and the mock. */
const PROXY_CPU = '0';
const LOAD_CPU = '1';
const BOTH_CPUS = '0,1';
/** The fixed rate for the latency figures: well under every proxy's one-core capacity. */
const LATENCY_RATE = Number(process.env.MTLS_BENCH_LATENCY_RATE ?? 2_000);
const LATENCY_SECONDS = 5;

interface Proxy {
  name: string;
  port: number;
  /** Processes whose CPU and memory count. */
  pids(): number[];
  stop(): Promise<void>;
}

function procTicks(pid: number): number {
  const stat = `/proc/${pid}/stat`;
  if (!existsSync(stat))
    throw new Error(`process ${pid} is gone: the proxy did not start (see its config and log in the bench folder)`);
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime + stime, in clock ticks (100/s)
}
function procHwmMiB(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmHWM:\s+(\d+)/)![1]) / 1024;
}
async function childPids(pid: number): Promise<number[]> {
  const { stdout } = await execFileAsync('pgrep', ['-P', String(pid)]).catch(() => ({ stdout: '' }));
  return stdout.split('\n').filter(Boolean).map(Number);
}

/** Starts a command on the given CPUs (a taskset list: "0", "1" or "0,1"). */
function startPinned(cpus: string, command: string, args: string[], env?: NodeJS.ProcessEnv): ChildProcess {
  return spawn('taskset', ['-c', cpus, command, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env });
}
/** Node processes run with the options the injector gives the sidecar container. */
const NODE_ENV = { ...process.env, NODE_OPTIONS: SIDECAR_NODE_OPTIONS };

async function materials(dir: string, algorithm: KeyAlgorithm) {
  const now = new Date();
  const ca = await issueCA({ endpoint: 'bench', namespace: 'bench', algorithm, validityMs: 30 * DAY, now });
  const server = await issueServer({
    ca,
    dnsNames: ['localhost'],
    ipAddresses: ['127.0.0.1'],
    algorithm,
    validityMs: 10 * DAY,
    now,
  });
  const client = await issueClient({
    ca,
    endpoint: 'bench',
    namespace: 'bench',
    client: 'bench',
    algorithm,
    validityMs: 10 * DAY,
    now,
  });
  const files = {
    ca: join(dir, 'ca.crt'),
    cert: join(dir, 'server.crt'),
    key: join(dir, 'server.key'),
    pem: join(dir, 'server.pem'),
    clientCert: join(dir, 'client.crt'),
    clientKey: join(dir, 'client.key'),
    clientPem: join(dir, 'client.pem'),
    tlsDir: join(dir, 'tls'),
  };
  writeFileSync(files.ca, ca.certPem);
  writeFileSync(files.cert, server.certPem);
  writeFileSync(files.key, server.keyPem);
  writeFileSync(files.pem, server.certPem + server.keyPem);
  writeFileSync(files.clientCert, client.certPem);
  writeFileSync(files.clientKey, client.keyPem);
  writeFileSync(files.clientPem, client.certPem + client.keyPem);
  await writeSecretVolume(files.tlsDir, { 'tls.crt': server.certPem, 'tls.key': server.keyPem, 'ca.crt': ca.certPem });
  return { files, ca, client };
}
type Materials = Awaited<ReturnType<typeof materials>>;

async function startMock(dir: string): Promise<{ port: number; stop: () => Promise<void> }> {
  const port = await freePort();
  const body = 'x'.repeat(1024);
  const conf = join(dir, 'mock.conf');
  writeFileSync(
    conf,
    `worker_processes 1; daemon off; pid ${dir}/mock.pid; error_log ${dir}/mock-error.log;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:${port}; keepalive_requests 1000000; location / { default_type text/plain; return 200 "${body}"; } } }
`,
  );
  const child = startPinned(LOAD_CPU, 'nginx', ['-c', conf, '-p', dir]);
  await waitListening(port);
  return { port, stop: async () => void child.kill('SIGTERM') };
}

type ProxyName = 'sidecar' | 'nginx' | 'haproxy' | 'node-relay';

async function startNginx(dir: string, m: Materials, upstream: number, workers: number, cpus: string): Promise<Proxy> {
  const port = await freePort();
  const conf = join(dir, `nginx-${port}.conf`);
  writeFileSync(
    conf,
    `worker_processes ${workers}; daemon off; pid ${dir}/nginx-${port}.pid; error_log ${dir}/nginx-error.log;
events { worker_connections 8192; }
http {
  access_log off;
  upstream mock { server 127.0.0.1:${upstream}; keepalive 128; }
  server {
    listen 127.0.0.1:${port} ssl;
    keepalive_requests 1000000;
    ssl_certificate ${m.files.cert}; ssl_certificate_key ${m.files.key};
    ssl_client_certificate ${m.files.ca}; ssl_verify_client on; ssl_protocols TLSv1.3;
    location / {
      proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Client-Verify $ssl_client_verify;
    }
  }
}
`,
  );
  const child = startPinned(cpus, 'nginx', ['-c', conf, '-p', dir]);
  await waitListening(port);
  return { name: 'nginx', port, pids: () => [child.pid!], stop: () => stopChild(child) };
}

async function startHaproxy(
  dir: string,
  m: Materials,
  upstream: number,
  threads: number,
  cpus: string,
): Promise<Proxy> {
  const port = await freePort();
  const conf = join(dir, `haproxy-${port}.cfg`);
  writeFileSync(
    conf,
    `global
  nbthread ${threads}
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s
frontend fe
  bind 127.0.0.1:${port} ssl crt ${m.files.pem} ca-file ${m.files.ca} verify required ssl-min-ver TLSv1.3
  http-request set-header X-Client-Verify SUCCESS
  default_backend be
backend be
  http-reuse always
  server mock 127.0.0.1:${upstream}
`,
  );
  const child = startPinned(cpus, 'haproxy', ['-f', conf, '-db']);
  await waitListening(port);
  return { name: 'haproxy', port, pids: () => [child.pid!], stop: () => stopChild(child) };
}

async function startSidecarProcess(m: Materials, upstream: number, workers: number, cpus: string): Promise<Proxy> {
  const port = await freePort();
  const admin = await freePort();
  const child = startPinned(
    cpus,
    join(ROOT, 'node_modules/.bin/node'),
    [
      join(ROOT, 'dist/operator/cli.js'),
      'sidecar',
      '--listen',
      `strict=${port}`,
      '--upstream',
      `127.0.0.1:${upstream}`,
      '--tls-dir',
      m.files.tlsDir,
      '--admin',
      `127.0.0.1:${admin}`,
      '--workers',
      String(workers),
    ],
    NODE_ENV,
  );
  await waitListening(admin);
  await waitListening(port);
  if (workers > 1) await sleep(1_000); // the forked workers bind after the first process
  return { name: 'sidecar', port, pids: () => [child.pid!], stop: () => stopChild(child) };
}

async function startNodeRelay(dir: string, m: Materials, upstream: number, cpus: string): Promise<Proxy> {
  const port = await freePort();
  // Run as plain JavaScript, as the sidecar is: Node's TypeScript stripping alone takes ~15 MiB.
  const script = join(dir, 'node-tls-relay.mjs');
  writeFileSync(script, stripTypeScriptTypes(readFileSync(join(ROOT, 'bench/node-tls-relay.ts'), 'utf8')));
  const child = startPinned(
    cpus,
    join(ROOT, 'node_modules/.bin/node'),
    [script, String(port), String(upstream), m.files.cert, m.files.key, m.files.ca],
    NODE_ENV,
  );
  await waitListening(port);
  return { name: 'node-relay', port, pids: () => [child.pid!], stop: () => stopChild(child) };
}

function startProxy(name: ProxyName, dir: string, m: Materials, upstream: number, workers: number, cpus: string) {
  switch (name) {
    case 'sidecar':
      return startSidecarProcess(m, upstream, workers, cpus);
    case 'nginx':
      return startNginx(dir, m, upstream, workers, cpus);
    case 'haproxy':
      return startHaproxy(dir, m, upstream, workers, cpus);
    case 'node-relay':
      return startNodeRelay(dir, m, upstream, cpus);
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(5_000)]);
  child.kill('SIGKILL');
}

/** Waits until something accepts TCP connections on the port (the mock, an admin port, a TLS listener). */
async function waitListening(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = netConnect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`nothing listens on ${port}`);
}

async function proxyPids(proxy: Proxy): Promise<number[]> {
  // taskset execs the real process, so the pid is the proxy's; nginx's and the sidecar's workers are children.
  const pids = proxy.pids();
  return [...pids, ...(await Promise.all(pids.map(childPids))).flat()];
}

/** Keep-alive requests/s from `parallel` ab processes at once (their rates summed), with the proxy's CPU. */
async function keepAliveRps(port: number, m: Materials, pids: number[], cpus: string, parallel: number) {
  const ticks = pids.reduce((sum, pid) => sum + procTicks(pid), 0);
  const each = Math.round(REQUESTS / parallel);
  const outputs = await Promise.all(
    Array.from({ length: parallel }, () =>
      execFileAsync(
        'taskset',
        [
          '-c',
          cpus,
          'ab',
          '-q',
          '-k',
          '-n',
          String(each),
          '-c',
          '32',
          '-E',
          m.files.clientPem,
          `https://127.0.0.1:${port}/`,
        ],
        { maxBuffer: 16 << 20 },
      ),
    ),
  );
  const cpuSeconds = (pids.reduce((sum, pid) => sum + procTicks(pid), 0) - ticks) / 100;
  const rps = outputs.reduce((sum, { stdout }) => sum + Number(stdout.match(/Requests per second:\s+([\d.]+)/)![1]), 0);
  const failed = outputs.reduce((sum, { stdout }) => sum + Number(stdout.match(/Failed requests:\s+(\d+)/)![1]), 0);
  return { rps, failed, cpuSecondsPer1000: (cpuSeconds / (each * parallel)) * 1000 };
}

/** Full handshakes/s (a new TLS 1.3 session with the client certificate for every connection). */
async function handshakesPerSecond(port: number, m: Materials, cpus: string, parallel: number): Promise<number> {
  const rates = await Promise.all(
    Array.from({ length: parallel }, async () => {
      const { stdout } = await execFileAsync('taskset', [
        '-c',
        cpus,
        'openssl',
        's_time',
        '-connect',
        `127.0.0.1:${port}`,
        '-new',
        '-time',
        '4',
        '-cert',
        m.files.clientCert,
        '-key',
        m.files.clientKey,
        '-CAfile',
        m.files.ca,
      ]);
      const match = stdout.match(/(\d+) connections in ([\d.]+) real seconds/);
      return match ? Number(match[1]) / Number(match[2]) : 0;
    }),
  );
  return rates.reduce((a, b) => a + b, 0);
}

/** Latency at LATENCY_RATE requests/s over 16 keep-alive connections, in microseconds. */
async function latencyUs(
  port: number,
  m: Materials | undefined,
): Promise<{ p50: number; p99: number; errors: number }> {
  const args = [
    join(ROOT, 'bench/fixed-rate-client.ts'),
    String(port),
    String(LATENCY_RATE),
    String(LATENCY_SECONDS),
    '16',
  ];
  if (m) args.push(m.files.ca, m.files.clientCert, m.files.clientKey);
  const { stdout } = await execFileAsync('taskset', ['-c', LOAD_CPU, join(ROOT, 'node_modules/.bin/node'), ...args]);
  return JSON.parse(stdout) as { p50: number; p99: number; errors: number };
}

const peakRssMiB = async (proxy: Proxy) => (await proxyPids(proxy)).reduce((sum, pid) => sum + procHwmMiB(pid), 0);

/** The peers and load tools come from Debian; a fresh machine gets them installed (as root) or told how. */
async function ensureTools(): Promise<void> {
  const packageOf: Record<string, string> = {
    nginx: 'nginx-light',
    haproxy: 'haproxy',
    ab: 'apache2-utils',
    openssl: 'openssl',
    taskset: 'util-linux',
  };
  const missing: string[] = [];
  for (const [tool, pkg] of Object.entries(packageOf)) {
    const found = await execFileAsync('sh', ['-c', `command -v ${tool}`]).then(
      () => true,
      () => false,
    );
    if (!found) missing.push(pkg);
  }
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) throw new Error(`bench:sidecar needs: sudo apt-get install -y ${missing.join(' ')}`);
  process.stderr.write(`[bench] installing ${missing.join(' ')} from Debian\n`);
  await execFileAsync('apt-get', ['update', '-qq']);
  await execFileAsync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
}

await ensureTools();
// The sidecar runs compiled, as in the image.
await execFileAsync(process.execPath, [
  join(ROOT, 'node_modules/typescript/bin/tsc'),
  '-p',
  join(ROOT, 'tsconfig.build.json'),
]);
type Figures = Record<string, number>;
const oneCore: Record<string, Record<ProxyName, Figures>> = {};
const twoCores: Record<string, Figures> = {};
const dir = mkdtempSync(join(tmpdir(), 'mtls-bench-'));
const mock = await startMock(dir);
const directRuns: { p50: number; p99: number }[] = [];
const medians = (runs: Figures[]): Figures =>
  Object.fromEntries(Object.keys(runs[0]!).map((k) => [k, median(runs.map((r) => r[k]!))]));
try {
  for (const algorithm of ['ECDSA-P256', 'RSA-2048'] as KeyAlgorithm[]) {
    const m = await materials(mkdtempSync(join(dir, `${algorithm}-`)), algorithm);
    const runs: Record<string, Figures[]> = {};
    for (let run = 0; run < RUNS; run++) {
      directRuns.push(await latencyUs(mock.port, undefined));
      for (const name of ['sidecar', 'nginx', 'haproxy', 'node-relay'] as ProxyName[]) {
        const proxy = await startProxy(name, dir, m, mock.port, 1, PROXY_CPU);
        try {
          const pids = await proxyPids(proxy);
          // Latency first, in a steady state; then saturation; then the handshake flood, whose aftermath
          // (thousands of TLS objects to collect) would otherwise colour the latency figures.
          const lat = await latencyUs(proxy.port, m);
          const ka = await keepAliveRps(proxy.port, m, pids, LOAD_CPU, 1);
          const rssKeepAlive = await peakRssMiB(proxy);
          const hs = await handshakesPerSecond(proxy.port, m, LOAD_CPU, 1);
          const figures: Figures = {
            rps: ka.rps,
            failed: ka.failed + lat.errors,
            cpuSecondsPer1000: ka.cpuSecondsPer1000,
            handshakesPerSecond: hs,
            p50Us: lat.p50,
            p99Us: lat.p99,
            rssMiB: rssKeepAlive,
            rssAfterHandshakesMiB: await peakRssMiB(proxy),
          };
          (runs[name] ??= []).push(figures);
          process.stderr.write(`[bench] ${algorithm} ${name} run ${run + 1}: ${JSON.stringify(figures)}\n`);
        } finally {
          await proxy.stop();
          await sleep(300);
        }
      }
    }
    oneCore[algorithm] = Object.fromEntries(Object.entries(runs).map(([name, r]) => [name, medians(r)])) as Record<
      ProxyName,
      Figures
    >;
  }

  // The whole machine: two workers each, two load generators; the mock keeps running where it is.
  const m = await materials(mkdtempSync(join(dir, 'two-')), 'ECDSA-P256');
  const runs: Record<string, Figures[]> = {};
  for (let run = 0; run < RUNS; run++) {
    for (const name of ['sidecar', 'nginx', 'haproxy'] as ProxyName[]) {
      const proxy = await startProxy(name, dir, m, mock.port, 2, BOTH_CPUS);
      try {
        const pids = await proxyPids(proxy);
        const ka = await keepAliveRps(proxy.port, m, pids, BOTH_CPUS, 2);
        const hs = await handshakesPerSecond(proxy.port, m, BOTH_CPUS, 2);
        const figures: Figures = {
          rps: ka.rps,
          failed: ka.failed,
          cpuSecondsPer1000: ka.cpuSecondsPer1000,
          handshakesPerSecond: hs,
          rssMiB: await peakRssMiB(proxy),
        };
        (runs[name] ??= []).push(figures);
        process.stderr.write(`[bench] two workers ${name} run ${run + 1}: ${JSON.stringify(figures)}\n`);
      } finally {
        await proxy.stop();
        await sleep(300);
      }
    }
  }
  for (const [name, r] of Object.entries(runs)) twoCores[name] = medians(r);
} finally {
  await mock.stop();
}

const direct = { p50: median(directRuns.map((r) => r.p50)), p99: median(directRuns.map((r) => r.p99)) };
const fmt = (n: number | undefined, digits = 2) => (n !== undefined && Number.isFinite(n) ? n.toFixed(digits) : 'n/a');
const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b ? fmt(a / b) : 'n/a');
const version = async (cmd: string, args: string[]) => {
  const { stdout, stderr } = await execFileAsync(cmd, args);
  return (stdout || stderr).split('\n')[0]!.trim();
};
const lines: string[] = [
  '## Sidecar vs nginx and HAProxy (`npm run bench:sidecar`)',
  '',
  `Produced by \`npm run bench:sidecar\` on ${new Date().toISOString().slice(0, 10)}: ${cpus().length} cores (${cpus()[0]?.model.trim()}), Node ${process.version},`,
  `${await version('nginx', ['-v'])}, ${await version('haproxy', ['-v'])}, ${await version('openssl', ['version'])}.`,
  `TLS 1.3, client certificate required, 1 KiB responses from an nginx mock. Median of ${RUNS} runs; the proxies take turns within each run.`,
  '',
  `### One core each`,
  '',
  `Each proxy pinned to core 0 (one worker / thread / process; the sidecar compiled, as in the image, with the injected`,
  `NODE_OPTIONS "${SIDECAR_NODE_OPTIONS}", as is the node relay); ab, openssl s_time, the fixed-rate client and the mock on core 1.`,
  `In each run: latency, then keep-alive throughput (then RSS), then handshakes (then RSS again).`,
  `Keep-alive: ${REQUESTS} requests at concurrency 32. Latency: ${LATENCY_RATE} requests/s for`,
  `${LATENCY_SECONDS} s over 16 keep-alive connections, open loop; "added" subtracts the same client going straight to the mock (plain`,
  `HTTP: p50 ${fmt(direct.p50, 0)} µs, p99 ${fmt(direct.p99, 0)} µs). "node relay" is bench/node-tls-relay.ts: Node's TLS and sockets`,
  `relaying bytes with no HTTP, headers, metrics or logs — the floor for any Node.js sidecar.`,
  '',
];
const added = (f: Figures, key: 'p50Us' | 'p99Us') => f[key]! - (key === 'p50Us' ? direct.p50 : direct.p99);
for (const [algorithm, peers] of Object.entries(oneCore)) {
  const { sidecar: s, nginx: n, haproxy: h, 'node-relay': r } = peers;
  lines.push(
    `#### ${algorithm}`,
    '',
    '| figure | sidecar | nginx | haproxy | node relay | sidecar/nginx | sidecar/haproxy | target (vs nginx) |',
    '|---|---|---|---|---|---|---|---|',
  );
  const row = (label: string, get: (f: Figures) => number, target: string, digits = 2) =>
    lines.push(
      `| ${label} | ${fmt(get(s), digits)} | ${fmt(get(n), digits)} | ${fmt(get(h), digits)} | ${fmt(get(r), digits)} | ${ratio(get(s), get(n))} | ${ratio(get(s), get(h))} | ${target} |`,
    );
  row('keep-alive requests/s', (f) => f.rps!, `>= 0.80: ${s.rps! / n.rps! >= 0.8 ? 'met' : 'not met'}`, 0);
  row(
    'full mTLS handshakes/s',
    (f) => f.handshakesPerSecond!,
    `>= 0.90: ${s.handshakesPerSecond! / n.handshakesPerSecond! >= 0.9 ? 'met' : 'not met'}`,
    0,
  );
  row('added latency p50 (µs)', (f) => added(f, 'p50Us'), '', 0);
  row(
    'added latency p99 (µs)',
    (f) => added(f, 'p99Us'),
    `<= 1.50: ${added(s, 'p99Us') / added(n, 'p99Us') <= 1.5 ? 'met' : 'not met'}`,
    0,
  );
  row('CPU s per 1,000 requests', (f) => f.cpuSecondsPer1000!, '', 3);
  row(
    'peak RSS under keep-alive load (MiB)',
    (f) => f.rssMiB!,
    `sidecar <= 80 MiB: ${s.rssMiB! <= 80 ? 'met' : 'not met'}`,
    1,
  );
  row('peak RSS after the handshake flood too (MiB)', (f) => f.rssAfterHandshakesMiB!, '', 1);
  row('failed requests', (f) => f.failed!, 'none', 0);
  lines.push('');
}
lines.push(
  '### Two workers each (the whole machine)',
  '',
  'ECDSA-P256. `--workers 2` (two processes sharing the port), nginx `worker_processes 2`, HAProxy `nbthread 2`; nothing pinned;',
  `two ab processes at once (each ${Math.round(REQUESTS / 2)} requests, concurrency 32) and two openssl s_time, sharing the cores with the proxy and the mock.`,
  '',
  '| figure | sidecar x2 | nginx x2 | haproxy x2 | sidecar/nginx | sidecar/haproxy |',
  '|---|---|---|---|---|---|',
);
for (const [key, label, digits] of [
  ['rps', 'keep-alive requests/s', 0],
  ['handshakesPerSecond', 'full mTLS handshakes/s', 0],
  ['cpuSecondsPer1000', 'CPU s per 1,000 requests', 3],
  ['rssMiB', 'peak RSS, all processes (MiB)', 1],
  ['failed', 'failed requests', 0],
] as const) {
  const [s, n, h] = [twoCores.sidecar?.[key], twoCores.nginx?.[key], twoCores.haproxy?.[key]];
  lines.push(
    `| ${label} | ${fmt(s, digits)} | ${fmt(n, digits)} | ${fmt(h, digits)} | ${ratio(s, n)} | ${ratio(s, h)} |`,
  );
}
mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
writeFileSync(join(ROOT, 'bench/results/sidecar.json'), JSON.stringify({ direct, oneCore, twoCores }, null, 2));
writeResultsSection('sidecar', lines.join('\n'));
console.log(lines.join('\n'));
