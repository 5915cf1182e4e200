import {
  type CaInput,
  caRenewBeforeMs,
  decideCa,
  decideRetirement,
  type RetirementInput,
} from '../../operator/controller/ca-policy.ts';
import { endpointConditions, type StatusInput } from '../../operator/controller/endpoint-status.ts';
import { planCrls, CRL_VALIDITY_MS } from '../../operator/controller/crl-policy.ts';
import { type LeafFacts, leafIssuanceReason, withReplaced } from '../../operator/controller/leaf-policy.ts';
import { removedClients } from '../../operator/controller/removed-clients.ts';
import { certInfo } from '../../operator/pki/certs.ts';
import { BACKDATE_MS } from '../../operator/pki/issue.ts';

// The reconciler's decisions as tables on a fixed clock: no API server, no keys (placeholder PEM pairs where
// a decision only passes them along).

const NOW = new Date('2026-06-01T12:00:00Z');
const at = (ms: number) => new Date(NOW.getTime() + ms);
const MIN = 60_000;
const pair = (name: string) => ({ certPem: `cert-${name}`, keyPem: `key-${name}` });

describe('the leaf policy chain', () => {
  const healthy: LeafFacts = {
    secretName: 'ep-server',
    exists: true,
    issuedBefore: true,
    signerSerial: 'ca1',
    onCurrentCa: true,
    storedHash: 'h',
    renewalTime: at(10 * MIN),
  };
  const context = { wantedHash: 'h', now: NOW };
  it.each<
    [string, Partial<LeafFacts>, Partial<typeof context> & { phase?: 'Propagating' | 'Retiring' }, string | undefined]
  >([
    ['a healthy leaf is kept', {}, {}, undefined],
    ['a deleted Secret is repaired', { exists: false }, {}, 'Warning Repaired Secret ep-server was deleted'],
    ['a first issue is Normal', { exists: false, issuedBefore: false }, {}, 'Normal Issued New certificate'],
    ['a missing key is repaired', { missingKey: 'tls.key' }, {}, 'Warning Repaired Secret ep-server had no tls.key'],
    [
      'an unusable pair is repaired',
      { pairProblem: 'the certificate expired' },
      {},
      'Warning Repaired Secret ep-server: the certificate expired',
    ],
    [
      'a stranger signer is repaired',
      { signerSerial: undefined },
      {},
      "Warning Repaired Secret ep-server held a certificate not signed by this endpoint's CA",
    ],
    [
      'a wrong identity is repaired',
      { identityProblem: 'not a server' },
      {},
      'Warning Repaired Secret ep-server: not a server',
    ],
    ['a leaf on the replaced CA moves', { onCurrentCa: false }, { phase: 'Retiring' }, 'Normal Reissued CA rollover'],
    ['no move while the new CA propagates', { onCurrentCa: false }, { phase: 'Propagating' }, undefined],
    [
      'a spec change re-issues',
      { storedHash: 'old' },
      {},
      'Normal Reissued The spec changed (names, key algorithm or lifetime)',
    ],
    [
      'the renewal time re-issues',
      {},
      { now: at(10 * MIN) },
      `Normal Renewed Renewal time ${at(10 * MIN).toISOString()} reached`,
    ],
    [
      'repairs win over renewals',
      { pairProblem: 'bad', storedHash: 'old' },
      { now: at(20 * MIN) },
      'Warning Repaired Secret ep-server: bad',
    ],
  ])('%s', (_name, facts, ctx, expected) => {
    const reason = leafIssuanceReason({ ...healthy, ...facts }, { ...context, ...ctx });
    expect(reason && `${reason.type} ${reason.reason} ${reason.message}`).toBe(expected);
  });

  it('remembers replaced certificates, dropping expired ones and keeping the last 20', () => {
    const held = (i: number, notAfter: Date) => ({
      serial: `s${i}`,
      caSerial: 'ca1',
      notAfter: notAfter.toISOString(),
    });
    let list = withReplaced(undefined, held(0, at(-MIN)), NOW);
    expect(list).toBe(`s0:ca1:${at(-MIN).toISOString()}`);
    list = withReplaced(list, held(1, at(MIN)), NOW);
    expect(list).toBe(`s1:ca1:${at(MIN).toISOString()}`);
    for (let i = 2; i < 30; i++) list = withReplaced(list, held(i, at(MIN)), NOW);
    expect(list!.split(',')).toHaveLength(20);
    expect(list!.split(',')[0]).toMatch(/^s10:/);
  });
});

