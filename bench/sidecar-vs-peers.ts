/**
 * The sidecar side by side with nginx and HAProxy (Debian's), in one run, on this machine:
 *   - keep-alive requests/s through each proxy (ab -k -E, 1 KiB body, TLS 1.3, client certificate),
 *   - full mTLS handshakes/s (openssl s_time -new with a client certificate),
 *   - added latency p50/p99 (sequential keep-alive requests through the proxy vs straight to the mock),
 *   - CPU seconds per 1,000 requests and peak RSS of the proxy process(es),
 * with ECDSA P-256 and RSA-2048 certificates. Each proxy is pinned to core 0 (one worker / thread /
 * process); the load tools and the mock upstream (an nginx returning 1 KiB) share core 1.
 * Median of MTLS_BENCH_RUNS (default 3) runs. Writes bench/RESULTS.md and bench/results/sidecar.json.
 * Needs: nginx, haproxy, apache2-utils (ab), openssl, taskset. Run: npm run bench:sidecar
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import { request as httpRequest, Agent as HttpAgent } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../operator/controlplane/local-control-plane.ts';
import { issueCA, issueClient, issueServer } from '../operator/pki/issue.ts';
import type { KeyAlgorithm } from '../operator/pki/x509.ts';
import { writeSecretVolume } from '../sidecar/secret-volume.ts';
import { writeResultsSection } from './results-file.ts';

const execFileAsync = promisify(execFile);
const RUNS = Number(process.env.MTLS_BENCH_RUNS ?? 3);
const REQUESTS = Number(process.env.MTLS_BENCH_REQUESTS ?? 20_000);
const ROOT = new URL('..', import.meta.url).pathname;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const DAY = 86_400_000;

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

function startPinned(core: number, command: string, args: string[]): ChildProcess {
  return spawn('taskset', ['-c', String(core), command, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

async function waitPort(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const req = httpRequest({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 500 }, (res) => {
        res.resume();
        resolve(true);
      });
      req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code !== 'ECONNREFUSED'));
      req.end();
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`nothing listens on ${port}`);
}

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
  const child = startPinned(1, 'nginx', ['-c', conf, '-p', dir]);
  await waitPort(port);
  return { port, stop: async () => void child.kill('SIGTERM') };
}

async function startNginx(dir: string, m: Materials, upstream: number): Promise<Proxy> {
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/nginx-error.log;
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
  const child = startPinned(0, 'nginx', ['-c', conf, '-p', dir]);
  await sleep(500);
  return { name: 'nginx', port, pids: () => [child.pid!], stop: async () => void child.kill('SIGTERM') };
}

async function startHaproxy(dir: string, m: Materials, upstream: number): Promise<Proxy> {
  const port = await freePort();
  const conf = join(dir, 'haproxy.cfg');
  writeFileSync(
    conf,
    `global
  nbthread 1
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
  const child = startPinned(0, 'haproxy', ['-f', conf, '-db']);
  await sleep(500);
  return { name: 'haproxy', port, pids: () => [child.pid!], stop: async () => void child.kill('SIGTERM') };
}

async function startSidecarProcess(m: Materials, upstream: number): Promise<Proxy> {
  const port = await freePort();
  const admin = await freePort();
  const child = startPinned(0, join(ROOT, 'node_modules/.bin/node'), [
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
  ]);
  await waitPort(admin);
  return { name: 'sidecar', port, pids: () => [child.pid!], stop: async () => void child.kill('SIGTERM') };
}

async function proxyPids(proxy: Proxy): Promise<number[]> {
  // taskset execs the real process, so the pid is the proxy's; nginx's worker is its child.
  const pids = proxy.pids();
  return [...pids, ...(await Promise.all(pids.map(childPids))).flat()];
}

async function keepAliveRps(port: number, m: Materials, pids: number[]) {
  const ticks = pids.reduce((sum, pid) => sum + procTicks(pid), 0);
  const { stdout } = await execFileAsync(
    'taskset',
    [
      '-c',
      '1',
      'ab',
      '-q',
      '-k',
      '-n',
      String(REQUESTS),
      '-c',
      '32',
      '-E',
      m.files.clientPem,
      `https://127.0.0.1:${port}/`,
    ],
    { maxBuffer: 16 << 20 },
  );
  const rps = Number(stdout.match(/Requests per second:\s+([\d.]+)/)![1]);
  const failed = Number(stdout.match(/Failed requests:\s+(\d+)/)![1]);
  const cpuSeconds = (pids.reduce((sum, pid) => sum + procTicks(pid), 0) - ticks) / 100;
  return { rps, failed, cpuSecondsPer1000: (cpuSeconds / REQUESTS) * 1000 };
}

async function handshakesPerSecond(port: number, m: Materials): Promise<number> {
  const { stdout } = await execFileAsync('taskset', [
    '-c',
    '1',
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
}

async function latencyUs(port: number, m: Materials, tls: boolean): Promise<{ p50: number; p99: number }> {
  const agent = tls
    ? new HttpsAgent({
        keepAlive: true,
        maxSockets: 1,
        ca: readFileSync(m.files.ca),
        cert: m.client.certPem,
        key: m.client.keyPem,
      })
    : new HttpAgent({ keepAlive: true, maxSockets: 1 });
  const send = tls ? httpsRequest : httpRequest;
  const samples: number[] = [];
  for (let i = 0; i < 2_500; i++) {
    const start = process.hrtime.bigint();
    await new Promise<void>((resolve, reject) => {
      const req = send({ host: '127.0.0.1', port, path: '/', agent, servername: 'localhost' }, (res) => {
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', reject);
      req.end();
    });
    if (i >= 500) samples.push(Number(process.hrtime.bigint() - start) / 1000);
  }
  agent.destroy();
  samples.sort((a, b) => a - b);
  return { p50: samples[Math.floor(samples.length * 0.5)]!, p99: samples[Math.floor(samples.length * 0.99)]! };
}

// The sidecar runs compiled, as in the image.
await execFileAsync(process.execPath, [
  join(ROOT, 'node_modules/typescript/bin/tsc'),
  '-p',
  join(ROOT, 'tsconfig.build.json'),
]);
const results: Record<string, Record<string, Record<string, number>>> = {};
const dir = mkdtempSync(join(tmpdir(), 'mtls-bench-'));
const mock = await startMock(dir);
let direct = { p50: NaN, p99: NaN };
try {
  direct = await latencyUs(mock.port, undefined as never, false);
  for (const algorithm of ['ECDSA-P256', 'RSA-2048'] as KeyAlgorithm[]) {
    const m = await materials(mkdtempSync(join(dir, `${algorithm}-`)), algorithm);
    results[algorithm] = {};
    for (const name of ['sidecar', 'nginx', 'haproxy']) {
      const runs: Record<string, number>[] = [];
      for (let run = 0; run < RUNS; run++) {
        const proxy =
          name === 'sidecar'
            ? await startSidecarProcess(m, mock.port)
            : name === 'nginx'
              ? await startNginx(dir, m, mock.port)
              : await startHaproxy(dir, m, mock.port);
        try {
          const pids = await proxyPids(proxy);
          const ka = await keepAliveRps(proxy.port, m, pids);
          const hs = await handshakesPerSecond(proxy.port, m);
          // The client runs in this process (core 1 is the intended place; it is not pinned itself).
          const lat = await latencyUs(proxy.port, m, true);
          const rss = (await proxyPids(proxy)).reduce((sum, pid) => sum + procHwmMiB(pid), 0);
          runs.push({
            rps: ka.rps,
            failed: ka.failed,
            cpuSecondsPer1000: ka.cpuSecondsPer1000,
            handshakesPerSecond: hs,
            addedP50Us: lat.p50 - direct.p50,
            addedP99Us: lat.p99 - direct.p99,
            rssMiB: rss,
          });
          process.stderr.write(`[bench] ${algorithm} ${name} run ${run + 1}: ${JSON.stringify(runs.at(-1))}\n`);
        } finally {
          await proxy.stop();
          await sleep(300);
        }
      }
      results[algorithm]![name] = Object.fromEntries(
        Object.keys(runs[0]!).map((k) => [k, median(runs.map((r) => r[k]!))]),
      );
    }
  }
} finally {
  await mock.stop();
}

const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');
const lines: string[] = [
  '## Sidecar vs nginx and HAProxy (`npm run bench:sidecar`)',
  '',
  `Produced by \`npm run bench:sidecar\` on ${new Date().toISOString().slice(0, 10)}: ${cpus().length} cores (${cpus()[0]?.model.trim()}), Node ${process.version},`,
  `${(await execFileAsync('nginx', ['-v'])).stderr.trim()}, ${(await execFileAsync('haproxy', ['-v'])).stdout.split('\n')[0]}, ${(await execFileAsync('openssl', ['version'])).stdout.trim()}.`,
  `Each proxy pinned to core 0 (one worker / thread / process; the sidecar compiled, as in the image); ab, openssl s_time and the mock (nginx, 1 KiB body) on core 1.`,
  `TLS 1.3, client certificate required. Median of ${RUNS} runs; ${REQUESTS} keep-alive requests per run at concurrency 32.`,
  '',
];
for (const [algorithm, peers] of Object.entries(results)) {
  const s = peers.sidecar!;
  lines.push(
    `### ${algorithm}`,
    '',
    '| figure | sidecar | nginx | haproxy | sidecar/nginx | sidecar/haproxy |',
    '|---|---|---|---|---|---|',
  );
  for (const [key, label] of [
    ['rps', 'keep-alive requests/s'],
    ['handshakesPerSecond', 'full mTLS handshakes/s'],
    ['addedP50Us', 'added latency p50 (µs)'],
    ['addedP99Us', 'added latency p99 (µs)'],
    ['cpuSecondsPer1000', 'CPU s per 1,000 requests'],
    ['rssMiB', 'peak RSS (MiB)'],
    ['failed', 'failed requests'],
  ] as const) {
    const n = peers.nginx![key]!;
    const h = peers.haproxy![key]!;
    lines.push(`| ${label} | ${fmt(s[key]!)} | ${fmt(n)} | ${fmt(h)} | ${fmt(s[key]! / n)} | ${fmt(s[key]! / h)} |`);
  }
  lines.push('');
}
lines.push(
  `Added latency = latency through the proxy minus straight to the mock (plain HTTP, keep-alive): p50 ${fmt(direct.p50, 0)} µs, p99 ${fmt(direct.p99, 0)} µs.`,
);
mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
writeFileSync(join(ROOT, 'bench/results/sidecar.json'), JSON.stringify(results, null, 2));
writeResultsSection('sidecar', lines.join('\n'));
console.log(lines.join('\n'));
