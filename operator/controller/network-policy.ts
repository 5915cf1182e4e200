import type { V1NetworkPolicy, V1NetworkPolicySpec } from '@kubernetes/client-node';
import { managedLabels, networkPolicyName } from '../api/types.ts';
import type { ResolvedSpec } from './resolved-spec.ts';

/**
 * The NetworkPolicy that closes the way around the sidecar: the selected pods admit ingress only on the
 * sidecar's listener ports (spec.testListeners' too) and its admin port (kubelet's probes, Prometheus), so
 * nothing on the pod network reaches `upstreamPort` in plain text. The sidecar reaches the mock over loopback, which no policy filters.
 * Policies are additive: another policy that admits more to these pods widens what this one admits.
 * Undefined when none is wanted (spec.networkPolicy None, or no podSelector: no pod runs the sidecar).
 */
export function desiredNetworkPolicy(
  endpoint: { name: string; namespace: string },
  spec: Pick<ResolvedSpec, 'networkPolicy' | 'podSelector' | 'listeners'> &
    Partial<Pick<ResolvedSpec, 'testListeners'>>,
  adminPort: number,
): V1NetworkPolicy | undefined {
  if (spec.networkPolicy !== 'Enforce' || !spec.podSelector) return undefined;
  const ports = [...[...spec.listeners, ...(spec.testListeners ?? [])].map((listener) => listener.port), adminPort]
    .sort((a, b) => a - b)
    .map((port) => ({ protocol: 'TCP', port }));
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: {
      name: networkPolicyName(endpoint.name),
      namespace: endpoint.namespace,
      labels: managedLabels(endpoint.name),
    },
    spec: { podSelector: spec.podSelector, policyTypes: ['Ingress'], ingress: [{ ports }] },
  };
}

/** Whether a stored policy's spec already says what `desired` says (the API server fills no defaults in here
 * except each port's protocol, which `desired` sets). */
export function sameNetworkPolicySpec(current: V1NetworkPolicySpec | undefined, desired: V1NetworkPolicySpec): boolean {
  const shape = (spec: V1NetworkPolicySpec | undefined) =>
    JSON.stringify({
      podSelector: normaliseSelector(spec?.podSelector),
      policyTypes: spec?.policyTypes ?? [],
      ingress: (spec?.ingress ?? []).map((rule) => ({
        // `_from` in the client's typed models, `from` in raw watch events.
        from: rule._from ?? (rule as { from?: unknown[] }).from ?? [],
        ports: (rule.ports ?? []).map((p) => ({ protocol: p.protocol ?? 'TCP', port: p.port, endPort: p.endPort })),
      })),
    });
  return shape(current) === shape(desired);
}

function normaliseSelector(selector: V1NetworkPolicySpec['podSelector'] | undefined) {
  return {
    matchLabels: Object.fromEntries(Object.entries(selector?.matchLabels ?? {}).sort(([a], [b]) => a.localeCompare(b))),
    matchExpressions: selector?.matchExpressions ?? [],
  };
}
