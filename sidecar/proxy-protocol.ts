import { isIPv4, isIPv6 } from 'node:net';

/**
 * The PROXY protocol v2 header (HAProxy's proxy-protocol.txt, section 2.2) that a TCP listener sends first on
 * each upstream connection when --proxy-protocol is set: the client's address, and the TLS facts as HAProxy
 * and ghostunnel send them (PP2_TYPE_SSL with the client certificate's CN, the TLS version and cipher), so a
 * database or custom server behind the sidecar can tell who connected. Pure: built from the facts it is given.
 */
export const PP2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const VERSION_2_PROXY = 0x21;
const TCP_OVER_IPV4 = 0x11;
const TCP_OVER_IPV6 = 0x21;
const UNSPEC = 0x00;

export const PP2_TYPE_ALPN = 0x01;
export const PP2_TYPE_AUTHORITY = 0x02;
export const PP2_TYPE_SSL = 0x20;
export const PP2_SUBTYPE_SSL_VERSION = 0x21;
export const PP2_SUBTYPE_SSL_CN = 0x22;
export const PP2_SUBTYPE_SSL_CIPHER = 0x23;
/** First of the application-specific range (0xE0-0xEF): the client's x-forwarded-client-cert element. */
export const PP2_TYPE_MTLS_XFCC = 0xe0;
export const PP2_CLIENT_SSL = 0x01;
export const PP2_CLIENT_CERT_CONN = 0x02;
export const PP2_CLIENT_CERT_SESS = 0x04;

export interface ProxyFacts {
  sourceAddress: string;
  sourcePort: number;
  destinationAddress: string;
  destinationPort: number;
  /** TLS version as Node names it (TLSv1.3). */
  tlsVersion?: string;
  cipher?: string;
  /** The SNI the client sent. */
  serverName?: string;
  /** A verified client certificate's CN and XFCC element; absent when the client sent none (or in standard). */
  client?: { commonName: string; xfcc: string };
}

const tlv = (type: number, value: Buffer): Buffer => {
  const head = Buffer.alloc(3);
  head[0] = type;
  head.writeUInt16BE(value.length, 1);
  return Buffer.concat([head, value]);
};

/** An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address it maps. */
const plain = (address: string) => address.replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i, '$1');

function ipv6Bytes(address: string): Buffer {
  const [head = '', tail = ''] = address.split('::');
  const part = (text: string) => (text ? text.split(':') : []);
  const groups = [...part(head), ...Array(8 - part(head).length - part(tail).length).fill('0'), ...part(tail)];
  const out = Buffer.alloc(16);
  groups.forEach((g: string, i: number) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

export function proxyV2Header(facts: ProxyFacts): Buffer {
  const src = plain(facts.sourceAddress);
  const dst = plain(facts.destinationAddress);
  let family = UNSPEC;
  let addresses = Buffer.alloc(0);
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(facts.sourcePort, 0);
  ports.writeUInt16BE(facts.destinationPort, 2);
  if (isIPv4(src) && isIPv4(dst)) {
    family = TCP_OVER_IPV4;
    addresses = Buffer.concat([
      Buffer.from(src.split('.').map(Number)),
      Buffer.from(dst.split('.').map(Number)),
      ports,
    ]);
  } else if (isIPv6(src) && isIPv6(dst)) {
    family = TCP_OVER_IPV6;
    addresses = Buffer.concat([ipv6Bytes(src), ipv6Bytes(dst), ports]);
  }
  const tlvs: Buffer[] = [];
  if (facts.serverName) tlvs.push(tlv(PP2_TYPE_AUTHORITY, Buffer.from(facts.serverName)));
  const ssl: Buffer[] = [];
  if (facts.tlsVersion) ssl.push(tlv(PP2_SUBTYPE_SSL_VERSION, Buffer.from(facts.tlsVersion)));
  if (facts.client) ssl.push(tlv(PP2_SUBTYPE_SSL_CN, Buffer.from(facts.client.commonName)));
  if (facts.cipher) ssl.push(tlv(PP2_SUBTYPE_SSL_CIPHER, Buffer.from(facts.cipher)));
  const head = Buffer.alloc(5);
  head[0] = PP2_CLIENT_SSL | (facts.client ? PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS : 0);
  // verify: 0 when the client presented a certificate that was verified (only such clients get this far).
  head.writeUInt32BE(facts.client ? 0 : 1, 1);
  tlvs.push(tlv(PP2_TYPE_SSL, Buffer.concat([head, ...ssl])));
  if (facts.client) tlvs.push(tlv(PP2_TYPE_MTLS_XFCC, Buffer.from(facts.client.xfcc)));
  const body = Buffer.concat([addresses, ...tlvs]);
  const fixed = Buffer.alloc(4);
  fixed[0] = VERSION_2_PROXY;
  fixed[1] = family;
  fixed.writeUInt16BE(body.length, 2);
  return Buffer.concat([PP2_SIGNATURE, fixed, body]);
}