describe('the CA as a state machine', () => {
  const base: CaInput = {
    secretName: 'ep-ca',
    exists: true,
    read: { current: pair('a'), revoked: [] },
    nextUsable: false,
    previousUsable: false,
    everIssued: true,
    currentRenewalTime: at(MIN),
    currentSerial: 'a',
    publishedCrls: [],
    validityMs: 60 * MIN,
    propagationDelayMs: 5 * MIN,
    now: NOW,
  };
  const summary = (input: Partial<CaInput>) => {
    const plan = decideCa({ ...base, ...input });
    const s = plan.state;
    return [
      plan.issue ?? '-',
      s.phase ?? '-',
      [s.current?.certPem, s.next?.certPem, s.previous?.certPem].map((c) => c ?? '-').join('/'),
      plan.notes.map((n) => n.reason).join(',') || '-',
    ].join(' ');
  };
  it.each<[string, Partial<CaInput>, string]>([
    ['first CA', { exists: false, everIssued: false, read: undefined }, 'current - -/-/- CAIssued'],
    ['deleted CA Secret', { exists: false, read: undefined }, 'current - -/-/- CARepaired'],
    ['expired CA', { currentProblem: 'expired' }, 'current - -/-/- CARepaired'],
    ['before renewal: nothing', { currentRenewalTime: at(MIN) }, '- - cert-a/-/- -'],
    ['at renewal: a rollover starts', { currentRenewalTime: NOW }, 'next Propagating cert-a/-/- CARolloverStarted'],
    [
      'propagating, not yet propagated',
      {
        read: { current: pair('a'), next: pair('b'), phase: 'Propagating', phaseSince: at(-4 * MIN), revoked: [] },
        nextUsable: true,
      },
      '- Propagating cert-a/cert-b/- -',
    ],
    [
      'propagated: the new CA signs',
      {
        read: { current: pair('a'), next: pair('b'), phase: 'Propagating', phaseSince: at(-5 * MIN), revoked: [] },
        nextUsable: true,
      },
      '- Retiring cert-b/-/cert-a CARolledOver',
    ],
    [
      'a Propagating phase whose next CA is gone falls back',
      {
        read: { current: pair('a'), next: pair('b'), phase: 'Propagating', phaseSince: at(-MIN), revoked: [] },
        nextUsable: false,
      },
      '- - cert-a/-/- -',
    ],
    [
      'a Retiring phase whose old CA is gone falls back',
      {
        read: { current: pair('b'), previous: pair('a'), phase: 'Retiring', phaseSince: at(-MIN), revoked: [] },
        previousUsable: false,
      },
      '- - cert-b/-/- -',
    ],
    [
      'a damaged ledger is rebuilt from the CRL',
      {
        read: { current: pair('a'), revoked: [], ledgerProblem: 'revoked.json is not a JSON list' },
        publishedCrls: [{ issuer: 'CN=a', serials: new Set(['0f']), pem: '' }],
      },
      '- - cert-a/-/- CARepaired',
    ],
  ])('%s', (_name, input, expected) => {
    expect(summary(input)).toBe(expected);
  });

  it('rebuilds the ledger with the CRL serials, each kept one leaf lifetime', () => {
    const plan = decideCa({
      ...base,
      read: { current: pair('a'), revoked: [], ledgerProblem: 'bad' },
      publishedCrls: [{ issuer: 'CN=a', serials: new Set(['0f', '10']), pem: '' }],
    });
    expect(plan.state.revoked.map((e) => [e.serial, e.caSerial, e.notAfter])).toEqual([
      ['0f', 'a', at(60 * MIN).toISOString()],
      ['10', 'a', at(60 * MIN).toISOString()],
    ]);
  });

  it.each([
    // caValidity, validity, delay -> renewBefore
    [365 * 24 * 60, 90 * 24 * 60, 5, (365 * 24 * 60) / 3],
    [6 * 60, 60, 1, 2 * 60],
    [6 * 60, 150, 5, 150 + 2 * 5],
  ])('renews a CA of %i min (leaves %i min, delay %i min) %f min before it expires', (ca, leaf, delay, expected) => {
    expect(caRenewBeforeMs({ caValidityMs: ca * MIN, validityMs: leaf * MIN }, delay * MIN) / MIN).toBeCloseTo(
      expected,
    );
  });
});

