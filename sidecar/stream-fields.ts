import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';
import type { StreamProtocol } from './flags.ts';
import { IDENTITY_HEADERS } from './http1.ts';

/**
 * The fields of a relayed request and its response, both ways (pure): what the upstream gets of the client's
 * fields, with the connection's identity, and what the client gets of the upstream's.
 */

/** Response fields that belong to one HTTP/1.1 connection and have no place in HTTP/2 (RFC 9113 8.2.2). */
const CONNECTION_FIELDS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

const IDENTITY_NAMES = new Set(IDENTITY_HEADERS);

/**
 * The identity field a client-sent field name spells (any case, underscores for dashes), if it spells one.
 * Every identity field starts with "x": other names are passed over without building a lowercased copy (this
 * runs for every field of every stream).
 */
function identityFieldOf(name: string): string | undefined {
  const first = name.charCodeAt(0);
  if (first !== 0x78 && first !== 0x58) return undefined;
  if (IDENTITY_NAMES.has(name)) return name;
  const normal = name.toLowerCase().replaceAll('_', '-');
  return IDENTITY_NAMES.has(normal) ? normal : undefined;
}

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
  let forwardedFor = '';
  for (const name in client) {
    const value = client[name];
    if (value === undefined) continue;
    const identityName = identityFieldOf(name);
    if (identityName !== undefined) {
      if (identityName === 'x-forwarded-for') forwardedFor += `${[value].flat().join(', ')}, `;
      continue;
    }
    if (protocol === 'http1' && (name.charCodeAt(0) === 0x3a || name === 'te' || name === 'host')) continue;
    out[name] = value;
  }
  out['x-forwarded-for'] = forwardedFor + peer;
  if (protocol === 'http1') {
    const authority = client[':authority'] ?? client.host;
    if (authority) out.host = authority;
  }
  return out;
}

/**
 * Upstream fields the client gets (pure), after `status` when one is given: no pseudo-field and no HTTP/1.1
 * connection field, nor a field the upstream's Connection names.
 */
export function passedFields(upstream: IncomingHttpHeaders, status?: number): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = status === undefined ? {} : { ':status': status };
  const connection = upstream.connection;
  const named =
    connection === undefined
      ? undefined
      : new Set(
          String(connection)
            .split(',')
            .map((token) => token.trim().toLowerCase())
            .filter(Boolean),
        );
  for (const name in upstream) {
    const value = upstream[name];
    if (value === undefined || name.charCodeAt(0) === 0x3a || CONNECTION_FIELDS.has(name) || named?.has(name)) continue;
    out[name] = value;
  }
  return out;
}
