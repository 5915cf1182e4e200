import { type MtlsEndpoint, PREVIOUS_SERIALS_ANNOTATION } from '../../operator/api/types.ts';
import { parsePreviousSerials } from '../../operator/controller/leaf-policy.ts';
import { EndpointReconciler } from '../../operator/controller/endpoint-reconciler.ts';
import { OperatorMetrics } from '../../operator/metrics.ts';
import { secretText } from '../../operator/kube/secret-data.ts';
import { certInfo, parseCrls } from '../../operator/pki/certs.ts';
import { parseCertificateBundle } from '../../operator/pki/inspect.ts';
import { FakeCluster } from './support/fake-cluster.ts';

// The whole reconciler against a fake view and a recording writer, on a clock the test moves: which objects a
// pass writes, in which order, how often, and what the Secrets hold at each step of a CA rollover.

const NS = 'team';
const DELAY_MS = 60_000;
const T0 = new Date('2026-01-01T00:00:00Z');

function endpoint(spec: Partial<MtlsEndpoint['spec']> = {}): MtlsEndpoint {
  return {
    metadata: { name: 'payments', namespace: NS, generation: 1, uid: 'uid-ep' },
    spec: {
      listeners: [{ mode: 'strict', port: 10443 }],
      upstreamPort: 8080,
      podSelector: { matchLabels: { app: 'payments' } },
      clients: [{ name: 'checkout' }],
      certificates: { validity: '1h', caValidity: '6h' },
      ...spec,
    } as MtlsEndpoint['spec'],
  };
}

function setup(spec?: Partial<MtlsEndpoint['spec']>) {
  const cluster = new FakeCluster(NS);
  cluster.putEndpoint(endpoint(spec));
  let now = T0;
  const reconciler = new EndpointReconciler({
    view: cluster,
    writer: cluster,
    events: cluster.recorder,
    metrics: new OperatorMetrics(),
    now: () => now,
    caPropagationDelayMs: DELAY_MS,
    resyncMs: 600_000,
  });
  return {
    cluster,
    pass: () => reconciler.reconcile(`${NS}/payments`),
    at: (ms: number) => {
      now = new Date(T0.getTime() + ms);
    },
    bundleSerials: (secret: string) =>
      parseCertificateBundle(secretText(cluster.secret(NS, secret), 'ca.crt')!).map((c) =>
        c.serialNumber.toLowerCase(),
      ),
    caSerial: (key = 'ca.crt') => certInfo(secretText(cluster.secret(NS, 'payments-ca'), key)!).serialNumber,
  };
}

