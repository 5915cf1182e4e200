/**
 * bench:sidecar-h2: the sidecar's HTTP/2 and TCP modes against nginx and HAProxy with the same certificates, each
 * proxy on one core (PROXY_CPU), the load client and the upstream on the other (LOAD_CPU).
 * - HTTP/2: gRPC-shaped unary calls (bench/h2-load-client.ts, client certificate presented) through the sidecar
 *   (h2 -> h2c), nginx (grpc_pass) and HAProxy (h2 -> h2c, `proto h2`) to an nginx h2c upstream that answers with
 *   grpc-status in a trailer. Throughput at 4 connections x 32 streams; latency with one call at a time. The
 *   client's own ceiling (h2c straight to the upstream) is printed first: a proxy figure near it is bound by the
 *   client, not the proxy.
 * - TCP: MB/s of one 64 KiB-write stream through the sidecar's tcp listener and HAProxy's tcp mode to a sink.
 * Median of MTLS_BENCH_RUNS runs, the proxies taking turns within each run. With MTLS_BENCH_PROFILE=1 a last,
 * unmeasured pass runs the sidecar under `node --cpu-prof` with the same load and reports where its busy time went
 * (bench/cpu-profile.ts). bench:sidecar runs these rows after its HTTP/1.1 tables; bench:sidecar-h2 runs them alone.
 * Both write the `sidecar-h2` section of bench/RESULTS.md. Figures on a loaded machine are noisy: run on an idle one.
 */
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../local/controlplane/local-control-plane.ts';
import { formatShares, profileShares } from './cpu-profile.ts';
import { writeResultsSection } from './results-file.ts';
import {
  compileSidecar,
  ensureTools,
  execFileAsync,
  LOAD_CPU,
  materials,
  type Materials,
  medianFigures,
  PROXY_CPU,
  type Proxy,
  ROOT,
  RUNS,
  startHaproxy,
  startNodeRelay,
  startPinned,
  startSidecarProcess,
  stopChild,
  waitListening,
} from './proxies.ts';

/** Seconds of each load (MTLS_BENCH_SECONDS). */
export const SECONDS = Number(process.env.MTLS_BENCH_SECONDS ?? 5);
const NODE = join(ROOT, 'node_modules/.bin/node');

/** A proxy, upstream or sink started for a row. */
export type Started = Pick<Proxy, 'port' | 'stop'>;

/** The compiled sidecar on the proxy core, as bench:sidecar runs it; with `profileDir`, under --cpu-prof. */
function startSidecar(m: Materials, upstream: number, o: { listen?: string; args?: string[]; profileDir?: string }) {
  const nodeArgs = o.profileDir ? ['--cpu-prof', '--cpu-prof-dir', o.profileDir] : [];
  return startSidecarProcess(m, upstream, 1, PROXY_CPU, { listen: o.listen, args: o.args, nodeArgs });
}

export async function nginxH2cUpstream(dir: string): Promise<Started> {
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
  return { port, stop: () => stopChild(child) };
}

export async function nginxGrpc(dir: string, m: Materials, upstream: number): Promise<Proxy> {
  const port = await freePort();
  const conf = join(dir, `nginx-grpc.conf`);
  writeFileSync(
    conf,
    // grpc_pass multiplexes nothing: each call in flight holds an upstream connection of its own, and with fewer
    // kept alive than the 128 calls in flight the rest are opened and closed per call (as the first version of
    // this bench did, with keepalive 32: nginx then spent the upstream core on connection setup).
    `worker_processes 1; daemon off; pid ${dir}/nginx-grpc.pid; error_log ${dir}/nginx-grpc-error.log;
events { worker_connections 8192; }
http { access_log off; http2_max_concurrent_streams 1024;
  upstream up { server 127.0.0.1:${upstream}; keepalive 128; keepalive_requests 10000000; }
  server { listen 127.0.0.1:${port} ssl http2; keepalive_requests 10000000;
    ssl_certificate ${m.files.cert}; ssl_certificate_key ${m.files.key};
    ssl_client_certificate ${m.files.ca}; ssl_verify_client on; ssl_protocols TLSv1.3;
    location / { grpc_pass grpc://up; grpc_set_header X-Client-Verify $ssl_client_verify; } } }
`,
  );
  const child = startPinned(PROXY_CPU, 'nginx', ['-c', conf, '-p', dir]);
  await waitListening(port);
  return { name: 'nginx', port, pids: () => [child.pid!], stop: () => stopChild(child) };
}

