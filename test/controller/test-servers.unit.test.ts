import { X509Certificate } from 'node:crypto';
import type { MtlsEndpoint } from '../../operator/api/types.ts';
import { EndpointReconciler } from '../../operator/controller/endpoint-reconciler.ts';
import { desiredNetworkPolicy } from '../../operator/controller/network-policy.ts';
import { resolveSpec, SpecError } from '../../operator/controller/resolved-spec.ts';
import { decideTestServers, type PartFacts, type TestServersInput } from '../../operator/controller/test-servers.ts';
import { secretText } from '../../operator/kube/secret-data.ts';
import { OperatorMetrics } from '../../operator/metrics.ts';
import { TEST_SERVER_FILES, WRONG_HOST_NAME } from '../../sidecar/test-listeners.ts';
import { FakeCluster } from './support/fake-cluster.ts';

// spec.testListeners on the operator's side: the pure decision about the <endpoint>-test-servers Secret, and the
// whole reconciler on a fake cluster (what the Secret holds, that it is stable, re-issued only in part, deleted).

const NS = 'team';
const T0 = new Date('2026-01-01T00:00:00Z');
const HOUR = 3600_000;

describe('decideTestServers', () => {
  const good = (over: Partial<PartFacts> = {}): PartFacts => ({
    notBefore: new Date(T0.getTime() - HOUR),
    notAfter: new Date(T0.getTime() + 8 * HOUR),
    signedByEndpointCa: false,
    dnsNames: ['payments-strict', 'localhost'],
    ...over,
  });
  const allGood = (): TestServersInput['facts'] => ({
    expired: good({ notAfter: new Date(T0.getTime() - 24 * HOUR), signedByEndpointCa: true }),
    wrongHost: good({ signedByEndpointCa: true }),
    untrusted: good(),
    foreignCa: good(),
  });
  const input = (over: Partial<TestServersInput> = {}): TestServersInput => ({
    wanted: true,
    exists: true,
    facts: allGood(),
    now: T0,
    dnsNames: ['localhost', 'payments-strict'],
    ...over,
  });
  const issued = (over: Partial<TestServersInput>) => {
    const d = decideTestServers(input(over));
    if (d.action !== 'write') throw new Error(`expected write, got ${d.action}`);
    return d.issue;
  };

  it('without test listeners: deletes a Secret that exists, does nothing otherwise', () => {
    expect(decideTestServers(input({ wanted: false }))).toEqual({ action: 'delete' });
    expect(decideTestServers(input({ wanted: false, exists: false }))).toEqual({ action: 'none' });
  });

  it('issues every part of a new Secret, and none of a Secret whose parts still say what they are for', () => {
    expect(issued({ exists: false, facts: {} }).map((i) => i.part)).toEqual([
      'expired',
      'untrusted',
      'wrongHost',
      'foreignCa',
    ]);
    expect(issued({})).toEqual([]);
  });

  it('re-issues only the part that is wrong, saying why', () => {
    const facts = allGood();
    expect(issued({ facts: { ...facts, expired: { ...facts.expired!, signedByEndpointCa: false } } })).toEqual([
      { part: 'expired', why: "not signed by the endpoint's current CA" },
    ]);
    expect(
      issued({ facts: { ...facts, expired: { ...facts.expired!, notAfter: new Date(T0.getTime() + 1) } } }),
    ).toEqual([{ part: 'expired', why: 'not expired' }]);
    expect(issued({ facts: { ...facts, untrusted: { ...facts.untrusted!, signedByEndpointCa: true } } })).toEqual([
      { part: 'untrusted', why: "signed by the endpoint's CA" },
    ]);
    expect(issued({ dnsNames: ['payments-strict', 'localhost', 'payments.example.com'] })).toEqual([
      { part: 'expired', why: "the endpoint's names changed" },
      { part: 'untrusted', why: "the endpoint's names changed" },
    ]);
    const { wrongHost: _dropped, ...withoutWrongHost } = facts;
    expect(issued({ facts: withoutWrongHost })).toEqual([{ part: 'wrongHost', why: 'missing' }]);
  });

  it('the expired part stays as it is forever; the others renew a third of their life before the end', () => {
    // 9 h of life: renewal 3 h before notAfter (T0 + 8 h), so at T0 + 5 h.
    expect(issued({ now: new Date(T0.getTime() + 5 * HOUR - 1) })).toEqual([]);
    expect(issued({ now: new Date(T0.getTime() + 5 * HOUR) }).map((i) => i.part)).toEqual([
      'untrusted',
      'wrongHost',
      'foreignCa',
    ]);
    const d = decideTestServers(input());
    expect(d.action === 'write' && d.wakeAt).toEqual([5, 5, 5].map((h) => T0.getTime() + h * HOUR));
  });
});

