/**
 * The controller at scale, against the real local control plane:
 *   - time from create to Ready for single endpoints (median of 20),
 *   - time for N endpoints (one client each) to all become Ready, for N in MTLS_BENCH_SIZES (default 1,100,1000),
 *   - API requests the operator makes per endpoint at creation, in steady state (resyncs) and for one rotation,
 *   - controller RSS (VmHWM) at the largest N, and the time to re-issue every leaf of N endpoints.
 * The operator runs as its own process (`mtls-operator controller`), so its RSS is its own.
 * Run: npm run bench:controller   (writes bench/results/controller-scale.json and prints a table)
 */
import * as k8s from '@kubernetes/client-node';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { KUBERNETES_VERSION } from '../local/controlplane/binaries.ts';
import { renderControllerSection, writeResultsSection } from './results-file.ts';
import { freePort, LocalControlPlane } from '../local/controlplane/local-control-plane.ts';
import { ENDPOINT_RESOURCE, type MtlsEndpoint } from '../operator/api/types.ts';
import { operatorEnv } from '../operator/defaults.ts';

const sizes = (process.env.MTLS_BENCH_SIZES ?? '1,100,1000').split(',').map(Number);
const execFileAsync = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const plane = await LocalControlPlane.start({ progress: (l) => process.stderr.write(`[control-plane] ${l}\n`) });
const kc = plane.kubeConfig();
const custom = kc.makeApiClient(k8s.CustomObjectsApi);
const core = kc.makeApiClient(k8s.CoreV1Api);
const results: Record<string, unknown> = { kubernetes: plane.binaries, node: process.version };

/**
 * The API server's own counters. `writes`: mutating requests on Secrets, Services and MtlsEndpoint status
 * (events and leases left out; the bench's own creates are subtracted by the caller). `requests`: every request
 * the operator makes, reads and events included: all but the bench's own on mtlsendpoints (creates, patches,
 * the readiness polls) and the control plane's own traffic (leases, auth reviews).
 */
async function apiCounts(): Promise<{ writes: number; requests: number; conflicts: number }> {
  const { stdout: text } = await execFileAsync(
    plane.binaries.kubectl,
    ['--kubeconfig', plane.kubeconfigPath, 'get', '--raw', '/metrics'],
    { maxBuffer: 64 << 20 },
  );
  let writes = 0;
  let requests = 0;
  let conflicts = 0;
  for (const line of text.split('\n')) {
    const m = line.match(/^apiserver_request_total\{([^}]*)\} (\d+)/);
    if (!m) continue;
    const labels = m[1]!;
    const n = Number(m[2]);
    if (/resource="(leases|tokenreviews|subjectaccessreviews|selfsubjectaccessreviews|namespaces)"/.test(labels))
      continue;
    const benchOwn = /resource="mtlsendpoints"/.test(labels) && /subresource=""/.test(labels);
    if (!benchOwn) requests += n;
    if (/verb="(POST|PUT|PATCH|DELETE)"/.test(labels) && !/resource="events"/.test(labels)) {
      writes += n;
      // A write refused for a stale resourceVersion (or an object that already exists): work done twice.
      if (/code="409"/.test(labels)) conflicts += n;
    }
  }
  return { writes, requests, conflicts };
}

await new Promise<void>((resolve, reject) => {
  const p = spawn(
    plane.binaries.kubectl,
    [
      '--kubeconfig',
      plane.kubeconfigPath,
      'apply',
      '--server-side',
      '-f',
      new URL('../crds/', import.meta.url).pathname,
    ],
    { stdio: 'inherit' },
  );
  p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`kubectl apply exited ${code}`))));
});
await sleep(2_000);

// The operator runs compiled, as in the image (no type stripping in its memory).
await execFileAsync(process.execPath, [
  new URL('../node_modules/typescript/bin/tsc', import.meta.url).pathname,
  '-p',
  new URL('../tsconfig.build.json', import.meta.url).pathname,
]);
/**
 * One operator process per phase, scoped to that phase's namespace, so each RSS figure is that of an operator
 * holding exactly the endpoints of the phase (cluster-wide, the caches would hold every earlier phase's too).
 */
async function startOperator(namespace: string): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      new URL('../dist/operator/cli.js', import.meta.url).pathname,
      'controller',
      '--kubeconfig',
      plane.kubeconfigPath,
      '--namespace',
      namespace,
      '--no-webhook',
      '--no-leader-elect',
      '--metrics-address',
      '127.0.0.1',
      '--metrics-port',
      String(await freePort()),
      '--resync',
      '30s',
      '--workers',
      '4',
    ],
    // As the chart runs it: a heap sized for the container (operator/defaults.ts).
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, ...operatorEnv(), MTLS_LOG_LEVEL: 'warn' } },
  );
  await sleep(2_000); // caches synced (empty namespace)
  return child;
}
async function stopOperator(child: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(10_000)]);
}
let operator: ChildProcess | undefined;
const rssMiB = () => Number(readFileSync(`/proc/${operator!.pid}/status`, 'utf8').match(/VmHWM:\s+(\d+)/)![1]) / 1024;

