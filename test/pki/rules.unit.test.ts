import { DEFAULT_RENEW_BEFORE_FRACTION } from '../../operator/api/defaults.ts';
import { issueCRL } from '../../operator/pki/crl-issuer.ts';
import { inspectCertificate, PkiError, validateKeyPair, verifyIssuedBy } from '../../operator/pki/inspect.ts';
import {
  BACKDATE_MS,
  caSubject,
  clientSpiffeId,
  type IssuedCertificate,
  issueCA,
  issueClient,
  issueServer,
  renewalTime,
} from '../../operator/pki/issue.ts';
import { x509 } from '../../operator/pki/x509.ts';
import { openssl, Scratch } from './support.ts';

// The rules of issuance that do not need a handshake: clamping to the CA, dates from the caller's clock,
// renewal times, CRL contents, and clear reasons for everything that is not a usable certificate or key.

const HOUR = 3_600_000;
const T0 = new Date('2030-01-01T00:00:00Z');
const at = (ms: number) => new Date(T0.getTime() + ms);

let ca: IssuedCertificate;
let otherCa: IssuedCertificate;
let server: IssuedCertificate;
let client: IssuedCertificate;

beforeAll(async () => {
  ca = await issueCA({
    endpoint: 'payments',
    namespace: 'team-a',
    algorithm: 'ECDSA-P256',
    validityMs: 10 * HOUR,
    now: T0,
  });
  otherCa = await issueCA({
    endpoint: 'ledger',
    namespace: 'team-a',
    algorithm: 'ECDSA-P256',
    validityMs: 10 * HOUR,
    now: T0,
  });
  server = await issueServer({ ca, dnsNames: ['svc'], algorithm: 'ECDSA-P256', validityMs: HOUR, now: at(HOUR) });
  client = await issueClient({
    ca,
    endpoint: 'payments',
    namespace: 'team-a',
    client: 'billing',
    trustDomain: 'example.org',
    algorithm: 'ECDSA-P256',
    validityMs: HOUR,
    now: at(HOUR),
  });
});

describe('issuance rules', () => {
  it('takes every date from the caller’s clock', () => {
    expect(ca.notBefore).toEqual(at(-BACKDATE_MS));
    expect(ca.notAfter).toEqual(at(10 * HOUR));
    expect(server.notBefore).toEqual(at(HOUR - BACKDATE_MS));
    expect(server.notAfter).toEqual(at(2 * HOUR));
  });

  it('names the CA after its namespace, endpoint and issue time', async () => {
    expect(caSubject('payments', 'team-a', T0)).toBe('O=team-a, OU=payments, CN=mtls-operator CA 20300101T000000.000Z');
    expect((await inspectCertificate(ca.certPem)).subject).toBe(caSubject('payments', 'team-a', T0));
  });

  it('puts the SPIFFE ID of the trust domain it is given in client certificates', async () => {
    expect(clientSpiffeId('cluster.local', 'ns', 'ep', 'c')).toBe(
      'spiffe://cluster.local/ns/ns/mtlsendpoint/ep/client/c',
    );
    expect((await inspectCertificate(client.certPem)).uris).toEqual([
      'spiffe://example.org/ns/team-a/mtlsendpoint/payments/client/billing',
    ]);
    const defaulted = await issueClient({
      ca,
      endpoint: 'payments',
      namespace: 'team-a',
      client: 'x',
      algorithm: 'ECDSA-P256',
      validityMs: HOUR,
      now: T0,
    });
    expect((await inspectCertificate(defaulted.certPem)).uris).toEqual([
      'spiffe://cluster.local/ns/team-a/mtlsendpoint/payments/client/x',
    ]);
  });

  it('never lets a leaf outlive its CA, and says so', async () => {
    const late = await issueServer({
      ca,
      dnsNames: ['svc'],
      algorithm: 'ECDSA-P256',
      validityMs: 5 * HOUR,
      now: at(8 * HOUR),
    });
    expect(late.notAfter).toEqual(ca.notAfter);
    expect(late.clampedToCA).toBe(true);
    const fits = await issueServer({
      ca,
      dnsNames: ['svc'],
      algorithm: 'ECDSA-P256',
      validityMs: 2 * HOUR,
      now: at(8 * HOUR),
    });
    expect(fits.notAfter).toEqual(ca.notAfter);
    expect(fits.clampedToCA).toBe(false);
    // ...nor start before it.
    const early = await issueServer({ ca, dnsNames: ['svc'], algorithm: 'ECDSA-P256', validityMs: HOUR, now: T0 });
    expect(early.notBefore).toEqual(ca.notBefore);
  });

  it('refuses to issue from an expired CA, a leaf as CA, a CA with the wrong key, or with no lifetime', async () => {
    const opts = { dnsNames: ['svc'], algorithm: 'ECDSA-P256' as const, validityMs: HOUR };
    await expect(issueServer({ ...opts, ca, now: at(10 * HOUR) })).rejects.toThrow(
      new PkiError('the CA expired at 2030-01-01T10:00:00.000Z'),
    );
    await expect(issueServer({ ...opts, ca: server, now: at(HOUR) })).rejects.toThrow('the CA certificate is not a CA');
    await expect(
      issueServer({ ...opts, ca: { certPem: ca.certPem, keyPem: otherCa.keyPem }, now: T0 }),
    ).rejects.toThrow('the CA key: the private key does not match the certificate');
    await expect(issueServer({ ...opts, ca: { certPem: 'junk', keyPem: ca.keyPem }, now: T0 })).rejects.toThrow(
      'the CA certificate: no PEM certificate found',
    );
    await expect(issueServer({ ...opts, ca, validityMs: 0, now: T0 })).rejects.toThrow('validity must be positive');
    await expect(issueServer({ ...opts, ca, now: new Date('nope') })).rejects.toThrow('now is not a valid date');
    await expect(issueServer({ ...opts, ca, dnsNames: [], now: T0 })).rejects.toThrow('at least one DNS name');
    await expect(
      issueClient({ ...opts, ca, endpoint: 'e', namespace: 'n', client: 'Not_A_Label', now: T0 }),
    ).rejects.toThrow('"Not_A_Label" is not a client name');
  });

  it('renews one third of the lifetime before expiry by default, else renewBefore before it', () => {
    expect(DEFAULT_RENEW_BEFORE_FRACTION).toBeCloseTo(1 / 3);
    const nb = at(0);
    const na = at(3 * HOUR);
    expect(renewalTime(nb, na)).toEqual(at(2 * HOUR));
    expect(renewalTime(nb, na, HOUR / 2)).toEqual(at(2.5 * HOUR));
    // A renewBefore as long as the (possibly clamped) lifetime falls back to a third, as in cert-manager.
    expect(renewalTime(nb, na, 3 * HOUR)).toEqual(at(2 * HOUR));
    // One year: renewed after 5840 hours.
    expect(renewalTime(at(0), at(8760 * HOUR))).toEqual(at(5840 * HOUR));
    expect(renewalTime(server.notBefore, server.notAfter)).toEqual(at(2 * HOUR - (HOUR + BACKDATE_MS) / 3));
  });
});

