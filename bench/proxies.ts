/**
 * What the sidecar benchmarks share: certificates, the nginx mock upstream, starting the proxies (the
 * sidecar, nginx, HAProxy, the bare Node TLS relay) pinned to cores, and measuring them (keep-alive
 * requests/s with ab, full handshakes/s with openssl s_time, latency at a fixed rate, CPU and memory from
 * /proc). Used by bench/sidecar-vs-peers.ts and bench/sidecar-memory.ts.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { stripTypeScriptTypes } from 'node:module';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../local/controlplane/local-control-plane.ts';
import { issueCA, issueClient, issueServer } from '../operator/pki/issue.ts';
import type { KeyAlgorithm } from '../operator/api/types.ts';
import { SIDECAR_NODE_OPTIONS } from '../sidecar/flags.ts';
import { writeSecretVolume } from '../sidecar/secret-volume.ts';

export const execFileAsync = promisify(execFile);
export const RUNS = Number(process.env.MTLS_BENCH_RUNS ?? 3);
export const REQUESTS = Number(process.env.MTLS_BENCH_REQUESTS ?? 20_000);
export const ROOT = new URL('..', import.meta.url).pathname;
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
/** Each figure's median over runs that measured the same figures. */
export const medianFigures = (runs: Record<string, number>[]): Record<string, number> =>
  Object.fromEntries(Object.keys(runs[0]!).map((k) => [k, median(runs.map((r) => r[k]!))]));
export const DAY = 86_400_000;
/** One core for the proxy, the other for the load tools and the mock. */
export const PROXY_CPU = '0';
export const LOAD_CPU = '1';
export const BOTH_CPUS = '0,1';
/** The fixed rate for the latency figures: well under every proxy's one-core capacity. */
export const LATENCY_RATE = Number(process.env.MTLS_BENCH_LATENCY_RATE ?? 2_000);
export const LATENCY_SECONDS = 5;

export interface Proxy {
  name: string;
  port: number;
  /** Processes whose CPU and memory count. */
  pids(): number[];
  stop(): Promise<void>;
}

export function procTicks(pid: number): number {
  const stat = `/proc/${pid}/stat`;
  if (!existsSync(stat))
    throw new Error(`process ${pid} is gone: the proxy did not start (see its config and log in the bench folder)`);
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime + stime, in clock ticks (100/s)
}
export function procHwmMiB(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmHWM:\s+(\d+)/)![1]) / 1024;
}
/** Resident memory now (VmRSS), in MiB. */
export function procRssMiB(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)![1]) / 1024;
}
export async function childPids(pid: number): Promise<number[]> {
  const { stdout } = await execFileAsync('pgrep', ['-P', String(pid)]).catch(() => ({ stdout: '' }));
  return stdout.split('\n').filter(Boolean).map(Number);
}

/** Starts a command on the given CPUs (a taskset list: "0", "1" or "0,1"). */
export function startPinned(cpus: string, command: string, args: string[], env?: NodeJS.ProcessEnv): ChildProcess {
  return spawn('taskset', ['-c', cpus, command, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env });
}
/** The sidecar's environment as injected; MTLS_BENCH_SIDECAR_NODE_OPTIONS tries other V8 settings. */
export const NODE_ENV = {
  ...process.env,
  NODE_OPTIONS: process.env.MTLS_BENCH_SIDECAR_NODE_OPTIONS ?? SIDECAR_NODE_OPTIONS,
};

