import { EndpointController } from '../../operator/controller/manager.ts';
import { OperatorMetrics } from '../../operator/metrics.ts';
import { createTestNamespace, deleteTestNamespace, kubeConfig, kubectl, waitFor } from '../support/cluster.ts';
import { condition, core, createEndpoint, getEndpoint, installCrd, waitReady } from '../support/endpoints.ts';

/** The value of one series of the operator's /metrics text, or undefined when the series does not exist. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const match = line.match(/^(\w+)(?:\{(.*)\})? (\S+)$/);
    if (!match || match[1] !== name) continue;
    const have = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(match[3]);
  }
  return undefined;
}

describe('operator metrics against the real API server', () => {
  let namespace: string;
  let controller: EndpointController;
  const metrics = new OperatorMetrics();
  const scrape = () => metrics.registry.metrics();
  const queue = { name: 'mtlsendpoint' };

  beforeAll(async () => {
    await installCrd();
    namespace = await createTestNamespace('ctrl-metrics');
    controller = new EndpointController({ kubeConfig: kubeConfig(), metrics, namespace, resyncMs: 60_000 });
    await controller.start();
  });
  afterAll(async () => {
    await controller?.stop();
    await deleteTestNamespace(namespace);
  });

  it('mtls_endpoint_ready_status follows Ready (False while reconciles fail, True after), retries are counted, and the series go with the endpoint', async () => {
    const ready = (condition: string) => async () =>
      sample(await scrape(), 'mtls_endpoint_ready_status', { namespace, endpoint: 'quota', condition });
    const before = sample(await scrape(), 'mtls_workqueue_adds_total', queue)!;
    expect(sample(await scrape(), 'mtls_workqueue_retries_total', queue)).toBe(0);

    // A quota of no Services: the reconcile fails creating the endpoint's Service, and is retried.
    await core().createNamespacedResourceQuota({
      namespace,
      body: { metadata: { name: 'no-services' }, spec: { hard: { services: '0' } } },
    });
    await createEndpoint(namespace, 'quota', { upstreamPort: 8080 });
    await waitFor('Ready=False, ReconcileFailed', async () =>
      condition(await getEndpoint(namespace, 'quota'), 'Ready')?.reason === 'ReconcileFailed' ? true : undefined,
    );
    await waitFor('the gauge to say False', async () => ((await ready('False')()) === 1 ? true : undefined));
    expect([await ready('True')(), await ready('Unknown')()]).toEqual([0, 0]);
    await waitFor('a retry', async () =>
      sample(await scrape(), 'mtls_workqueue_retries_total', queue)! > 0 ? true : undefined,
    );

    await core().deleteNamespacedResourceQuota({ name: 'no-services', namespace });
    await waitReady(namespace, 'quota');
    await waitFor('the gauge to say True', async () => ((await ready('True')()) === 1 ? true : undefined));
    expect([await ready('False')(), await ready('Unknown')()]).toEqual([0, 0]);

    const text = await scrape();
    expect(sample(text, 'mtls_workqueue_adds_total', queue)).toBeGreaterThan(before);
    expect(sample(text, 'mtls_workqueue_queue_duration_seconds_count', queue)).toBeGreaterThan(0);
    expect(sample(text, 'mtls_workqueue_work_duration_seconds_count', queue)).toBeGreaterThan(0);
    // Every wait and every piece of work observed lies within the test's own span.
    expect(sample(text, 'mtls_workqueue_work_duration_seconds_bucket', { ...queue, le: '600' })).toBe(
      sample(text, 'mtls_workqueue_work_duration_seconds_count', queue),
    );

    await kubectl(['delete', '-n', namespace, 'mtlsendpoint', 'quota']);
    await waitFor('the series of the deleted endpoint to go', async () =>
      (await scrape()).includes('endpoint="quota"') ? undefined : true,
    );
  });

  it('mtls_workqueue_depth counts keys waiting, and is back to 0 once the workers caught up', async () => {
    // Keys of endpoints that do not exist (each a no-op reconcile), more than the two idle workers take at once.
    for (const name of ['a', 'b', 'c', 'd', 'e']) controller.queue.add(`${namespace}/${name}`);
    // Read before any worker runs again (nothing has been awaited since the adds).
    const depth = metrics.queueDepth.get();
    expect(controller.queue.length).toBeGreaterThan(0);
    expect((await depth).values.find((v) => v.labels.name === 'mtlsendpoint')?.value).toBe(controller.queue.length);
    await waitFor('the queue to drain', async () =>
      sample(await scrape(), 'mtls_workqueue_depth', queue) === 0 && controller.queue.length === 0 ? true : undefined,
    );
  });
});