function endpoint(spec: Partial<MtlsEndpoint['spec']> = {}): MtlsEndpoint {
  return {
    metadata: { name: 'payments', namespace: NS, generation: 1, uid: 'uid-ep' },
    spec: {
      listeners: [{ mode: 'strict', port: 10443 }],
      upstreamPort: 8080,
      podSelector: { matchLabels: { app: 'payments' } },
      certificates: { validity: '1h', caValidity: '6h' },
      testListeners: [
        { kind: 'ExpiredCertificate', port: 9441 },
        { kind: 'UntrustedCA', port: 9442 },
        { kind: 'WrongHost', port: 9443 },
        { kind: 'TLS12Only', port: 9444 },
        { kind: 'TLS13Only', port: 9445 },
        { kind: 'ClientCAMismatch', port: 9446 },
      ],
      ...spec,
    } as MtlsEndpoint['spec'],
  };
}

describe('the reconciler with spec.testListeners, on a fake cluster', () => {
  let now = T0;
  const cluster = new FakeCluster(NS);
  const reconciler = new EndpointReconciler({
    view: cluster,
    writer: cluster,
    events: cluster.recorder,
    metrics: new OperatorMetrics(),
    now: () => now,
    caPropagationDelayMs: 60_000,
    resyncMs: 600_000,
  });
  const pass = () => reconciler.reconcile(`${NS}/payments`);
  const file = (name: string) => secretText(cluster.secret(NS, 'payments-test-servers'), name)!;
  const cert = (name: string) => new X509Certificate(file(name));
  const ca = () => new X509Certificate(secretText(cluster.secret(NS, 'payments-ca'), 'ca.crt')!);

  it('writes payments-test-servers after the leaf Secrets, once, with each bad certificate', async () => {
    cluster.putEndpoint(endpoint());
    await pass();
    expect(cluster.takeWrites()).toEqual([
      'create Secret/payments-ca',
      'create Secret/payments-server',
      'create Secret/payments-test-servers',
      'create Service/payments-strict',
      'create Service/payments-bad',
      'create NetworkPolicy/payments-mtls-only',
      'patch MtlsEndpoint/status/payments',
    ]);
    expect(cluster.takeEvents().sort()).toEqual(['CAIssued', 'Issued', 'TestServersIssued']);
    // One Service for the bad listeners, each on its own port; its names are in the server certificate (which
    // TLS12Only, TLS13Only and ClientCAMismatch serve) and in the expired and untrusted ones.
    const service = cluster.servicesOf(NS, 'payments').find((svc) => svc.metadata!.name === 'payments-bad')!;
    expect(service.spec!.selector).toEqual({ app: 'payments' });
    expect(service.spec!.ports!.map((p) => [p.name, p.port, p.targetPort])).toEqual([
      ['bad-expired', 9441, 'bad-expired'],
      ['bad-untrusted', 9442, 'bad-untrusted'],
      ['bad-wronghost', 9443, 'bad-wronghost'],
      ['bad-tls12only', 9444, 'bad-tls12only'],
      ['bad-tls13only', 9445, 'bad-tls13only'],
      ['bad-clientca', 9446, 'bad-clientca'],
    ]);
    const server = new X509Certificate(secretText(cluster.secret(NS, 'payments-server'), 'tls.crt')!);
    expect(server.subjectAltName).toContain('DNS:payments-bad.team.svc');
    expect(cert(TEST_SERVER_FILES.expiredCert).subjectAltName).toContain('DNS:payments-bad.team.svc');
    expect(Object.keys(cluster.secret(NS, 'payments-test-servers')!.data!).sort()).toEqual(
      Object.values(TEST_SERVER_FILES).sort(),
    );
    const expired = cert(TEST_SERVER_FILES.expiredCert);
    expect(new Date(expired.validTo).getTime()).toBeLessThan(T0.getTime());
    expect(expired.verify(ca().publicKey)).toBe(true);
    expect(expired.subjectAltName).toContain('DNS:payments-strict.team.svc');
    const untrusted = cert(TEST_SERVER_FILES.untrustedCert);
    expect(untrusted.verify(ca().publicKey)).toBe(false);
    expect(untrusted.subjectAltName).toContain('DNS:payments-strict.team.svc');
    const wrongHost = cert(TEST_SERVER_FILES.wrongHostCert);
    expect(wrongHost.subjectAltName).toBe(`DNS:${WRONG_HOST_NAME}`);
    expect(wrongHost.verify(ca().publicKey)).toBe(true);
    const foreign = cert(TEST_SERVER_FILES.foreignCa);
    expect(foreign.ca).toBe(true);
    expect(foreign.subject).not.toBe(ca().subject);
    expect(foreign.verify(ca().publicKey)).toBe(false);
    const policy = cluster.networkPoliciesOf(NS, 'payments')[0]!;
    expect(policy.spec!.ingress![0]!.ports!.map((p) => p.port)).toEqual([
      9441, 9442, 9443, 9444, 9445, 9446, 10443, 15201,
    ]);
  });

  it('a second pass writes nothing: the material is stable', async () => {
    await pass();
    expect(cluster.takeWrites()).toEqual([]);
  });

  it('near their end the untrusted, wrong-host and foreign-CA certificates are re-issued; the expired one is kept', async () => {
    const before = Object.fromEntries(Object.values(TEST_SERVER_FILES).map((f) => [f, file(f)]));
    now = new Date(T0.getTime() + 45 * 60_000); // past the renewal of 1 h leaves (a third before the end)
    await pass();
    expect(cluster.takeWrites()).toContain('replace Secret/payments-test-servers');
    expect(file(TEST_SERVER_FILES.expiredCert)).toBe(before[TEST_SERVER_FILES.expiredCert]);
    expect(file(TEST_SERVER_FILES.expiredKey)).toBe(before[TEST_SERVER_FILES.expiredKey]);
    for (const changed of [
      TEST_SERVER_FILES.untrustedCert,
      TEST_SERVER_FILES.wrongHostCert,
      TEST_SERVER_FILES.foreignCa,
    ])
      expect(file(changed)).not.toBe(before[changed]);
  });

  it('a Secret edited by hand is repaired part by part', async () => {
    const secret = cluster.secret(NS, 'payments-test-servers')!;
    const keep = file(TEST_SERVER_FILES.untrustedCert);
    delete secret.data![TEST_SERVER_FILES.wrongHostKey];
    cluster.putSecret(secret);
    await pass();
    expect(cluster.takeWrites()).toContain('replace Secret/payments-test-servers');
    expect(file(TEST_SERVER_FILES.wrongHostKey)).toContain('PRIVATE KEY');
    expect(file(TEST_SERVER_FILES.untrustedCert)).toBe(keep);
  });

  it('a new name of the endpoint re-issues the expired and untrusted certificates with it', async () => {
    cluster.putEndpoint({
      ...cluster.endpoint(NS, 'payments')!,
      spec: { ...endpoint().spec, dnsNames: ['pay.example'] },
    });
    await pass();
    expect(cluster.takeEvents()).toContain('TestServersIssued');
    expect(cert(TEST_SERVER_FILES.expiredCert).subjectAltName).toContain('DNS:pay.example');
    expect(cert(TEST_SERVER_FILES.untrustedCert).subjectAltName).toContain('DNS:pay.example');
    expect(cert(TEST_SERVER_FILES.wrongHostCert).subjectAltName).toBe(`DNS:${WRONG_HOST_NAME}`);
    cluster.takeWrites();
  });

  it('deletes the Secret when the list becomes empty', async () => {
    cluster.putEndpoint({ ...cluster.endpoint(NS, 'payments')!, spec: { ...endpoint().spec, testListeners: [] } });
    await pass();
    const writes = cluster.takeWrites();
    expect(writes).toContain('delete Secret/payments-test-servers');
    expect(writes).toContain('delete Service/payments-bad');
    expect(writes).toContain('replace NetworkPolicy/payments-mtls-only');
    expect(cluster.secret(NS, 'payments-test-servers')).toBeUndefined();
    expect(cluster.takeEvents()).toContain('TestServersRemoved');
  });
});

describe('spec checks of test listeners', () => {
  it("refuses a test listener on the sidecar's admin port, naming the field", () => {
    const ep = endpoint({ testListeners: [{ kind: 'WrongHost', port: 15201 }] });
    expect(() => resolveSpec(ep)).toThrow(SpecError);
    expect(() => resolveSpec(ep)).toThrow(/spec\.testListeners\[0\]\.port: 15201 is the sidecar's admin port/);
  });

  it('without a NetworkPolicy wanted, the test listeners add none', () => {
    const spec = resolveSpec(endpoint({ networkPolicy: 'None' }));
    expect(desiredNetworkPolicy({ name: 'payments', namespace: NS }, spec, 15201)).toBeUndefined();
  });
});
