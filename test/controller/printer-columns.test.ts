import { request, type RequestOptions } from 'node:https';
import { ENDPOINT_RESOURCE } from '../../operator/api/types.ts';
import { EndpointController } from '../../operator/controller/manager.ts';
import { OperatorMetrics } from '../../operator/metrics.ts';
import { createTestNamespace, deleteTestNamespace, kubeConfig, kubectl, waitFor } from '../support/cluster.ts';
import { condition, core, createEndpoint, getEndpoint, installCrd } from '../support/endpoints.ts';

interface Table {
  kind: string;
  columnDefinitions: { name: string; priority: number }[];
  rows: { cells: unknown[] }[];
}

/** `kubectl get` asks the API server for a Table (meta.k8s.io/v1); this reads the same one, as column -> cell. */
async function table(namespace: string, name: string): Promise<Record<string, unknown>> {
  const kc = kubeConfig();
  const { group, version, plural } = ENDPOINT_RESOURCE;
  const url = new URL(
    `${kc.getCurrentCluster()!.server}/apis/${group}/${version}/namespaces/${namespace}/${plural}/${name}`,
  );
  const options: RequestOptions = { headers: { accept: 'application/json;as=Table;v=v1;g=meta.k8s.io' } };
  await kc.applyToHTTPSOptions(options);
  const body = await new Promise<Table>((resolve, reject) =>
    request(url, options, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () =>
        res.statusCode === 200 ? resolve(JSON.parse(text) as Table) : reject(new Error(`${res.statusCode}: ${text}`)),
      );
    })
      .on('error', reject)
      .end(),
  );
  expect(body.kind).toBe('Table');
  return Object.fromEntries(body.columnDefinitions.map((c, i) => [c.name, body.rows[0]!.cells[i]]));
}

describe('kubectl get mtls: the columns tell a Degraded endpoint from a healthy one', () => {
  let namespace: string;
  let controller: EndpointController;

  beforeAll(async () => {
    await installCrd();
    // No webhook: a selected pod runs without the sidecar, as when the operator was down.
    namespace = await createTestNamespace('ctrl-columns');
    controller = new EndpointController({
      kubeConfig: kubeConfig(),
      metrics: new OperatorMetrics(),
      namespace,
      resyncMs: 60_000,
    });
    await controller.start();
  });
  afterAll(async () => {
    await controller?.stop();
    await deleteTestNamespace(namespace);
  });

  it('a Ready endpoint with a pod not injected shows READY True and DEGRADED True, and why in the wide columns', async () => {
    await createEndpoint(namespace, 'partly', { podSelector: { matchLabels: { app: 'partly' } }, upstreamPort: 8080 });
    await waitFor('Ready', async () =>
      condition(await getEndpoint(namespace, 'partly'), 'Ready')?.status === 'True' ? true : undefined,
    );
    expect(await table(namespace, 'partly')).toMatchObject({ Ready: 'True', Degraded: 'False' });

    await core().createNamespacedPod({
      namespace,
      body: {
        metadata: { name: 'bare', labels: { app: 'partly' } },
        spec: { containers: [{ name: 'm', image: 'x' }] },
      },
    });
    await waitFor('Degraded', async () =>
      condition(await getEndpoint(namespace, 'partly'), 'Degraded')?.status === 'True' ? true : undefined,
    );
    expect(await table(namespace, 'partly')).toMatchObject({
      Ready: 'True',
      Degraded: 'True',
      'Degraded-Reason': 'PodsNotInjected',
    });
    // What a person sees.
    const [header, row] = (await kubectl(['get', '-n', namespace, 'mtls', 'partly'])).trim().split('\n');
    expect(header!.split(/\s+/).slice(0, 3)).toEqual(['NAME', 'READY', 'DEGRADED']);
    expect(row!.split(/\s+/).slice(0, 3)).toEqual(['partly', 'True', 'True']);
  });
});
