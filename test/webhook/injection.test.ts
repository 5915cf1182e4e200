import * as k8s from '@kubernetes/client-node';
import type { Webhook } from '../../operator/webhook/webhook.ts';
import { SIDECAR_NODE_OPTIONS } from '../../sidecar/flags.ts';
import { DEFAULT_SIDECAR_RESOURCES } from '../../operator/defaults.ts';
import { startOperator } from '../support/operator.ts';
import { createTestNamespace, deleteTestNamespace, kubeConfig, waitFor } from '../support/cluster.ts';
import { condition, core, createEndpoint, getEndpoint, installCrd, waitReady } from '../support/endpoints.ts';

const apps = () => kubeConfig().makeApiClient(k8s.AppsV1Api);

function deployment(
  name: string,
  labels: Record<string, string>,
  annotations: Record<string, string> = {},
): k8s.V1Deployment {
  return {
    metadata: { name },
    spec: {
      replicas: 1,
      selector: { matchLabels: labels },
      template: {
        metadata: { labels, annotations },
        spec: { containers: [{ name: 'mock', image: 'registry.invalid/mock:1', ports: [{ containerPort: 8080 }] }] },
      },
    },
  };
}

/** The pod of one Deployment (the Deployments here share the app label). */
async function podOf(namespace: string, app: string, deployment = 'payments'): Promise<k8s.V1Pod> {
  return waitFor(`a pod of ${deployment}`, async () =>
    (await core().listNamespacedPod({ namespace, labelSelector: `app=${app}` })).items.find((p) =>
      p.metadata?.name?.startsWith(`${deployment}-`),
    ),
  );
}

