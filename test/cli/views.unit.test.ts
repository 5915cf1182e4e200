import type { CoreV1Event, V1Pod, V1Secret } from '@kubernetes/client-node';
import type { MtlsEndpoint } from '../../operator/api/types.ts';
import { type CheckSnapshot, checkReport, checkTable } from '../../operator/cli/check-view.ts';
import { inspectReport, inspectTable } from '../../operator/cli/inspect-view.ts';
import { outputFormat, relative, render, table } from '../../operator/cli/output.ts';
import { renewedCertificates, renewTable, renewTarget, targetSerials } from '../../operator/cli/renew-view.ts';
import { statusReport, statusTable } from '../../operator/cli/status-view.ts';
import { inspectSecret } from '../../operator/commands/inspect.ts';
import { issueCA, issueClient } from '../../operator/pki/issue.ts';

// The CLI's rendering and judging, on snapshots built here. Against the real API server, through the
// commands and kubectl: test/cli/cli.test.ts and test/cli/package.test.ts.

const now = new Date('2026-06-01T12:00:00Z');

const endpoint = (over: Partial<MtlsEndpoint> = {}): MtlsEndpoint => ({
  apiVersion: 'mtls.operator.dev/v1alpha1',
  kind: 'MtlsEndpoint',
  metadata: {
    name: 'payments',
    namespace: 'team-a',
    uid: 'uid-1',
    generation: 2,
    annotations: { 'mtls.operator.dev/renew-requested': 'server=2026-06-01T11:00:00Z,bogus' },
  },
  spec: { upstreamPort: 8080, podSelector: { matchLabels: { app: 'pay' } }, clients: [{ name: 'billing' }] },
  status: {
    observedGeneration: 2,
    conditions: [
      { type: 'Ready', status: 'True', reason: 'Ready', message: 'ok', lastTransitionTime: '2026-06-01T10:00:00Z' },
    ],
    ca: {
      serialNumber: 'ca01',
      notBefore: '2026-01-01T00:00:00Z',
      notAfter: '2031-01-01T00:00:00Z',
      renewalTime: '2029-05-01T00:00:00Z',
    },
    server: {
      secretName: 'payments-server',
      serialNumber: 'aa',
      notAfter: '2026-06-03T12:00:00Z',
      renewalTime: '2026-06-02T12:00:00Z',
    },
    clients: [
      {
        name: 'billing',
        secretName: 'payments-client-billing',
        serialNumber: 'bb',
        notAfter: '2027-06-01T00:00:00Z',
        renewalTime: '2027-02-01T00:00:00Z',
      },
    ],
    modes: 'strict:8443',
    networkPolicy: 'payments-mtls-only',
  },
  ...over,
});

const pod = (
  name: string,
  labels: Record<string, string>,
  extra: Partial<V1Pod['spec']> = {},
  annotations?: Record<string, string>,
): V1Pod => ({
  metadata: { name, labels, annotations },
  spec: { containers: [{ name: 'app' }], ...extra },
  status: { phase: 'Running' },
});

describe('output', () => {
  it('renders the same report as a table, JSON or YAML, and refuses other formats by name', () => {
    const report = { a: 1, b: ['x'] };
    expect(render('json', report, () => 'T')).toBe('{\n  "a": 1,\n  "b": [\n    "x"\n  ]\n}\n');
    expect(render('yaml', report, () => 'T')).toBe('a: 1\nb:\n  - x\n');
    expect(render('table', report, () => 'T')).toBe('T');
    expect(() => outputFormat('xml')).toThrow('-o xml: expected one of table, json, yaml');
    expect(outputFormat(undefined)).toBe('table');
  });

  it('pads columns like kubectl and says how far a time is', () => {
    expect(
      table(
        ['A', 'LONG'],
        [
          ['xyz', '1'],
          ['q', '22'],
        ],
      ),
    ).toBe('A     LONG\nxyz   1\nq     22\n');
    expect(relative('2026-06-03T13:00:00Z', now)).toBe('in 2d1h');
    expect(relative('2026-06-01T11:59:30Z', now)).toBe('30s ago');
    expect(relative(undefined, now)).toBe('-');
  });
});

