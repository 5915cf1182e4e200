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

/** The rest of a cluster, for `controlplane --node`; built by the same script into the same cache. */
export interface NodeBinaries {
  kubeScheduler: string;
  kubelet: string;
  kubeProxy: string;
  /** Only its NetworkPolicy firewall runs (routing and service proxy off). */
  kubeRouter: string;
}

export const KUBE_ROUTER_VERSION = process.env.MTLS_KUBE_ROUTER_VERSION ?? '2.1.0';

type AnyBinary = keyof ControlPlaneBinaries | keyof NodeBinaries;

const ENV_NAMES: Record<AnyBinary, [envVar: string, file: string]> = {
  etcd: ['MTLS_ETCD', 'etcd'],
  kubeApiserver: ['MTLS_KUBE_APISERVER', 'kube-apiserver'],
  kubeControllerManager: ['MTLS_KUBE_CONTROLLER_MANAGER', 'kube-controller-manager'],
  kubectl: ['MTLS_KUBECTL', 'kubectl'],
  helm: ['MTLS_HELM', 'helm'],
  kubeScheduler: ['MTLS_KUBE_SCHEDULER', 'kube-scheduler'],
  kubelet: ['MTLS_KUBELET', 'kubelet'],
  kubeProxy: ['MTLS_KUBE_PROXY', 'kube-proxy'],
  kubeRouter: ['MTLS_KUBE_ROUTER', 'kube-router'],
};

const CONTROL_PLANE_KEYS: (keyof ControlPlaneBinaries)[] = [
  'etcd',
  'kubeApiserver',
  'kubeControllerManager',
  'kubectl',
  'helm',
];
const NODE_KEYS: (keyof NodeBinaries)[] = ['kubeScheduler', 'kubelet', 'kubeProxy', 'kubeRouter'];

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
  const dirs: Record<string, string> = {
    etcd: `etcd-v${ETCD_VERSION}`,
    helm: `helm-v${HELM_VERSION}`,
    'kube-router': `kube-router-v${KUBE_ROUTER_VERSION}`,
  };
  const dir = dirs[file] ?? `kubernetes-v${KUBERNETES_VERSION}`;
  return join(cacheDir(), dir, file);
}

/**
 * Where each binary comes from, in order: an environment variable naming it, the versioned cache, or PATH.
 * kubectl and helm on PATH are ignored unless named: another version would skew the tests.
 */
export function locateBinaries(): Partial<ControlPlaneBinaries & NodeBinaries> {
  const found: Partial<ControlPlaneBinaries & NodeBinaries> = {};
  for (const [key, [envVar, file]] of Object.entries(ENV_NAMES) as [AnyBinary, [string, string]][]) {
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

/** Finds the control plane's binaries, building the missing ones from Go modules into the cache (minutes, once). */
export async function ensureBinaries(): Promise<ControlPlaneBinaries> {
  return (await ensure(CONTROL_PLANE_KEYS)) as ControlPlaneBinaries;
}

/** The control plane's binaries and the node's (kubelet, kube-proxy, kube-scheduler, kube-router). */
export async function ensureNodeBinaries(): Promise<ControlPlaneBinaries & NodeBinaries> {
  return (await ensure([...CONTROL_PLANE_KEYS, ...NODE_KEYS])) as ControlPlaneBinaries & NodeBinaries;
}

async function ensure(keys: AnyBinary[]): Promise<Partial<ControlPlaneBinaries & NodeBinaries>> {
  let found = locateBinaries();
  if (keys.some((key) => !found[key])) {
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
          MTLS_KUBE_ROUTER_VERSION: KUBE_ROUTER_VERSION,
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
  const missing = keys.filter((key) => !found[key]);
  if (missing.length > 0) throw new Error(`binaries not found after the build: ${missing.join(', ')}`);
  return found;
}
