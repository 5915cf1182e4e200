import { X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { issueCRL } from '../../operator/pki/crl-issuer.ts';
import { issueCA, type IssuedCertificate, issueServer } from '../../operator/pki/issue.ts';
import type { KeyAlgorithm } from '../../operator/api/types.ts';
import { readCrl, signedBy, subjectDer } from '../../sidecar/crl-check.ts';
import { loadTlsMaterial } from '../../sidecar/tls-material.ts';
import { writeSecretVolume } from '../../sidecar/secret-volume.ts';

const DAY = 86_400_000;
const now = new Date();
const derOf = (pem: string) => Buffer.from(pem.replace(/-----[A-Z0-9 ]+-----/g, ''), 'base64');

async function caOf(algorithm: KeyAlgorithm, endpoint = 'payments'): Promise<IssuedCertificate> {
  return issueCA({ endpoint, namespace: 'team-a', algorithm, validityMs: 365 * DAY, now });
}

describe('sidecar: CRL checks without an X.509 library', () => {
  it.each(['ECDSA-P256', 'ECDSA-P384', 'RSA-2048'] as const)(
    '%s: reads issuer, nextUpdate and signature as openssl does, and knows its CA from another',
    async (algorithm) => {
      const ca = await caOf(algorithm);
      const other = await caOf(algorithm, 'other');
      const crlPem = await issueCRL({
        ca,
        revoked: [{ serial: 'abcdef', revokedAt: now }],
        now,
        nextUpdateMs: 7 * DAY,
      });
      const facts = readCrl(derOf(crlPem));
      // openssl's own reading of the same CRL.
      const dir = mkdtempSync(join(tmpdir(), 'crl-'));
      writeFileSync(join(dir, 'crl.pem'), crlPem);
      const text = execFileSync('openssl', ['crl', '-in', join(dir, 'crl.pem'), '-noout', '-nextupdate']).toString();
      rmSync(dir, { recursive: true, force: true });
      expect(facts.nextUpdate!.getTime()).toBe(new Date(text.trim().replace(/^nextUpdate=/, '')).getTime());
      expect(facts.issuer.equals(subjectDer(new X509Certificate(ca.certPem)))).toBe(true);
      expect(signedBy(facts, new X509Certificate(ca.certPem))).toBe(true);
      expect(signedBy(facts, new X509Certificate(other.certPem))).toBe(false);
      // One flipped bit in the signed part: same issuer, signature no longer verifies.
      const tampered = { ...facts, tbs: Buffer.from(facts.tbs) };
      tampered.tbs[tampered.tbs.length - 5]! ^= 1;
      expect(signedBy(tampered, new X509Certificate(ca.certPem))).toBe(false);
    },
  );

  it('refuses what is not a CRL, in words', () => {
    expect(() => readCrl(Buffer.from('not der'))).toThrow(/DER/);
    expect(() => readCrl(Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00]))).toThrow(/CertificateList/);
    expect(() => readCrl(Buffer.from([0x30, 0x85, 1, 2, 3, 4, 5]))).toThrow(/DER length/);
  });
});

describe('sidecar: loading the TLS folder', () => {
  const made: string[] = [];
  afterAll(() => made.forEach((dir) => rmSync(dir, { recursive: true, force: true })));
  async function folder(files: Record<string, string>): Promise<string> {
    const parent = mkdtempSync(join(tmpdir(), 'tls-'));
    made.push(parent);
    const dir = join(parent, 'vol');
    await writeSecretVolume(dir, files);
    return dir;
  }

  it('hands a two-CA CRL bundle (a rollover) to OpenSSL as one CRL per CA, with no warning', async () => {
    const oldCa = await caOf('ECDSA-P256');
    const newCa = await caOf('ECDSA-P256', 'payments-next');
    const server = await issueServer({
      ca: newCa,
      dnsNames: ['localhost'],
      algorithm: 'ECDSA-P256',
      validityMs: 30 * DAY,
      now,
    });
    const crls = await Promise.all([oldCa, newCa].map((ca) => issueCRL({ ca, revoked: [], now, nextUpdateMs: DAY })));
    const material = await loadTlsMaterial(
      await folder({
        'tls.crt': server.certPem,
        'tls.key': server.keyPem,
        'ca.crt': newCa.certPem + oldCa.certPem,
        'ca.crl': crls.join(''),
      }),
    );
    expect(material.hasCrl).toBe(true);
    expect(material.options.crl).toHaveLength(2);
    expect(material.warnings).toEqual([]);
  });

  it('explains a CRL of another CA, a CA without a CRL, and a CRL past its nextUpdate', async () => {
    const ca = await caOf('ECDSA-P256');
    const second = await caOf('ECDSA-P256', 'second');
    const stranger = await caOf('ECDSA-P256', 'stranger');
    const server = await issueServer({ ca, dnsNames: ['localhost'], algorithm: 'ECDSA-P256', validityMs: DAY, now });
    const base = { 'tls.crt': server.certPem, 'tls.key': server.keyPem, 'ca.crt': ca.certPem };
    const crlOf = (issuer: IssuedCertificate, at = now) =>
      issueCRL({ ca: issuer, revoked: [], now: at, nextUpdateMs: DAY });

    await expect(loadTlsMaterial(await folder({ ...base, 'ca.crl': await crlOf(stranger) }))).rejects.toThrow(
      /ca\.crl: CRL 1 is not signed by any CA of ca\.crt/,
    );
    await expect(loadTlsMaterial(await folder({ ...base, 'ca.crl': 'garbage' }))).rejects.toThrow(
      /ca\.crl: not a PEM "X509 CRL" bundle/,
    );
    const uncovered = await loadTlsMaterial(
      await folder({ ...base, 'ca.crt': ca.certPem + second.certPem, 'ca.crl': await crlOf(ca) }),
    );
    expect(uncovered.warnings).toEqual([
      expect.stringMatching(/ca\.crt holds ".*second.*" but ca\.crl has no CRL of it/),
    ]);
    const stale = await loadTlsMaterial(
      await folder({ ...base, 'ca.crl': await crlOf(ca, new Date(now.getTime() - 2 * DAY)) }),
    );
    expect(stale.warnings).toEqual([expect.stringMatching(/^the CRL of ".*payments.*" expired at /)]);
  });
});
