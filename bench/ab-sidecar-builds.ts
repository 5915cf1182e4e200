/**
 * Two sidecars (a "before" and an "after") and a peer proxy, loaded in turn, ROUNDS rounds, with the proxy's CPU seconds
 * per 1,000 requests beside the rate. "Before" is another build (MTLS_BENCH_SIDECAR_BEFORE, e.g. an older
 * commit's dist/operator/cli.js) or this build with other V8 settings (MTLS_BENCH_BEFORE_NODE_OPTIONS; "after"
 * takes MTLS_BENCH_AFTER_NODE_OPTIONS, both defaulting to the injected ones). Taking turns round by round pairs
 * each before with an after measured seconds apart, so a machine shared with other work (whose load drifts over
 * minutes) weighs on both alike; the paired after/before ratios are reported with their median.
 * - MTLS_BENCH_AB=http1 (default): keep-alive HTTPS requests (ab -k, REQUESTS requests at concurrency 32) to a
 *   plain HTTP mock; nginx as a reverse proxy.
 * - MTLS_BENCH_AB=grpc: gRPC-shaped unary calls (bench/h2-load-client.ts, 4 connections x 32 streams) to an nginx
 *   h2c upstream, the sidecar with --upstream-protocol h2c; nginx with grpc_pass.
 * - MTLS_BENCH_AB=tcp: one stream of 64 KiB writes (bench/tcp-throughput.ts) to a TCP sink, the sidecar's tcp
 *   listener; HAProxy's mode tcp as the peer. The rate is MB/s and the CPU is per 1,000 MB.
 * Run (after npm run build): MTLS_BENCH_SIDECAR_BEFORE=PATH/dist/operator/cli.js node bench/ab-sidecar-builds.ts
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  keepAliveRps,
  LOAD_CPU,
  materials,
  type Materials,
  median,
  procTicks,
  PROXY_CPU,
  type Proxy,
  proxyPids,
  sleep,
  startHaproxy,
  startMock,
  startNginx,
  startSidecarProcess,
} from './proxies.ts';
import { h2Load, nginxGrpc, nginxH2cUpstream, SECONDS, type Started, tcpLoad, tcpSink } from './sidecar-h2-tcp.ts';

const BEFORE = process.env.MTLS_BENCH_SIDECAR_BEFORE;
const BEFORE_NODE_OPTIONS = process.env.MTLS_BENCH_BEFORE_NODE_OPTIONS;
const AFTER_NODE_OPTIONS = process.env.MTLS_BENCH_AFTER_NODE_OPTIONS;
/** Flags for node itself that NODE_OPTIONS does not take (e.g. V8 flags): the after sidecar only. */
const AFTER_NODE_ARGS = process.env.MTLS_BENCH_AFTER_NODE_ARGS?.split(' ').filter(Boolean);
if (!BEFORE && BEFORE_NODE_OPTIONS === undefined && AFTER_NODE_OPTIONS === undefined && !AFTER_NODE_ARGS)
  throw new Error(
    'set MTLS_BENCH_SIDECAR_BEFORE to the other build (PATH/dist/operator/cli.js), or MTLS_BENCH_BEFORE_NODE_OPTIONS / MTLS_BENCH_AFTER_NODE_OPTIONS',
  );
const ROUNDS = Number(process.env.MTLS_BENCH_ROUNDS ?? 7);
const PROTOCOL = process.env.MTLS_BENCH_AB ?? 'http1';
const GRPC = PROTOCOL === 'grpc';
const TCP = PROTOCOL === 'tcp';

/** One load on a proxy: its rate and its CPU seconds per 1,000 requests. */
type Measure = (proxy: Proxy) => Promise<{ rps: number; cpu: number }>;

function grpcMeasure(m: Materials): Measure {
  return async (proxy) => {
    const pids = await proxyPids(proxy);
    const ticks = () => pids.reduce((sum, pid) => sum + procTicks(pid), 0);
    const before = ticks();
    const load = await h2Load(proxy.port, m, 4, 32);
    return { rps: load.rps, cpu: ((ticks() - before) / 100 / Math.max(1, load.calls)) * 1000 };
  };
}

