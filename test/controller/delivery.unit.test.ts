import type { V1ConfigMap, V1Secret } from '@kubernetes/client-node';
import type { MtlsCredentialRequest } from '../../operator/api/credential-request.ts';
import type { ClientSpec, MtlsEndpoint } from '../../operator/api/types.ts';
import { caBundleWrites } from '../../operator/delivery/ca-bundle.ts';
import { decideDelivery, type DeliverySnapshot, endpointAllows } from '../../operator/delivery/decide.ts';
import { encodeSecretData } from '../../operator/kube/secret-data.ts';
import { issueCA, issueClient } from '../../operator/pki/issue.ts';

// The delivery decision as tables: no API server. Real certificates (the status reads serials from them), made
// once; the Secrets are shaped as the endpoint controller writes them.

const NOW = new Date('2026-06-01T12:00:00Z');
const common = { algorithm: 'ECDSA-P256' as const, validityMs: 24 * 3_600_000, now: NOW };

// Top-level: the tables below are built when the file loads.
const ca = await issueCA({ ...common, endpoint: 'payments', namespace: 'payments' });
const nextCa = await issueCA({
  ...common,
  endpoint: 'payments',
  namespace: 'payments',
  now: new Date(NOW.getTime() + 1_000),
});
const leaf = await issueClient({ ...common, ca, endpoint: 'payments', namespace: 'payments', client: 'billing' });

const endpoint = (clients: ClientSpec[], trustBundle?: string[]): MtlsEndpoint => ({
  apiVersion: 'mtls.operator.dev/v1alpha1',
  kind: 'MtlsEndpoint',
  metadata: { name: 'payments', namespace: 'payments', uid: 'ep-uid' },
  spec: { upstreamPort: 8080, clients, trustBundle: trustBundle ? { allowedNamespaces: trustBundle } : undefined },
});

const request = (spec: Partial<MtlsCredentialRequest['spec']> = {}, namespace = 'billing'): MtlsCredentialRequest => ({
  apiVersion: 'mtls.operator.dev/v1alpha1',
  kind: 'MtlsCredentialRequest',
  metadata: { name: 'payments-creds', namespace, uid: 'req-uid', generation: 3 },
  spec: { endpoint: { namespace: 'payments', name: 'payments' }, client: 'billing', ...spec },
});

const clientSecret = (bundle = ca.certPem): V1Secret => ({
  metadata: {
    name: 'payments-client-billing',
    namespace: 'payments',
    labels: { 'app.kubernetes.io/managed-by': 'mtls-operator', 'mtls.operator.dev/endpoint': 'payments' },
  },
  type: 'kubernetes.io/tls',
  data: encodeSecretData({ 'tls.crt': leaf.certPem, 'tls.key': leaf.keyPem, 'ca.crt': bundle, stray: 'x' }),
});

const snapshot = (over: Partial<DeliverySnapshot> = {}): DeliverySnapshot => ({
  request: request(),
  endpoint: endpoint([{ name: 'billing', allowedNamespaces: ['billing'] }]),
  source: clientSecret(),
  deliveredSecrets: [],
  deliveredConfigMaps: [],
  targetTaken: false,
  now: NOW,
  ...over,
});

const ready = (d: ReturnType<typeof decideDelivery>) => d.status.conditions?.find((c) => c.type === 'Ready');
const created = (d: ReturnType<typeof decideDelivery>) => {
  const write = d.writes.find((w) => w.verb === 'create');
  return write && write.verb === 'create' ? write.body : undefined;
};

