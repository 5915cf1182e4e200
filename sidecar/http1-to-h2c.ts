import {
  createServer as createHttpServer,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type Server,
  type ServerResponse,
} from 'node:http';
import { constants, type IncomingHttpHeaders } from 'node:http2';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { ForwardContext } from './forward.ts';
import {
  type ClientExchange,
  type H2cUpstream,
  relayToH2c,
  type ResponseBody,
  type ResponseHead,
} from './h2c-relay.ts';
import { errorResponse, validHost } from './http1.ts';
import { upstreamFields } from './stream-fields.ts';

/**
 * HTTP/1.1 clients of a sidecar whose upstream speaks h2c: each request becomes one stream of the listener's
 * shared h2c connection, as Envoy does for an HTTP/2 upstream cluster. An h2c-only upstream cannot read HTTP/1.1,
 * so the raw relay of forward.ts would get garbage back. The requests are parsed by node:http's own server
 * (llhttp, strict) on the TLS socket, with the sidecar's limits; this path is not the raw relay's fast path.
 */

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR } = constants;

/** A request as an h2c stream, or why it cannot be one. */
export type H2cRequest =
  | {
      ok: true;
      /** The client's fields as HTTP/2 has them: pseudo-fields, no hop-by-hop field (identity not yet applied). */
      fields: IncomingHttpHeaders;
      /** The request has a body (Content-Length above 0, or chunked). */
      body: boolean;
      /** The client accepts trailers (`TE: trailers`): only then may the upstream's reach it. */
      trailers: boolean;
    }
  | { ok: false; status: 400 | 501; reason: string };

/**
 * Fields of the HTTP/1.1 connection, never of the request (RFC 9110 7.6.1, RFC 9113 8.2.2). `expect` too:
 * node:http has already answered 100-continue (as Envoy does by default).
 */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'host',
  'te',
  'expect',
]);

/** The lower-cased elements of a comma-separated field, parameters left out. */
const listTokens = (values: readonly string[] | undefined): string[] =>
  (values ?? [])
    .flatMap((value) => value.split(','))
    .map((item) => item.split(';')[0]!.trim().toLowerCase())
    .filter(Boolean);

const isHost = (value: string) => validHost(Buffer.from(value, 'latin1'), 0, value.length);

