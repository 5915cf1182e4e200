import { issueCRL } from '../../operator/pki/crl-issuer.ts';
import { inspectCertificate, validateKeyPair, verifyIssuedBy } from '../../operator/pki/inspect.ts';
import { BACKDATE_MS, type IssuedCertificate, issueCA, issueClient, issueServer } from '../../operator/pki/issue.ts';
import type { KeyAlgorithm } from '../../operator/api/types.ts';
import { handshake, openssl, Scratch, x509Text } from './support.ts';

// Every chain the operator issues, checked by the real openssl CLI and by a real Node TLS handshake.

const HOUR = 3_600_000;
const YEAR = 8760 * HOUR;
const DNS = ['payments-strict', 'payments-strict.team-a.svc', 'payments.example.test'];
// openssl verify checks validity against the real clock, so issue "now" (to the second: X.509 has no ms).
const now = () => new Date(Math.floor(Date.now() / 1000) * 1000);

const EXPECTED: Record<KeyAlgorithm, { key: RegExp; signature: RegExp }> = {
  'ECDSA-P256': { key: /id-ecPublicKey[\s\S]*?(256 bit|NIST CURVE: P-256)/, signature: /ecdsa-with-SHA256/ },
  'ECDSA-P384': { key: /id-ecPublicKey[\s\S]*?(384 bit|NIST CURVE: P-384)/, signature: /ecdsa-with-SHA384/ },
  'RSA-2048': { key: /rsaEncryption[\s\S]*?\(2048 bit\)/, signature: /sha256WithRSAEncryption/ },
  'RSA-3072': { key: /rsaEncryption[\s\S]*?\(3072 bit\)/, signature: /sha256WithRSAEncryption/ },
  'RSA-4096': { key: /rsaEncryption[\s\S]*?\(4096 bit\)/, signature: /sha256WithRSAEncryption/ },
};

interface Chain {
  issuedAt: Date;
  ca: IssuedCertificate;
  server: IssuedCertificate;
  client: IssuedCertificate;
}

async function issueChain(
  algorithm: KeyAlgorithm,
  caAlgorithm: KeyAlgorithm = algorithm,
  issuedAt = now(),
  endpoint = 'payments',
): Promise<Chain> {
  const ca = await issueCA({
    endpoint,
    namespace: 'team-a',
    algorithm: caAlgorithm,
    validityMs: 5 * YEAR,
    now: issuedAt,
  });
  const server = await issueServer({ ca, dnsNames: DNS, algorithm, validityMs: YEAR, now: issuedAt });
  const client = await issueClient({
    ca,
    endpoint,
    namespace: 'team-a',
    client: 'billing',
    algorithm,
    validityMs: YEAR,
    now: issuedAt,
  });
  return { issuedAt, ca, server, client };
}

