import * as k8s from '@kubernetes/client-node';
import { SIDECAR_ADMIN_PORT } from '../../operator/api/injection.ts';
import type { EndpointController } from '../../operator/controller/manager.ts';
import { createTestNamespace, deleteTestNamespace, kubeConfig, kubectl, waitFor } from '../support/cluster.ts';
import { startController } from '../support/operator.ts';
import { createEndpoint, getEndpoint, installCrd, waitReady } from '../support/endpoints.ts';

const networking = () => kubeConfig().makeApiClient(k8s.NetworkingV1Api);
const readPolicy = (namespace: string, name: string) =>
  networking()
    .readNamespacedNetworkPolicy({ namespace, name })
    .catch(() => undefined);
const ingressPorts = (policy: k8s.V1NetworkPolicy | undefined) =>
  policy?.spec?.ingress?.flatMap((rule) => (rule.ports ?? []).map((p) => `${p.protocol}/${p.port}`));

describe('controller: the NetworkPolicy of an endpoint, against the real API server', () => {
  let namespace: string;
  let controller: EndpointController;

  beforeAll(async () => {
    await installCrd();
    namespace = await createTestNamespace('ctrl-netpol');
    controller = await startController(namespace, { resyncMs: 2_000, caPropagationDelayMs: 2_000 });
  });
  afterAll(async () => {
    await controller?.stop();
    await deleteTestNamespace(namespace);
  });

  it('keeps <name>-mtls-only by default, owned by the endpoint, and names it in status', async () => {
    await createEndpoint(namespace, 'payments', {
      podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['payments-mock'] }] },
      upstreamPort: 8080,
      listeners: [
        { mode: 'flexible', port: 9443 },
        { mode: 'strict', port: 10443 },
      ],
    });
    await waitReady(namespace, 'payments');
    const policy = await waitFor('the NetworkPolicy', () => readPolicy(namespace, 'payments-mtls-only'));
    // NetworkPolicy, unlike a Service, can say matchExpressions: the selected pods are exactly the injected ones.
    expect(policy.spec?.podSelector).toEqual({
      matchExpressions: [{ key: 'app', operator: 'In', values: ['payments-mock'] }],
    });
    expect(policy.spec?.policyTypes).toEqual(['Ingress']);
    expect(ingressPorts(policy)).toEqual(['TCP/9443', 'TCP/10443', `TCP/${SIDECAR_ADMIN_PORT}`]);
    expect(policy.metadata?.ownerReferences?.[0]).toMatchObject({ kind: 'MtlsEndpoint', name: 'payments' });
    expect(policy.metadata?.labels).toMatchObject({ 'mtls.operator.dev/endpoint': 'payments' });
    await waitFor(
      'status.networkPolicy',
      async () => (await getEndpoint(namespace, 'payments')).status?.networkPolicy === 'payments-mtls-only',
    );
    expect(await kubectl(['get', 'mtls', 'payments', '-n', namespace, '-o', 'wide'])).toMatch(
      /NETWORK-POLICY[\s\S]*payments-mtls-only/,
    );
  });

  it('repairs a policy someone widened, and follows the listeners', async () => {
    await kubectl([
      'patch',
      'networkpolicy',
      'payments-mtls-only',
      '-n',
      namespace,
      '--type=json',
      '-p',
      JSON.stringify([{ op: 'add', path: '/spec/ingress/0/ports/-', value: { protocol: 'TCP', port: 8080 } }]),
    ]);
    await waitFor('the widened policy to be repaired', async () => {
      const ports = ingressPorts(await readPolicy(namespace, 'payments-mtls-only'));
      return ports && !ports.includes('TCP/8080') ? true : undefined;
    });
    await kubectl([
      'patch',
      'mtls',
      'payments',
      '-n',
      namespace,
      '--type=merge',
      '-p',
      JSON.stringify({ spec: { listeners: [{ mode: 'strict', port: 10443 }] } }),
    ]);
    await waitFor(
      'the ports to follow the listeners',
      async () =>
        JSON.stringify(ingressPorts(await readPolicy(namespace, 'payments-mtls-only'))) ===
        JSON.stringify(['TCP/10443', `TCP/${SIDECAR_ADMIN_PORT}`]),
    );
  });

  it('deletes the policy on networkPolicy: None and reports None; recreates it when set back', async () => {
    await kubectl([
      'patch',
      'mtls',
      'payments',
      '-n',
      namespace,
      '--type=merge',
      '-p',
      '{"spec":{"networkPolicy":"None"}}',
    ]);
    await waitFor('the policy to go', async () =>
      (await readPolicy(namespace, 'payments-mtls-only')) ? undefined : true,
    );
    await waitFor(
      'status.networkPolicy None',
      async () => (await getEndpoint(namespace, 'payments')).status?.networkPolicy === 'None',
    );
    await kubectl([
      'patch',
      'mtls',
      'payments',
      '-n',
      namespace,
      '--type=merge',
      '-p',
      '{"spec":{"networkPolicy":"Enforce"}}',
    ]);
    await waitFor('the policy to come back', () => readPolicy(namespace, 'payments-mtls-only'));
  });

  it('refuses a networkPolicy value other than Enforce or None, naming the field', async () => {
    await expect(createEndpoint(namespace, 'typo', { upstreamPort: 8080, networkPolicy: 'enforce' })).rejects.toThrow(
      /spec\.networkPolicy: Unsupported value/,
    );
  });

  it('is owned by its endpoint, so the garbage collector deletes it with the endpoint', async () => {
    // The deletion itself (and the port it reopens) is proven on the real node: test/node/strict-network.test.ts.
    const policy = await readPolicy(namespace, 'payments-mtls-only');
    expect(policy?.metadata?.ownerReferences).toEqual([
      expect.objectContaining({ kind: 'MtlsEndpoint', name: 'payments', controller: true, blockOwnerDeletion: true }),
    ]);
  });
});