/** `scheme://authority[path]` (absolute-form, RFC 9112 3.2.2): the authority wins over Host. */
const ABSOLUTE_FORM = /^https?:\/\/([^/?#]*)([/?][^#]*)?$/i;

/** :path and :authority from the request target and Host, or why they cannot be had. */
function target(method: string, url: string, host: string | undefined): { path: string; authority?: string } | string {
  if (host !== undefined && !isHost(host)) return 'Host is not host[:port]';
  if (url.startsWith('/')) return { path: url, authority: host };
  if (url === '*')
    return method === 'OPTIONS' ? { path: '*', authority: host } : 'request target * is for OPTIONS only';
  const absolute = ABSOLUTE_FORM.exec(url);
  if (!absolute || !isHost(absolute[1]!)) return 'request target is not a path, an http(s) absolute URI or *';
  const rest = absolute[2] ?? '/';
  return { path: rest.startsWith('?') ? `/${rest}` : rest, authority: absolute[1]! };
}

const CONNECT_REASON = 'CONNECT cannot be relayed to the h2c upstream of this sidecar';

/**
 * An HTTP/1.1 request (as node:http parsed it: lower-cased names, every value of each field) as the fields of an
 * h2c stream (pure): `:method`, `:path`, `:scheme` http and `:authority` from the target or Host; Connection, the
 * fields it names and the other hop-by-hop fields removed; `te` only as `trailers`. Upgrades and CONNECT have no
 * h2c equivalent here (RFC 8441 needs the upstream's consent and is not what an HTTP/1.1 client asked for): 501.
 */
export function h2cFieldsFromHttp1(
  headers: Readonly<Record<string, readonly string[] | undefined>>,
  method: string,
  url: string,
): H2cRequest {
  const connection = listTokens(headers.connection);
  if (method === 'CONNECT') return { ok: false, status: 501, reason: CONNECT_REASON };
  if (headers.upgrade && connection.includes('upgrade'))
    return {
      ok: false,
      status: 501,
      reason: `Upgrade (${headers.upgrade.join(', ')}) cannot cross to the h2c upstream of this sidecar: HTTP/2 has no Upgrade; use HTTP/1.1 to an http1 upstream`,
    };
  const hosts = headers.host ?? [];
  if (hosts.length > 1) return { ok: false, status: 400, reason: 'more than one Host' };
  const where = target(method, url, hosts[0]);
  if (typeof where === 'string') return { ok: false, status: 400, reason: where };
  const fields: IncomingHttpHeaders = { ':method': method, ':scheme': 'http', ':path': where.path };
  if (where.authority) fields[':authority'] = where.authority;
  const named = new Set(connection);
  for (const [name, values] of Object.entries(headers)) {
    if (!values?.length || HOP_BY_HOP.has(name) || named.has(name) || name.startsWith(':')) continue;
    fields[name] = values.length === 1 ? values[0] : [...values];
  }
  const trailers = listTokens(headers.te).includes('trailers');
  if (trailers) fields.te = 'trailers';
  const length = headers['content-length']?.[0];
  const body = headers['transfer-encoding'] !== undefined || (length !== undefined && Number(length) > 0);
  return { ok: true, fields, body, trailers };
}

/** An HTTP/1.1 request and its response as the client side of a relayed request. */
class Http1Exchange implements ClientExchange {
  readonly protocol = 'http/1.1';
  readonly startedAt: number;
  readonly body: IncomingMessage | null;
  private readonly res: ServerResponse;
  private readonly trailers: boolean;
  private readonly closing: () => boolean;
  private closed = false;

  constructor(
    req: IncomingMessage,
    res: ServerResponse,
    request: { body: boolean; trailers: boolean; startedAt: number },
    closing: () => boolean,
  ) {
    this.res = res;
    this.body = request.body ? req : null;
    this.trailers = request.trailers;
    this.startedAt = request.startedAt;
    this.closing = closing;
    res.once('close', () => (this.closed = true));
  }

  get gone(): boolean {
    return this.closed || this.res.destroyed;
  }

  respond(head: ResponseHead, done: () => void): ResponseBody | null {
    const { res } = this;
    const fields = { ...head.fields };
    // Trailers announced to a client that will not get them would be a promise broken.
    if (!this.trailers) delete fields.trailer;
    if (this.closing()) fields.connection = 'close';
    res.writeHead(head.status, fields);
    res.once('finish', done);
    if (head.ended) {
      res.end();
      return null;
    }
    return {
      sink: res,
      end: (trailers) => {
        // Trailers only in a chunked response, and only to a client that asked for them (as Envoy by default).
        if (trailers && this.trailers && res.chunkedEncoding) {
          try {
            res.addTrailers(trailers as OutgoingHttpHeaders);
          } catch {
            // A trailer HTTP/1.1 cannot carry is dropped; the response itself is complete.
          }
        }
        res.end();
      },
    };
  }

  answer(status: number, text: string): void {
    const { res } = this;
    if (res.headersSent) return void res.socket?.destroy();
    for (const name of res.getHeaderNames()) res.removeHeader(name);
    const body = Buffer.from(text);
    res.writeHead(status, {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': body.length,
      ...(this.closing() ? { connection: 'close' } : {}),
    });
    res.end(body);
  }

  cut(): void {
    // A response already complete stays so (the upstream's reset only ended the request side). Otherwise HTTP/1.1
    // has no reset: the client must see the connection end inside the response.
    if (!this.res.writableEnded) this.res.socket?.destroy();
  }

  onClose(callback: (code: number) => void): void {
    this.res.once('close', () => callback(this.res.writableFinished ? NGHTTP2_NO_ERROR : NGHTTP2_CANCEL));
  }
}

/** What a connection's requests need: its identity, and the response in flight (for a late parse error). */
interface Connection {
  identity: [string, string][];
  peer: string;
  res: ServerResponse | null;
}

/** The status node:http's parse error or timeout is answered with. */
const clientErrorStatus = (code: string | undefined) =>
  code === 'HPE_HEADER_OVERFLOW' ? 431 : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;

/** The listener's HTTP/1.1 connections whose requests go to the h2c upstream. */
export class Http1ToH2c {
  private readonly ctx: ForwardContext;
  private readonly h2c: H2cUpstream;
  private readonly server: Server;
  private readonly connections = new Map<Socket, Connection>();
  private draining = false;

  constructor(ctx: ForwardContext, h2c: H2cUpstream) {
    this.ctx = ctx;
    this.h2c = h2c;
    const s = ctx.settings;
    this.server = createHttpServer({
      maxHeaderSize: s.maxHeaderBytes,
      insecureHTTPParser: false,
      requireHostHeader: true,
      // node:http refuses a headers timeout longer than the request timeout.
      headersTimeout: Math.min(s.headersTimeoutMs, s.requestTimeoutMs),
      requestTimeout: s.requestTimeoutMs,
      keepAliveTimeout: s.idleTimeoutMs,
      // The timeouts above are checked by node:http's own sweep; as often as the sidecar's own (sidecar.ts).
      connectionsCheckingInterval: Math.max(
        10,
        Math.min(1_000, Math.floor(Math.min(s.headersTimeoutMs, s.requestTimeoutMs) / 4)),
      ),
      // Upgrades are answered 501 as requests (h2cFieldsFromHttp1), not handed over as raw sockets.
      shouldUpgradeCallback: () => false,
    });
    // node:http starts its connection tracking (the timeouts above, closeIdleConnections) when it listens; this
    // server never listens, it is handed connections.
    this.server.emit('listening');
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res));
    this.server.on('connect', (_req: IncomingMessage, socket: Socket) => this.onConnect(socket));
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.onClientError(err, socket));
  }

  serve(socket: TLSSocket, identity: [string, string][]): void {
    if (this.draining) return void socket.destroy();
    this.connections.set(socket, { identity, peer: socket.remoteAddress ?? '', res: null });
    socket.once('close', () => this.connections.delete(socket));
    this.server.emit('connection', socket);
    // Bytes read before node:http took the socket (while `auto` was deciding, or with the handshake) sit in its
    // buffer; node:http reads new ones straight from the TLS handle, and these only once the socket flows.
    socket.resume();
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const startedAt = performance.now();
    const connection = this.connections.get(req.socket);
    req.on('error', () => undefined);
    if (!connection) return void req.socket.destroy();
    connection.res = res;
    res.once('close', () => {
      if (connection.res === res) connection.res = null;
      // Draining: a connection whose response was already under way closes once it is done.
      if (this.draining) setImmediate(() => this.server.closeIdleConnections());
    });
    if (this.draining) res.setHeader('connection', 'close');
    const request = h2cFieldsFromHttp1(req.headersDistinct, req.method ?? '', req.url ?? '');
    if (!request.ok) {
      this.refused(req.socket, request.status, request.reason);
      // As forward.ts does with a request it refuses: the connection closes after the answer.
      res.writeHead(request.status, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
      return void res.end(`${request.reason}\n`);
    }
    const fields = upstreamFields(request.fields, connection.identity, connection.peer, 'h2c');
    const exchange = new Http1Exchange(req, res, { ...request, startedAt }, () => this.draining);
    relayToH2c(this.ctx, this.h2c, fields, exchange);
    // A request without a body ends with its head: node:http still wants it read to go on to the next one.
    if (!request.body) req.resume();
  }

  /** CONNECT: node:http hands over the socket as a tunnel; there is no tunnel to an h2c upstream. */
  private onConnect(socket: Socket): void {
    this.refused(socket, 501, CONNECT_REASON);
    socket.end(errorResponse(501, `${CONNECT_REASON}\n`));
  }

  /** A request llhttp refused (400 smuggling-shaped framing, 431, 408): answered and closed, as forward.ts does. */
  private onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    if (err.code === 'ECONNRESET' || !socket.writable) return void socket.destroy();
    const status = clientErrorStatus(err.code);
    const why = `${err.code ?? 'error'}: ${(err as { reason?: string }).reason ?? err.message}`;
    this.refused(socket, status, why);
    if (this.connections.get(socket)?.res?.headersSent) return void socket.destroy();
    socket.end(errorResponse(status, `request not accepted (${why})\n`));
  }

  /** A request refused by the sidecar itself: counted, and logged like a refused handshake (forward.ts). */
  private refused(socket: Socket, status: number, detail: string): void {
    const s = this.ctx.settings;
    s.refusals.refuse({
      listener: s.listener(),
      mode: s.mode,
      reason: 'protocol',
      peer: `${socket.remoteAddress ?? ''}:${socket.remotePort ?? '?'}`,
      detail: `${status}: ${detail}`,
    });
    this.ctx.countRequest(status, 0);
  }

  /** Graceful stop: idle connections close now, busy ones after their response (`Connection: close`). */
  drain(): void {
    this.draining = true;
    this.server.closeIdleConnections();
  }

  /** Stops node:http's connection sweep (the server never listened: its close reports that, and it is ignored). */
  close(): void {
    this.server.close(() => undefined);
  }

  /** HTTP/1.1 connections open now. */
  get open(): number {
    return this.connections.size;
  }
}
