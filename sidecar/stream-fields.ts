import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';
import type { StreamProtocol } from './flags.ts';
import { IDENTITY_HEADERS } from './http1.ts';

/**
 * The fields of a relayed request and its response, both ways (pure): what the upstream gets of the client's
 * fields, with the connection's identity, and what the client gets of the upstream's.
 */

/** Response fields that belong to one HTTP/1.1 connection and have no place in HTTP/2 (RFC 9113 8.2.2). */
const CONNECTION_FIELDS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

/** Whether a client-sent field name is one only the sidecar may set (also spelled with underscores). */
const isIdentityField = (name: string) => IDENTITY_HEADERS.includes(name.toLowerCase().replace(/_/g, '-'));

/**
 * The fields of the request sent upstream, from the client's (pure): identity fields first, the client's
 * X-Forwarded-For values followed by its address, no client copy of an identity field, and for an HTTP/1.1
 * upstream the pseudo-fields turned into a Host line (the method and path go on the request line). `te` is
 * kept for h2c (gRPC requires `te: trailers`) and dropped for HTTP/1.1, where it is hop-by-hop.
 */
export function upstreamFields(
  client: IncomingHttpHeaders,
  identity: readonly [string, string][],
  peer: string,
  protocol: StreamProtocol,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of identity) out[name] = value;
  const forwardedFor: string[] = [];
  for (const [name, value] of Object.entries(client)) {
    if (value === undefined) continue;
    if (isIdentityField(name)) {
      if (name.toLowerCase().replace(/_/g, '-') === 'x-forwarded-for') forwardedFor.push(...[value].flat());
      continue;
    }
    if (protocol === 'http1' && (name.startsWith(':') || name === 'te' || name === 'host')) continue;
    out[name] = value;
  }
  out['x-forwarded-for'] = [...forwardedFor, peer].join(', ');
  if (protocol === 'http1') {
    const authority = client[':authority'] ?? client.host;
    if (authority) out.host = authority;
  }
  return out;
}

/** Upstream fields the client gets: no pseudo-field and no HTTP/1.1 connection field (pure). */
export function passedFields(upstream: IncomingHttpHeaders): OutgoingHttpHeaders {
  const named = new Set(
    String(upstream.connection ?? '')
      .split(',')
      .map((token) => token.trim().toLowerCase())
      .filter(Boolean),
  );
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(upstream)) {
    if (value === undefined || name.startsWith(':') || CONNECTION_FIELDS.has(name) || named.has(name)) continue;
    out[name] = value;
  }
  return out;
}