describe('webhook: sidecar injection against the real API server', () => {
  let injected: string;
  let plain: string;
  let operator: Awaited<ReturnType<typeof startOperator>> | undefined;
  let webhook: Webhook;

  beforeAll(async () => {
    await installCrd();
    injected = await createTestNamespace('inject', { 'mtls.operator.dev/injection': 'enabled' });
    plain = await createTestNamespace('noinject');
    operator = await startOperator(injected, { resyncMs: 2_000 });
    webhook = operator.webhook;
    for (const namespace of [injected, plain]) {
      await createEndpoint(namespace, 'payments', {
        podSelector: { matchLabels: { app: 'payments-mock' } },
        upstreamPort: 8080,
        listeners: [
          { mode: 'standard', port: 8443 },
          { mode: 'flexible', port: 9443 },
          { mode: 'strict', port: 10443 },
        ],
        clients: [{ name: 'billing' }],
        allowedClients: ['billing'],
      });
    }
    await waitReady(injected, 'payments');
  });

  afterAll(async () => {
    await operator?.stop();
    await deleteTestNamespace(injected);
    await deleteTestNamespace(plain);
  });

  it('injects the sidecar into the Pod that a Deployment creates in a labelled namespace', async () => {
    await apps().createNamespacedDeployment({
      namespace: injected,
      body: deployment('payments', { app: 'payments-mock' }),
    });
    const pod = await podOf(injected, 'payments-mock');
    // A native sidecar: an init container that keeps running, started (and probed) before the app.
    expect(pod.spec!.containers.map((c) => c.name)).toEqual(['mock']);
    const sidecar = pod.spec!.initContainers?.find((c) => c.name === 'mtls-sidecar');
    expect(sidecar?.restartPolicy).toBe('Always');
    expect(sidecar?.startupProbe?.httpGet).toMatchObject({ path: '/readyz', port: 'mtls-admin' });
    // kubectl logs/exec land in the app, and the app keeps serving while its endpoints are withdrawn.
    expect(pod.metadata?.annotations?.['kubectl.kubernetes.io/default-container']).toBe('mock');
    expect(pod.spec!.containers[0]!.lifecycle?.preStop).toEqual({ sleep: { seconds: 5 } });
    expect(sidecar!.args).toEqual(
      expect.arrayContaining([
        'sidecar',
        '--upstream',
        '127.0.0.1:8080',
        '--tls-dir',
        '/var/run/mtls-operator/tls',
        '--allow-client',
        'billing',
      ]),
    );
    for (const listen of ['standard=8443', 'flexible=9443', 'strict=10443']) expect(sidecar!.args).toContain(listen);
    expect(sidecar!.ports?.map((p) => `${p.name}:${p.containerPort}`)).toEqual(
      expect.arrayContaining(['mtls-standard:8443', 'mtls-flexible:9443', 'mtls-strict:10443', 'mtls-admin:15201']),
    );
    // The Secret volume, and an empty mask over the service-account token path: the sidecar gets no API token.
    expect(sidecar!.volumeMounts).toEqual([
      { name: 'mtls-server-tls', mountPath: '/var/run/mtls-operator/tls', readOnly: true },
      { name: 'mtls-no-api-token', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true },
    ]);
    expect(sidecar!.readinessProbe?.httpGet?.path).toBe('/readyz');
    expect(sidecar!.livenessProbe?.httpGet?.path).toBe('/healthz');
    expect(sidecar!.resources).toEqual(DEFAULT_SIDECAR_RESOURCES);
    // The runtime options the sidecar was measured with (a small young generation: bench/RESULTS.md).
    expect(sidecar!.env).toContainEqual({ name: 'NODE_OPTIONS', value: SIDECAR_NODE_OPTIONS });
    expect(sidecar!.securityContext).toMatchObject({
      runAsNonRoot: true,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    });
    // Prometheus's annotation-based pod discovery finds the sidecar's /metrics.
    expect(pod.metadata?.annotations).toMatchObject({
      'mtls.operator.dev/injected-by': 'payments',
      'prometheus.io/scrape': 'true',
      'prometheus.io/port': '15201',
      'prometheus.io/path': '/metrics',
    });
    const volume = pod.spec!.volumes!.find((v) => v.name === 'mtls-server-tls');
    expect(volume?.secret).toEqual({ secretName: 'payments-server', defaultMode: 0o440 });
    // The controller counts it.
    await waitFor(
      'status.injectedPods = 1',
      async () => (await getEndpoint(injected, 'payments')).status?.injectedPods === 1,
    );
  });

  it('leaves unlabelled namespaces and opted-out pods alone', async () => {
    await apps().createNamespacedDeployment({
      namespace: plain,
      body: deployment('payments', { app: 'payments-mock' }),
    });
    await apps().createNamespacedDeployment({
      namespace: injected,
      body: deployment('optout', { app: 'payments-mock', variant: 'optout' }, { 'mtls.operator.dev/inject': 'false' }),
    });
    const plainPod = await podOf(plain, 'payments-mock');
    const optedOut = await waitFor(
      'the opted-out pod',
      async () => (await core().listNamespacedPod({ namespace: injected, labelSelector: 'variant=optout' })).items[0],
    );
    expect(plainPod.spec!.containers.map((c) => c.name)).toEqual(['mock']);
    expect(optedOut.spec!.containers.map((c) => c.name)).toEqual(['mock']);
  });

  it('is idempotent: admitting an already injected pod changes nothing', async () => {
    const pod = await podOf(injected, 'payments-mock');
    const copy: k8s.V1Pod = {
      metadata: { name: 'readmitted', labels: pod.metadata!.labels, annotations: pod.metadata!.annotations },
      spec: { ...pod.spec!, nodeName: undefined },
    };
    const created = await core().createNamespacedPod({ namespace: injected, body: copy, dryRun: 'All' });
    expect(created.spec!.containers.map((c) => c.name)).toEqual(pod.spec!.containers.map((c) => c.name));
    expect(created.spec!.volumes!.filter((v) => v.name === 'mtls-server-tls')).toHaveLength(1);
  });

  it('refuses a pod that two endpoints select, naming both', async () => {
    await createEndpoint(injected, 'second', {
      podSelector: { matchLabels: { app: 'payments-mock' } },
      upstreamPort: 8081,
    });
    await waitFor('the webhook to see the second endpoint', async () => {
      try {
        await core().createNamespacedPod({
          namespace: injected,
          dryRun: 'All',
          body: {
            metadata: { name: 'double', labels: { app: 'payments-mock' } },
            spec: { containers: [{ name: 'm', image: 'x' }] },
          },
        });
        return undefined;
      } catch (err) {
        return String((err as { body?: unknown }).body).includes('selected by 2 MtlsEndpoints (payments, second)')
          ? true
          : undefined;
      }
    });
    await k8s.KubernetesObjectApi.makeApiClient(kubeConfig()).delete({
      apiVersion: 'mtls.operator.dev/v1alpha1',
      kind: 'MtlsEndpoint',
      metadata: { name: 'second', namespace: injected },
    });
  });

  it('never blocks pod creation when the webhook is down, and the endpoint reports the uninjected pod', async () => {
    await webhook.stop();
    const pod = await core().createNamespacedPod({
      namespace: injected,
      body: {
        metadata: { name: 'while-down', labels: { app: 'payments-mock' } },
        spec: { containers: [{ name: 'mock', image: 'x' }] },
      },
    });
    expect(pod.spec!.containers.map((c) => c.name)).toEqual(['mock']);
    const ep = await waitFor('Degraded=PodsNotInjected', async () => {
      const e = await getEndpoint(injected, 'payments');
      return condition(e, 'Degraded')?.reason === 'PodsNotInjected' ? e : undefined;
    });
    expect(condition(ep, 'Degraded')?.message).toContain('while-down');
    expect(condition(ep, 'Degraded')?.message).toContain(`kubectl -n ${injected} delete pod while-down`);
    const events = await core().listNamespacedEvent({
      namespace: injected,
      fieldSelector: 'involvedObject.name=payments',
    });
    expect(events.items.some((e) => e.reason === 'PodsNotInjected' && e.message?.includes('while-down'))).toBe(true);
  });
});
