import { createHash, X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type IssuedCertificate, issueCA, issueClient } from '../../operator/pki/issue.ts';
import type { KeyAlgorithm, Pkcs12Profile } from '../../operator/api/types.ts';
import { pkcs12Keystore, pkcs12Truststore } from '../../operator/pki/pkcs12.ts';
import { openssl, Scratch } from './support.ts';

// The PKCS#12 files the operator writes, read back by the real openssl CLI with the password (keytool and a
// Java client read them in test/pki/pkcs12-java.test.ts and test/controller/keystores.test.ts).

const HOUR = 3_600_000;
const PASSWORD = 'correct horse 9';

/** What `openssl pkcs12 -info` prints about the protection of each profile. */
const PROTECTION: Record<Pkcs12Profile, { mac: RegExp; certs: RegExp; key: RegExp }> = {
  Modern2023: {
    mac: /MAC: sha256, Iteration 10000/,
    certs: /PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC, Iteration 10000, PRF hmacWithSHA256/,
    key: /Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 10000, PRF hmacWithSHA256/,
  },
  LegacyDES: {
    mac: /MAC: sha1, Iteration 2048/,
    certs: /PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2048/,
    key: /Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2048/,
  },
};

const fingerprints = (pem: string) =>
  (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []).map(
    (block) => new X509Certificate(block).fingerprint256,
  );

describe('PKCS#12 keystores and truststores, read by openssl', () => {
  const scratch = new Scratch();
  afterAll(() => scratch.remove());

  const pkcs12 = async (file: string, args: string[], password = PASSWORD) =>
    openssl(['pkcs12', '-in', file, '-passin', `pass:${password}`, ...args]);

  for (const algorithm of ['ECDSA-P256', 'RSA-2048'] as KeyAlgorithm[]) {
    for (const profile of ['Modern2023', 'LegacyDES'] as Pkcs12Profile[]) {
      describe(`${profile}, ${algorithm}`, () => {
        let ca: IssuedCertificate;
        let nextCa: IssuedCertificate;
        let leaf: IssuedCertificate;
        let keystore: string;
        let truststore: string;

        beforeAll(async () => {
          const now = new Date();
          const common = { endpoint: 'payments', namespace: 'team-a', algorithm, now };
          ca = await issueCA({ ...common, validityMs: 100 * HOUR });
          nextCa = await issueCA({ ...common, validityMs: 200 * HOUR });
          leaf = await issueClient({ ...common, ca, client: 'billing', validityMs: 10 * HOUR });
          const tag = `${profile}-${algorithm}`;
          keystore = join(scratch.dir, `${tag}-keystore.p12`);
          writeFileSync(
            keystore,
            await pkcs12Keystore({
              certPem: leaf.certPem,
              keyPem: leaf.keyPem,
              chainPem: ca.certPem,
              alias: 'billing',
              password: PASSWORD,
              profile,
            }),
          );
          // A trust bundle during a CA rollover: the current CA and the one taking over.
          truststore = join(scratch.dir, `${tag}-truststore.p12`);
          writeFileSync(
            truststore,
            await pkcs12Truststore({ caPem: ca.certPem + nextCa.certPem, password: PASSWORD, profile }),
          );
        });

        it('protects the keystore as the profile says, with the password', async () => {
          const info = await pkcs12(keystore, ['-info', '-nokeys']);
          expect(info.code).toBe(0);
          expect(info.out).toMatch(PROTECTION[profile].mac);
          expect(info.out).toMatch(PROTECTION[profile].certs);
          expect(info.out).toMatch(PROTECTION[profile].key);
          expect(info.out).toMatch(/friendlyName: billing/);
        });

        it('holds the private key, the leaf with its key id, and the CA that signed it', async () => {
          const key = await pkcs12(keystore, ['-nocerts', '-nodes']);
          expect(key.code).toBe(0);
          const keyFile = scratch.write(`${profile}-${algorithm}-key.pem`, key.out);
          const publicFromStore = await openssl(['pkey', '-in', keyFile, '-pubout']);
          const leafFile = scratch.write(`${profile}-${algorithm}-leaf.pem`, leaf.certPem);
          const publicOfLeaf = await openssl(['x509', '-in', leafFile, '-noout', '-pubkey']);
          expect(publicFromStore.out).toBe(publicOfLeaf.out);

          const leafOut = await pkcs12(keystore, ['-nokeys', '-clcerts']);
          expect(fingerprints(leafOut.out)).toEqual(fingerprints(leaf.certPem));
          // The key bag and the leaf share the localKeyID (SHA-1 of the leaf), which pairs them for readers.
          const der = new X509Certificate(leaf.certPem).raw;
          const keyId = createHash('sha1').update(der).digest('hex').toUpperCase().match(/../g)!.join(' ');
          expect(leafOut.out).toContain(`localKeyID: ${keyId}`);
          const cas = await pkcs12(keystore, ['-nokeys', '-cacerts']);
          expect(fingerprints(cas.out)).toEqual(fingerprints(ca.certPem));
        });

        it('holds every CA of the bundle in the truststore, marked trusted for Java', async () => {
          const info = await pkcs12(truststore, ['-info', '-nokeys']);
          expect(info.code).toBe(0);
          expect(info.out).toMatch(PROTECTION[profile].mac);
          expect(info.out).toMatch(PROTECTION[profile].certs);
          expect(info.out).not.toMatch(/Shrouded Keybag/);
          expect(fingerprints(info.out)).toEqual(fingerprints(ca.certPem + nextCa.certPem));
          // Oracle's trustedKeyUsage attribute on each certificate: without it Java lists no trusted entry.
          expect(info.out.match(/2\.16\.840\.1\.113894\.746875\.1\.1/g)).toHaveLength(2);
          for (const cert of [ca, nextCa]) expect(info.out).toContain(`friendlyName: ca-${cert.serial}`);
        });

        it('refuses a wrong password', async () => {
          for (const file of [keystore, truststore]) {
            const wrong = await pkcs12(file, ['-info', '-nokeys'], 'not the password');
            expect(wrong.code).not.toBe(0);
            expect(wrong.out).toMatch(/Mac verify error|mac verify failure/i);
          }
        });
      });
    }
  }

  it('uses a fresh salt each time: equal content, different bytes (why the controller keeps a digest)', async () => {
    const now = new Date();
    const ca = await issueCA({ endpoint: 'e', namespace: 'n', algorithm: 'ECDSA-P256', validityMs: HOUR, now });
    const a = await pkcs12Truststore({ caPem: ca.certPem, password: PASSWORD, profile: 'Modern2023' });
    const b = await pkcs12Truststore({ caPem: ca.certPem, password: PASSWORD, profile: 'Modern2023' });
    expect(a.equals(b)).toBe(false);
  });

  it('says what is missing instead of writing an empty store', async () => {
    await expect(pkcs12Truststore({ caPem: '', password: PASSWORD, profile: 'Modern2023' })).rejects.toThrow(
      /at least one CA certificate/,
    );
    await expect(
      pkcs12Keystore({ certPem: '', keyPem: '', chainPem: '', alias: 'a', password: 'p', profile: 'Modern2023' }),
    ).rejects.toThrow(/needs a certificate/);
  });
});
