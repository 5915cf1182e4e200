/**
 * What one sidecar per pod costs in memory, beside the floor of the runtime, side by side in one run:
 *   - the sidecar: compiled, as in the image, with three listeners (standard, flexible, strict: an endpoint
 *     with all three modes) and the injected NODE_OPTIONS; load goes to its strict listener;
 *   - a bare Node TLS server: bench/node-tls-relay.ts (TLS with client certificates, relaying bytes to the
 *     mock; no HTTP, metrics or logs), same NODE_OPTIONS;
 *   - a bare Node process: an idle timer, same NODE_OPTIONS;
 *   - with MTLS_BENCH_SIDECAR_BEFORE=PATH/dist/operator/cli.js, another build of the sidecar (an older commit's)
 *     as a "before" column, measured the same way in the same run.
 * Figures, each process pinned to core 0 with the load tools and the mock on core 1: RSS when idle
 * (IDLE_SECONDS after it listens), peak RSS under keep-alive load (ab -k, REQUESTS requests at concurrency 32)
 * with the requests/s, and RSS after a handshake flood (openssl s_time -new for FLOOD_SECONDS: full TLS 1.3
 * handshakes with a client certificate), now and at its peak, with the handshakes/s. Median of RUNS runs; the
 * processes take turns within each run. Loopback only; every step is bounded in count or time.
 * Writes its section of bench/RESULTS.md and bench/results/sidecar-memory.json.
 * Needs nginx, ab, openssl, taskset (installed from Debian when missing, as root).
 * Run: npm run bench:sidecar-memory
 */
