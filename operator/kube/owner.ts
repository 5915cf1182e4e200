import { AppsV1Api, type KubeConfig, type V1OwnerReference } from '@kubernetes/client-node';
import { errorMessage, logger } from '../log.ts';
import { statusCode } from './errors.ts';

/**
 * An ownerReference to the operator's own Deployment (the chart passes its name with --owner-deployment):
 * what the operator creates for itself in its namespace, the leader Lease and the webhook's serving Secret,
 * carries it, so the garbage collector deletes them with the Deployment, on `helm uninstall` or `kubectl
 * delete -f deploy/mtls-operator.yaml`. Not `controller` (the Deployment controller has no say over them)
 * and not `blockOwnerDeletion` (nothing should hold up the Deployment's deletion, and setting it needs update
 * on deployments/finalizers). Undefined, with a warning, if the Deployment cannot be read: the operator then
 * runs as before, and those two objects stay behind on uninstall.
 */
export async function deploymentOwnerReference(
  kc: KubeConfig,
  namespace: string,
  name: string,
  { attempts = 5, retryMs = 1_000 } = {},
): Promise<V1OwnerReference | undefined> {
  const log = logger('operator');
  const apps = kc.makeApiClient(AppsV1Api);
  for (let attempt = 1; ; attempt++) {
    try {
      const deployment = await apps.readNamespacedDeployment({ namespace, name });
      if (deployment.metadata?.deletionTimestamp) {
        log.warn('the owner Deployment is being deleted; the Lease and the webhook Secret get no owner', {
          deployment: `${namespace}/${name}`,
        });
        return undefined;
      }
      return { apiVersion: 'apps/v1', kind: 'Deployment', name, uid: deployment.metadata!.uid! };
    } catch (err) {
      const status = statusCode(err);
      const retriable = status === undefined || status === 429 || status >= 500;
      if (retriable && attempt < attempts) {
        await new Promise((resolve) => setTimeout(resolve, retryMs));
        continue;
      }
      log.warn(
        'could not read the owner Deployment; the Lease and the webhook Secret get no owner and stay behind when it is deleted',
        { deployment: `${namespace}/${name}`, error: errorMessage(err) },
      );
      return undefined;
    }
  }
}

/** `current` plus each of `wanted` it lacks (by uid): an owner set by someone else is kept. */
export function withOwners(
  current: V1OwnerReference[] | undefined,
  wanted: V1OwnerReference[] | undefined,
): V1OwnerReference[] | undefined {
  const missing = (wanted ?? []).filter((owner) => !(current ?? []).some((ref) => ref.uid === owner.uid));
  return missing.length ? [...(current ?? []), ...missing] : current;
}
