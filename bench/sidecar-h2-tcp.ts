/**
 * bench:sidecar-h2: the sidecar's HTTP/2 and TCP modes against nginx and HAProxy with the same certificates, each
 * proxy on one core (PROXY_CPU), the load client and the upstream on the other (LOAD_CPU).
 * - HTTP/2: gRPC-shaped unary calls (bench/h2-load-client.ts, client certificate presented) through the sidecar
 *   (h2 -> h2c), nginx (grpc_pass) and HAProxy (h2 -> h2c, `proto h2`) to an nginx h2c upstream that answers with
 *   grpc-status in a trailer. Throughput at 4 connections x 32 streams; latency with one call at a time. The
 *   client's own ceiling (h2c straight to the upstream) is printed first: a proxy figure near it is bound by the
 *   client, not the proxy.
 * - TCP: MB/s of one 64 KiB-write stream through the sidecar's tcp listener and HAProxy's tcp mode to a sink.
 * Figures on a shared or loaded machine are noisy: run it on an idle one. Run: npm run bench:sidecar-h2
 */
import { type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../local/controlplane/local-control-plane.ts';
import {
  compileSidecar,
  ensureTools,
  execFileAsync,
  LOAD_CPU,
  materials,
  type Materials,
  NODE_ENV,
  PROXY_CPU,
  ROOT,
  startPinned,
  stopChild,
  waitListening,
} from './proxies.ts';

const SECONDS = Number(process.env.MTLS_BENCH_SECONDS ?? 5);
const NODE = join(ROOT, 'node_modules/.bin/node');

interface Started {
  port: number;
  child: ChildProcess;
}

async function nginxH2cUpstream(dir: string): Promise<Started> {
  const port = await freePort();
  const conf = join(dir, 'upstream.conf');
  writeFileSync(
    conf,
    `worker_processes 1; daemon off; pid ${dir}/upstream.pid; error_log ${dir}/upstream-error.log;
events { worker_connections 4096; }
http { access_log off; http2_max_concurrent_streams 1024;
  server { listen 127.0.0.1:${port} http2; keepalive_requests 10000000;
    location / { default_type application/grpc; add_trailer grpc-status 0 always; return 200 "xxxxx"; } } }
`,
  );
  const child = startPinned(LOAD_CPU, 'nginx', ['-c', conf, '-p', dir]);
  await waitListening(port);
  return { port, child };
}

async function sidecar(m: Materials, upstream: number, extra: string[], listen: string): Promise<Started> {
  const port = await freePort();
  const admin = await freePort();
  const child = startPinned(
    PROXY_CPU,
    NODE,
    [
      join(ROOT, 'dist/operator/cli.js'),
      'sidecar',
      '--listen',
      listen.replace('PORT', String(port)),
      '--upstream',
      `127.0.0.1:${upstream}`,
      '--tls-dir',
      m.files.tlsDir,
      '--admin',
      `127.0.0.1:${admin}`,
      ...extra,
    ],
    NODE_ENV,
  );
  await waitListening(port);
  return { port, child };
}

async function nginxGrpc(dir: string, m: Materials, upstream: number): Promise<Started> {
  const port = await freePort();
  const conf = join(dir, `nginx-grpc.conf`);
  writeFileSync(
    conf,
    `worker_processes 1; daemon off; pid ${dir}/nginx-grpc.pid; error_log ${dir}/nginx-grpc-error.log;
events { worker_connections 8192; }
http { access_log off; http2_max_concurrent_streams 1024;
  upstream up { server 127.0.0.1:${upstream}; keepalive 32; }
  server { listen 127.0.0.1:${port} ssl http2; keepalive_requests 10000000;
    ssl_certificate ${m.files.cert}; ssl_certificate_key ${m.files.key};
    ssl_client_certificate ${m.files.ca}; ssl_verify_client on; ssl_protocols TLSv1.3;
    location / { grpc_pass grpc://up; grpc_set_header X-Client-Verify $ssl_client_verify; } } }
`,
  );
  const child = startPinned(PROXY_CPU, 'nginx', ['-c', conf, '-p', dir]);
  await waitListening(port);
  return { port, child };
}

async function haproxy(dir: string, m: Materials, upstream: number, mode: 'h2' | 'tcp'): Promise<Started> {
  const port = await freePort();
  const conf = join(dir, `haproxy-${mode}.cfg`);
  const bind = `bind 127.0.0.1:${port} ssl crt ${m.files.pem} ca-file ${m.files.ca} verify required ssl-min-ver TLSv1.3`;
  writeFileSync(
    conf,
    mode === 'h2'
      ? `global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  ${bind} alpn h2
  http-request set-header X-Client-Verify SUCCESS
  default_backend be
backend be
  server up 127.0.0.1:${upstream} proto h2
`
      : `global
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  ${bind}
  default_backend be
backend be
  server up 127.0.0.1:${upstream}
`,
  );
  const child = startPinned(PROXY_CPU, 'haproxy', ['-f', conf, '-db']);
  await waitListening(port);
  return { port, child };
}

async function h2Load(port: number, m: Materials | null, connections: number, streams: number) {
  const args = [
    join(ROOT, 'bench/h2-load-client.ts'),
    String(port),
    String(SECONDS),
    String(connections),
    String(streams),
  ];
  if (m) args.push(m.files.ca, m.files.clientCert, m.files.clientKey);
  const { stdout } = await execFileAsync('taskset', ['-c', LOAD_CPU, NODE, ...args]);
  return JSON.parse(stdout) as { rps: number; p50: number; p99: number; errors: number };
}

async function tcpLoad(port: number, m: Materials) {
  const { stdout } = await execFileAsync('taskset', [
    '-c',
    LOAD_CPU,
    NODE,
    join(ROOT, 'bench/tcp-throughput.ts'),
    'client',
    String(port),
    String(SECONDS),
    m.files.ca,
    m.files.clientCert,
    m.files.clientKey,
  ]);
  return JSON.parse(stdout) as { mbPerSecond: number };
}

await ensureTools();
await compileSidecar();
const dir = mkdtempSync(join(tmpdir(), 'mtls-bench-h2-'));
const m = await materials(dir, 'ECDSA-P256');
const rows: Record<string, unknown>[] = [];

const upstream = await nginxH2cUpstream(dir);
try {
  const ceiling = await h2Load(upstream.port, null, 4, 32);
  rows.push({ row: 'HTTP/2 gRPC unary', via: 'client -> upstream h2c (client ceiling)', ...ceiling });
  const peers: [string, () => Promise<Started>][] = [
    ['sidecar (h2 -> h2c)', () => sidecar(m, upstream.port, ['--upstream-protocol', 'h2c'], 'strict=PORT')],
    ['nginx grpc_pass', () => nginxGrpc(dir, m, upstream.port)],
    ['haproxy h2 -> h2c', () => haproxy(dir, m, upstream.port, 'h2')],
  ];
  for (const [via, start] of peers) {
    const proxy = await start();
    try {
      const load = await h2Load(proxy.port, m, 4, 32);
      const one = await h2Load(proxy.port, m, 1, 1);
      rows.push({ row: 'HTTP/2 gRPC unary', via, ...load, sequentialP50: one.p50, sequentialP99: one.p99 });
    } finally {
      await stopChild(proxy.child);
    }
  }
} finally {
  await stopChild(upstream.child);
}

const sinkPort = await freePort();
const sink = startPinned(LOAD_CPU, NODE, [join(ROOT, 'bench/tcp-throughput.ts'), 'sink', String(sinkPort)]);
await waitListening(sinkPort);
try {
  const peers: [string, () => Promise<Started>][] = [
    ['sidecar tcp listener', () => sidecar(m, sinkPort, [], 'strict=PORT/tcp')],
    ['haproxy mode tcp', () => haproxy(dir, m, sinkPort, 'tcp')],
  ];
  for (const [via, start] of peers) {
    const proxy = await start();
    try {
      rows.push({ row: 'TCP 64 KiB stream', via, ...(await tcpLoad(proxy.port, m)) });
    } finally {
      await stopChild(proxy.child);
    }
  }
} finally {
  sink.kill('SIGTERM');
}

for (const row of rows) process.stdout.write(JSON.stringify(row) + '\n');
