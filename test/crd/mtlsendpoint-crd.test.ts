import * as k8s from '@kubernetes/client-node';
import { readFileSync } from 'node:fs';
import { ENDPOINT_RESOURCE, modesSummary, type MtlsEndpoint } from '../../operator/api/types.ts';
import { createTestNamespace, deleteTestNamespace, kubeConfig, kubectl } from '../support/cluster.ts';
import { EXAMPLE_PATH, installCrd } from './support.ts';

// The MtlsEndpoint CRD against the real API server: defaults, every validation rule (with the message a person
// reads in kubectl's output), kubectl explain, printer columns and the status subresource.

function manifest(name: string, spec: string): string {
  return `apiVersion: mtls.operator.dev/v1alpha1\nkind: MtlsEndpoint\nmetadata: {name: ${name}}\nspec: ${spec}\n`;
}

describe('MtlsEndpoint CRD on the real API server', () => {
  let namespace: string;
  const custom = () => kubeConfig().makeApiClient(k8s.CustomObjectsApi);
  const get = (name: string) =>
    custom().getNamespacedCustomObject({ ...ENDPOINT_RESOURCE, namespace, name }) as Promise<MtlsEndpoint>;
  const apply = (yaml: string) => kubectl(['apply', '-n', namespace, '-f', '-'], yaml);

  beforeAll(async () => {
    await installCrd();
    namespace = await createTestNamespace('crd');
  });
  afterAll(() => deleteTestNamespace(namespace));

  it('fills in every default of a minimal endpoint', async () => {
    await apply(manifest('minimal', '{upstreamPort: 8080}'));
    const ep = await get('minimal');
    expect(ep.spec).toEqual({
      upstreamPort: 8080,
      listeners: [{ mode: 'strict', port: 8443 }],
      certificates: { validity: '8760h', caValidity: '43800h', keyAlgorithm: 'ECDSA-P256' },
      networkPolicy: 'Enforce',
      upstreamProtocol: 'http1',
      proxyProtocol: false,
    });
  });

  it('keeps what the user set and defaults only the rest', async () => {
    await apply(
      manifest(
        'partial',
        '{upstreamPort: 8080, listeners: [{mode: flexible, port: 9443}], certificates: {validity: 24h, renewBefore: 1h30m}}',
      ),
    );
    const ep = await get('partial');
    expect(ep.spec.listeners).toEqual([{ mode: 'flexible', port: 9443 }]);
    expect(ep.spec.certificates).toEqual({
      validity: '24h',
      renewBefore: '1h30m',
      caValidity: '43800h',
      keyAlgorithm: 'ECDSA-P256',
    });
  });

  it('accepts the commented example with all three modes, unchanged', async () => {
    await apply(readFileSync(EXAMPLE_PATH, 'utf8'));
    const ep = await get('payments');
    expect(ep.spec).toEqual({
      podSelector: { matchLabels: { app: 'payments-mock' } },
      upstreamPort: 8080,
      listeners: [
        { mode: 'standard', port: 8443 },
        { mode: 'flexible', port: 9443 },
        { mode: 'strict', port: 10443 },
      ],
      dnsNames: ['payments.example.test'],
      certificates: { validity: '8760h', renewBefore: '', caValidity: '43800h', keyAlgorithm: 'ECDSA-P256' },
      clients: [{ name: 'billing' }],
      allowedClients: ['billing'],
      networkPolicy: 'Enforce',
      upstreamProtocol: 'http1',
      proxyProtocol: false,
    });
  });

  it('takes the protocol fields and refuses unknown values naming the field', async () => {
    await apply(
      manifest(
        'protocols',
        '{upstreamPort: 8080, upstreamProtocol: h2c, proxyProtocol: true, listeners: [{mode: strict, port: 5432, protocol: tcp}]}',
      ),
    );
    const ep = await get('protocols');
    expect(ep.spec).toMatchObject({
      upstreamProtocol: 'h2c',
      proxyProtocol: true,
      listeners: [{ mode: 'strict', port: 5432, protocol: 'tcp' }],
    });
    await expect(
      apply(manifest('bad-upstream-protocol', '{upstreamPort: 8080, upstreamProtocol: h3}')),
    ).rejects.toThrow(/spec\.upstreamProtocol/);
    await expect(
      apply(
        manifest('bad-listener-protocol', '{upstreamPort: 8080, listeners: [{mode: strict, port: 1, protocol: udp}]}'),
      ),
    ).rejects.toThrow(/spec\.listeners\[0\]\.protocol/);
  });

  it('accepts every key algorithm, fractional and compound durations and a 54-character name', async () => {
    for (const [i, alg] of ['ECDSA-P256', 'ECDSA-P384', 'RSA-2048', 'RSA-3072', 'RSA-4096'].entries()) {
      await apply(
        manifest(
          `alg-${i}`,
          `{upstreamPort: 8080, certificates: {keyAlgorithm: ${alg}, validity: 1.5h, renewBefore: 20m30s, caValidity: 10h}}`,
        ),
      );
    }
    await apply(
      manifest('a'.repeat(54), '{upstreamPort: 8080, podSelector: {matchExpressions: [{key: app, operator: Exists}]}}'),
    );
    expect((await get('alg-2')).spec.certificates?.keyAlgorithm).toBe('RSA-2048');
  });

  // Every rule of the schema: a bad object and the words kubectl shows for it.
  const rejected: [string, string, RegExp][] = [
    [
      'an unknown mode',
      '{upstreamPort: 8080, listeners: [{mode: mutual, port: 8443}]}',
      /spec\.listeners\[0\]\.mode: Unsupported value: "mutual": supported values: "standard", "flexible", "strict"/,
    ],
    [
      'a listener port of 0',
      '{upstreamPort: 8080, listeners: [{mode: strict, port: 0}]}',
      /spec\.listeners\[0\]\.port: Invalid value: 0: .*greater than or equal to 1/,
    ],
    [
      'a listener port above 65535',
      '{upstreamPort: 8080, listeners: [{mode: strict, port: 65536}]}',
      /spec\.listeners\[0\]\.port: Invalid value: 65536: .*less than or equal to 65535/,
    ],
    [
      'an upstreamPort above 65535',
      '{upstreamPort: 70000}',
      /spec\.upstreamPort: Invalid value: 70000: .*less than or equal to 65535/,
    ],
    ['a missing upstreamPort', '{listeners: [{mode: strict, port: 8443}]}', /spec\.upstreamPort: Required value/],
    [
      'a listener without a port',
      '{upstreamPort: 8080, listeners: [{mode: strict}]}',
      /spec\.listeners\[0\]\.port: Required value/,
    ],
    [
      'an empty listener list',
      '{upstreamPort: 8080, listeners: []}',
      /spec\.listeners: Invalid value: 0: .*should have at least 1 items/,
    ],
    [
      'four listeners',
      '{upstreamPort: 8080, listeners: [{mode: strict, port: 1}, {mode: flexible, port: 2}, {mode: standard, port: 3}, {mode: strict, port: 4}]}',
      /spec\.listeners: Too many: 4: must have at most 3 items/,
    ],
    [
      'two listeners on one port',
      '{upstreamPort: 8080, listeners: [{mode: strict, port: 8443}, {mode: flexible, port: 8443}]}',
      /spec\.listeners: Invalid value: each port may appear once in listeners/,
    ],
    [
      'two listeners with one mode',
      '{upstreamPort: 8080, listeners: [{mode: strict, port: 8443}, {mode: strict, port: 9443}]}',
      /spec\.listeners: Invalid value: each mode may appear once in listeners/,
    ],
    [
      'upstreamPort equal to a listener port',
      '{upstreamPort: 9443, listeners: [{mode: strict, port: 8443}, {mode: flexible, port: 9443}]}',
      /spec\.upstreamPort: Invalid value: upstreamPort must differ from every listener port/,
    ],
    [
      'upstreamPort equal to the default listener port',
      '{upstreamPort: 8443}',
      /spec\.upstreamPort: Invalid value: upstreamPort must differ from every listener port/,
    ],
    [
      'a duration in years',
      '{upstreamPort: 8080, certificates: {validity: 1y}}',
      /spec\.certificates\.validity: Invalid value: "1y": spec\.certificates\.validity in body should match/,
    ],
    [
      'a negative duration',
      '{upstreamPort: 8080, certificates: {caValidity: -5h}}',
      /spec\.certificates\.caValidity: Invalid value: "-5h": .*should match/,
    ],
    [
      'a bare number as renewBefore',
      '{upstreamPort: 8080, certificates: {renewBefore: "3600"}}',
      /spec\.certificates\.renewBefore: Invalid value: "3600": .*should match/,
    ],
    [
      'renewBefore equal to validity',
      '{upstreamPort: 8080, certificates: {validity: 24h, renewBefore: 1440m}}',
      /spec\.certificates\.renewBefore: Invalid value: renewBefore must be shorter than validity/,
    ],
    [
      'renewBefore longer than the default validity',
      '{upstreamPort: 8080, certificates: {renewBefore: 9000h}}',
      /spec\.certificates\.renewBefore: Invalid value: renewBefore must be shorter than validity/,
    ],
    [
      'renewBefore of 0s',
      '{upstreamPort: 8080, certificates: {renewBefore: 0s}}',
      /spec\.certificates\.renewBefore: Invalid value: renewBefore must be longer than 0s/,
    ],
    [
      'a validity under 10s',
      '{upstreamPort: 8080, certificates: {validity: 9s}}',
      /spec\.certificates\.validity: Invalid value: validity must be at least 10s/,
    ],
    [
      'validity as long as caValidity',
      '{upstreamPort: 8080, certificates: {validity: 43800h}}',
      /spec\.certificates\.validity: Invalid value: validity must be shorter than caValidity/,
    ],
    [
      'a duration Go cannot represent',
      '{upstreamPort: 8080, certificates: {caValidity: 9999999h}}',
      /spec\.certificates: .*evaluating rule: validity must be shorter than caValidity/,
    ],
    [
      'an unknown key algorithm',
      '{upstreamPort: 8080, certificates: {keyAlgorithm: Ed25519}}',
      /spec\.certificates\.keyAlgorithm: Unsupported value: "Ed25519": supported values: "ECDSA-P256", "ECDSA-P384", "RSA-2048", "RSA-3072", "RSA-4096"/,
    ],
    [
      'a client name that is not a DNS label',
      '{upstreamPort: 8080, clients: [{name: Billing_Team}]}',
      /spec\.clients\[0\]\.name: Invalid value: "Billing_Team": .*should match '\^\[a-z0-9\]/,
    ],
    [
      'a client name longer than 63',
      `{upstreamPort: 8080, clients: [{name: ${'c'.repeat(64)}}]}`,
      /spec\.clients\[0\]\.name: Too long: may not be (longer than|more than) 63/,
    ],
    [
      'an empty client name',
      '{upstreamPort: 8080, clients: [{name: ""}]}',
      /spec\.clients\[0\]\.name: Invalid value: "": .*should be at least 1 chars long/,
    ],
    [
      'two clients with one name',
      '{upstreamPort: 8080, clients: [{name: billing}, {name: billing}]}',
      /spec\.clients: Invalid value: each client name may appear once in clients/,
    ],
    [
      '101 clients',
      `{upstreamPort: 8080, clients: [${Array.from({ length: 101 }, (_, i) => `{name: c${i}}`).join(', ')}]}`,
      /spec\.clients: Too many: 101: must have at most 100 items/,
    ],
    [
      'an allowedClients entry that is not a client',
      '{upstreamPort: 8080, clients: [{name: billing}], allowedClients: [billing, ledger]}',
      /spec\.allowedClients: Invalid value: every allowedClients entry must name a client in spec\.clients/,
    ],
    [
      'allowedClients without clients',
      '{upstreamPort: 8080, allowedClients: [billing]}',
      /spec\.allowedClients: Invalid value: every allowedClients entry must name a client in spec\.clients/,
    ],
    [
      'an upper-case DNS name',
      '{upstreamPort: 8080, dnsNames: [Payments.Example.com]}',
      /spec\.dnsNames\[0\]: Invalid value: "Payments\.Example\.com": .*should match/,
    ],
    [
      'a duplicate DNS name',
      '{upstreamPort: 8080, dnsNames: [a.example, a.example]}',
      /spec\.dnsNames\[1\]: Duplicate value: "a\.example"/,
    ],
    [
      'an empty podSelector',
      '{upstreamPort: 8080, podSelector: {}}',
      /spec\.podSelector: Invalid value: podSelector must name at least one label/,
    ],
    [
      'an In requirement without values',
      '{upstreamPort: 8080, podSelector: {matchExpressions: [{key: app, operator: In}]}}',
      /spec\.podSelector\.matchExpressions\[0\]: Invalid value: values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist/,
    ],
    [
      'an Exists requirement with values',
      '{upstreamPort: 8080, podSelector: {matchExpressions: [{key: app, operator: Exists, values: [x]}]}}',
      /values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist/,
    ],
    [
      'a bad label value',
      '{upstreamPort: 8080, podSelector: {matchLabels: {app: "not ok"}}}',
      /spec\.podSelector\.matchLabels\.app: Invalid value: "not ok": .*should match/,
    ],
    ['an unknown field', '{upstreamPort: 8080, tls: {minVersion: "1.3"}}', /unknown field "spec\.tls"/],
    [
      'a keystore profile cert-manager has but the operator does not write',
      '{upstreamPort: 8080, clients: [{name: a, keystores: {pkcs12: {create: true, passwordSecretRef: {name: pw}, profile: LegacyRC2}}}]}',
      /spec\.clients\[0\]\.keystores\.pkcs12\.profile: Unsupported value: "LegacyRC2": supported values: "Modern2023", "LegacyDES"/,
    ],
    [
      'a keystore without a password Secret',
      '{upstreamPort: 8080, clients: [{name: a, keystores: {pkcs12: {create: true}}}]}',
      /spec\.clients\[0\]\.keystores\.pkcs12\.passwordSecretRef: Required value/,
    ],
    [
      'a password Secret name that is no Secret name',
      '{upstreamPort: 8080, clients: [{name: a, keystores: {pkcs12: {create: true, passwordSecretRef: {name: My_Secret}}}}]}',
      /spec\.clients\[0\]\.keystores\.pkcs12\.passwordSecretRef\.name: Invalid value: "My_Secret": .*should match/,
    ],
  ];

  it.each(rejected)('refuses %s', async (_what, spec, message) => {
    const name = `bad-${Math.random().toString(36).slice(2, 8)}`;
    await expect(apply(manifest(name, spec))).rejects.toThrow(message);
    // ...and nothing was stored.
    await expect(get(name)).rejects.toThrow();
  });

  it('defaults a keystore request: password key and Modern2023 profile', async () => {
    await apply(
      manifest(
        'keystores',
        '{upstreamPort: 8080, clients: [{name: billing, keystores: {pkcs12: {create: true, passwordSecretRef: {name: billing-pw}}}}]}',
      ),
    );
    expect((await get('keystores')).spec.clients).toEqual([
      {
        name: 'billing',
        keystores: {
          pkcs12: { create: true, passwordSecretRef: { name: 'billing-pw', key: 'password' }, profile: 'Modern2023' },
        },
      },
    ]);
  });

  it('refuses names that cannot name the managed Services', async () => {
    const message = /metadata\.name must be a DNS-1035 label .* of at most 54 characters/;
    await expect(apply(manifest('b'.repeat(55), '{upstreamPort: 8080}'))).rejects.toThrow(message);
    await expect(apply(manifest('1payments', '{upstreamPort: 8080}'))).rejects.toThrow(message);
    await expect(apply(manifest('pay.ments', '{upstreamPort: 8080}'))).rejects.toThrow(message);
  });

  it('refuses a bad update just like a bad create', async () => {
    await apply(manifest('updated', '{upstreamPort: 8080, clients: [{name: billing}], allowedClients: [billing]}'));
    await expect(apply(manifest('updated', '{upstreamPort: 8080, allowedClients: [billing]}'))).rejects.toThrow(
      /every allowedClients entry must name a client in spec\.clients/,
    );
    expect((await get('updated')).spec.clients).toEqual([{ name: 'billing' }]);
  });

  it('is explained by kubectl explain, field by field', async () => {
    const out = await kubectl(['explain', 'mtlsendpoint.spec.certificates']);
    expect(out).toMatch(/Lifetimes and key algorithm of the certificates/);
    for (const field of ['validity', 'renewBefore', 'caValidity', 'keyAlgorithm']) {
      expect(out).toMatch(new RegExp(`^  ${field}\\s+<string>`, 'm'));
    }
    expect(out).toMatch(/one third of the\s+certificate's lifetime/);
    expect(out).toMatch(/Default 43800h/);
    const status = await kubectl(['explain', 'mtls.status.caRollover.phase']);
    expect(status).toMatch(/Propagating: the new CA is in every trust bundle/);
  });

  it('keeps status behind the status subresource and shows it in the printer columns', async () => {
    await apply(readFileSync(EXAMPLE_PATH, 'utf8'));
    const status = {
      observedGeneration: 1,
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'Issued',
          message: 'all certificates are issued',
          lastTransitionTime: '2026-01-01T00:00:00Z',
          observedGeneration: 1,
        },
        {
          type: 'Degraded',
          status: 'True',
          reason: 'PodsNotInjected',
          message: '1 selected pod(s) run without the mTLS sidecar',
          lastTransitionTime: '2026-01-01T00:00:00Z',
          observedGeneration: 1,
        },
      ],
      ca: {
        secretName: 'payments-ca',
        serialNumber: '0a1b',
        notBefore: '2026-01-01T00:00:00Z',
        notAfter: '2031-01-01T00:00:00Z',
        renewalTime: '2029-05-02T00:00:00Z',
      },
      caRollover: { phase: 'Propagating', newCASerialNumber: '0c0d', startedAt: '2026-01-02T00:00:00Z' },
      server: {
        secretName: 'payments-server',
        serialNumber: '0e0f',
        notBefore: '2026-01-01T00:00:00Z',
        notAfter: '2027-01-01T00:00:00Z',
        renewalTime: '2026-09-01T00:00:00Z',
      },
      clients: [
        {
          name: 'billing',
          secretName: 'payments-client-billing',
          serialNumber: '1a',
          notAfter: '2027-01-01T00:00:00Z',
          renewalTime: '2026-09-01T00:00:00Z',
        },
      ],
      revokedSerials: ['2b'],
      modes: modesSummary((await get('payments')).spec.listeners!),
      injectedPods: 2,
      networkPolicy: 'payments-mtls-only',
    };
    await kubectl([
      'patch',
      '-n',
      namespace,
      'mtls',
      'payments',
      '--subresource=status',
      '--type=merge',
      '-p',
      JSON.stringify({ status }),
    ]);
    expect((await get('payments')).status).toEqual(status);
    // A status in the main resource is ignored (the status subresource is on).
    await kubectl([
      'patch',
      '-n',
      namespace,
      'mtls',
      'payments',
      '--type=merge',
      '-p',
      '{"status":{"injectedPods":7}}',
    ]);
    expect((await get('payments')).status?.injectedPods).toBe(2);

    const table = await kubectl(['get', '-n', namespace, 'mtlsep', 'payments', '-o', 'wide']);
    const [header, row] = table.trim().split('\n');
    expect(header!.split(/\s+/)).toEqual([
      'NAME',
      'READY',
      'DEGRADED',
      'MODES',
      'SERVER-EXPIRY',
      'DEGRADED-REASON',
      'NETWORK-POLICY',
      'ROLLOVER',
      'AGE',
    ]);
    expect(row).toMatch(
      /^payments\s+True\s+True\s+standard:8443,flexible:9443,strict:10443\s+2027-01-01T00:00:00Z\s+PodsNotInjected\s+payments-mtls-only\s+Propagating\s+\d+s/,
    );
  });

  it('refuses a status that breaks the schema', async () => {
    await apply(manifest('badstatus', '{upstreamPort: 8080}'));
    await expect(
      kubectl([
        'patch',
        '-n',
        namespace,
        'mtls',
        'badstatus',
        '--subresource=status',
        '--type=merge',
        '-p',
        '{"status":{"conditions":[{"type":"Ready","status":"Yes","reason":"x","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}',
      ]),
    ).rejects.toThrow(/status\.conditions\[0\]\.status: Unsupported value: "Yes"/);
  });

  it('answers to its short names and full names', async () => {
    for (const name of ['mtls', 'mtlsep', 'mtlsendpoint', 'mtlsendpoints.mtls.operator.dev']) {
      expect(await kubectl(['get', '-n', namespace, name, 'minimal', '-o', 'name'])).toBe(
        'mtlsendpoint.mtls.operator.dev/minimal\n',
      );
    }
  });
});
