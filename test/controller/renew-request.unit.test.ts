import { parseRenewRequests, withRenewRequest } from '../../operator/api/renew-request.ts';
import { leafIssuanceReason, type LeafFacts } from '../../operator/controller/leaf-policy.ts';
import { renewDecision } from '../../operator/controller/renew-request.ts';

// The renewal a user asks for (kubectl mtls renew) as the controller judges it. Against the real API server,
// with the reconciler: test/cli/cli.test.ts.

const at = (iso: string) => new Date(iso);
const server = { kind: 'server' } as const;
const billing = { kind: 'client', client: 'billing', spiffeId: 'spiffe://x' } as const;

describe('the renew-requested annotation', () => {
  it('keeps one entry per target: a new request replaces its own, never another', () => {
    const one = withRenewRequest(undefined, { kind: 'server' }, at('2026-01-02T03:04:05.678Z'));
    expect(one).toBe('server=2026-01-02T03:04:05Z');
    const two = withRenewRequest(one, { kind: 'client', client: 'billing' }, at('2026-01-02T03:05:00Z'));
    expect(two).toBe('server=2026-01-02T03:04:05Z,client/billing=2026-01-02T03:05:00Z');
    const three = withRenewRequest(two, { kind: 'server' }, at('2026-01-02T04:00:00Z'));
    expect(three).toBe('client/billing=2026-01-02T03:05:00Z,server=2026-01-02T04:00:00Z');
    expect(withRenewRequest('garbage', { kind: 'all' }, at('2026-01-02T04:00:00Z'))).toBe('all=2026-01-02T04:00:00Z');
  });

  it('reports what it cannot read, naming the entry and the form it expects', () => {
    const { entries, problems } = parseRenewRequests(
      'server=yesterday, nobody=2026-01-02T03:04:05Z,all=2026-01-02T03:04:05+02:00',
    );
    expect(entries).toEqual([{ target: 'all', at: at('2026-01-02T01:04:05Z') }]);
    expect(problems).toEqual([
      '"server=yesterday": expected server=<RFC 3339 time>, e.g. server=2026-01-02T15:04:05Z',
      '"nobody=2026-01-02T03:04:05Z": the target must be all, server or client/NAME',
    ]);
  });
});

describe('renewDecision', () => {
  const issued = at('2026-01-02T10:00:00Z');
  const now = at('2026-01-02T12:00:00Z');

  it('re-issues a leaf issued before a request that names it or all', () => {
    expect(renewDecision('server=2026-01-02T11:00:00Z', server, issued, now)).toEqual({
      due: true,
      requestedAt: at('2026-01-02T11:00:00Z'),
      message: 'Renewal of server requested at 2026-01-02T11:00:00Z (annotation mtls.operator.dev/renew-requested)',
    });
    expect(renewDecision('all=2026-01-02T11:00:00Z', billing, issued, now)).toMatchObject({ due: true });
    expect(renewDecision('client/billing=2026-01-02T11:00:00Z', billing, issued, now)).toMatchObject({ due: true });
  });

  it('leaves other certificates alone', () => {
    expect(renewDecision('server=2026-01-02T11:00:00Z', billing, issued, now)).toEqual({ due: false });
    expect(renewDecision('client/other=2026-01-02T11:00:00Z', billing, issued, now)).toEqual({ due: false });
    expect(renewDecision('client/billing=2026-01-02T11:00:00Z', server, issued, now)).toEqual({ due: false });
    expect(renewDecision(undefined, server, issued, now)).toEqual({ due: false });
    expect(renewDecision('server=not-a-time', server, issued, now)).toEqual({ due: false });
  });

  it('is honoured once: the leaf it issues is not older than the request, to the second', () => {
    const request = 'server=2026-01-02T11:00:00Z';
    expect(renewDecision(request, server, at('2026-01-02T11:00:00Z'), now)).toEqual({ due: false });
    // notBefore has whole seconds: a leaf issued at 11:00:00.900 reads back as 11:00:00.
    expect(renewDecision('server=2026-01-02T11:00:00.500Z', server, at('2026-01-02T11:00:00Z'), now)).toEqual({
      due: false,
    });
    // A leaf issued after the request for another reason (a new client, a repair) is not issued twice.
    expect(renewDecision('all=2026-01-02T09:00:00Z', billing, issued, now)).toEqual({ due: false });
  });

  it('waits for a request in the future (a clock ahead) instead of re-issuing until the clocks agree', () => {
    expect(renewDecision('server=2026-01-02T12:05:00Z', server, issued, now)).toEqual({
      due: false,
      wakeAt: at('2026-01-02T12:05:00Z'),
    });
    expect(renewDecision('server=2026-01-02T12:05:00Z', server, issued, at('2026-01-02T12:05:00Z'))).toMatchObject({
      due: true,
    });
  });

  it('answers the latest request that has come, and names it', () => {
    const both = 'all=2026-01-02T10:30:00Z,server=2026-01-02T11:30:00Z,client/billing=2026-01-02T13:00:00Z';
    expect(renewDecision(both, server, issued, now)).toMatchObject({
      due: true,
      requestedAt: at('2026-01-02T11:30:00Z'),
    });
    expect(renewDecision(both, billing, issued, now)).toMatchObject({
      due: true,
      requestedAt: at('2026-01-02T10:30:00Z'),
      message: expect.stringMatching(/^Renewal of all requested at 2026-01-02T10:30:00Z/) as unknown,
    });
  });
});

describe('the renewRequested leaf check', () => {
  const now = at('2026-01-02T12:00:00Z');
  const facts: LeafFacts = {
    secretName: 'payments-server',
    exists: true,
    issuedBefore: true,
    signerSerial: 'ca',
    onCurrentCa: true,
    storedHash: 'h',
    renewalTime: at('2026-06-01T00:00:00Z'),
    issuedAt: at('2026-01-02T10:00:00Z'),
  };
  const context = { wantedHash: 'h', now, identity: server };

  it('re-issues a sound leaf on request, keeping the old one valid, and names the request in the Event', () => {
    expect(leafIssuanceReason(facts, { ...context, renewRequests: 'server=2026-01-02T11:00:00Z' })).toEqual({
      type: 'Normal',
      reason: 'RenewedOnRequest',
      message: 'Renewal of server requested at 2026-01-02T11:00:00Z (annotation mtls.operator.dev/renew-requested)',
      keepOld: true,
    });
    expect(leafIssuanceReason(facts, { ...context, renewRequests: 'client/billing=2026-01-02T11:00:00Z' })).toBe(
      undefined,
    );
  });

  it('comes after the repairs: a broken Secret is repaired, and that answers the request too', () => {
    const broken = { ...facts, pairProblem: 'the private key does not match the certificate' };
    expect(leafIssuanceReason(broken, { ...context, renewRequests: 'all=2026-01-02T11:00:00Z' })).toMatchObject({
      reason: 'Repaired',
    });
  });
});
