import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Versions of the local control plane (the build script is handed these). */
export const KUBERNETES_VERSION = process.env.MTLS_K8S_VERSION ?? '1.35.4';
export const ETCD_VERSION = process.env.MTLS_ETCD_VERSION ?? '3.6.16';
export const HELM_VERSION = process.env.MTLS_HELM_VERSION ?? '3.22.0';

export interface ControlPlaneBinaries {
  etcd: string;
  kubeApiserver: string;
  kubeControllerManager: string;
  kubectl: string;
  /** Not part of the control plane; built alongside it for the Helm chart's tests. */
  helm: string;
}

const ENV_NAMES: Record<keyof ControlPlaneBinaries, [envVar: string, file: string]> = {
  etcd: ['MTLS_ETCD', 'etcd'],
  kubeApiserver: ['MTLS_KUBE_APISERVER', 'kube-apiserver'],
  kubeControllerManager: ['MTLS_KUBE_CONTROLLER_MANAGER', 'kube-controller-manager'],
  kubectl: ['MTLS_KUBECTL', 'kubectl'],
  helm: ['MTLS_HELM', 'helm'],
};

export function cacheDir(): string {
  return process.env.MTLS_OPERATOR_CACHE ?? join(homedir(), '.cache', 'mtls-operator');
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function cachedPath(file: string): string {
  const dir =
    file === 'etcd'
      ? `etcd-v${ETCD_VERSION}`
      : file === 'helm'
        ? `helm-v${HELM_VERSION}`
        : `kubernetes-v${KUBERNETES_VERSION}`;
  return join(cacheDir(), dir, file);
}

/**
 * Where each binary comes from, in order: an environment variable naming it, the versioned cache, or PATH.
 * kubectl and helm on PATH are ignored unless named: another version would skew the tests.
 */
export function locateBinaries(): Partial<ControlPlaneBinaries> {
  const found: Partial<ControlPlaneBinaries> = {};
  for (const [key, [envVar, file]] of Object.entries(ENV_NAMES) as [keyof ControlPlaneBinaries, [string, string]][]) {
    const fromEnv = process.env[envVar];
    if (fromEnv) {
      if (!isExecutable(fromEnv)) throw new Error(`${envVar}=${fromEnv} is not an executable file`);
      found[key] = fromEnv;
      continue;
    }
    if (isExecutable(cachedPath(file))) {
      found[key] = cachedPath(file);
      continue;
    }
    if (file !== 'kubectl' && file !== 'helm') {
      const onPath = (process.env.PATH ?? '')
        .split(delimiter)
        .map((dir) => join(dir, file))
        .find(isExecutable);
      if (onPath) found[key] = onPath;
    }
  }
  return found;
}

const BUILD_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'build-binaries.sh');

/** Finds the binaries, building the missing ones from Go modules into the cache (minutes, once). */
export async function ensureBinaries(): Promise<ControlPlaneBinaries> {
  let found = locateBinaries();
  if (Object.keys(ENV_NAMES).some((key) => !found[key as keyof ControlPlaneBinaries])) {
    process.stderr.write(
      `[control-plane] building Kubernetes v${KUBERNETES_VERSION} and etcd v${ETCD_VERSION} from Go modules into ${cacheDir()}.\n` +
        '[control-plane] This happens once per version and takes about 10-15 minutes on 2 cores; later runs start in seconds.\n',
    );
    await new Promise<void>((resolve, reject) => {
      const child = spawn('bash', [BUILD_SCRIPT], {
        stdio: ['ignore', 'inherit', 'inherit'],
        env: {
          ...process.env,
          MTLS_K8S_VERSION: KUBERNETES_VERSION,
          MTLS_ETCD_VERSION: ETCD_VERSION,
          MTLS_HELM_VERSION: HELM_VERSION,
          MTLS_OPERATOR_CACHE: cacheDir(),
        },
      });
      child.on('error', reject);
      child.on('exit', (code) =>
        code === 0 ? resolve() : reject(new Error(`${BUILD_SCRIPT} failed with exit code ${code}`)),
      );
    });
    found = locateBinaries();
  }
  const missing = (Object.keys(ENV_NAMES) as (keyof ControlPlaneBinaries)[]).filter((key) => !found[key]);
  if (missing.length > 0) throw new Error(`control plane binaries not found after the build: ${missing.join(', ')}`);
  return found as ControlPlaneBinaries;
}
