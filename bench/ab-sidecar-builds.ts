/**
 * Two builds of the sidecar (MTLS_BENCH_SIDECAR_BEFORE, e.g. an older commit's dist/operator/cli.js, and this
 * tree's dist/) and nginx, loaded in turn, ROUNDS rounds: keep-alive requests/s (ab -k, REQUESTS requests at
 * concurrency 32) and the proxy's CPU seconds per 1,000 requests. Taking turns round by round pairs each
 * before with an after measured seconds apart, so a machine shared with other work (whose load drifts over
 * minutes) weighs on both alike; the paired after/before ratios are reported with their median.
 * Run: MTLS_BENCH_SIDECAR_BEFORE=PATH/dist/operator/cli.js node bench/ab-sidecar-builds.ts (after npm run build)
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  keepAliveRps,
  LOAD_CPU,
  materials,
  median,
  PROXY_CPU,
  type Proxy,
  proxyPids,
  sleep,
  startMock,
  startNginx,
  startSidecarProcess,
} from './proxies.ts';

const BEFORE = process.env.MTLS_BENCH_SIDECAR_BEFORE;
if (!BEFORE) throw new Error('set MTLS_BENCH_SIDECAR_BEFORE to the other build (PATH/dist/operator/cli.js)');
const ROUNDS = Number(process.env.MTLS_BENCH_ROUNDS ?? 7);

const dir = mkdtempSync(join(tmpdir(), 'mtls-bench-ab-'));
const mock = await startMock(dir);
const m = await materials(mkdtempSync(join(dir, 'ecdsa-')), 'ECDSA-P256');
const subjects: Record<string, () => Promise<Proxy>> = {
  before: () => startSidecarProcess(m, mock.port, 1, PROXY_CPU, { cli: BEFORE }),
  after: () => startSidecarProcess(m, mock.port, 1, PROXY_CPU),
  nginx: () => startNginx(dir, m, mock.port, 1, PROXY_CPU),
};
const figures: Record<string, { rps: number; cpu: number }[]> = {};

try {
  for (let round = 0; round < ROUNDS; round++) {
    // The slot a build runs in weighs on it (the same build measured against itself read 0.97 in the second
    // slot): odd rounds run the two builds in the other order.
    const order = round % 2 === 0 ? ['before', 'after', 'nginx'] : ['after', 'before', 'nginx'];
    for (const name of order) {
      const start = subjects[name]!;
      const proxy = await start();
      try {
        const ka = await keepAliveRps(proxy.port, m, await proxyPids(proxy), LOAD_CPU, 1);
        (figures[name] ??= []).push({ rps: ka.rps, cpu: ka.cpuSecondsPer1000 });
        process.stderr.write(`[ab] round ${round + 1} ${name}: ${ka.rps} req/s, ${ka.cpuSecondsPer1000} CPU s/1000\n`);
      } finally {
        await proxy.stop();
        await sleep(300);
      }
    }
  }
} finally {
  await mock.stop();
}
const paired = (key: 'rps' | 'cpu', a: string, b: string) => figures[a]!.map((f, i) => f[key] / figures[b]![i]![key]);
const fmt = (xs: number[], digits = 3) => xs.map((x) => x.toFixed(digits)).join(' ');
const report = {
  rounds: ROUNDS,
  medianRps: Object.fromEntries(Object.entries(figures).map(([k, v]) => [k, median(v.map((f) => f.rps))])),
  medianCpuPer1000: Object.fromEntries(Object.entries(figures).map(([k, v]) => [k, median(v.map((f) => f.cpu))])),
  afterOverBeforeRps: { median: median(paired('rps', 'after', 'before')), each: fmt(paired('rps', 'after', 'before')) },
  afterOverBeforeCpu: { median: median(paired('cpu', 'after', 'before')), each: fmt(paired('cpu', 'after', 'before')) },
  afterOverNginxRps: median(paired('rps', 'after', 'nginx')),
  beforeOverNginxRps: median(paired('rps', 'before', 'nginx')),
};
console.log(JSON.stringify(report, null, 2));
