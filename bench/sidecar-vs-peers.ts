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
 * Then the HTTP/2 (gRPC) and TCP rows of bench/sidecar-h2-tcp.ts.
 * Writes its sections of bench/RESULTS.md and bench/results/sidecar.json, sidecar-h2.json.
 * Needs nginx, haproxy, apache2-utils (ab), openssl, taskset: installed from Debian when missing (as root).
 * Run: npm run bench:sidecar
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { KeyAlgorithm } from '../operator/api/types.ts';
import { SIDECAR_NODE_OPTIONS } from '../sidecar/flags.ts';
import {
  BOTH_CPUS,
  compileSidecar,
  ensureTools,
  handshakesPerSecond,
  keepAliveRps,
  LATENCY_RATE,
  LATENCY_SECONDS,
  latencyUs,
  LOAD_CPU,
  materials,
  median,
  medianFigures,
  peakRssMiB,
  PROXY_CPU,
  proxyPids,
  type ProxyName,
  REQUESTS,
  RUNS,
  ROOT,
  sleep,
  startMock,
  startProxy,
} from './proxies.ts';
import { writeResultsSection } from './results-file.ts';
import { measureH2AndTcp, renderH2AndTcpSection } from './sidecar-h2-tcp.ts';

const execFileAsync = promisify(execFile);

await ensureTools();
// The sidecar runs compiled, as in the image.
await compileSidecar();
type Figures = Record<string, number>;
const oneCore: Record<string, Record<ProxyName, Figures>> = {};
const twoCores: Record<string, Figures> = {};
const dir = mkdtempSync(join(tmpdir(), 'mtls-bench-'));
const mock = await startMock(dir);
const directRuns: { p50: number; p99: number }[] = [];
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
    oneCore[algorithm] = Object.fromEntries(
      Object.entries(runs).map(([name, r]) => [name, medianFigures(r)]),
    ) as Record<ProxyName, Figures>;
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
  for (const [name, r] of Object.entries(runs)) twoCores[name] = medianFigures(r);
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

// The HTTP/2 (gRPC) and TCP rows (issue 17), after the HTTP/1.1 tables, in their own section.
const h2 = await measureH2AndTcp();
writeFileSync(join(ROOT, 'bench/results/sidecar-h2.json'), JSON.stringify(h2, null, 2));
writeResultsSection('sidecar-h2', renderH2AndTcpSection(h2));
console.log(renderH2AndTcpSection(h2));