describe('decideDelivery: both sides consent', () => {
  it('creates a kubernetes.io/tls Secret with the client pair and the bundle, and nothing else', () => {
    const d = decideDelivery(snapshot());
    expect(d.reason).toBe('Delivered');
    expect(d.writes).toHaveLength(1);
    const body = created(d) as V1Secret;
    expect(body.type).toBe('kubernetes.io/tls');
    expect(Object.keys(body.data!).sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
    expect(body.metadata).toMatchObject({
      name: 'payments-creds',
      namespace: 'billing',
      labels: {
        'app.kubernetes.io/managed-by': 'mtls-operator',
        'mtls.operator.dev/credential-request': 'payments-creds',
      },
      annotations: { 'mtls.operator.dev/source-endpoint': 'payments/payments' },
      ownerReferences: [{ kind: 'MtlsCredentialRequest', name: 'payments-creds', uid: 'req-uid', controller: true }],
    });
    // Not the endpoint label: the endpoint controller would take the copy for one of its own Secrets.
    expect(body.metadata!.labels).not.toHaveProperty('mtls.operator.dev/endpoint');
    expect(ready(d)).toMatchObject({ status: 'True', reason: 'Delivered', observedGeneration: 3 });
    expect(d.status.delivered).toEqual({
      kind: 'Secret',
      name: 'payments-creds',
      serialNumber: leaf.serial,
      notAfter: expect.stringMatching(/Z$/),
      caSerialNumbers: [ca.serial],
    });
  });

  it('never copies a CA key, even if one were put in the source by hand', () => {
    const source = clientSecret();
    source.data = { ...source.data, ...encodeSecretData({ 'ca.key': ca.keyPem }) };
    const body = created(decideDelivery(snapshot({ source }))) as V1Secret;
    expect(body.data).not.toHaveProperty('ca.key');
    expect(Object.values(body.data!).map((v) => Buffer.from(v, 'base64').toString())).not.toContain(ca.keyPem);
  });

  it('copies the PKCS#12 stores when the client has them', () => {
    const source = clientSecret();
    source.data = { ...source.data, 'keystore.p12': 'AAAA', 'truststore.p12': 'BBBB' };
    const body = created(decideDelivery(snapshot({ source }))) as V1Secret;
    expect(Object.keys(body.data!).sort()).toEqual(['ca.crt', 'keystore.p12', 'tls.crt', 'tls.key', 'truststore.p12']);
  });

  it('writes nothing when the copy is current, and replaces it after a rollover changed ca.crt', () => {
    const first = created(decideDelivery(snapshot())) as V1Secret;
    const existing = { ...first, metadata: { ...first.metadata, uid: 'copy-uid', resourceVersion: '7' } };
    expect(decideDelivery(snapshot({ deliveredSecrets: [existing] })).writes).toEqual([]);

    const both = ca.certPem + nextCa.certPem;
    const d = decideDelivery(snapshot({ source: clientSecret(both), deliveredSecrets: [existing] }));
    expect(d.writes).toHaveLength(1);
    expect(d.writes[0]).toMatchObject({ verb: 'replace', kind: 'Secret' });
    const body = d.writes[0]!.verb === 'replace' ? (d.writes[0]!.body as V1Secret) : undefined;
    expect(body?.metadata?.resourceVersion).toBe('7');
    expect(Buffer.from(body!.data!['ca.crt']!, 'base64').toString()).toBe(both);
    expect(d.status.delivered?.caSerialNumbers).toEqual([ca.serial, nextCa.serial]);
  });

  it('a request in the endpoint namespace needs no allowedNamespaces', () => {
    const d = decideDelivery(snapshot({ request: request({}, 'payments'), endpoint: endpoint([{ name: 'billing' }]) }));
    expect(d.reason).toBe('Delivered');
  });
});

describe("decideDelivery: keystores with the receiving namespace's password", () => {
  const withStores = () =>
    request({ keystores: { pkcs12: { create: true, passwordSecretRef: { name: 'java-pass' } } } });
  const endpointStores = () => {
    const source = clientSecret();
    source.data = { ...source.data, 'keystore.p12': 'ENDPOINT', 'truststore.p12': 'ENDPOINT' };
    return source;
  };
  const content = {
    data: { 'keystore.p12': 'MINE', 'truststore.p12': 'MINE-TOO' },
    annotations: { 'mtls.operator.dev/keystore-inputs': 'digest' },
  };

  it("puts the request's stores in the copy, never the endpoint's", () => {
    const d = decideDelivery(snapshot({ request: withStores(), source: endpointStores(), keystores: { content } }));
    const body = created(d) as V1Secret;
    expect(d.reason).toBe('Delivered');
    expect(body.data).toMatchObject({ 'keystore.p12': 'MINE', 'truststore.p12': 'MINE-TOO' });
    expect(body.metadata?.annotations).toMatchObject({ 'mtls.operator.dev/keystore-inputs': 'digest' });
  });

  it('without a usable password delivers the PEM files and says what to fix', () => {
    const problem = 'Secret billing/java-pass (spec.keystores.pkcs12.passwordSecretRef) does not exist';
    const d = decideDelivery(
      snapshot({
        request: withStores(),
        source: endpointStores(),
        keystores: { content: { data: {}, annotations: {} }, problem },
      }),
    );
    const body = created(d) as V1Secret;
    expect(Object.keys(body.data!).sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
    expect(ready(d)).toMatchObject({ status: 'False', reason: 'KeystorePasswordMissing', message: problem });
    expect(d.status.delivered).toMatchObject({ kind: 'Secret', serialNumber: leaf.serial });
  });
});

describe('decideDelivery: a missing side or source delivers nothing and says why', () => {
  const copy = (): V1Secret => ({
    metadata: { name: 'payments-creds', namespace: 'billing', uid: 'copy-uid' },
    type: 'kubernetes.io/tls',
    data: {},
  });
  it.each<[string, Partial<DeliverySnapshot>, string, RegExp]>([
    [
      'the endpoint does not list the namespace',
      { endpoint: endpoint([{ name: 'billing' }]) },
      'NotAllowed',
      /does not allow namespace billing .*add billing to spec\.clients\[name=billing\]\.allowedNamespaces/,
    ],
    [
      'another client lists the namespace, not this one',
      { endpoint: endpoint([{ name: 'billing' }, { name: 'audit', allowedNamespaces: ['billing'] }]) },
      'NotAllowed',
      /spec\.clients\[name=billing\]/,
    ],
    ['the endpoint does not exist', { endpoint: undefined }, 'EndpointNotFound', /payments\/payments does not exist/],
    [
      'the client was removed (revoked)',
      { endpoint: endpoint([{ name: 'audit', allowedNamespaces: ['billing'] }]) },
      'ClientNotFound',
      /no client billing/,
    ],
    ['the client Secret is not issued yet', { source: undefined }, 'NotIssued', /payments-client-billing is missing/],
    [
      'a Secret of that name not made by the endpoint controller',
      { source: { ...clientSecret(), metadata: { name: 'payments-client-billing', labels: {} } } },
      'NotIssued',
      /payments-client-billing is not labelled as the endpoint's/,
    ],
  ])('%s', (_, over, reason, message) => {
    const withCopy = decideDelivery(snapshot({ ...over, deliveredSecrets: [copy()] }));
    expect(withCopy.reason).toBe(reason);
    expect(ready(withCopy)).toMatchObject({ status: 'False', reason, message: expect.stringMatching(message) });
    expect(withCopy.status.delivered).toBeUndefined();
    // A copy made while both sides consented is withdrawn.
    expect(withCopy.writes).toEqual([{ verb: 'delete', kind: 'Secret', name: 'payments-creds', uid: 'copy-uid' }]);
    expect(decideDelivery(snapshot(over)).writes).toEqual([]);
  });

  it('an object of the target name the operator did not make is left alone', () => {
    const d = decideDelivery(snapshot({ targetTaken: true }));
    expect(d.writes).toEqual([]);
    expect(ready(d)).toMatchObject({ status: 'False', reason: 'TargetConflict', message: /spec\.targetName/ });
  });

  it('keeps lastTransitionTime while the reason stays the same', () => {
    const first = decideDelivery(snapshot({ endpoint: undefined }));
    const later = new Date(NOW.getTime() + 60_000);
    const again = decideDelivery(
      snapshot({ endpoint: undefined, now: later, request: { ...request(), status: first.status } }),
    );
    expect(again.status).toEqual(first.status);
  });
});

describe('decideDelivery: the CA bundle only', () => {
  const bundleRequest = (namespace = 'web') => request({ client: undefined }, namespace);
  const serverSecret = (): V1Secret => ({
    ...clientSecret(ca.certPem + nextCa.certPem),
    metadata: {
      name: 'payments-server',
      namespace: 'payments',
      labels: { 'app.kubernetes.io/managed-by': 'mtls-operator', 'mtls.operator.dev/endpoint': 'payments' },
    },
  });

  it('delivers a ConfigMap with ca.crt (every trusted CA) and no key at all', () => {
    const d = decideDelivery(
      snapshot({ request: bundleRequest(), endpoint: endpoint([], ['web']), source: serverSecret() }),
    );
    const body = created(d) as V1ConfigMap;
    expect(d.writes[0]).toMatchObject({ verb: 'create', kind: 'ConfigMap' });
    expect(body.data).toEqual({ 'ca.crt': ca.certPem + nextCa.certPem });
    expect(d.status.delivered).toEqual({
      kind: 'ConfigMap',
      name: 'payments-creds',
      caSerialNumbers: [ca.serial, nextCa.serial],
    });
  });

  it('switching a request from a client to the bundle deletes the Secret and creates the ConfigMap', () => {
    const old: V1Secret = {
      metadata: { name: 'payments-creds', namespace: 'web', uid: 's' },
      type: 'kubernetes.io/tls',
    };
    const d = decideDelivery(
      snapshot({
        request: bundleRequest(),
        endpoint: endpoint([], ['*']),
        source: serverSecret(),
        deliveredSecrets: [old],
      }),
    );
    expect(d.writes.map((w) => `${w.verb} ${w.kind}`)).toEqual(['delete Secret', 'create ConfigMap']);
  });

  it.each<[string, MtlsEndpoint, boolean]>([
    ['listed in spec.trustBundle', endpoint([], ['web']), true],
    ['"*" in spec.trustBundle', endpoint([], ['*']), true],
    [
      'listed by a client (its Secret holds the bundle anyway)',
      endpoint([{ name: 'x', allowedNamespaces: ['web'] }]),
      true,
    ],
    ['not listed', endpoint([{ name: 'x', allowedNamespaces: ['other'] }], ['other']), false],
    ['no trustBundle at all', endpoint([]), false],
  ])('namespace web, %s', (_, ep, allowed) => {
    expect(endpointAllows(ep, 'web', undefined)).toBe(allowed);
  });

  it('"*" never allows a client\'s credentials', () => {
    expect(endpointAllows(endpoint([{ name: 'billing' }], ['*']), 'web', 'billing')).toBe(false);
  });
});

describe("caBundleWrites: the endpoint's own <endpoint>-ca-bundle ConfigMap", () => {
  const ep = endpoint([]);
  const server = (bundle: string): V1Secret => ({
    metadata: { name: 'payments-server', namespace: 'payments' },
    data: encodeSecretData({ 'ca.crt': bundle, 'tls.key': 'server key' }),
  });

  it('holds ca.crt of the server Secret and nothing else, owned by the endpoint', () => {
    const [write] = caBundleWrites(ep, server(ca.certPem), undefined);
    expect(write).toMatchObject({ verb: 'create', kind: 'ConfigMap' });
    const body = write!.verb === 'create' ? (write!.body as V1ConfigMap) : undefined;
    expect(body?.metadata).toMatchObject({
      name: 'payments-ca-bundle',
      namespace: 'payments',
      labels: { 'app.kubernetes.io/managed-by': 'mtls-operator', 'mtls.operator.dev/endpoint': 'payments' },
      ownerReferences: [{ kind: 'MtlsEndpoint', uid: 'ep-uid', controller: true }],
    });
    expect(body?.data).toEqual({ 'ca.crt': ca.certPem });
  });

  it('is left alone while current, replaced when a rollover adds a CA, absent before the first issue', () => {
    const [write] = caBundleWrites(ep, server(ca.certPem), undefined);
    const existing = { ...(write!.verb === 'create' ? (write!.body as V1ConfigMap) : {}) };
    expect(caBundleWrites(ep, server(ca.certPem), existing)).toEqual([]);
    const [replace] = caBundleWrites(ep, server(ca.certPem + nextCa.certPem), existing);
    expect(replace).toMatchObject({ verb: 'replace', body: { data: { 'ca.crt': ca.certPem + nextCa.certPem } } });
    expect(caBundleWrites(ep, undefined, undefined)).toEqual([]);
  });
});
