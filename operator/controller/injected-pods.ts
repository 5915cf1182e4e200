import type { V1LabelSelector, V1Pod } from '@kubernetes/client-node';
import { INJECT_ANNOTATION, INJECTION_NAMESPACE_LABEL } from '../api/types.ts';
import { sidecarContainerOf } from '../api/injection.ts';
import { selectorMatches } from '../kube/selectors.ts';

/** Counts the selected pods that run the sidecar and reports those that do not, with the fix. */
/** The endpoint's pods: selected, not opted out of injection, neither being deleted nor finished. */
export function selectedPods(pods: readonly V1Pod[], selector: V1LabelSelector | undefined): V1Pod[] {
  return pods.filter(
    (pod) =>
      !pod.metadata?.deletionTimestamp &&
      pod.status?.phase !== 'Succeeded' &&
      pod.status?.phase !== 'Failed' &&
      selectorMatches(selector, pod.metadata?.labels ?? {}) &&
      pod.metadata?.annotations?.[INJECT_ANNOTATION] !== 'false',
  );
}

export function podReport(
  pods: readonly V1Pod[],
  selector: V1LabelSelector | undefined,
  namespace: string,
): { injected: number; degraded?: { reason: string; message: string } } {
  const selected = selectedPods(pods, selector);
  const missing = selected.filter((pod) => !sidecarContainerOf(pod));
  const injected = selected.length - missing.length;
  if (missing.length === 0) return { injected };
  const names = missing.map((pod) => pod.metadata!.name!).sort();
  const shown = names.slice(0, 5).join(', ') + (names.length > 5 ? ` and ${names.length - 5} more` : '');
  return {
    injected,
    degraded: {
      reason: 'PodsNotInjected',
      message:
        `${missing.length} selected pod(s) run without the mTLS sidecar: ${shown}. They were created while the webhook was ` +
        `unavailable or before namespace ${namespace} had the label ${INJECTION_NAMESPACE_LABEL}=enabled. Fix: ` +
        `kubectl label namespace ${namespace} ${INJECTION_NAMESPACE_LABEL}=enabled --overwrite; then recreate them, ` +
        `e.g. kubectl -n ${namespace} rollout restart deployment/<name>, or kubectl -n ${namespace} delete pod ${names[0]}.`,
    },
  };
}
