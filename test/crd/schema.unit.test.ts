import {
  applyDefaults,
  DEFAULT_CA_VALIDITY,
  DEFAULT_KEY_ALGORITHM,
  DEFAULT_LISTENERS,
  DEFAULT_NETWORK_POLICY,
  DEFAULT_PASSWORD_SECRET_KEY,
  DEFAULT_PKCS12_PROFILE,
  DEFAULT_UPSTREAM_PROTOCOL,
  DEFAULT_VALIDITY,
  MIN_VALIDITY,
  RENEW_BEFORE_FLOOR,
  renewBeforeMs,
} from '../../operator/api/defaults.ts';
import { DURATION_PATTERN } from '../../operator/api/duration.ts';
import {
  CA_ROLLOVER_PHASES,
  CONDITION_TYPES,
  GROUP,
  KIND,
  MAX_CLIENT_NAME_LENGTH,
  MAX_CLIENTS,
  MAX_DNS_NAMES,
  MAX_ENDPOINT_NAME_LENGTH,
  MAX_LISTENERS,
  LISTENER_PROTOCOLS,
  MODES,
  NETWORK_POLICY_MODES,
  PLURAL,
  SHORT_NAMES,
  SINGULAR,
  UPSTREAM_PROTOCOLS,
  VERSION,
} from '../../operator/api/types.ts';
import { KEY_ALGORITHMS, MAX_TEST_LISTENERS, PKCS12_PROFILES, TEST_LISTENER_KINDS } from '../../operator/api/types.ts';
import { loadCrd } from './support.ts';

// The CRD file against the TypeScript constants: defaults, enums and limits live in both and must agree.

/* eslint-disable @typescript-eslint/no-explicit-any */
const crd = loadCrd();
const version = crd.spec.versions[0];
const root = version.schema.openAPIV3Schema;
const spec = root.properties.spec.properties;
const certificates = spec.certificates.properties;
const pkcs12 = spec.clients.items.properties.keystores.properties.pkcs12.properties;