export async function h2Load(port: number, m: Materials | null, connections: number, streams: number) {
  const args = [
    join(ROOT, 'bench/h2-load-client.ts'),
    String(port),
    String(SECONDS),
    String(connections),
    String(streams),
  ];
  if (m) args.push(m.files.ca, m.files.clientCert, m.files.clientKey);
  const { stdout } = await execFileAsync('taskset', ['-c', LOAD_CPU, NODE, ...args]);
  return JSON.parse(stdout) as { rps: number; calls: number; p50: number; p99: number; errors: number };
}

export async function tcpLoad(port: number, m: Materials) {
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

type Row = Record<string, number>;
export interface H2AndTcpResults {
  grpc: Record<string, Row>;
  tcp: Record<string, Row>;
  profiles: Record<string, string>;
}

const GRPC_VIA = {
  ceiling: 'client -> upstream h2c (client ceiling)',
  sidecar: 'sidecar (h2 -> h2c)',
  nginx: 'nginx grpc_pass',
  haproxy: 'haproxy h2 -> h2c',
  floor: 'node:http2 relay (floor of a Node proxy)',
} as const;
const TCP_VIA = {
  ceiling: 'client -> Node TLS sink on the proxy core (client ceiling)',
  sidecar: 'sidecar tcp listener',
  haproxy: 'haproxy mode tcp',
} as const;

/** The newest profile a stopped sidecar wrote into `dir`, summarised. */
function summariseProfile(dir: string): string {
  const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  return file ? formatShares(profileShares(join(dir, file))) : 'no profile written';
}

/** gRPC unary through each proxy and TCP MB/s through each, median of RUNS; profiles if MTLS_BENCH_PROFILE=1. */
export async function measureH2AndTcp(): Promise<H2AndTcpResults> {
  await ensureTools();
  await compileSidecar();
  const dir = mkdtempSync(join(tmpdir(), 'mtls-bench-h2-'));
  const m = await materials(dir, 'ECDSA-P256');
  const profile = process.env.MTLS_BENCH_PROFILE === '1';
  const grpcRuns: Record<string, Row[]> = {};
  const tcpRuns: Record<string, Row[]> = {};
  const profiles: Record<string, string> = {};

  const only = process.env.MTLS_BENCH_ONLY; // 'grpc' or 'tcp' while iterating on one path
  const upstream = await nginxH2cUpstream(dir);
  try {
    const grpcPeers: [string, (profileDir?: string) => Promise<Started>][] = [
      [
        GRPC_VIA.sidecar,
        (p) => startSidecar(m, upstream.port, { args: ['--upstream-protocol', 'h2c'], profileDir: p }),
      ],
      [GRPC_VIA.nginx, () => nginxGrpc(dir, m, upstream.port)],
      [GRPC_VIA.haproxy, () => startHaproxy(dir, m, upstream.port, 1, PROXY_CPU, 'h2')],
      [GRPC_VIA.floor, () => startNodeRelay(dir, m, upstream.port, PROXY_CPU, 'bench/node-h2-relay.ts')],
    ];
    for (let run = 0; run < RUNS && only !== 'tcp'; run++) {
      const ceiling = await h2Load(upstream.port, null, 4, 32);
      (grpcRuns[GRPC_VIA.ceiling] ??= []).push({ rps: ceiling.rps, p50: ceiling.p50, p99: ceiling.p99 });
      for (const [via, start] of grpcPeers) {
        const proxy = await start();
        try {
          const load = await h2Load(proxy.port, m, 4, 32);
          const one = await h2Load(proxy.port, m, 1, 1);
          const row = { ...load, sequentialP50: one.p50, sequentialP99: one.p99, errors: load.errors + one.errors };
          (grpcRuns[via] ??= []).push(row);
          process.stderr.write(`[bench] gRPC ${via} run ${run + 1}: ${JSON.stringify(row)}\n`);
        } finally {
          await proxy.stop();
        }
      }
    }
    if (profile && only !== 'tcp') {
      const profileDir = mkdtempSync(join(dir, 'profile-grpc-'));
      const proxy = await grpcPeers[0]![1](profileDir);
      await h2Load(proxy.port, m, 4, 32).finally(() => proxy.stop());
      profiles[GRPC_VIA.sidecar] = summariseProfile(profileDir);
    }
  } finally {
    await upstream.stop();
  }

  const sink = await tcpSink();
  const sinkPort = sink.port;
  try {
    const tcpPeers: [string, (profileDir?: string) => Promise<Started>][] = [
      [TCP_VIA.ceiling, () => tlsSink(m)],
      [TCP_VIA.sidecar, (p) => startSidecar(m, sinkPort, { listen: 'strict=PORT/tcp', profileDir: p })],
      [TCP_VIA.haproxy, () => startHaproxy(dir, m, sinkPort, 1, PROXY_CPU, 'tcp')],
    ];
    for (let run = 0; run < RUNS && only !== 'grpc'; run++) {
      for (const [via, start] of tcpPeers) {
        const proxy = await start();
        try {
          const row = await tcpLoad(proxy.port, m);
          (tcpRuns[via] ??= []).push({ mbPerSecond: row.mbPerSecond });
          process.stderr.write(`[bench] TCP ${via} run ${run + 1}: ${row.mbPerSecond} MB/s\n`);
        } finally {
          await proxy.stop();
        }
      }
    }
    if (profile && only !== 'grpc') {
      const profileDir = mkdtempSync(join(dir, 'profile-tcp-'));
      const proxy = await tcpPeers[1]![1](profileDir);
      await tcpLoad(proxy.port, m).finally(() => proxy.stop());
      profiles[TCP_VIA.sidecar] = summariseProfile(profileDir);
    }
  } finally {
    await sink.stop();
  }
  const medians = (runs: Record<string, Row[]>) =>
    Object.fromEntries(Object.entries(runs).map(([via, r]) => [via, medianFigures(r)]));
  return { grpc: medians(grpcRuns), tcp: medians(tcpRuns), profiles };
}

/** A plain TCP sink on the load core: the upstream of the TCP rows. */
export async function tcpSink(): Promise<Started> {
  const port = await freePort();
  const child = startPinned(LOAD_CPU, NODE, [join(ROOT, 'bench/tcp-throughput.ts'), 'sink', String(port)]);
  await waitListening(port);
  return { port, stop: () => stopChild(child) };
}

async function tlsSink(m: Materials): Promise<Started> {
  const port = await freePort();
  const child = startPinned(PROXY_CPU, NODE, [
    join(ROOT, 'bench/tcp-throughput.ts'),
    'tls-sink',
    String(port),
    m.files.cert,
    m.files.key,
    m.files.ca,
  ]);
  await waitListening(port);
  return { port, stop: () => stopChild(child) };
}

/** The `sidecar-h2` section of bench/RESULTS.md. */
export function renderH2AndTcpSection(r: H2AndTcpResults): string {
  const g = r.grpc;
  const s = g[GRPC_VIA.sidecar]!;
  const n = g[GRPC_VIA.nginx]!;
  const h = g[GRPC_VIA.haproxy]!;
  const ratio = (a = 0, b = 0) => (b ? (a / b).toFixed(2) : 'n/a');
  const verdict = (ok: boolean) => (ok ? 'met' : 'not met');
  const lines = [
    '## HTTP/2 (gRPC) and TCP through the sidecar, nginx and HAProxy (`npm run bench:sidecar`, also `npm run bench:sidecar-h2`)',
    '',
    `Produced on ${new Date().toISOString().slice(0, 10)}, median of ${RUNS} runs, ${SECONDS} s per load. ECDSA-P256, TLS 1.3, client certificate required. Each proxy on core ${PROXY_CPU}; the load client and the upstream on core ${LOAD_CPU}.`,
    'gRPC: unary calls (POST application/grpc, 5-byte message, grpc-status in a trailer) from bench/h2-load-client.ts (node:http2, the client certificate presented), 4 connections x 32 streams for throughput, then one call at a time for latency; the upstream is an nginx h2c server. The sidecar runs `--upstream-protocol h2c`, nginx `grpc_pass` (one upstream connection per call in flight, so `keepalive 128` keeps all 128 open), HAProxy `proto h2`.',
    '',
    '| gRPC unary | calls/s | p50 (µs) | p99 (µs) | one at a time p50 / p99 (µs) | errors |',
    '|---|---|---|---|---|---|',
    ...Object.entries(g).map(
      ([via, x]) =>
        `| ${via} | ${x.rps} | ${x.p50} | ${x.p99} | ${x.sequentialP50 ?? '-'} / ${x.sequentialP99 ?? '-'} | ${x.errors ?? '-'} |`,
    ),
    '',
    `Sidecar/nginx calls/s ${ratio(s.rps, n.rps)} (target >= 0.80: ${verdict(s.rps! / n.rps! >= 0.8)}), sidecar/HAProxy ${ratio(s.rps, h.rps)}; p99 under load sidecar/nginx ${ratio(s.p99, n.p99)} (target <= 1.50: ${verdict(s.p99! / n.p99! <= 1.5)}), one call at a time ${ratio(s.sequentialP99, n.sequentialP99)}. The client's ceiling is ${ratio(g[GRPC_VIA.ceiling]!.rps, Math.max(s.rps!, n.rps!, h.rps!))}x the fastest proxy. The bare node:http2 relay (bench/node-h2-relay.ts, the sidecar's V8 settings) reaches ${ratio(g[GRPC_VIA.floor]?.rps, n.rps)}x nginx: the most any Node proxy gets on this path.`,
    '',
    '| TCP, one stream of 64 KiB writes | MB/s |',
    '|---|---|',
    ...Object.entries(r.tcp).map(([via, x]) => `| ${via} | ${x.mbPerSecond} |`),
    '',
    `Sidecar/HAProxy ${ratio(r.tcp[TCP_VIA.sidecar]!.mbPerSecond, r.tcp[TCP_VIA.haproxy]!.mbPerSecond)} (target >= 0.90: ${verdict(r.tcp[TCP_VIA.sidecar]!.mbPerSecond! / r.tcp[TCP_VIA.haproxy]!.mbPerSecond! >= 0.9)}).`,
  ];
  if (Object.keys(r.profiles).length) {
    lines.push(
      '',
      "Where the sidecar's busy time went (`node --cpu-prof`, an unmeasured pass under the same load, self time):",
      '',
    );
    for (const [via, shares] of Object.entries(r.profiles)) lines.push(`- ${via}: ${shares}`);
  }
  return lines.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}` && process.env.MTLS_BENCH_ONLY) {
  process.stdout.write(JSON.stringify(await measureH2AndTcp(), null, 2) + '\n');
} else if (import.meta.url === `file://${process.argv[1]}`) {
  const results = await measureH2AndTcp();
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench/results/sidecar-h2.json'), JSON.stringify(results, null, 2));
  const section = renderH2AndTcpSection(results);
  writeResultsSection('sidecar-h2', section);
  console.log(section);
}
