import { SIDECAR_ADMIN_PORT } from '../../operator/api/injection.ts';
import { desiredNetworkPolicy, sameNetworkPolicySpec } from '../../operator/controller/network-policy.ts';

// What the controller wants stored, decided from the endpoint alone; network-policy.test.ts stores it on a real API server.

describe('the NetworkPolicy decision', () => {
  const endpoint = { name: 'payments', namespace: 'team' };
  const spec = {
    networkPolicy: 'Enforce' as const,
    podSelector: { matchLabels: { app: 'payments-mock' } },
    listeners: [
      { mode: 'strict' as const, port: 10443 },
      { mode: 'standard' as const, port: 8443 },
    ],
  };

  it('admits ingress to the selected pods only on the listener ports and the admin port, from anywhere', () => {
    const policy = desiredNetworkPolicy(endpoint, spec, SIDECAR_ADMIN_PORT)!;
    expect(policy.metadata).toMatchObject({ name: 'payments-mtls-only', namespace: 'team' });
    expect(policy.spec).toEqual({
      podSelector: spec.podSelector,
      policyTypes: ['Ingress'],
      ingress: [
        {
          ports: [8443, 10443, SIDECAR_ADMIN_PORT].sort((a, b) => a - b).map((port) => ({ protocol: 'TCP', port })),
        },
      ],
    });
  });

  it('wants no policy when the endpoint says None or selects no pods', () => {
    expect(desiredNetworkPolicy(endpoint, { ...spec, networkPolicy: 'None' }, SIDECAR_ADMIN_PORT)).toBeUndefined();
    expect(desiredNetworkPolicy(endpoint, { ...spec, podSelector: undefined }, SIDECAR_ADMIN_PORT)).toBeUndefined();
  });

  it('sees a stored policy that admits more, or other pods, as different', () => {
    const desired = desiredNetworkPolicy(endpoint, spec, SIDECAR_ADMIN_PORT)!.spec!;
    expect(sameNetworkPolicySpec(structuredClone(desired), desired)).toBe(true);
    const widened = structuredClone(desired);
    widened.ingress![0]!.ports!.push({ protocol: 'TCP', port: 8080 });
    expect(sameNetworkPolicySpec(widened, desired)).toBe(false);
    const fromAnywhere = structuredClone(desired);
    fromAnywhere.ingress!.push({});
    expect(sameNetworkPolicySpec(fromAnywhere, desired)).toBe(false);
    expect(sameNetworkPolicySpec({ ...desired, podSelector: { matchLabels: { app: 'other' } } }, desired)).toBe(false);
  });
});