describe('CRLs', () => {
  const scratch = new Scratch();
  afterAll(() => scratch.remove());

  it('carry the CRL number, the dates, the AKI of the CA and every revoked serial', async () => {
    const pem = await issueCRL({
      ca,
      revoked: [
        { serial: client.serial, revokedAt: at(HOUR) },
        { serial: '0A0B', revokedAt: at(2 * HOUR), reason: 'superseded' },
      ],
      now: at(3 * HOUR),
      nextUpdateMs: HOUR,
      crlNumber: 42n,
    });
    expect(pem).toMatch(/^-----BEGIN X509 CRL-----\n[\s\S]+\n-----END X509 CRL-----\n$/);
    const crl = new x509.X509Crl(pem);
    expect(crl.thisUpdate).toEqual(at(3 * HOUR - BACKDATE_MS));
    expect(crl.nextUpdate).toEqual(at(4 * HOUR));
    expect(crl.issuer).toBe((await inspectCertificate(ca.certPem)).subject);
    expect(crl.entries.map((e) => e.serialNumber.toLowerCase())).toEqual([client.serial, '0a0b']);
    expect(crl.entries.map((e) => e.revocationDate)).toEqual([at(HOUR), at(2 * HOUR)]);
    expect(crl.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId?.toLowerCase()).toBe(
      (await inspectCertificate(ca.certPem)).subjectKeyId,
    );
    const text = await openssl(['crl', '-noout', '-text', '-in', scratch.write('c.crl', pem)]);
    expect(text.out).toMatch(/X509v3 CRL Number:\s+42\n/);
    expect(text.out).toMatch(/Superseded/);
    expect(text.out).toMatch(/Serial Number: 0A0B/);
  });

  it('number themselves by the clock unless told otherwise', async () => {
    const pem = await issueCRL({ ca, revoked: [], now: at(0), nextUpdateMs: HOUR });
    const text = await openssl(['crl', '-noout', '-text', '-in', scratch.write('d.crl', pem)]);
    expect(text.out).toMatch(new RegExp(`X509v3 CRL Number:\\s+${T0.getTime()}\\n`));
  });

  it('refuse bad input with a reason', async () => {
    await expect(
      issueCRL({ ca, revoked: [{ serial: 'xyz', revokedAt: T0 }], now: T0, nextUpdateMs: HOUR }),
    ).rejects.toThrow('"xyz" is not a hex serial number');
    await expect(issueCRL({ ca, revoked: [], now: T0, nextUpdateMs: 0 })).rejects.toThrow('nextUpdate');
    await expect(
      issueCRL({ ca: { certPem: ca.certPem, keyPem: otherCa.keyPem }, revoked: [], now: T0, nextUpdateMs: HOUR }),
    ).rejects.toThrow('the CA key: the private key does not match the certificate');
  });
});