describe('status', () => {
  const events: CoreV1Event[] = [
    {
      metadata: {},
      involvedObject: { uid: 'uid-1' },
      type: 'Normal',
      reason: 'Issued',
      message: 'first',
      lastTimestamp: new Date('2026-06-01T10:00:00Z'),
      count: 1,
    },
    {
      metadata: {},
      involvedObject: { uid: 'uid-1' },
      type: 'Normal',
      reason: 'RenewedOnRequest',
      message: 'later',
      lastTimestamp: new Date('2026-06-01T11:00:01Z'),
      count: 2,
    },
    {
      metadata: {},
      involvedObject: { uid: 'an-older-endpoint-of-that-name' },
      type: 'Warning',
      reason: 'Old',
      message: 'x',
    },
  ];
  const pods = [
    pod('with', { app: 'pay' }, { initContainers: [{ name: 'mtls-sidecar', restartPolicy: 'Always' }] }),
    pod('without', { app: 'pay' }),
    pod('out', { app: 'pay' }, {}, { 'mtls.operator.dev/inject': 'false' }),
    pod('other', { app: 'web' }),
  ];

  it('gathers certificates, pods by injection, renew requests and the newest Events of this endpoint', () => {
    const report = statusReport({ endpoint: endpoint(), pods, events });
    expect(report).toMatchObject({
      namespace: 'team-a',
      name: 'payments',
      ready: 'True',
      upToDate: true,
      caRollover: null,
      pods: { injected: ['with'], notInjected: ['without'], optedOut: ['out'] },
      renewRequests: [{ target: 'server', requestedAt: '2026-06-01T11:00:00Z' }],
      renewRequestProblems: ['"bogus": the target must be all, server or client/NAME'],
    });
    expect(report.certificates.map((c) => [c.certificate, c.client, c.serialNumber])).toEqual([
      ['ca', undefined, 'ca01'],
      ['server', undefined, 'aa'],
      ['client', 'billing', 'bb'],
    ]);
    expect(report.events.map((e) => e.reason)).toEqual(['RenewedOnRequest', 'Issued']);
  });

  it('prints a table a person reads top to bottom', () => {
    const text = statusTable(statusReport({ endpoint: endpoint(), pods, events }), now);
    expect(text).toContain('MtlsEndpoint team-a/payments\nReady: True (Ready) ok\n');
    expect(text).toMatch(
      /\n {2}server +payments-server +aa +2026-06-03T12:00:00Z \(in 2d\) +2026-06-02T12:00:00Z \(in 1d\)\n/,
    );
    expect(text).toContain('CA rollover: none in progress');
    expect(text).toContain('Upstream protocol for HTTP/2 clients: http1\n');
    expect(text).toContain('Pods: 1 injected: with\n  1 selected but without the sidecar: without');
    expect(text).toContain('unreadable, ignored: "bogus"');
    const rolling = endpoint();
    rolling.status!.caRollover = { phase: 'Propagating', newCASerialNumber: 'ca02', startedAt: '2026-06-01T11:55:00Z' };
    rolling.metadata!.generation = 3;
    const text2 = statusTable(
      statusReport({ endpoint: rolling, pods: [], events: [], unreadable: ['pods: HTTP-Code: 403 forbidden'] }),
      now,
    );
    expect(text2).toMatch(/Not shown, could not be read:\n {2}pods: HTTP-Code: 403 forbidden\n$/);
    expect(text2).toContain('CA rollover: Propagating since 2026-06-01T11:55:00Z (new CA ca02)');
    expect(text2).toContain('The controller has not yet looked at the latest change of the spec.');
    expect(text2).toContain('Events (latest 10):\n  none');
  });

  it('says what upstreamProtocol auto found, from which pod, or that nothing is known yet', () => {
    const auto = endpoint();
    auto.spec.upstreamProtocol = 'auto';
    expect(statusReport({ endpoint: auto, pods: [], events: [] }).upstreamProtocol).toBe('auto (nothing reported yet)');
    auto.status!.upstreamProtocol = {
      requested: 'auto',
      detected: 'h2c',
      pod: 'pay-0',
      probedAt: '2026-06-01T11:00:00Z',
      reason: 'the upstream answered an h2c prior-knowledge preface with SETTINGS',
    };
    expect(statusTable(statusReport({ endpoint: auto, pods: [], events: [] }), now)).toContain(
      'Upstream protocol for HTTP/2 clients: auto: h2c, from pod pay-0 at 2026-06-01T11:00:00Z (the upstream answered an h2c prior-knowledge preface with SETTINGS)\n',
    );
  });
});