describe('the CRD file agrees with operator/api', () => {
  it('names the API as the constants do', () => {
    expect(crd.metadata.name).toBe(`${PLURAL}.${GROUP}`);
    expect(crd.spec.group).toBe(GROUP);
    expect(version.name).toBe(VERSION);
    expect(crd.spec.names).toMatchObject({
      kind: KIND,
      plural: PLURAL,
      singular: SINGULAR,
      shortNames: [...SHORT_NAMES],
    });
    expect(crd.spec.scope).toBe('Namespaced');
    expect(version.subresources).toEqual({ status: {} });
  });

  it('has the defaults of operator/api/defaults.ts', () => {
    expect(spec.listeners.default).toEqual(DEFAULT_LISTENERS);
    expect(certificates.validity.default).toBe(DEFAULT_VALIDITY);
    expect(certificates.caValidity.default).toBe(DEFAULT_CA_VALIDITY);
    expect(certificates.keyAlgorithm.default).toBe(DEFAULT_KEY_ALGORITHM);
    expect(certificates.renewBefore.default).toBeUndefined(); // empty: one third of the lifetime
    expect(spec.certificates.default).toEqual({});
    expect(spec.networkPolicy.default).toBe(DEFAULT_NETWORK_POLICY);
    expect(pkcs12.profile.default).toBe(DEFAULT_PKCS12_PROFILE);
    expect(pkcs12.passwordSecretRef.properties.key.default).toBe(DEFAULT_PASSWORD_SECRET_KEY);
    expect(spec.networkPolicy.enum).toEqual([...NETWORK_POLICY_MODES]);
    expect(spec.upstreamProtocol.default).toBe(DEFAULT_UPSTREAM_PROTOCOL);
    expect(spec.upstreamProtocol.enum).toEqual([...UPSTREAM_PROTOCOLS]);
    expect(spec.proxyProtocol.default).toBe(false);
    expect(spec.listeners.items.properties.protocol.enum).toEqual([...LISTENER_PROTOCOLS]);
    expect(spec.listeners.items.properties.protocol.default).toBeUndefined(); // absent: http
    expect(spec.testListeners.items.properties.kind.enum).toEqual([...TEST_LISTENER_KINDS]);
    expect(spec.testListeners.maxItems).toBe(MAX_TEST_LISTENERS);
    expect(spec.testListeners.default).toBeUndefined(); // absent: no bad listener, no test-servers Secret
  });

  it('defaults a spec in code exactly as the API server does', () => {
    expect(applyDefaults({ upstreamPort: 8080 })).toEqual({
      upstreamPort: 8080,
      listeners: [{ mode: 'strict', port: 8443 }],
      dnsNames: [],
      clients: [],
      certificates: { validity: '8760h', renewBefore: '', caValidity: '43800h', keyAlgorithm: 'ECDSA-P256' },
      networkPolicy: 'Enforce',
      upstreamProtocol: 'http1',
      proxyProtocol: false,
    });
    const set = {
      upstreamPort: 1,
      listeners: [{ mode: 'standard' as const, port: 2 }],
      certificates: { validity: '1h', renewBefore: '10m', caValidity: '2h', keyAlgorithm: 'RSA-2048' as const },
    };
    expect(applyDefaults(set)).toMatchObject(set);
    // The defaults are copies: changing a defaulted spec never changes the constants.
    applyDefaults({ upstreamPort: 1 }).listeners[0]!.port = 1;
    expect(DEFAULT_LISTENERS[0]!.port).toBe(8443);
    // A keystore request gets its profile and password key, as the API server's defaulting gives them.
    const keystores = { pkcs12: { create: true, passwordSecretRef: { name: 'billing-keystore' } } };
    expect(applyDefaults({ upstreamPort: 1, clients: [{ name: 'billing', keystores }] }).clients).toEqual([
      {
        name: 'billing',
        keystores: {
          pkcs12: {
            create: true,
            passwordSecretRef: { name: 'billing-keystore', key: 'password' },
            profile: 'Modern2023',
          },
        },
      },
    ]);
  });

  it('renews one third of the lifetime before expiry unless renewBefore says otherwise', () => {
    expect(renewBeforeMs(3_000)).toBe(1_000);
    expect(renewBeforeMs(3_000, 500)).toBe(500);
    expect(renewBeforeMs(3_000, 3_000)).toBe(1_000); // longer than a (clamped) lifetime: fall back to a third
    expect(renewBeforeMs(3_000, 0)).toBe(1_000);
  });

  it('names the renewBefore floor of operator/api/defaults.ts and every condition the operator sets', () => {
    expect(certificates.renewBefore.description).toContain(`Keep it at ${RENEW_BEFORE_FLOOR} or more`);
    const conditions = root.properties.status.properties.conditions.description;
    for (const type of CONDITION_TYPES) expect(conditions).toContain(type);
    expect(conditions).toContain(`less than ${RENEW_BEFORE_FLOOR} before expiry`);
  });

  it('has the enums and limits of the constants', () => {
    expect(spec.listeners.items.properties.mode.enum).toEqual([...MODES]);
    expect(certificates.keyAlgorithm.enum).toEqual([...KEY_ALGORITHMS]);
    expect(pkcs12.profile.enum).toEqual([...PKCS12_PROFILES]);
    expect(spec.listeners.maxItems).toBe(MAX_LISTENERS);
    expect(spec.clients.maxItems).toBe(MAX_CLIENTS);
    expect(spec.dnsNames.maxItems).toBe(MAX_DNS_NAMES);
    expect(spec.clients.items.properties.name.maxLength).toBe(MAX_CLIENT_NAME_LENGTH);
    expect(spec.allowedClients.items.maxLength).toBe(MAX_CLIENT_NAME_LENGTH);
    expect(root['x-kubernetes-validations'][0].rule).toContain(`size() <= ${MAX_ENDPOINT_NAME_LENGTH}`);
    expect(certificates.validity.pattern).toBe(DURATION_PATTERN);
    expect(certificates.caValidity.pattern).toBe(DURATION_PATTERN);
    const minRule = spec.certificates['x-kubernetes-validations'].find((v: any) => v.message.includes('at least'));
    expect(minRule.rule).toContain(`duration('${MIN_VALIDITY}')`);
    expect(minRule.message).toBe(`validity must be at least ${MIN_VALIDITY}`);
    for (const phase of CA_ROLLOVER_PHASES) {
      expect(root.properties.status.properties.caRollover.properties.phase.description).toContain(`${phase}:`);
    }
  });

  it('describes every field, so kubectl explain helps', () => {
    const undescribed: string[] = [];
    const walk = (node: any, path: string) => {
      if (path !== '.metadata' && !node.description) undescribed.push(path || '(root)');
      for (const [name, child] of Object.entries(node.properties ?? {})) walk(child, `${path}.${name}`);
      if (node.items) walk(node.items, `${path}[]`);
      if (typeof node.additionalProperties === 'object') walk(node.additionalProperties, `${path}{}`);
    };
    walk(root, '');
    expect(undescribed).toEqual([]);
  });

  it('bounds every list and every string a CEL rule reads (or the API server refuses the rules)', () => {
    const unbounded: string[] = [];
    const walk = (node: any, path: string) => {
      if (path.startsWith('.spec') && node.type === 'array' && node.maxItems === undefined) unbounded.push(path);
      for (const [name, child] of Object.entries(node.properties ?? {})) walk(child, `${path}.${name}`);
      if (node.items) walk(node.items, `${path}[]`);
    };
    walk(root, '');
    expect(unbounded).toEqual([]);
    for (const field of ['validity', 'renewBefore', 'caValidity']) expect(certificates[field].maxLength).toBeDefined();
  });
});