async function readyCount(namespace: string): Promise<number> {
  const list = (await custom.listNamespacedCustomObject({ ...ENDPOINT_RESOURCE, namespace })) as {
    items: MtlsEndpoint[];
  };
  return list.items.filter(
    (ep) =>
      ep.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') &&
      ep.status?.observedGeneration === ep.metadata?.generation,
  ).length;
}
const body = (name: string, validity = '8760h') => ({
  apiVersion: 'mtls.operator.dev/v1alpha1',
  kind: 'MtlsEndpoint',
  metadata: { name },
  spec: {
    upstreamPort: 8080,
    podSelector: { matchLabels: { app: name } },
    clients: [{ name: 'client' }],
    certificates: { validity, renewBefore: '' },
  },
});

try {
  // 1. apply -> Ready, one at a time, median of 20
  await core.createNamespace({ body: { metadata: { name: 'bench-single' } } });
  operator = await startOperator('bench-single');
  const single: number[] = [];
  for (let i = 0; i < 20; i++) {
    const started = Date.now();
    await custom.createNamespacedCustomObject({
      ...ENDPOINT_RESOURCE,
      namespace: 'bench-single',
      body: body(`ep-${i}`),
    });
    for (let t = 0; t < 600; t++) {
      const ep = (await custom.getNamespacedCustomObject({
        ...ENDPOINT_RESOURCE,
        namespace: 'bench-single',
        name: `ep-${i}`,
      })) as MtlsEndpoint;
      if (ep.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')) break;
      await sleep(10);
    }
    single.push(Date.now() - started);
  }
  results.applyToReadyMs = { median: median(single), min: Math.min(...single), max: Math.max(...single) };

  // 2. N endpoints at once
  const scale: Record<string, unknown>[] = [];
  for (const n of sizes) {
    const namespace = `bench-${n}`;
    await core.createNamespace({ body: { metadata: { name: namespace } } });
    await stopOperator(operator!);
    operator = await startOperator(namespace);
    const before = await apiCounts();
    const started = Date.now();
    for (let i = 0; i < n; i += 25) {
      await Promise.all(
        Array.from({ length: Math.min(25, n - i) }, (_, j) =>
          custom.createNamespacedCustomObject({ ...ENDPOINT_RESOURCE, namespace, body: body(`ep-${i + j}`) }),
        ),
      );
    }
    let ready = 0;
    const deadline = Date.now() + 10 * 60_000;
    while ((ready = await readyCount(namespace)) < n && Date.now() < deadline) await sleep(250);
    const allReadyMs = Date.now() - started;
    await sleep(3_000);
    const created = await apiCounts();
    await sleep(65_000); // two resyncs of 30 s
    const steady = await apiCounts();
    scale.push({
      endpoints: n,
      ready,
      allReadyMs,
      writesPerEndpointAtCreation: +((created.writes - before.writes - n) / n).toFixed(2),
      conflictsPerEndpointAtCreation: +((created.conflicts - before.conflicts) / n).toFixed(2),
      requestsPerEndpointAtCreation: +((created.requests - before.requests) / n).toFixed(2),
      writesInTwoResyncs: steady.writes - created.writes,
      requestsInTwoResyncs: steady.requests - created.requests,
      rssMiB: +rssMiB().toFixed(1),
    });
    process.stderr.write(`[bench] ${JSON.stringify(scale.at(-1))}\n`);
  }
  results.scale = scale;

  // 3. mass rotation: shorten validity of every endpoint of the largest N (a spec change re-issues each leaf)
  const n = Math.max(...sizes);
  const namespace = `bench-${n}`;
  const before = await apiCounts();
  const started = Date.now();
  for (let i = 0; i < n; i += 25) {
    await Promise.all(
      Array.from({ length: Math.min(25, n - i) }, (_, j) =>
        custom.patchNamespacedCustomObject(
          {
            ...ENDPOINT_RESOURCE,
            namespace,
            name: `ep-${i + j}`,
            body: { spec: { certificates: { validity: '4380h' } } },
          },
          k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
        ),
      ),
    );
  }
  const deadline = Date.now() + 10 * 60_000;
  while ((await readyCount(namespace)) < n && Date.now() < deadline) await sleep(250);
  const reissueMs = Date.now() - started;
  await sleep(3_000);
  const after = await apiCounts();
  results.massRotation = {
    endpoints: n,
    reissueAllLeavesMs: reissueMs,
    writesPerEndpoint: +((after.writes - before.writes - n) / n).toFixed(2),
    conflictsPerEndpoint: +((after.conflicts - before.conflicts) / n).toFixed(2),
    requestsPerEndpoint: +((after.requests - before.requests) / n).toFixed(2),
    rssMiB: +rssMiB().toFixed(1),
  };
  process.stderr.write(`[bench] ${JSON.stringify(results.massRotation)}\n`);
} finally {
  if (operator) await stopOperator(operator);
  await plane.stop();
}
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(new URL('./results/controller-scale.json', import.meta.url), JSON.stringify(results, null, 2));
writeResultsSection('controller', renderControllerSection(results, KUBERNETES_VERSION, cpus().length));
console.log(JSON.stringify(results, null, 2));