describe('renew', () => {
  it('names its target, refusing a client the endpoint does not have', () => {
    expect(renewTarget(endpoint(), { server: false })).toEqual({ kind: 'all' });
    expect(renewTarget(endpoint(), { server: true })).toEqual({ kind: 'server' });
    expect(renewTarget(endpoint(), { client: 'billing', server: false })).toEqual({
      kind: 'client',
      client: 'billing',
    });
    expect(() => renewTarget(endpoint(), { client: 'nobody', server: false })).toThrow(
      'MtlsEndpoint team-a/payments has no client "nobody" in spec.clients (it has: billing)',
    );
  });

  it('is done when every certificate of the target has a new serial', () => {
    expect([...targetSerials(endpoint(), { kind: 'server' })]).toEqual([['server', 'aa']]);
    expect([...targetSerials(endpoint(), { kind: 'client', client: 'billing' })]).toEqual([['client billing', 'bb']]);
    const before = targetSerials(endpoint(), { kind: 'all' });
    expect([...before]).toEqual([
      ['server', 'aa'],
      ['client billing', 'bb'],
    ]);
    const half = new Map([
      ['server', 'cc'],
      ['client billing', 'bb'],
    ]);
    expect(renewedCertificates(before, half).done).toBe(false);
    const all = renewedCertificates(
      before,
      new Map([
        ['server', 'cc'],
        ['client billing', 'dd'],
      ]),
    );
    expect(all.done).toBe(true);
    const text = renewTable({
      namespace: 'team-a',
      endpoint: 'payments',
      target: 'all',
      requestedAt: '2026-06-01T12:00:00Z',
      requestedBy: 'alice',
      waited: true,
      ...renewedCertificates(before, half),
    });
    expect(text).toContain('Not all re-issued yet');
    expect(text).toMatch(/server +aa +cc\n/);
    expect(text).toMatch(/client billing +bb +pending\n/);
  });
});