/** MB/s through the proxy, and its CPU seconds per 1,000 MB. */
function tcpMeasure(m: Materials): Measure {
  return async (proxy) => {
    const pids = await proxyPids(proxy);
    const ticks = () => pids.reduce((sum, pid) => sum + procTicks(pid), 0);
    const before = ticks();
    const { mbPerSecond } = await tcpLoad(proxy.port, m);
    return { rps: mbPerSecond, cpu: ((ticks() - before) / 100 / Math.max(1, mbPerSecond * SECONDS)) * 1000 };
  };
}

const dir = mkdtempSync(join(tmpdir(), 'mtls-bench-ab-'));
const m = await materials(mkdtempSync(join(dir, 'ecdsa-')), 'ECDSA-P256');
const upstream: Started = GRPC ? await nginxH2cUpstream(dir) : TCP ? await tcpSink() : await startMock(dir);
const sidecarArgs = GRPC ? ['--upstream-protocol', 'h2c'] : [];
const listen = TCP ? 'strict=PORT/tcp' : undefined;
const subjects: Record<string, () => Promise<Proxy>> = {
  before: () =>
    startSidecarProcess(m, upstream.port, 1, PROXY_CPU, {
      cli: BEFORE,
      listen,
      args: sidecarArgs,
      nodeOptions: BEFORE_NODE_OPTIONS,
    }),
  after: () =>
    startSidecarProcess(m, upstream.port, 1, PROXY_CPU, {
      listen,
      args: sidecarArgs,
      nodeOptions: AFTER_NODE_OPTIONS,
      nodeArgs: AFTER_NODE_ARGS,
    }),
  peer: () =>
    GRPC
      ? nginxGrpc(dir, m, upstream.port)
      : TCP
        ? startHaproxy(dir, m, upstream.port, 1, PROXY_CPU, 'tcp')
        : startNginx(dir, m, upstream.port, 1, PROXY_CPU),
};
const measure: Measure = GRPC
  ? grpcMeasure(m)
  : TCP
    ? tcpMeasure(m)
    : async (proxy) => {
        const ka = await keepAliveRps(proxy.port, m, await proxyPids(proxy), LOAD_CPU, 1);
        return { rps: ka.rps, cpu: ka.cpuSecondsPer1000 };
      };
const figures: Record<string, { rps: number; cpu: number }[]> = {};

try {
  for (let round = 0; round < ROUNDS; round++) {
    // The slot a build runs in weighs on it (the same build measured against itself read 0.97 in the second
    // slot): odd rounds run the two builds in the other order.
    const order = round % 2 === 0 ? ['before', 'after', 'peer'] : ['after', 'before', 'peer'];
    for (const name of order) {
      const proxy = await subjects[name]!();
      try {
        const figure = await measure(proxy);
        (figures[name] ??= []).push(figure);
        process.stderr.write(`[ab] round ${round + 1} ${name}: ${figure.rps} req/s, ${figure.cpu} CPU s/1000\n`);
      } finally {
        await proxy.stop();
        await sleep(300);
      }
    }
  }
} finally {
  await upstream.stop();
}
const paired = (key: 'rps' | 'cpu', a: string, b: string) => figures[a]!.map((f, i) => f[key] / figures[b]![i]![key]);
const fmt = (xs: number[], digits = 3) => xs.map((x) => x.toFixed(digits)).join(' ');
const report = {
  protocol: PROTOCOL,
  peer: GRPC ? 'nginx grpc_pass' : TCP ? 'haproxy mode tcp' : 'nginx',
  rounds: ROUNDS,
  medianRps: Object.fromEntries(Object.entries(figures).map(([k, v]) => [k, median(v.map((f) => f.rps))])),
  medianCpuPer1000: Object.fromEntries(Object.entries(figures).map(([k, v]) => [k, median(v.map((f) => f.cpu))])),
  afterOverBeforeRps: { median: median(paired('rps', 'after', 'before')), each: fmt(paired('rps', 'after', 'before')) },
  afterOverBeforeCpu: { median: median(paired('cpu', 'after', 'before')), each: fmt(paired('cpu', 'after', 'before')) },
  afterOverPeerRps: median(paired('rps', 'after', 'peer')),
  beforeOverPeerRps: median(paired('rps', 'before', 'peer')),
};
console.log(JSON.stringify(report, null, 2));