import { type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { SIDECAR_NODE_OPTIONS } from '../sidecar/flags.ts';
import {
  compileSidecar,
  ensureTools,
  handshakesPerSecond,
  keepAliveRps,
  LOAD_CPU,
  materials,
  type Materials,
  medianFigures,
  NODE_ENV,
  procHwmMiB,
  procRssMiB,
  type Proxy,
  PROXY_CPU,
  REQUESTS,
  ROOT,
  RUNS,
  sleep,
  startMock,
  startNodeRelay,
  startPinned,
  startSidecarProcess,
  stopChild,
} from './proxies.ts';
import { writeResultsSection } from './results-file.ts';

const IDLE_SECONDS = 3;
const FLOOD_SECONDS = Number(process.env.MTLS_BENCH_FLOOD_SECONDS ?? 4);
const BEFORE = process.env.MTLS_BENCH_SIDECAR_BEFORE;

type Subject = 'sidecar' | 'sidecar-before' | 'tls-server' | 'bare-node';
type Figures = Record<string, number>;

/** A bare Node process: what every Node sidecar costs before it does anything. */
function startBareNode(): Proxy {
  const child: ChildProcess = startPinned(
    PROXY_CPU,
    join(ROOT, 'node_modules/.bin/node'),
    ['-e', 'setInterval(() => {}, 1 << 30)'],
    NODE_ENV,
  );
  return { name: 'bare-node', port: 0, pids: () => [child.pid!], stop: () => stopChild(child) };
}

function start(subject: Subject, dir: string, m: Materials, upstream: number): Promise<Proxy> | Proxy {
  switch (subject) {
    case 'sidecar':
      return startSidecarProcess(m, upstream, 1, PROXY_CPU, { extraListeners: true });
    case 'sidecar-before':
      return startSidecarProcess(m, upstream, 1, PROXY_CPU, { extraListeners: true, cli: BEFORE });
    case 'tls-server':
      return startNodeRelay(dir, m, upstream, PROXY_CPU);
    case 'bare-node':
      return startBareNode();
  }
}

/** One subject's figures; a process that serves nothing gets only the idle one. */
async function measure(proxy: Proxy, m: Materials): Promise<Figures> {
  const [pid] = proxy.pids();
  await sleep(IDLE_SECONDS * 1000);
  const figures: Figures = { idleMiB: procRssMiB(pid!) };
  if (proxy.port === 0) return figures;
  const ka = await keepAliveRps(proxy.port, m, [pid!], LOAD_CPU, 1);
  figures.keepAliveRps = ka.rps;
  figures.failed = ka.failed;
  figures.keepAlivePeakMiB = procHwmMiB(pid!);
  figures.handshakesPerSecond = await handshakesPerSecond(proxy.port, m, LOAD_CPU, 1, FLOOD_SECONDS);
  figures.afterFloodMiB = procRssMiB(pid!);
  figures.floodPeakMiB = procHwmMiB(pid!);
  return figures;
}

await ensureTools();
await compileSidecar();
const subjects: Subject[] = BEFORE
  ? ['sidecar', 'sidecar-before', 'tls-server', 'bare-node']
  : ['sidecar', 'tls-server', 'bare-node'];
const dir = mkdtempSync(join(tmpdir(), 'mtls-bench-memory-'));
const mock = await startMock(dir);
const runs: Record<string, Figures[]> = {};
try {
  const m = await materials(mkdtempSync(join(dir, 'ecdsa-')), 'ECDSA-P256');
  for (let run = 0; run < RUNS; run++) {
    for (const subject of subjects) {
      const proxy = await start(subject, dir, m, mock.port);
      try {
        const figures = await measure(proxy, m);
        (runs[subject] ??= []).push(figures);
        process.stderr.write(`[bench] ${subject} run ${run + 1}: ${JSON.stringify(figures)}\n`);
      } finally {
        await proxy.stop();
        await sleep(300);
      }
    }
  }
} finally {
  await mock.stop();
}

const medians: Record<string, Figures> = Object.fromEntries(
  Object.entries(runs).map(([subject, list]) => [subject, medianFigures(list)]),
);
const fmt = (n: number | undefined, digits: number) =>
  n !== undefined && Number.isFinite(n) ? n.toFixed(digits) : 'n/a';
const LABELS: Record<Subject, string> = {
  sidecar: 'sidecar',
  'sidecar-before': 'sidecar before',
  'tls-server': 'bare Node TLS server',
  'bare-node': 'bare Node process',
};
const s = medians.sidecar!;
const t = medians['tls-server']!;
const lines = [
  '## Sidecar memory beside the runtime (`npm run bench:sidecar-memory`)',
  '',
  `Produced by \`${process.env.MTLS_BENCH_RUNS ? `MTLS_BENCH_RUNS=${RUNS} ` : ''}${BEFORE ? `MTLS_BENCH_SIDECAR_BEFORE=${relative(ROOT, BEFORE)} ` : ''}npm run bench:sidecar-memory\` on ${new Date().toISOString().slice(0, 10)}: ${cpus().length} cores (${cpus()[0]?.model.trim()}), Node ${process.version}, NODE_OPTIONS "${SIDECAR_NODE_OPTIONS}" for every process.`,
  `The sidecar compiled, with three listeners (standard, flexible, strict; load on strict); the bare TLS server is bench/node-tls-relay.ts;`,
  `the bare process an idle timer. Each pinned to core 0; ab, openssl s_time and the nginx mock (1 KiB) on core 1. Median of ${RUNS} runs.`,
  `Idle: RSS ${IDLE_SECONDS} s after start. Keep-alive: ${REQUESTS} requests at concurrency 32 (ab -k). Flood: ${FLOOD_SECONDS} s of full TLS 1.3`,
  `handshakes with a client certificate (openssl s_time -new).`,
  ...(BEFORE ? ['', `"sidecar before" is ${relative(ROOT, BEFORE)}, an older build, run beside the current one.`] : []),
  '',
  `| figure | ${subjects.map((x) => LABELS[x]).join(' | ')} |`,
  `|---|${subjects.map(() => '---|').join('')}`,
];
const row = (label: string, key: string, digits: number) =>
  lines.push(`| ${label} | ${subjects.map((x) => fmt(medians[x]?.[key], digits)).join(' | ')} |`);
row('RSS idle (MiB)', 'idleMiB', 1);
row('peak RSS under keep-alive load (MiB)', 'keepAlivePeakMiB', 1);
row('RSS after the handshake flood (MiB)', 'afterFloodMiB', 1);
row('peak RSS with the handshake flood (MiB)', 'floodPeakMiB', 1);
row('keep-alive requests/s', 'keepAliveRps', 0);
row('full mTLS handshakes/s', 'handshakesPerSecond', 0);
row('failed requests', 'failed', 0);
lines.push(
  '',
  `Idle sidecar over the bare TLS server: ${fmt(s.idleMiB! - t.idleMiB!, 1)} MiB (target <= 5 MiB: ${s.idleMiB! - t.idleMiB! <= 5 ? 'met' : 'not met'}).`,
);
mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
writeFileSync(join(ROOT, 'bench/results/sidecar-memory.json'), JSON.stringify({ runs, medians }, null, 2));
writeResultsSection('sidecar-memory', lines.join('\n'));
console.log(lines.join('\n'));