describe('check', () => {
  const healthy = (): CheckSnapshot => ({
    now,
    withinDays: 1,
    crd: {
      metadata: { name: 'mtlsendpoints.mtls.operator.dev' },
      spec: {
        group: 'mtls.operator.dev',
        names: { kind: 'MtlsEndpoint', plural: 'mtlsendpoints' },
        scope: 'Namespaced',
        versions: [{ name: 'v1alpha1', served: true, storage: true }],
      },
      status: {
        conditions: [{ type: 'Established', status: 'True' }],
        acceptedNames: { kind: 'MtlsEndpoint', plural: 'mtlsendpoints' },
        storedVersions: ['v1alpha1'],
      },
    },
    requestCrd: {
      metadata: { name: 'mtlscredentialrequests.mtls.operator.dev' },
      spec: {
        group: 'mtls.operator.dev',
        names: { kind: 'MtlsCredentialRequest', plural: 'mtlscredentialrequests' },
        scope: 'Namespaced',
        versions: [{ name: 'v1alpha1', served: true, storage: true }],
      },
      status: {
        conditions: [{ type: 'Established', status: 'True' }],
        acceptedNames: { kind: 'MtlsCredentialRequest', plural: 'mtlscredentialrequests' },
        storedVersions: ['v1alpha1'],
      },
    },
    operatorNamespace: 'mtls-system',
    leaseName: 'mtls-operator-leader',
    lease: { spec: { holderIdentity: 'op-1', renewTime: new Date('2026-06-01T11:59:55Z'), leaseDurationSeconds: 15 } },
    webhookConfigurationName: 'mtls-operator',
    webhookConfiguration: {
      webhooks: [
        {
          name: 'inject.mtls.operator.dev',
          clientConfig: { caBundle: 'Zm9v', service: { name: 'mtls-operator-webhook', namespace: 'mtls-system' } },
          admissionReviewVersions: ['v1'],
          sideEffects: 'None',
        },
      ],
    },
    webhookService: { namespace: 'mtls-system', name: 'mtls-operator-webhook', readyEndpoints: 2 },
    scope: 'all namespaces',
    endpoints: [endpoint()],
  });

  it('passes a healthy installation, with what it found', () => {
    const snapshot = healthy();
    snapshot.withinDays = 0.5;
    const report = checkReport(snapshot);
    expect(report.problems).toBe(0);
    expect(report.checks.map((c) => c.message)).toEqual([
      'mtlsendpoints.mtls.operator.dev serves v1alpha1 (storage v1alpha1)',
      'mtlscredentialrequests.mtls.operator.dev serves v1alpha1 (storage v1alpha1)',
      'op-1 leads (Lease mtls-system/mtls-operator-leader renewed 5s ago)',
      'MutatingWebhookConfiguration mtls-operator has a caBundle',
      'Service mtls-system/mtls-operator-webhook has 2 ready endpoint(s)',
      '1 MtlsEndpoint(s) in all namespaces, all Ready',
      'none expires within 0.5 day(s)',
    ]);
    expect(checkTable(report)).toMatch(/^√ CRD installed: .*\n[\s\S]*Status check results are √\n$/);
  });

  it('names each problem and what to do about it', () => {
    const s = healthy(); // withinDays 1: the server certificate expires in 2 days, so 3 catches it
    s.withinDays = 3;
    s.lease = {
      spec: { holderIdentity: 'op-1', renewTime: new Date('2026-06-01T11:58:00Z'), leaseDurationSeconds: 15 },
    };
    s.webhookConfiguration!.webhooks![0]!.clientConfig.caBundle = undefined;
    s.webhookService = { namespace: 'mtls-system', name: 'mtls-operator-webhook', readyEndpoints: 0 };
    s.endpoints = [
      endpoint({
        status: {
          ...endpoint().status!,
          conditions: [
            { type: 'Ready', status: 'False', reason: 'InvalidSpec', message: 'bad port', lastTransitionTime: '' },
          ],
        },
      }),
    ];
    const report = checkReport(s);
    expect(report.problems).toBe(5);
    const text = checkTable(report);
    expect(text).toContain(
      '× operator running and leading: Lease mtls-system/mtls-operator-leader held by op-1 but last renewed 2m ago, longer ago than its 15s duration',
    );
    expect(text).toContain(
      '× webhook configured: MutatingWebhookConfiguration mtls-operator: no caBundle on inject.mtls.operator.dev',
    );
    expect(text).toContain('× webhook reachable: Service mtls-system/mtls-operator-webhook has no ready endpoints');
    expect(text).toContain('× endpoints Ready: team-a/payments: InvalidSpec: bad port');
    expect(text).toContain(
      '× certificates: 1 expire within 3 day(s): team-a/payments server (serial aa) expires 2026-06-03T12:00:00Z, in 2d',
    );
    expect(text).toContain('    hint: ');
    expect(text).toMatch(/Status check results are ×: 5 problem\(s\)\n$/);
  });

  it('without the MtlsCredentialRequest CRD says how to install it', () => {
    const s = healthy();
    s.requestCrd = undefined;
    const failed = checkReport(s).checks.filter((c) => !c.ok);
    expect(failed).toEqual([
      {
        check: 'MtlsCredentialRequest CRD installed',
        ok: false,
        message: 'CustomResourceDefinition mtlscredentialrequests.mtls.operator.dev is not installed',
        hint: 'kubectl apply --server-side -f crds/ (or install the chart)',
      },
    ]);
  });

  it('without the CRD says how to install it and skips the endpoints', () => {
    const s = healthy();
    s.crd = undefined;
    s.lease = undefined;
    s.webhookConfiguration = undefined;
    const report = checkReport(s);
    expect(report.checks.map((c) => [c.check, c.ok])).toEqual([
      ['CRD installed', false],
      ['MtlsCredentialRequest CRD installed', true],
      ['operator running and leading', false],
      ['webhook configured', false],
    ]);
    expect(report.checks[0]!.hint).toMatch(/kubectl apply --server-side -f crds\//);
  });
});

describe('inspect', () => {
  const b64 = (s: string) => Buffer.from(s).toString('base64');

  it('decodes the certificates, checks key, dates and chain against the endpoint, and never shows the key', async () => {
    const ca = await issueCA({
      endpoint: 'payments',
      namespace: 'team-a',
      algorithm: 'ECDSA-P256',
      validityMs: 86_400_000 * 400,
      now,
    });
    const other = await issueCA({
      endpoint: 'other',
      namespace: 'team-a',
      algorithm: 'ECDSA-P256',
      validityMs: 86_400_000 * 400,
      now,
    });
    const leaf = await issueClient({
      ca,
      endpoint: 'payments',
      namespace: 'team-a',
      client: 'billing',
      algorithm: 'ECDSA-P256',
      validityMs: 86_400_000,
      now,
    });
    const secret: V1Secret = {
      metadata: {
        name: 'payments-client-billing',
        namespace: 'team-a',
        labels: {
          'app.kubernetes.io/managed-by': 'mtls-operator',
          'mtls.operator.dev/endpoint': 'payments',
          'mtls.operator.dev/certificate': 'client',
          'mtls.operator.dev/client': 'billing',
        },
      },
      type: 'kubernetes.io/tls',
      data: { 'tls.crt': b64(leaf.certPem), 'tls.key': b64(leaf.keyPem), 'ca.crt': b64(ca.certPem) },
    };
    const ep = endpoint();
    ep.status!.ca!.serialNumber = ca.serial;
    ep.status!.clients![0]!.serialNumber = leaf.serial;
    const report = inspectReport(await inspectSecret(secret, ep, new Date(now.getTime() + 3_600_000)));
    expect(report).toMatchObject({
      endpoint: 'payments',
      certificate: 'client',
      client: 'billing',
      managed: true,
      keys: ['ca.crt', 'tls.crt', 'tls.key'],
    });
    expect(report.certificates.map((c) => [c.key, c.subject, c.serial])).toEqual([
      ['ca.crt', expect.stringContaining('OU=payments') as unknown, ca.serial],
      ['tls.crt', 'CN=billing', leaf.serial],
    ]);
    expect(report.checks).toEqual([
      { check: 'tls.key matches tls.crt', ok: true, message: 'the private key belongs to the certificate' },
      {
        check: 'within its validity',
        ok: true,
        message: expect.stringMatching(/^valid until .* \(in 23h\)$/) as unknown,
      },
      { check: 'chain', ok: true, message: `signed by CA ${ca.serial}, the endpoint's current CA` },
    ]);
    const text = inspectTable(report, now);
    expect(text).toContain('Belongs to: MtlsEndpoint payments, client billing');
    expect(text).toContain(`URI:spiffe://cluster.local/ns/team-a/mtlsendpoint/payments/client/billing`);
    expect(JSON.stringify(report) + text).not.toMatch(/PRIVATE KEY|MIG/);

    // Another CA in ca.crt, a foreign key, an expired leaf, a revoked serial: each a named problem.
    ep.status!.revokedSerials = [leaf.serial];
    const tampered: V1Secret = {
      ...secret,
      data: { 'tls.crt': b64(leaf.certPem), 'tls.key': b64(other.keyPem), 'ca.crt': b64(other.certPem) },
    };
    const bad = inspectReport(await inspectSecret(tampered, ep, new Date(now.getTime() + 2 * 86_400_000)));
    expect(bad.checks.map((c) => [c.check, c.ok, c.message])).toEqual([
      ['tls.key matches tls.crt', false, 'the private key does not match the certificate'],
      ['within its validity', false, 'expired 1d ago'],
      [
        'chain',
        false,
        expect.stringMatching(
          /^no CA of ca.crt signed tls.crt \(CA [0-9a-f]+: the certificate's issuer .* is not the CA/,
        ) as unknown,
      ],
      ['not revoked', false, `serial ${leaf.serial} is in the endpoint's CRL`],
    ]);
  });
});
