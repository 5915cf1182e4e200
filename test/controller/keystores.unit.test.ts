import type { V1Secret } from '@kubernetes/client-node';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  KEYSTORE_INPUTS_ANNOTATION,
  type KeystoreContent,
  keystorePassword,
  type Pkcs12Request,
  pkcs12Content,
} from '../../operator/controller/keystores.ts';
import { type IssuedCertificate, issueCA, issueClient } from '../../operator/pki/issue.ts';
import { openssl, Scratch } from '../pki/support.ts';

// When the controller rebuilds a client's keystores: on what they are built from, never on their bytes.

const HOUR = 3_600_000;
const request: Pkcs12Request = { passwordSecret: 'billing-keystore', passwordKey: 'password', profile: 'Modern2023' };
const where = { namespace: 'team-a', client: 'billing' };
const b64 = (s: string) => Buffer.from(s).toString('base64');

/** The client Secret as the controller last wrote it with this content. */
const secretWith = (content: KeystoreContent): V1Secret => ({
  metadata: { name: 'payments-client-billing', annotations: content.annotations },
  data: { 'tls.crt': 'x', ...content.data },
});

describe('keystore password from its Secret', () => {
  it('reads the named key', () => {
    const secret = { data: { password: b64('s3cret pass-word!') } };
    expect(keystorePassword(secret, request, where)).toEqual({ password: 's3cret pass-word!' });
  });

  it('refuses a password Java cannot use: not printable ASCII (Java 17: "Password is not ASCII"), or a newline', () => {
    for (const password of ['geheim-ä', 'geheim\n']) {
      const lookup = keystorePassword({ data: { password: b64(password) } }, request, where);
      expect('problem' in lookup && lookup.problem).toMatch(/other than printable ASCII, which Java refuses/);
      expect(JSON.stringify(lookup)).not.toContain('geheim');
    }
  });

  it('names the Secret, the field and the command that fixes a missing Secret', () => {
    const lookup = keystorePassword(undefined, request, where);
    expect(lookup).toEqual({
      problem:
        "Secret team-a/billing-keystore (spec.clients[billing].keystores.pkcs12.passwordSecretRef) does not exist, so client billing's keystore.p12 and truststore.p12 cannot be written; create it: kubectl -n team-a create secret generic billing-keystore --from-literal=password=<password>.",
    });
  });

  it('tells a missing key from an empty one, and never repeats a value', () => {
    const missing = keystorePassword({ data: { other: b64('not-this-one') } }, request, where);
    expect('problem' in missing && missing.problem).toMatch(/has no key password.*set .*passwordSecretRef\.key/);
    expect(JSON.stringify(missing)).not.toContain('not-this-one');
    const empty = keystorePassword({ data: { password: '' } }, request, where);
    expect('problem' in empty && empty.problem).toMatch(/has an empty key password/);
  });
});

describe('keystore content of a client Secret', () => {
  const scratch = new Scratch();
  let ca: IssuedCertificate;
  let nextCa: IssuedCertificate;
  let leaf: IssuedCertificate;
  let renewed: IssuedCertificate;
  let first: KeystoreContent;
  const build = (changes: Partial<Parameters<typeof pkcs12Content>[0]> = {}) =>
    pkcs12Content({
      request,
      password: { password: 'pw-1' },
      existing: first && secretWith(first),
      alias: 'billing',
      certPem: leaf.certPem,
      keyPem: leaf.keyPem,
      caPem: ca.certPem,
      ...changes,
    });

  beforeAll(async () => {
    const now = new Date();
    const common = { endpoint: 'payments', namespace: 'team-a', algorithm: 'ECDSA-P256' as const, now };
    ca = await issueCA({ ...common, validityMs: 100 * HOUR });
    nextCa = await issueCA({ ...common, validityMs: 200 * HOUR });
    leaf = await issueClient({ ...common, ca, client: 'billing', validityMs: 10 * HOUR });
    renewed = await issueClient({ ...common, ca, client: 'billing', validityMs: 10 * HOUR });
    first = await build({ existing: undefined });
  });
  afterAll(() => scratch.remove());

  it('writes both stores and the digest of their inputs the first time', () => {
    expect(Object.keys(first.data).sort()).toEqual(['keystore.p12', 'truststore.p12']);
    expect(first.annotations[KEYSTORE_INPUTS_ANNOTATION]).toMatch(/^[0-9a-f]{32}$/);
  });

  it('keeps the stored bytes when nothing they hold has changed', async () => {
    expect(await build()).toEqual(first);
  });

  it('rebuilds them at a renewal, a CA joining the bundle, a new password or profile', async () => {
    const changes: [string, Partial<Parameters<typeof pkcs12Content>[0]>][] = [
      ['renewal', { certPem: renewed.certPem, keyPem: renewed.keyPem }],
      ['rollover', { caPem: ca.certPem + nextCa.certPem }],
      ['password', { password: { password: 'pw-2' } }],
      ['profile', { request: { ...request, profile: 'LegacyDES' } }],
    ];
    const digests = new Set([first.annotations[KEYSTORE_INPUTS_ANNOTATION]]);
    for (const [why, change] of changes) {
      const next = await build(change);
      expect({ why, keystore: next.data['keystore.p12'] === first.data['keystore.p12'] }).toEqual({
        why,
        keystore: false,
      });
      expect(next.data['truststore.p12']).not.toBe(first.data['truststore.p12']);
      digests.add(next.annotations[KEYSTORE_INPUTS_ANNOTATION]);
    }
    expect(digests.size).toBe(changes.length + 1);
  });

  it('puts the new CA into the truststore at a rollover, and the renewed certificate into the keystore', async () => {
    const rolled = await build({
      caPem: ca.certPem + nextCa.certPem,
      certPem: renewed.certPem,
      keyPem: renewed.keyPem,
    });
    const file = (name: string, key: string) => {
      const path = join(scratch.dir, name);
      writeFileSync(path, Buffer.from(rolled.data[key]!, 'base64'));
      return path;
    };
    const trust = await openssl(['pkcs12', '-in', file('t.p12', 'truststore.p12'), '-passin', 'pass:pw-1', '-nokeys']);
    expect(trust.out).toContain(`friendlyName: ca-${ca.serial}`);
    expect(trust.out).toContain(`friendlyName: ca-${nextCa.serial}`);
    const keys = await openssl(['pkcs12', '-in', file('k.p12', 'keystore.p12'), '-passin', 'pass:pw-1', '-nokeys']);
    const leafFile = scratch.write('leaf.pem', keys.out);
    const serial = await openssl(['x509', '-in', leafFile, '-noout', '-serial']);
    expect(serial.out.trim().toLowerCase()).toBe(`serial=${renewed.serial}`);
  });

  it('keeps the stores last written while the password cannot be read, and writes none if there were none', async () => {
    const problem = { problem: 'Secret team-a/billing-keystore does not exist' };
    expect(await build({ password: problem })).toEqual(first);
    expect(await build({ password: problem, existing: undefined })).toEqual({ data: {}, annotations: {} });
  });
});