describe.each(['ECDSA-P256', 'ECDSA-P384', 'RSA-2048'] as const)('certificates with %s keys', (algorithm) => {
  const scratch = new Scratch();
  let chain: Chain;
  let caFile: string;
  beforeAll(async () => {
    chain = await issueChain(algorithm);
    caFile = scratch.write('ca.pem', chain.ca.certPem);
  });
  afterAll(() => scratch.remove());

  it('issues a CA that openssl reads as a CA with pathlen 0, keyCertSign and cRLSign', async () => {
    const text = await x509Text(scratch, chain.ca.certPem);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(text).toMatch(/X509v3 Key Usage: critical\s+.*Certificate Sign, CRL Sign/);
    expect(text).toMatch(/Subject: O\s?=\s?team-a, OU\s?=\s?payments, CN\s?=\s?mtls-operator CA \d{8}T\d{6}\.\d{3}Z/);
    expect(text).toMatch(EXPECTED[algorithm].key);
    expect(text).toMatch(EXPECTED[algorithm].signature);
    expect(text).not.toMatch(/Extended Key Usage/);
    // Self-signed: openssl verifies it against itself.
    expect(await openssl(['verify', '-CAfile', caFile, caFile])).toMatchObject({ code: 0 });
  });

  it('issues a server certificate that verifies for sslserver only, with the DNS names as SANs', async () => {
    const file = scratch.write('server.pem', chain.server.certPem);
    expect(await openssl(['verify', '-CAfile', caFile, '-purpose', 'sslserver', file])).toEqual({
      code: 0,
      out: `${file}: OK\n`,
    });
    const asClient = await openssl(['verify', '-CAfile', caFile, '-purpose', 'sslclient', file]);
    expect(asClient.code).not.toBe(0);
    expect(asClient.out).toMatch(/unsuitable certificate purpose/);
    const text = await x509Text(scratch, chain.server.certPem);
    expect(text).toMatch(/X509v3 Extended Key Usage:\s+TLS Web Server Authentication\n/);
    expect(text).not.toMatch(/Client Authentication/);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature/);
    expect(text).toMatch(
      /X509v3 Subject Alternative Name:\s+DNS:payments-strict, DNS:payments-strict\.team-a\.svc, DNS:payments\.example\.test\n/,
    );
    expect(text).toMatch(/X509v3 Authority Key Identifier/);
    expect(text).toMatch(/X509v3 Subject Key Identifier/);
    expect(text).toMatch(EXPECTED[algorithm].key);
  });

  it('issues a client certificate with CN, clientAuth only and the SPIFFE URI SAN', async () => {
    const file = scratch.write('client.pem', chain.client.certPem);
    expect(await openssl(['verify', '-CAfile', caFile, '-purpose', 'sslclient', file])).toEqual({
      code: 0,
      out: `${file}: OK\n`,
    });
    const asServer = await openssl(['verify', '-CAfile', caFile, '-purpose', 'sslserver', file]);
    expect(asServer.code).not.toBe(0);
    expect(asServer.out).toMatch(/unsuitable certificate purpose/);
    const text = await x509Text(scratch, chain.client.certPem);
    expect(text).toMatch(/Subject: CN\s?=\s?billing\n/);
    expect(text).toMatch(/X509v3 Extended Key Usage:\s+TLS Web Client Authentication\n/);
    expect(text).not.toMatch(/Server Authentication/);
    expect(text).toMatch(
      /X509v3 Subject Alternative Name:\s+URI:spiffe:\/\/cluster\.local\/ns\/team-a\/mtlsendpoint\/payments\/client\/billing\n/,
    );
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
  });

  it('gives 128-bit positive serials that openssl reads as we report them', async () => {
    for (const cert of [chain.ca, chain.server, chain.client]) {
      expect(cert.serial).toMatch(/^[0-7][0-9a-f]{31}$/); // 16 bytes, top bit clear: positive
      const { out } = await openssl(['x509', '-noout', '-serial', '-in', scratch.write('s.pem', cert.certPem)]);
      expect(out.trim()).toBe(`serial=${cert.serial.toUpperCase()}`);
    }
    expect(new Set([chain.ca.serial, chain.server.serial, chain.client.serial]).size).toBe(3);
  });

  it('dates certificates from now minus the backdating to now plus the validity', async () => {
    const t = chain.issuedAt.getTime();
    expect(chain.ca.notBefore.getTime()).toBe(t - BACKDATE_MS);
    expect(chain.ca.notAfter.getTime()).toBe(t + 5 * YEAR);
    expect(chain.server.notBefore.getTime()).toBe(t - BACKDATE_MS);
    expect(chain.server.notAfter.getTime()).toBe(t + YEAR);
    expect(chain.client.notAfter.getTime()).toBe(t + YEAR);
    expect(chain.client.clampedToCA).toBe(false);
    const { out } = await openssl(['x509', '-noout', '-enddate', '-in', scratch.write('e.pem', chain.server.certPem)]);
    const openSslEnd = new Date(out.trim().replace('notAfter=', ''));
    expect(openSslEnd.getTime()).toBe(t + YEAR);
  });

  it('issues CRLs that openssl verifies: empty, and listing a revoked client', async () => {
    const empty = await issueCRL({ ca: chain.ca, revoked: [], now: chain.issuedAt, nextUpdateMs: HOUR });
    const emptyFile = scratch.write('empty.crl', empty);
    const emptyText = await openssl(['crl', '-in', emptyFile, '-CAfile', caFile, '-verify', '-noout', '-text']);
    expect(emptyText.code).toBe(0);
    expect(emptyText.out).toMatch(/verify OK/);
    expect(emptyText.out).toMatch(/No Revoked Certificates/);

    const crl = await issueCRL({
      ca: chain.ca,
      revoked: [{ serial: chain.client.serial, revokedAt: chain.issuedAt }],
      now: chain.issuedAt,
      nextUpdateMs: HOUR,
    });
    const crlFile = scratch.write('revoked.crl', crl);
    const text = await openssl(['crl', '-in', crlFile, '-CAfile', caFile, '-verify', '-noout', '-text']);
    expect(text.code).toBe(0);
    expect(text.out).toMatch(/verify OK/);
    expect(text.out).toMatch(new RegExp(`Serial Number: ${chain.client.serial.toUpperCase()}`));
    expect(text.out).toMatch(/X509v3 CRL Number:\s+\d+/);
    expect(text.out).toMatch(/X509v3 Authority Key Identifier/);
    expect(text.out).toMatch(/Cessation Of Operation/);

    // With the CRL, openssl refuses the revoked client and still accepts the server.
    const clientFile = scratch.write('client.pem', chain.client.certPem);
    const serverFile = scratch.write('server.pem', chain.server.certPem);
    const revoked = await openssl(['verify', '-crl_check', '-CRLfile', crlFile, '-CAfile', caFile, clientFile]);
    expect(revoked.code).not.toBe(0);
    expect(revoked.out).toMatch(/certificate revoked/);
    expect(await openssl(['verify', '-crl_check', '-CRLfile', crlFile, '-CAfile', caFile, serverFile])).toMatchObject({
      code: 0,
    });
    expect(await openssl(['verify', '-crl_check', '-CRLfile', emptyFile, '-CAfile', caFile, clientFile])).toMatchObject(
      { code: 0 },
    );
  });

  it('completes a real mutual-TLS handshake in Node', async () => {
    const outcome = await handshake(
      { key: chain.server.keyPem, cert: chain.server.certPem, ca: chain.ca.certPem },
      { key: chain.client.keyPem, cert: chain.client.certPem, ca: chain.ca.certPem, servername: 'payments-strict' },
    );
    expect(outcome).toMatchObject({ accepted: true, peerCN: 'billing', clientData: 'hello billing' });
    expect(outcome.clientError).toBeUndefined();
  });

  it('fails the handshake for a client certificate of another CA, and for no certificate', async () => {
    const server = { key: chain.server.keyPem, cert: chain.server.certPem, ca: chain.ca.certPem };
    // A CA of another endpoint: another name.
    const other = await issueChain(algorithm, algorithm, chain.issuedAt, 'ledger');
    const foreign = await handshake(server, {
      key: other.client.keyPem,
      cert: other.client.certPem,
      ca: chain.ca.certPem,
      servername: 'payments-strict',
    });
    expect(foreign).toMatchObject({
      accepted: false,
      // OpenSSL's code when no trusted issuer is found for a peer that sent only its leaf.
      serverError: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
      clientData: '',
    });
    // A twin CA: the same name (same endpoint, same instant), another key.
    const twin = await issueChain(algorithm, algorithm, chain.issuedAt);
    expect(twin.ca.certPem).not.toBe(chain.ca.certPem);
    const impostor = await handshake(server, {
      key: twin.client.keyPem,
      cert: twin.client.certPem,
      ca: chain.ca.certPem,
      servername: 'payments-strict',
    });
    expect(impostor).toMatchObject({ accepted: false, serverError: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', clientData: '' });
    expect(await verifyIssuedBy(twin.client.certPem, chain.ca.certPem)).toEqual({
      ok: false,
      reason: 'the certificate was issued by another key of the same name (key identifiers differ)',
    });

    const anonymous = await handshake(
      { key: chain.server.keyPem, cert: chain.server.certPem, ca: chain.ca.certPem },
      { ca: chain.ca.certPem, servername: 'payments-strict' },
    );
    expect(anonymous.accepted).toBe(false);
    expect(anonymous.peerCN).toBeUndefined();
    expect(anonymous.clientData).toBe('');
  });

  it('fails the handshake for a client whose certificate is revoked in the CRL', async () => {
    const crl = await issueCRL({
      ca: chain.ca,
      revoked: [{ serial: chain.client.serial, revokedAt: chain.issuedAt }],
      now: chain.issuedAt,
      nextUpdateMs: HOUR,
    });
    const outcome = await handshake(
      { key: chain.server.keyPem, cert: chain.server.certPem, ca: chain.ca.certPem, crl },
      { key: chain.client.keyPem, cert: chain.client.certPem, ca: chain.ca.certPem, servername: 'payments-strict' },
    );
    expect(outcome.accepted).toBe(false);
    expect(outcome.serverError).toBe('CERT_REVOKED');
    expect(outcome.peerCN).toBe('billing');
  });

  it('is described by inspectCertificate, validateKeyPair and verifyIssuedBy as openssl sees it', async () => {
    const server = await inspectCertificate(chain.server.certPem);
    const ca = await inspectCertificate(chain.ca.certPem);
    expect(server).toMatchObject({
      serial: chain.server.serial,
      notBefore: chain.server.notBefore,
      notAfter: chain.server.notAfter,
      subject: 'CN=payments-strict',
      issuer: ca.subject,
      dnsNames: DNS,
      uris: [],
      isCA: false,
      extendedKeyUsages: ['serverAuth'],
      keyAlgorithm: algorithm,
      authorityKeyId: ca.subjectKeyId,
    });
    expect(ca).toMatchObject({ isCA: true, extendedKeyUsages: [], authorityKeyId: ca.subjectKeyId });
    const { out } = await openssl([
      'x509',
      '-noout',
      '-fingerprint',
      '-sha256',
      '-in',
      scratch.write('f.pem', chain.server.certPem),
    ]);
    expect(out.trim().split('=')[1]!.replace(/:/g, '').toLowerCase()).toBe(server.fingerprintSha256);
    for (const leaf of [chain.server, chain.client]) {
      expect(validateKeyPair(leaf.certPem, leaf.keyPem)).toEqual({ ok: true });
      expect(await verifyIssuedBy(leaf.certPem, chain.ca.certPem)).toEqual({ ok: true });
    }
    expect(validateKeyPair(chain.ca.certPem, chain.ca.keyPem)).toEqual({ ok: true });
  });
});

describe('certificates with RSA-3072 and RSA-4096 keys (slow keys: once)', () => {
  it('issue under an RSA-4096 CA, verify with openssl and shake hands', async () => {
    const scratch = new Scratch();
    try {
      const chain = await issueChain('RSA-3072', 'RSA-4096');
      const caFile = scratch.write('ca.pem', chain.ca.certPem);
      expect(await x509Text(scratch, chain.ca.certPem)).toMatch(EXPECTED['RSA-4096'].key);
      expect(await x509Text(scratch, chain.server.certPem)).toMatch(EXPECTED['RSA-3072'].key);
      const server = scratch.write('server.pem', chain.server.certPem);
      const client = scratch.write('client.pem', chain.client.certPem);
      expect((await openssl(['verify', '-CAfile', caFile, '-purpose', 'sslserver', server])).code).toBe(0);
      expect((await openssl(['verify', '-CAfile', caFile, '-purpose', 'sslclient', client])).code).toBe(0);
      const crl = scratch.write(
        'c.crl',
        await issueCRL({
          ca: chain.ca,
          revoked: [{ serial: 'abc', revokedAt: chain.issuedAt }],
          now: chain.issuedAt,
          nextUpdateMs: HOUR,
        }),
      );
      expect((await openssl(['crl', '-in', crl, '-CAfile', caFile, '-verify', '-noout'])).out).toMatch(/verify OK/);
      const outcome = await handshake(
        { key: chain.server.keyPem, cert: chain.server.certPem, ca: chain.ca.certPem },
        {
          key: chain.client.keyPem,
          cert: chain.client.certPem,
          ca: chain.ca.certPem,
          servername: 'payments.example.test',
        },
      );
      expect(outcome).toMatchObject({ accepted: true, clientData: 'hello billing' });
    } finally {
      scratch.remove();
    }
  });
});
