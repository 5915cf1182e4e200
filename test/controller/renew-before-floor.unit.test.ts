import { RENEW_BEFORE_FLOOR } from '../../operator/api/defaults.ts';
import { parseDuration } from '../../operator/api/duration.ts';
import type { MtlsEndpoint, MtlsEndpointSpec } from '../../operator/api/types.ts';
import { renewBeforeTooShort, resolveSpec } from '../../operator/controller/resolved-spec.ts';

// kubelet delivers a changed Secret into a pod's volume up to 60-90 s after the change: a renewBefore below
// that lets the served certificate expire before its successor arrives. How the endpoint says so against a real
// API server: renew-before-floor.test.ts.

const judge = (certificates: MtlsEndpointSpec['certificates']) => {
  const ep: MtlsEndpoint = { metadata: { name: 'e' }, spec: { upstreamPort: 8080, certificates } };
  return renewBeforeTooShort(ep, resolveSpec(ep));
};

describe('renewBefore floor', () => {
  it('is 90s, one constant, and judges the renewBefore the leaves actually get', () => {
    expect(parseDuration(RENEW_BEFORE_FLOOR)).toBe(90_000);
    expect(judge({})).toBeUndefined(); // a year: renewed 2920h before expiry
    expect(judge({ validity: '1h', renewBefore: '90s' })).toBeUndefined();
    expect(judge({ validity: '4m30s' })).toBeUndefined(); // a third is exactly 90s
    const set = judge({ validity: '1h', renewBefore: '30s' });
    expect(set).toMatch(/^spec\.certificates\.renewBefore \(30s\) renews .* less than 90s before they expire/);
    expect(set).toMatch(/kubelet delivers a renewed Secret .* up to 60-90s after the change/);
    expect(set).toMatch(/Set spec\.certificates\.renewBefore to at least 90s\.$/);
    const defaulted = judge({ validity: '2m' });
    expect(defaulted).toMatch(/^spec\.certificates\.validity \(2m\) with an empty renewBefore \(a third of it, 40s\)/);
    expect(defaulted).toMatch(/at least 90s\.$/);
    // A validity that cannot hold a 90s renewBefore: the message says so.
    expect(judge({ validity: '1m' })).toMatch(/at least 90s, with a validity longer than that\.$/);
  });
});