describe('reading what is in a Secret', () => {
  const truncate = (pem: string, fraction: number) => pem.slice(0, Math.floor(pem.length * fraction));
  const keyBody = () => ca.keyPem.split('\n').filter((l) => l && !l.startsWith('-----'));

  it.each([
    ['an empty string', '', 'the certificate is empty'],
    ['garbage', 'hello world', 'no PEM certificate found'],
    [
      'a PEM cut before its END line',
      () => truncate(server.certPem, 0.6),
      'the certificate PEM is truncated (no END CERTIFICATE line)',
    ],
    [
      'a PEM whose body was cut',
      () => server.certPem.replace(/\n[A-Za-z0-9+/=]+\n-----END/, '\n-----END'),
      /^certificate 1 of the PEM is not a valid X\.509 certificate/,
    ],
    [
      'a PEM with non-base64 text',
      '-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n',
      'certificate 1 of the PEM is not base64',
    ],
    ['a private key where the certificate belongs', () => ca.keyPem, 'no PEM certificate found'],
  ])('inspectCertificate refuses %s with a reason', async (_what, input, reason) => {
    const pem = typeof input === 'function' ? input() : input;
    const error = await inspectCertificate(pem).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(PkiError);
    expect((error as Error).message).toMatch(reason);
  });

  it('validateKeyPair accepts a matching pair and names what is wrong with the others, never quoting the key', () => {
    expect(validateKeyPair(server.certPem, server.keyPem)).toEqual({ ok: true });
    const cases: [string, string, string][] = [
      [server.certPem, client.keyPem, 'the private key does not match the certificate'],
      [server.certPem, '', 'the private key is empty'],
      [server.certPem, 'nonsense', 'no PEM private key found'],
      [server.certPem, truncate(server.keyPem, 0.5), 'the private key PEM is truncated (no END PRIVATE KEY line)'],
      [
        server.certPem,
        server.keyPem.replace(/\n[A-Za-z0-9+/=]{8}/, '\n'),
        'the private key PEM does not parse (damaged or truncated)',
      ],
      [truncate(server.certPem, 0.5), server.keyPem, 'the certificate PEM is truncated (no END CERTIFICATE line)'],
    ];
    for (const [cert, key, reason] of cases) {
      const result = validateKeyPair(cert, key);
      expect(result).toEqual({ ok: false, reason });
    }
    const bad = validateKeyPair(ca.certPem, server.keyPem);
    expect(JSON.stringify(bad)).not.toContain(keyBody()[0]!.slice(0, 16));
  });

  it('verifyIssuedBy accepts what a CA issued and says why anything else fails', async () => {
    expect(await verifyIssuedBy(client.certPem, ca.certPem)).toEqual({ ok: true });
    expect(await verifyIssuedBy(client.certPem, otherCa.certPem)).toEqual({
      ok: false,
      reason: `the certificate's issuer "${caSubject('payments', 'team-a', T0)}" is not the CA "${caSubject('ledger', 'team-a', T0)}"`,
    });
    expect(await verifyIssuedBy(client.certPem, server.certPem)).toEqual({
      ok: false,
      reason: 'the issuer is not a CA',
    });
    expect(await verifyIssuedBy('junk', ca.certPem)).toEqual({ ok: false, reason: 'no PEM certificate found' });
    expect(await verifyIssuedBy(client.certPem, '')).toEqual({ ok: false, reason: 'the CA: the certificate is empty' });

    // A forged signature: flip a bit at the end of the DER (inside the signature value).
    const der = Buffer.from(new x509.X509Certificate(client.certPem).rawData);
    der.writeUInt8(der.readUInt8(der.length - 3) ^ 0x01, der.length - 3);
    const forged = x509.PemConverter.encode(der, 'CERTIFICATE');
    const result = await verifyIssuedBy(forged, ca.certPem);
    expect(result.ok).toBe(false);
    expect(result.ok === false && result.reason).toMatch(/signature/);
  });

  it('inspectCertificate reads the first certificate of a bundle', async () => {
    const info = await inspectCertificate(server.certPem + ca.certPem);
    expect(info.serial).toBe(server.serial);
    expect(info.dnsNames).toEqual(['svc']);
  });
});