describe('retiring the old CA', () => {
  const base: RetirementInput = {
    phase: 'Retiring' as const,
    phaseSince: at(-5 * MIN),
    previousSerial: 'old',
    revoked: [],
    replacedClientCerts: [],
    leavesOnOldCa: 0,
    propagationDelayMs: 5 * MIN,
    now: NOW,
  };
  const revokedS = {
    serial: 's',
    client: 'c',
    caSerial: 'old',
    revokedAt: NOW.toISOString(),
    notAfter: at(MIN).toISOString(),
  };
  it.each<[string, Partial<RetirementInput>, string]>([
    ['propagated, nothing left on it: retire', {}, 'retire'],
    ['not Retiring: nothing', { phase: undefined }, 'keep'],
    ['not propagated yet', { phaseSince: at(-4 * MIN) }, 'keep'],
    ['a leaf still on it', { leavesOnOldCa: 1 }, 'keep'],
    [
      'a replaced client certificate it signed is still valid',
      { replacedClientCerts: [{ serial: 's', caSerial: 'old', notAfter: at(MIN).toISOString() }] },
      `keep until ${at(MIN).getTime()}`,
    ],
    [
      '...unless that certificate was revoked',
      {
        replacedClientCerts: [{ serial: 's', caSerial: 'old', notAfter: at(MIN).toISOString() }],
        revoked: [revokedS],
      },
      'retire',
    ],
    [
      'one signed by the new CA does not hold it',
      { replacedClientCerts: [{ serial: 's', caSerial: 'new', notAfter: at(MIN).toISOString() }] },
      'retire',
    ],
  ])('%s', (_name, input, expected) => {
    const decision = decideRetirement({ ...base, ...input });
    expect(decision.retire ? 'retire' : decision.wakeAt ? `keep until ${decision.wakeAt}` : 'keep').toBe(expected);
  });
});

describe('the CRLs', () => {
  const ca = { pair: pair('a'), serial: 'a', subject: 'CN=a' };
  const revoked = (serial: string, notAfter: Date) => ({
    serial,
    client: 'c',
    caSerial: 'a',
    revokedAt: NOW.toISOString(),
    notAfter: notAfter.toISOString(),
  });
  const published = (serials: string[], nextUpdate: Date) => [
    { issuer: 'CN=a', serials: new Set(serials), nextUpdate, pem: 'PEM' },
  ];
  it.each<[string, ReturnType<typeof revoked>[], ReturnType<typeof published>, string]>([
    ['none published: sign', [], [], 'sign []'],
    ['same list, fresh: keep', [revoked('1', at(MIN))], published(['1'], at(CRL_VALIDITY_MS)), 'keep'],
    [
      'same list, a third of its life left: sign',
      [revoked('1', at(MIN))],
      published(['1'], at(CRL_VALIDITY_MS / 3)),
      'sign [1]',
    ],
    [
      'an entry added: sign',
      [revoked('1', at(MIN)), revoked('2', at(MIN))],
      published(['1'], at(CRL_VALIDITY_MS)),
      'sign [1,2]',
    ],
    ['an expired entry leaves the list', [revoked('1', at(-MIN))], published(['1'], at(CRL_VALIDITY_MS)), 'sign []'],
  ])('%s', (_name, entries, have, expected) => {
    const [part] = planCrls([ca], entries, have, NOW).parts;
    expect('keep' in part! ? 'keep' : `sign [${part!.sign.revoked.map((r) => r.serial).join(',')}]`).toBe(expected);
  });
});

