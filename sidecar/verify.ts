import { createHash } from 'node:crypto';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import type { Mode } from './flags.ts';
import type { RefusalReason } from './refusal-log.ts';

/** A verified client, as forwarded upstream. */
export interface ClientIdentity {
  subject: string;
  commonName: string;
  uri?: string;
  /** sha256 of the certificate's DER, hex: Envoy's XFCC Hash. */
  hash: string;
  serial: string;
}

export type Verdict =
  | { accept: true; identity?: ClientIdentity }
  | { accept: false; reason: RefusalReason; detail: string; subject?: string; serial?: string };

/** OpenSSL verification errors (as Node reports them) -> our refusal reasons. */
const REASONS: Record<string, RefusalReason> = {
  UNABLE_TO_GET_ISSUER_CERT: 'unknown_ca',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'unknown_ca',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'unknown_ca',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'unknown_ca',
  SELF_SIGNED_CERT_IN_CHAIN: 'unknown_ca',
  CERT_SIGNATURE_FAILURE: 'unknown_ca',
  CERT_HAS_EXPIRED: 'expired',
  CERT_REVOKED: 'revoked',
  CERT_NOT_YET_VALID: 'bad_certificate',
  INVALID_PURPOSE: 'bad_certificate',
  INVALID_CA: 'bad_certificate',
  UNABLE_TO_GET_CRL: 'bad_certificate',
};

function subjectOf(cert: PeerCertificate): string {
  const subject = cert.subject as unknown as Record<string, string | string[]>;
  return Object.entries(subject ?? {})
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : v}`)
    .join(',');
}

function uriOf(cert: PeerCertificate): string | undefined {
  return cert.subjectaltname
    ?.split(', ')
    .find((name) => name.startsWith('URI:'))
    ?.slice(4);
}

/**
 * The docs/DESIGN.md mode table for one connection. `standard` never asked for a certificate. `flexible` takes
 * none but refuses a bad one; `strict` refuses everything but a valid one. OpenSSL has already checked the
 * chain, validity, client-auth purpose and (when ca.crl is present) revocation; we add the allow-list.
 */
export function verifyClient(socket: TLSSocket, mode: Mode, allowClients: readonly string[]): Verdict {
  if (mode === 'standard') return { accept: true };
  const cert = socket.getPeerCertificate();
  const presented = !!cert && Object.keys(cert).length > 0 && !!cert.raw;
  if (!presented) {
    return mode === 'strict'
      ? { accept: false, reason: 'no_certificate', detail: 'strict listener: a client certificate is required' }
      : { accept: true };
  }
  const subject = subjectOf(cert);
  const serial = cert.serialNumber?.toLowerCase();
  if (!socket.authorized) {
    const code = String(socket.authorizationError ?? 'UNKNOWN');
    // Node reports OpenSSL's last error: for a self-signed certificate that is the missing CRL of its
    // "issuer" (itself), not that nobody trusts it.
    const selfSigned = code === 'UNABLE_TO_GET_CRL' && JSON.stringify(cert.issuer) === JSON.stringify(cert.subject);
    const reason = selfSigned ? 'unknown_ca' : (REASONS[code] ?? 'bad_certificate');
    return { accept: false, reason, detail: code, subject, serial };
  }
  const commonName = Array.isArray(cert.subject?.CN) ? cert.subject.CN[0]! : (cert.subject?.CN ?? '');
  if (allowClients.length > 0 && !allowClients.includes(commonName)) {
    return {
      accept: false,
      reason: 'not_allowed',
      detail: `client "${commonName}" is not in --allow-client`,
      subject,
      serial,
    };
  }
  return {
    accept: true,
    identity: {
      subject,
      commonName,
      uri: uriOf(cert),
      hash: createHash('sha256').update(cert.raw).digest('hex'),
      serial: serial ?? '',
    },
  };
}

/** Anything but printable ASCII is percent-encoded: a header value must never carry CR, LF or non-ASCII. */
const printable = (text: string) =>
  text.replace(/[^\x20-\x7e]/gu, (c) =>
    [...Buffer.from(c)].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''),
  );

/** Envoy's x-forwarded-client-cert element for a verified client. */
export function xfcc(identity: ClientIdentity): string {
  const quoted = printable(identity.subject).replace(/\\/g, '\\\\').replace(/"/g, '\\"');
  const uri = identity.uri ? `;URI=${printable(identity.uri).replace(/[;,"]/g, encodeURIComponent)}` : '';
  return `Hash=${identity.hash};Subject="${quoted}"${uri}`;
}

/**
 * The identity header fields the sidecar sets on every request, whatever the protocol (the HTTP/1.1 path
 * writes them as lines, the HTTP/2 path as fields of each stream); X-Forwarded-For is added per request.
 */
export function identityFields(identity: ClientIdentity | undefined): [name: string, value: string][] {
  return identity
    ? [
        ['x-client-verify', 'SUCCESS'],
        ['x-forwarded-client-cert', xfcc(identity)],
        ['x-forwarded-proto', 'https'],
      ]
    : [
        ['x-client-verify', 'NONE'],
        ['x-forwarded-proto', 'https'],
      ];
}
