import * as k8s from '@kubernetes/client-node';
import { readFileSync } from 'node:fs';
import { REQUEST_CRD_NAME } from '../../operator/api/credential-request.ts';
import { ENDPOINT_RESOURCE, type MtlsEndpoint } from '../../operator/api/types.ts';
import { kubeConfig, kubectl, waitFor } from './cluster.ts';

const CRD_FILE = new URL('../../crds/mtls.operator.dev_mtlsendpoints.yaml', import.meta.url).pathname;
const REQUEST_CRD_FILE = new URL('../../crds/mtls.operator.dev_mtlscredentialrequests.yaml', import.meta.url).pathname;

/** Installs the product CRD (idempotent) and waits until it is served. */
export async function installCrd(): Promise<void> {
  await kubectl(['apply', '--server-side', '--force-conflicts', '-f', CRD_FILE]);
  await kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd/mtlsendpoints.mtls.operator.dev']);
  await kubectl(['apply', '--server-side', '--force-conflicts', '-f', REQUEST_CRD_FILE]);
  await kubectl(['wait', '--for=condition=Established', '--timeout=60s', `crd/${REQUEST_CRD_NAME}`]);
}

export function crdYaml(): string {
  return readFileSync(CRD_FILE, 'utf8');
}

export const custom = () => kubeConfig().makeApiClient(k8s.CustomObjectsApi);
export const core = () => kubeConfig().makeApiClient(k8s.CoreV1Api);

export async function createEndpoint(namespace: string, name: string, spec: Record<string, unknown>): Promise<void> {
  await custom().createNamespacedCustomObject({
    ...ENDPOINT_RESOURCE,
    namespace,
    body: { apiVersion: 'mtls.operator.dev/v1alpha1', kind: 'MtlsEndpoint', metadata: { name }, spec },
  });
}

export async function getEndpoint(namespace: string, name: string): Promise<MtlsEndpoint> {
  return (await custom().getNamespacedCustomObject({ ...ENDPOINT_RESOURCE, namespace, name })) as MtlsEndpoint;
}

export function condition(ep: MtlsEndpoint, type: string) {
  return ep.status?.conditions?.find((c) => c.type === type);
}

export async function waitReady(namespace: string, name: string, timeoutMs = 60_000): Promise<MtlsEndpoint> {
  return waitFor(
    `${namespace}/${name} to be Ready`,
    async () => {
      const ep = await getEndpoint(namespace, name);
      return condition(ep, 'Ready')?.status === 'True' && ep.status?.observedGeneration === ep.metadata?.generation
        ? ep
        : undefined;
    },
    { timeoutMs },
  );
}

export async function readSecret(namespace: string, name: string): Promise<k8s.V1Secret | undefined> {
  try {
    return await core().readNamespacedSecret({ namespace, name });
  } catch {
    return undefined;
  }
}

export function secretText(secret: k8s.V1Secret | undefined, key: string): string {
  const value = secret?.data?.[key];
  if (value === undefined) throw new Error(`Secret ${secret?.metadata?.name} has no ${key}`);
  return Buffer.from(value, 'base64').toString('utf8');
}