describe('the reconciler, on a fake cluster', () => {
  it('creates every object once, CA Secret first and status last; a second pass writes nothing', async () => {
    const { cluster, pass } = setup();
    await pass();
    expect(cluster.takeWrites()).toEqual([
      'create Secret/payments-ca',
      'create Secret/payments-server',
      'create Secret/payments-client-checkout',
      'create Service/payments-strict',
      'create NetworkPolicy/payments-mtls-only',
      'patch MtlsEndpoint/status/payments',
    ]);
    expect(cluster.takeEvents().sort()).toEqual(['CAIssued', 'Issued', 'Issued']);
    const status = cluster.endpoint(NS, 'payments')!.status!;
    expect(status.conditions!.find((c) => c.type === 'Ready')).toMatchObject({ status: 'True' });
    expect(status.clients!.map((c) => c.name)).toEqual(['checkout']);
    await pass();
    expect(cluster.takeWrites()).toEqual([]);
    expect(cluster.takeEvents()).toEqual([]);
  });

  it('walks a CA rollover, writing the CA Secret at most once per pass, the old CA trusted until it retires', async () => {
    const { cluster, pass, at, bundleSerials, caSerial } = setup();
    await pass();
    const oldCa = caSerial();
    cluster.takeWrites();
    // caValidity 6h, validity 1h, delay 1m: the CA renews max(2h, min(1h + 2m, 3h)) before expiry, at 4h.
    const renewal = new Date(cluster.endpoint(NS, 'payments')!.status!.ca!.renewalTime).getTime() - T0.getTime();
    expect(renewal).toBe(4 * 3_600_000);
    const rows: string[][] = [];
    const step = async (ms: number) => {
      at(ms);
      await pass();
      const writes = cluster.takeWrites();
      expect(writes.filter((w) => w === 'replace Secret/payments-ca').length).toBeLessThanOrEqual(1);
      expect(writes.filter((w) => w.includes('409'))).toEqual([]);
      rows.push(writes);
      return cluster.endpoint(NS, 'payments')!.status!;
    };

    // Leaves renew (at 40 minutes of their hour) on the way; the CA Secret is not touched.
    for (let t = 30 * 60_000; t < renewal; t += 30 * 60_000) await step(t);
    expect(rows.flat().filter((w) => w.endsWith('Secret/payments-ca'))).toEqual([]);
    cluster.takeEvents();
    let status = await step(renewal);
    expect(status.caRollover?.phase).toBe('Propagating');
    const newCa = certInfo(secretText(cluster.secret(NS, 'payments-ca'), 'next-ca.crt')!).serialNumber;
    for (const secret of ['payments-server', 'payments-client-checkout'])
      expect(bundleSerials(secret).sort()).toEqual([oldCa, newCa].sort());
    expect(cluster.takeEvents()).toContain('CARolloverStarted');

    status = await step(renewal + DELAY_MS);
    expect(status.caRollover?.phase).toBe('Retiring');
    expect(caSerial()).toBe(newCa);
    expect(caSerial('previous-ca.crt')).toBe(oldCa);
    for (const secret of ['payments-server', 'payments-client-checkout']) {
      expect(bundleSerials(secret)).toContain(oldCa);
      expect(certInfo(secretText(cluster.secret(NS, secret), 'tls.crt')!).serialNumber).toBeTruthy();
    }
    expect(cluster.takeEvents().sort()).toEqual(['CARolledOver', 'Reissued', 'Reissued']);

    // Before the delay has passed again the old CA must stay: a pass changes nothing.
    status = await step(renewal + DELAY_MS + DELAY_MS / 2);
    expect(status.caRollover?.phase).toBe('Retiring');
    expect(rows.at(-1)).toEqual([]);

    // The replaced client certificate (signed by the old CA, not revoked) still valid: the old CA stays.
    status = await step(renewal + 2 * DELAY_MS);
    expect(status.caRollover?.phase).toBe('Retiring');
    expect(bundleSerials('payments-client-checkout')).toContain(oldCa);

    // Once it has expired, the CA Secret and every bundle drop the old CA in the same pass.
    const previous = cluster.secret(NS, 'payments-client-checkout')!.metadata!.annotations![
      PREVIOUS_SERIALS_ANNOTATION
    ];
    const lastHeld = Math.max(
      ...parsePreviousSerials(previous)
        .filter((held) => held.caSerial === oldCa)
        .map((held) => Date.parse(held.notAfter)),
    );
    expect(lastHeld).toBeGreaterThan(T0.getTime() + renewal + 2 * DELAY_MS);
    status = await step(lastHeld - T0.getTime() + 1000);
    expect(status.caRollover).toBeUndefined();
    expect(secretText(cluster.secret(NS, 'payments-ca'), 'previous-ca.crt')).toBeUndefined();
    for (const secret of ['payments-server', 'payments-client-checkout'])
      expect(bundleSerials(secret)).not.toContain(oldCa);
    expect(cluster.takeEvents()).toContain('CARolloverComplete');
  });

  it('revokes a removed client: the ledger is written before its Secret is deleted, and the CRL lists it', async () => {
    const { cluster, pass } = setup();
    await pass();
    const serial = certInfo(secretText(cluster.secret(NS, 'payments-client-checkout'), 'tls.crt')!).serialNumber;
    cluster.takeWrites();
    cluster.takeEvents();
    const ep = cluster.endpoint(NS, 'payments')!;
    cluster.putEndpoint({ ...ep, metadata: { ...ep.metadata, generation: 2 }, spec: { ...ep.spec, clients: [] } });
    await pass();
    const writes = cluster.takeWrites();
    expect(writes.indexOf('replace Secret/payments-ca')).toBeGreaterThanOrEqual(0);
    expect(writes.indexOf('replace Secret/payments-ca')).toBeLessThan(
      writes.indexOf('delete Secret/payments-client-checkout'),
    );
    expect(writes.filter((w) => w.endsWith('Secret/payments-ca'))).toHaveLength(1);
    const crls = parseCrls(secretText(cluster.secret(NS, 'payments-server'), 'ca.crl')!);
    expect([...crls[0]!.serials]).toEqual([serial]);
    expect(cluster.endpoint(NS, 'payments')!.status!.revokedSerials).toEqual([serial]);
    expect(cluster.takeEvents()).toEqual(['ClientRevoked']);
  });

  it('repairs a Secret edited by hand and says why; an invalid spec writes only the status', async () => {
    const { cluster, pass } = setup();
    await pass();
    cluster.takeWrites();
    cluster.takeEvents();
    const server = cluster.secret(NS, 'payments-server')!;
    cluster.putSecret({ ...server, data: { ...server.data, 'tls.key': Buffer.from('not a key').toString('base64') } });
    await pass();
    expect(cluster.takeWrites()).toEqual(['replace Secret/payments-server', 'patch MtlsEndpoint/status/payments']);
    expect(cluster.events.map((e) => e.reason)).toEqual(['Repaired']);
    expect(cluster.takeEvents()).toEqual(['Repaired']);

    const invalid = setup({ certificates: { validity: '2h', caValidity: '1h' } });
    await invalid.pass();
    expect(invalid.cluster.takeWrites()).toEqual(['patch MtlsEndpoint/status/payments']);
    expect(invalid.cluster.endpoint(NS, 'payments')!.status!.conditions![0]).toMatchObject({
      type: 'Ready',
      status: 'False',
      reason: 'InvalidSpec',
    });
  });
});