export async function materials(dir: string, algorithm: KeyAlgorithm) {
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
export type Materials = Awaited<ReturnType<typeof materials>>;

export async function startMock(dir: string): Promise<{ port: number; stop: () => Promise<void> }> {
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

export type ProxyName = 'sidecar' | 'nginx' | 'haproxy' | 'node-relay';

export async function startNginx(
  dir: string,
  m: Materials,
  upstream: number,
  workers: number,
  cpus: string,
): Promise<Proxy> {
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

/**
 * HAProxy with the same certificates, client certificate required: HTTP/1.1 to an HTTP/1.1 upstream (`http1`),
 * HTTP/2 to an h2c upstream (`h2`), or TCP relayed unparsed (`tcp`).
 */
export async function startHaproxy(
  dir: string,
  m: Materials,
  upstream: number,
  threads: number,
  cpus: string,
  protocol: 'http1' | 'h2' | 'tcp' = 'http1',
): Promise<Proxy> {
  const port = await freePort();
  const conf = join(dir, `haproxy-${port}.cfg`);
  const http = protocol !== 'tcp';
  const lines = [
    'global',
    `  nbthread ${threads}`,
    '  maxconn 8000',
    'defaults',
    `  mode ${http ? 'http' : 'tcp'}`,
    '  timeout connect 5s',
    '  timeout client 30s',
    '  timeout server 30s',
    ...(http ? ['  timeout http-keep-alive 30s'] : []),
    'frontend fe',
    `  bind 127.0.0.1:${port} ssl crt ${m.files.pem} ca-file ${m.files.ca} verify required ssl-min-ver TLSv1.3${protocol === 'h2' ? ' alpn h2' : ''}`,
    ...(http ? ['  http-request set-header X-Client-Verify SUCCESS'] : []),
    '  default_backend be',
    'backend be',
    ...(protocol === 'http1' ? ['  http-reuse always'] : []),
    `  server up 127.0.0.1:${upstream}${protocol === 'h2' ? ' proto h2' : ''}`,
  ];
  writeFileSync(conf, `${lines.join('\n')}\n`);
  const child = startPinned(cpus, 'haproxy', ['-f', conf, '-db']);
  await waitListening(port);
  return { name: 'haproxy', port, pids: () => [child.pid!], stop: () => stopChild(child) };
}

/**
 * The compiled sidecar, as in the image. `cli` runs another build (e.g. an older commit's, for a before/after);
 * `extraListeners` adds standard and flexible listeners on free ports beside the measured strict one.
 */
export async function startSidecarProcess(
  m: Materials,
  upstream: number,
  workers: number,
  cpus: string,
  options: {
    cli?: string;
    extraListeners?: boolean;
    /** The measured listener, PORT standing for its port (default strict HTTP). */
    listen?: string;
    /** More sidecar flags, and flags for node itself (e.g. --cpu-prof). */
    args?: string[];
    nodeArgs?: string[];
    /** NODE_OPTIONS instead of the injected ones (an A/B of V8 settings). */
    nodeOptions?: string;
  } = {},
): Promise<Proxy> {
  const port = await freePort();
  const admin = await freePort();
  const extra = options.extraListeners
    ? ['--listen', `standard=${await freePort()}`, '--listen', `flexible=${await freePort()}`]
    : [];
  const child = startPinned(
    cpus,
    join(ROOT, 'node_modules/.bin/node'),
    [
      ...(options.nodeArgs ?? []),
      options.cli ?? join(ROOT, 'dist/operator/cli.js'),
      'sidecar',
      ...extra,
      '--listen',
      (options.listen ?? 'strict=PORT').replace('PORT', String(port)),
      '--upstream',
      `127.0.0.1:${upstream}`,
      '--tls-dir',
      m.files.tlsDir,
      '--admin',
      `127.0.0.1:${admin}`,
      '--workers',
      String(workers),
      ...(options.args ?? []),
    ],
    options.nodeOptions === undefined ? NODE_ENV : { ...NODE_ENV, NODE_OPTIONS: options.nodeOptions },
  );
  await waitListening(admin);
  await waitListening(port);
  if (workers > 1) await sleep(1_000); // the forked workers bind after the first process
  return { name: 'sidecar', port, pids: () => [child.pid!], stop: () => stopChild(child) };
}

/**
 * A bare Node relay (bench/node-tls-relay.ts, or another `script` taking the same arguments:
 * PORT UPSTREAM_PORT CERT KEY CA), with the sidecar's V8 settings.
 */
export async function startNodeRelay(
  dir: string,
  m: Materials,
  upstream: number,
  cpus: string,
  script = 'bench/node-tls-relay.ts',
): Promise<Proxy> {
  const port = await freePort();
  // Run as plain JavaScript, as the sidecar is: Node's TypeScript stripping alone takes ~15 MiB.
  const compiled = join(dir, `${basename(script, '.ts')}.mjs`);
  writeFileSync(compiled, stripTypeScriptTypes(readFileSync(join(ROOT, script), 'utf8')));
  const child = startPinned(
    cpus,
    join(ROOT, 'node_modules/.bin/node'),
    [compiled, String(port), String(upstream), m.files.cert, m.files.key, m.files.ca],
    NODE_ENV,
  );
  await waitListening(port);
  return { name: 'node-relay', port, pids: () => [child.pid!], stop: () => stopChild(child) };
}

export function startProxy(
  name: ProxyName,
  dir: string,
  m: Materials,
  upstream: number,
  workers: number,
  cpus: string,
) {
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

export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(5_000)]);
  child.kill('SIGKILL');
}

/** Waits until something accepts TCP connections on the port (the mock, an admin port, a TLS listener). */
export async function waitListening(port: number): Promise<void> {
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

export async function proxyPids(proxy: Proxy): Promise<number[]> {
  // taskset execs the real process, so the pid is the proxy's; nginx's and the sidecar's workers are children.
  const pids = proxy.pids();
  return [...pids, ...(await Promise.all(pids.map(childPids))).flat()];
}

/** Keep-alive requests/s from `parallel` ab processes at once (their rates summed), with the proxy's CPU. */
export async function keepAliveRps(
  port: number,
  m: Materials,
  pids: number[],
  cpus: string,
  parallel: number,
  requests = REQUESTS,
) {
  const ticks = pids.reduce((sum, pid) => sum + procTicks(pid), 0);
  const each = Math.round(requests / parallel);
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
export async function handshakesPerSecond(
  port: number,
  m: Materials,
  cpus: string,
  parallel: number,
  seconds = 4,
): Promise<number> {
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
        String(seconds),
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
export async function latencyUs(
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

export const peakRssMiB = async (proxy: Proxy) =>
  (await proxyPids(proxy)).reduce((sum, pid) => sum + procHwmMiB(pid), 0);

/** The peers and load tools come from Debian; a fresh machine gets them installed (as root) or told how. */
export async function ensureTools(): Promise<void> {
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

/** Compiles the sidecar as the image runs it (dist/). */
export async function compileSidecar(): Promise<void> {
  await execFileAsync(process.execPath, [
    join(ROOT, 'node_modules/typescript/bin/tsc'),
    '-p',
    join(ROOT, 'tsconfig.build.json'),
  ]);
}