describe('removed clients', () => {
  it('revokes what each still held and deletes its Secret; expired or known serials are not added again', () => {
    const held = [
      { serial: 'a', caSerial: 'ca', notAfter: at(MIN).toISOString() },
      { serial: 'b', caSerial: 'ca', notAfter: at(-MIN).toISOString() },
      { serial: 'k', caSerial: 'ca', notAfter: at(MIN).toISOString() },
    ];
    const known = [
      { serial: 'k', client: 'x', caSerial: 'ca', revokedAt: NOW.toISOString(), notAfter: at(MIN).toISOString() },
    ];
    const result = removedClients([{ client: 'old', secretName: 'ep-client-old', uid: 'u', held }], known, NOW);
    expect(result.revoked.map((e) => e.serial)).toEqual(['a']);
    expect(result.deletions).toEqual([{ verb: 'delete', kind: 'Secret', name: 'ep-client-old', uid: 'u' }]);
    expect(result.notes[0]!.message).toBe(
      'Client old was removed from spec.clients: deleted Secret ep-client-old and revoked a',
    );
  });
});

describe('the status conditions', () => {
  const info = { serialNumber: '01', notBefore: NOW, notAfter: at(60 * MIN), renewalTime: at(40 * MIN) };
  const base: StatusInput = {
    generation: 3,
    ca: info,
    server: { ...info, secretName: 'ep-server' },
    clients: [{ ...info, name: 'c', secretName: 'ep-client-c' }],
    wantedClients: 1,
    degraded: [],
    revokedSerials: [],
    injectedPods: 0,
    networkPolicy: 'None',
    listeners: [],
  };
  const row = (input: Partial<StatusInput>) => {
    const c = endpointConditions({ ...base, ...input });
    return [c.ready, c.issued, c.caRollover, c.degraded, c.renewBeforeTooShort]
      .map((x) => `${x.status}:${x.reason}`)
      .join(' ');
  };
  it.each<[string, Partial<StatusInput>, string]>([
    ['all issued', {}, 'True:Ready True:Issued False:NoRollover False:AsExpected False:AsExpected'],
    [
      'a client missing',
      { clients: [] },
      'False:Issuing False:Issuing False:NoRollover False:AsExpected False:AsExpected',
    ],
    [
      'propagating',
      { rollover: { phase: 'Propagating', since: NOW, newCaSerial: '02' } },
      'True:Ready True:Issued True:NewCAPropagating False:AsExpected False:AsExpected',
    ],
    [
      'retiring',
      { rollover: { phase: 'Retiring', since: NOW, newCaSerial: '02' } },
      'True:Ready True:Issued True:OldCARetiring False:AsExpected False:AsExpected',
    ],
    [
      'degraded',
      { degraded: [{ reason: 'PodsNotInjected', message: 'm' }] },
      'True:Ready True:Issued False:NoRollover True:PodsNotInjected False:AsExpected',
    ],
    [
      'renewBefore too short',
      { renewBeforeTooShort: 'too short' },
      'True:Ready True:Issued False:NoRollover False:AsExpected True:BelowKubeletSecretDelay',
    ],
  ])('%s', (_name, input, expected) => {
    expect(row(input)).toBe(expected);
  });

  it('joins every degraded message and stamps the generation', () => {
    const c = endpointConditions({
      ...base,
      degraded: [
        { reason: 'A', message: 'one.' },
        { reason: 'B', message: 'two.' },
      ],
    });
    expect(c.degraded).toMatchObject({ reason: 'A', message: 'one. two.', observedGeneration: 3 });
  });
});

describe('the backdating rule', () => {
  it('counts a leaf lifetime from issue, not from the notBefore backdated by a minute', async () => {
    const { issueCA, issueServer } = await import('../../operator/pki/issue.ts');
    const ca = await issueCA({
      endpoint: 'ep',
      namespace: 'ns',
      algorithm: 'ECDSA-P256',
      validityMs: 24 * 60 * MIN,
      now: NOW,
    });
    const leaf = await issueServer({ ca, dnsNames: ['ep'], algorithm: 'ECDSA-P256', validityMs: 30_000, now: NOW });
    const info = certInfo(leaf.certPem);
    expect(info.notBefore.getTime()).toBe(NOW.getTime() - BACKDATE_MS);
    // Due at issue + 2/3 of 30 s, not at once: a backdated start would have made it due before it was issued.
    expect(info.renewalTime.getTime()).toBe(NOW.getTime() + 20_000);
  });
});
