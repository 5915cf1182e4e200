import * as k8s from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { loadKubeConfig } from '../../operator/kube/kubeconfig.ts';

/** What global setup hands the test workers, through a file named by MTLS_TEST_CONTROL_PLANE_STATE. */
export interface ControlPlaneState {
  kubeconfig: string;
  kubectl: string;
  dir: string;
}

function state(): ControlPlaneState {
  const file = process.env.MTLS_TEST_CONTROL_PLANE_STATE;
  if (!file) throw new Error('MTLS_TEST_CONTROL_PLANE_STATE is not set: run the tests through jest (npm test)');
  return JSON.parse(readFileSync(file, 'utf8')) as ControlPlaneState;
}

export function kubeconfigPath(): string {
  return state().kubeconfig;
}

export function kubeConfig(): k8s.KubeConfig {
  return loadKubeConfig(kubeconfigPath());
}

const execFileAsync = promisify(execFile);

/** Runs the control plane's own kubectl against it; rejects with kubectl's stderr on failure. */
export async function kubectl(args: string[], input?: string): Promise<string> {
  const child = execFileAsync(state().kubectl, ['--kubeconfig', kubeconfigPath(), ...args], { timeout: 60_000 });
  if (input !== undefined) {
    child.child.stdin?.end(input);
  }
  try {
    return (await child).stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(e.stderr?.trim() || e.message);
  }
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | false>,
  { timeoutMs = 30_000, intervalMs = 200 } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = err;
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}`);
}

/** A fresh namespace for one suite; waits until its default ServiceAccount exists so Pods can be admitted. */
export async function createTestNamespace(prefix: string, labels: Record<string, string> = {}): Promise<string> {
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  const core = kubeConfig().makeApiClient(k8s.CoreV1Api);
  await core.createNamespace({ body: { metadata: { name, labels } } });
  await waitFor(`the default ServiceAccount in ${name}`, () =>
    core.readNamespacedServiceAccount({ name: 'default', namespace: name }).then(() => true),
  );
  return name;
}

export async function deleteTestNamespace(name: string): Promise<void> {
  const core = kubeConfig().makeApiClient(k8s.CoreV1Api);
  await core.deleteNamespace({ name }).catch(() => undefined);
}
