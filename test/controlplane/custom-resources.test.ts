import * as k8s from '@kubernetes/client-node';
import { createTestNamespace, deleteTestNamespace, kubeConfig, kubectl, waitFor } from '../support/cluster.ts';

// A throwaway CRD: proves the real API server serves, validates and watches custom objects.
const CRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.harness.mtls.operator.dev}
spec:
  group: harness.mtls.operator.dev
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size: {type: integer, minimum: 1}
`;
const gadgets = { group: 'harness.mtls.operator.dev', version: 'v1', plural: 'gadgets' };

describe('local control plane: custom resources', () => {
  let namespace: string;
  const custom = () => kubeConfig().makeApiClient(k8s.CustomObjectsApi);

  beforeAll(async () => {
    namespace = await createTestNamespace('harness-crd');
    await kubectl(['apply', '-f', '-'], CRD);
    await kubectl(['wait', '--for=condition=Established', '--timeout=30s', 'crd/gadgets.harness.mtls.operator.dev']);
  });
  afterAll(() => deleteTestNamespace(namespace));

  it('creates, gets, lists and watches custom objects through @kubernetes/client-node', async () => {
    const seen: string[] = [];
    // Right after a CRD is established the API server answers watches with 429 until its watch cache is
    // ready, so keep (re)starting the watch until one stays open.
    const watch = await waitFor('a watch on the new resource to stay open', async () => {
      let failed = false;
      const controller = await new k8s.Watch(kubeConfig()).watch(
        `/apis/${gadgets.group}/${gadgets.version}/namespaces/${namespace}/${gadgets.plural}`,
        {},
        (type: string, obj: k8s.KubernetesObject) => seen.push(`${type} ${obj.metadata?.name}`),
        (err) => (failed = !!err && (err as Error).name !== 'AbortError'),
      );
      await new Promise((resolve) => setTimeout(resolve, 300));
      if (!failed) return controller;
      controller.abort();
      return undefined;
    });
    try {
      await custom().createNamespacedCustomObject({
        ...gadgets,
        namespace,
        body: {
          apiVersion: 'harness.mtls.operator.dev/v1',
          kind: 'Gadget',
          metadata: { name: 'one' },
          spec: { size: 3 },
        },
      });
      const got = (await custom().getNamespacedCustomObject({ ...gadgets, namespace, name: 'one' })) as {
        spec: { size: number };
      };
      expect(got.spec.size).toBe(3);
      const list = (await custom().listNamespacedCustomObject({ ...gadgets, namespace })) as { items: unknown[] };
      expect(list.items).toHaveLength(1);
      await waitFor('the watch to see the object', async () => seen.includes('ADDED one'));
    } finally {
      watch.abort();
    }
  });

  it('rejects an object that breaks the schema with a field error', async () => {
    await expect(
      kubectl(
        ['apply', '-n', namespace, '-f', '-'],
        'apiVersion: harness.mtls.operator.dev/v1\nkind: Gadget\nmetadata: {name: bad}\nspec: {size: 0}\n',
      ),
    ).rejects.toThrow(/spec\.size: Invalid value: 0: spec\.size in body should be greater than or equal to 1/);
  });
});
