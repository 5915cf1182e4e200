import {
  Agent,
  type ClientRequest,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  request as httpRequest,
} from 'node:http';
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect as h2connect,
  constants,
  createServer as createH2Server,
  type Http2Server,
  type Http2Session,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders as H2OutgoingHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import type { TLSSocket } from 'node:tls';
import type { ForwardContext } from './forward.ts';
import type { StreamProtocol } from './flags.ts';
import { IDENTITY_HEADERS } from './http1.ts';
import type { RefusalReason } from './refusal-log.ts';
import { h2cAuthority, type UpstreamProtocolChoice } from './upstream-protocol.ts';

/**
 * HTTP/2 clients (ALPN `h2`): Node's own node:http2 (nghttp2) reads the frames, HPACK and flow control; this
 * module only relays each stream to the upstream, as an HTTP/1.1 request on a kept-alive connection or as a
 * stream of one shared h2c connection (`--upstream-protocol`, or what `auto` found: upstream-protocol.ts), with
 * the identity fields of the connection set on every stream and any client-sent copy removed, as the HTTP/1.1
 * path does. HTTP/1.1 clients never reach this module: proxy.ts hands them to forward.ts as before.
 */

const {
  HTTP2_HEADER_STATUS,
  HTTP2_HEADER_METHOD,
  HTTP2_HEADER_PATH,
  HTTP2_HEADER_AUTHORITY,
  NGHTTP2_CANCEL,
  NGHTTP2_FLAG_END_STREAM,
  NGHTTP2_INTERNAL_ERROR,
  NGHTTP2_NO_ERROR,
  NGHTTP2_REFUSED_STREAM,
} = constants;

/** Streams one client connection may have open at once (nginx 128, Apache 100; Node's default is 2^32-1). */
export const MAX_CONCURRENT_STREAMS = 100;
/** What nghttp2 may hold for one session (HPACK tables, queued frames, buffered data), in MiB. */
export const MAX_SESSION_MEMORY_MB = 10;

/**
 * Limits of every client session. nghttp2 and Node enforce them: a header block over maxHeaderListSize
 * (also after HPACK decompression: the HPACK bomb) gets the stream refused (431 is not possible once headers
 * are compressed), more than maxHeaderListPairs fields likewise; CONTINUATION frames count against the same
 * limits (CVE-2024-27983); SETTINGS and PING frames beyond maxSettings / maxOutstandingPings unanswered end the
 * session; reset streams beyond the burst/rate (rapid reset, CVE-2023-44487) end it with GOAWAY, and so does
 * a client whose streams are refused over and over or that sends invalid frames.
 */
export function sessionOptions(maxHeaderBytes: number) {
  return {
    maxSessionMemory: MAX_SESSION_MEMORY_MB,
    maxHeaderListPairs: 128,
    maxSettings: 32,
    maxOutstandingPings: 10,
    maxSessionRejectedStreams: 100,
    maxSessionInvalidFrames: 100,
    streamResetBurst: 1000,
    streamResetRate: 33,
    settings: {
      maxConcurrentStreams: MAX_CONCURRENT_STREAMS,
      maxHeaderListSize: maxHeaderBytes,
      enablePush: false,
    },
  };
}

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
    const authority = client[HTTP2_HEADER_AUTHORITY] ?? client.host;
    if (authority) out.host = authority;
  }
  return out;
}

/**
 * Upstream fields the client gets (pure), after `status` when one is given: no pseudo-field and no HTTP/1.1
 * connection field, nor a field the upstream's Connection names.
 */
export function passedFields(upstream: IncomingHttpHeaders, status?: number): H2OutgoingHeaders {
  const out: H2OutgoingHeaders = status === undefined ? {} : { [HTTP2_HEADER_STATUS]: status };
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

/** gRPC status codes for a refused client (a gRPC client shows these, not an HTTP status). */
const GRPC_UNAUTHENTICATED = 16;
const GRPC_PERMISSION_DENIED = 7;
const GRPC_UNAVAILABLE = 14;
const GRPC_DEADLINE_EXCEEDED = 4;
const GRPC_UNIMPLEMENTED = 12;
const GRPC_INTERNAL = 13;

const isGrpc = (headers: IncomingHttpHeaders) => String(headers['content-type'] ?? '').startsWith('application/grpc');

/** grpc-message is percent-encoded (gRPC over HTTP/2, "Responses"). */
const grpcMessage = (text: string) => encodeURIComponent(text.trim());

/**
 * An answer the sidecar gives itself on a stream (refusal, 501, 502, 504): an HTTP status with a text body, or,
 * for a gRPC request, a trailers-only response with the gRPC status a gRPC client reports. A stream whose
 * response has begun can only be reset.
 */
export function answerStream(
  stream: ServerHttp2Stream,
  answer: { grpc: boolean; status: number; text: string; grpcStatus: number },
): void {
  if (stream.destroyed || stream.closed) return;
  if (stream.headersSent) return void stream.close(NGHTTP2_INTERNAL_ERROR);
  if (answer.grpc) {
    stream.respond(
      {
        [HTTP2_HEADER_STATUS]: 200,
        'content-type': 'application/grpc',
        'grpc-status': String(answer.grpcStatus),
        'grpc-message': grpcMessage(answer.text),
      },
      { endStream: true },
    );
    return;
  }
  stream.respond({ [HTTP2_HEADER_STATUS]: answer.status, 'content-type': 'text/plain; charset=utf-8' });
  stream.end(answer.text);
}

/** One h2c connection to the upstream shared by the listener's streams; reopened when it goes away. */
class H2cUpstream {
  private session: ClientHttp2Session | null = null;
  private readonly authority: string;

  constructor(host: string, port: number) {
    this.authority = h2cAuthority(host, port);
  }

  get(): ClientHttp2Session {
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    const session = h2connect(this.authority, { settings: { enablePush: false } });
    const forget = () => {
      if (this.session === session) this.session = null;
    };
    session.on('error', forget);
    session.on('goaway', forget);
    session.on('close', forget);
    // An idle shared connection must not keep the process (or a test) alive.
    session.unref();
    this.session = session;
    return session;
  }

  close(): void {
    this.session?.close();
    this.session = null;
  }
}

interface Refusal {
  status: number;
  text: string;
  grpcStatus: number;
}

/** A stream in flight: what its own answers need. */
interface StreamFacts {
  grpc: boolean;
  startedAt: number;
}

/** The HTTP/2 side of one listener: its client sessions and the way to the upstream. */
export class Http2Front {
  private readonly ctx: ForwardContext;
  private readonly protocol: UpstreamProtocolChoice;
  private readonly server: Http2Server;
  private readonly sessions = new Set<ServerHttp2Session>();
  private readonly identities = new WeakMap<Http2Session, { fields: [string, string][]; peer: string }>();
  private readonly refusals = new WeakMap<Http2Session, Refusal>();
  private readonly agent: Agent;
  private readonly h2c: H2cUpstream;
  private draining = false;

  constructor(ctx: ForwardContext, protocol: UpstreamProtocolChoice) {
    this.ctx = ctx;
    this.protocol = protocol;
    const s = ctx.settings;
    this.server = createH2Server(sessionOptions(s.maxHeaderBytes));
    this.agent = new Agent({ keepAlive: true, scheduling: 'lifo' });
    this.h2c = new H2cUpstream(s.upstreamHost, s.upstreamPort);
    this.server.on('session', (session: ServerHttp2Session) => this.onSession(session));
    this.server.on('stream', (stream, headers, flags) => this.onStream(stream, headers, flags));
    // A client's protocol error or reset ends only its own session or stream.
    this.server.on('sessionError', () => undefined);
    this.server.on('streamError', () => undefined);
  }

  /**
   * Serves a verified connection whose client chose h2. As on HTTP/1.1, the first request must come within the
   * headers timeout: a connection that opens no stream by then is closed (GOAWAY), not kept for the idle timeout.
   */
  serve(socket: TLSSocket, identity: [string, string][]): void {
    const session = this.adopt(socket);
    if (!session) return;
    this.identities.set(session, { fields: identity, peer: socket.remoteAddress ?? '' });
    const timer = setTimeout(() => session.close(), this.ctx.settings.headersTimeoutMs);
    timer.unref();
    session.once('stream', () => clearTimeout(timer));
    session.once('close', () => clearTimeout(timer));
  }

  /**
   * A refused h2 client gets its answer on the first stream it opens (a gRPC client a gRPC status:
   * UNAUTHENTICATED, or PERMISSION_DENIED for a name not allowed), then GOAWAY; nothing is forwarded.
   */
  refuse(socket: TLSSocket, answer: { status: number; text: string; reason: RefusalReason }): void {
    const session = this.adopt(socket);
    if (!session) return;
    const grpcStatus = answer.reason === 'not_allowed' ? GRPC_PERMISSION_DENIED : GRPC_UNAUTHENTICATED;
    this.refusals.set(session, { status: answer.status, text: answer.text, grpcStatus });
    const timer = setTimeout(() => session.destroy(), this.ctx.settings.headersTimeoutMs);
    timer.unref();
    session.once('close', () => clearTimeout(timer));
  }

  /** Starts an HTTP/2 session on the connection (node:http2's server does the framing). */
  private adopt(socket: TLSSocket): ServerHttp2Session | undefined {
    if (this.draining) return void socket.destroy();
    let adopted: ServerHttp2Session | undefined;
    const take = (session: ServerHttp2Session) => (adopted = session);
    this.server.once('session', take);
    this.server.emit('connection', socket);
    this.server.off('session', take);
    return adopted;
  }

  private onSession(session: ServerHttp2Session): void {
    this.sessions.add(session);
    session.on('close', () => this.sessions.delete(session));
    session.on('error', () => undefined);
    // No frame for the idle timeout: GOAWAY (streams still open may finish).
    session.setTimeout(this.ctx.settings.idleTimeoutMs, () => session.close());
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number): void {
    stream.on('error', () => undefined);
    const session = stream.session!;
    const facts: StreamFacts = { grpc: isGrpc(headers), startedAt: performance.now() };
    const refusal = this.refusals.get(session);
    if (refusal) {
      this.ctx.countRequest(refusal.status, 0);
      answerStream(stream, { grpc: facts.grpc, ...refusal });
      session.close();
      return;
    }
    const identity = this.identities.get(session);
    if (!identity) return void stream.close(NGHTTP2_REFUSED_STREAM);
    if (headers[HTTP2_HEADER_METHOD] === 'CONNECT') {
      this.ctx.countRequest(501, facts.startedAt);
      const text = 'CONNECT is not forwarded by the mTLS sidecar\n';
      return answerStream(stream, { grpc: facts.grpc, status: 501, text, grpcStatus: GRPC_UNIMPLEMENTED });
    }
    const endStream = (flags & NGHTTP2_FLAG_END_STREAM) !== 0;
    const forward = (protocol: StreamProtocol) => {
      if (stream.closed || stream.destroyed) return;
      const fields = upstreamFields(headers, identity.fields, identity.peer, protocol);
      if (protocol === 'h2c') this.toH2c(stream, fields, endStream, facts);
      else this.toHttp1(stream, headers, fields, endStream, facts);
    };
    // Forwarded once the frames read with it are processed: a stream reset in the same read (rapid reset,
    // CVE-2023-44487) never costs an upstream request.
    setImmediate(() => {
      if (stream.closed || stream.destroyed) return;
      // `auto` before the upstream's protocol is known: the stream waits for the probe in flight (bounded).
      const protocol = this.protocol.forStream();
      if (typeof protocol === 'string') forward(protocol);
      else void protocol.then(forward);
    });
  }

  /** 502/504 for a stream the upstream failed before answering; a reset if part of the answer went out. */
  private fail(stream: ServerHttp2Stream, status: 502 | 504, why: string, facts: StreamFacts): void {
    const s = this.ctx.settings;
    s.log.warn(status === 502 ? 'upstream unavailable' : 'upstream timed out', {
      listener: s.listener(),
      mode: s.mode,
      protocol: 'h2',
      upstream: s.upstream,
      status,
      error: why,
    });
    this.ctx.countRequest(status, facts.startedAt);
    answerStream(stream, {
      grpc: facts.grpc,
      status,
      text: status === 502 ? 'upstream unavailable\n' : 'upstream timed out\n',
      grpcStatus: status === 502 ? GRPC_UNAVAILABLE : GRPC_DEADLINE_EXCEEDED,
    });
  }

  /**
   * The upstream timeout, counted from the end of the client's request as on the HTTP/1.1 path (a long upload
   * is not the upstream being slow); `clear` stops it, also before it started.
   */
  private upstreamTimer(stream: ServerHttp2Stream, endStream: boolean, onTimeout: () => void): () => void {
    let timer: NodeJS.Timeout | undefined;
    let cleared = false;
    const start = () => {
      if (cleared) return;
      timer = setTimeout(onTimeout, this.ctx.settings.upstreamTimeoutMs);
      timer.unref();
    };
    if (endStream) start();
    else stream.once('end', start);
    return () => {
      cleared = true;
      clearTimeout(timer);
    };
  }

  /** One stream as one HTTP/1.1 request on the listener's kept-alive connections (node:http's Agent). */
  private toHttp1(
    stream: ServerHttp2Stream,
    client: IncomingHttpHeaders,
    fields: Record<string, string | string[]>,
    endStream: boolean,
    facts: StreamFacts,
  ): void {
    const s = this.ctx.settings;
    const method = String(client[HTTP2_HEADER_METHOD]);
    let req: ClientRequest;
    try {
      req = httpRequest({
        host: s.upstreamHost,
        port: s.upstreamPort,
        method,
        path: String(client[HTTP2_HEADER_PATH] ?? '/'),
        headers: fields as OutgoingHttpHeaders,
        agent: this.agent,
        setHost: false,
      });
    } catch (err) {
      // A field value HTTP/1.1 cannot carry (node:http refuses it): the client's request, not the upstream.
      this.ctx.countRequest(400, facts.startedAt);
      const text = `request cannot be forwarded as HTTP/1.1: ${(err as Error).message}\n`;
      return answerStream(stream, { grpc: facts.grpc, status: 400, text, grpcStatus: GRPC_INTERNAL });
    }
    let answered = false;
    const clearTimer = this.upstreamTimer(stream, endStream, () => {
      if (answered) return;
      answered = true;
      req.destroy();
      this.fail(stream, 504, `no response within ${s.upstreamTimeoutMs} ms`, facts);
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      clearTimer();
      // The client went away first (its reset destroyed this request): nothing to answer, nothing to report.
      if (stream.closed) return;
      if (answered) return void stream.close(NGHTTP2_INTERNAL_ERROR);
      answered = true;
      this.fail(stream, 502, err.code ?? err.message, facts);
    });
    req.on('response', (res: IncomingMessage) => {
      clearTimer();
      if (answered) return void res.destroy();
      answered = true;
      const status = res.statusCode ?? 502;
      const noBody = status === 204 || status === 304 || method === 'HEAD';
      // Only a response that announces trailers (a Trailer field) has the client stream wait for them.
      const trailers = !noBody && res.headers.trailer !== undefined;
      try {
        stream.respond(passedFields(res.headers, status), { endStream: noBody, waitForTrailers: trailers });
      } catch (err) {
        res.destroy();
        return this.fail(stream, 502, `response cannot be sent over HTTP/2: ${(err as Error).message}`, facts);
      }
      res.on('end', () => this.ctx.countRequest(status, facts.startedAt));
      res.on('close', () => {
        if (!res.complete) stream.close(NGHTTP2_INTERNAL_ERROR);
      });
      if (noBody) return void res.resume();
      if (trailers) stream.once('wantTrailers', () => stream.sendTrailers(passedFields(res.trailers)));
      res.pipe(stream);
    });
    // A stream the client reset (or whose connection went away) abandons its upstream request.
    stream.on('close', () => {
      clearTimer();
      if (stream.rstCode !== NGHTTP2_NO_ERROR) req.destroy();
    });
    if (endStream) return void req.end();
    // node:http holds the head until the first body byte: an upstream must see the request at once (a client
    // may wait for the response head before it sends its body).
    req.flushHeaders();
    stream.pipe(req);
  }

  /** One stream as one stream of the shared h2c connection: trailers and resets pass both ways. */
  private toH2c(
    stream: ServerHttp2Stream,
    fields: Record<string, string | string[]>,
    endStream: boolean,
    facts: StreamFacts,
  ): void {
    const s = this.ctx.settings;
    let up: ClientHttp2Stream;
    try {
      up = this.h2c.get().request(fields, { endStream });
    } catch (err) {
      return this.fail(stream, 502, (err as Error).message, facts);
    }
    let answered = false;
    let trailers: IncomingHttpHeaders | null = null;
    const clearTimer = this.upstreamTimer(stream, endStream, () => {
      if (answered) return;
      answered = true;
      up.close(NGHTTP2_CANCEL);
      this.fail(stream, 504, `no response within ${s.upstreamTimeoutMs} ms`, facts);
    });
    up.on('error', (err: NodeJS.ErrnoException) => {
      clearTimer();
      if (answered || stream.closed) return;
      answered = true;
      this.fail(stream, 502, err.code ?? err.message, facts);
    });
    up.on('response', (headers: IncomingHttpHeaders, flags: number) => {
      clearTimer();
      if (answered) return;
      answered = true;
      const status = Number(headers[HTTP2_HEADER_STATUS]);
      const ended = (flags & NGHTTP2_FLAG_END_STREAM) !== 0;
      try {
        stream.respond(passedFields(headers, status), { endStream: ended, waitForTrailers: !ended });
      } catch (err) {
        up.close(NGHTTP2_CANCEL);
        return this.fail(stream, 502, `response not valid: ${(err as Error).message}`, facts);
      }
      if (ended) return this.ctx.countRequest(status, facts.startedAt);
      // Node cannot end a stream with its last DATA frame once trailers may follow: when the upstream sent
      // none, the stream ends with an empty trailer section.
      stream.once('wantTrailers', () => {
        stream.sendTrailers(trailers ? passedFields(trailers) : {});
        this.ctx.countRequest(status, facts.startedAt);
      });
      up.pipe(stream);
    });
    up.on('trailers', (headers: IncomingHttpHeaders) => (trailers = headers));
    // RST_STREAM from the upstream reaches the client with the same code, and the other way round.
    up.on('close', () => {
      clearTimer();
      const code = up.rstCode ?? NGHTTP2_NO_ERROR;
      if (code === NGHTTP2_NO_ERROR || stream.closed) return;
      if (!answered) {
        answered = true;
        return this.fail(stream, 502, `the upstream reset the stream (HTTP/2 error code ${code})`, facts);
      }
      stream.close(code);
    });
    stream.on('close', () => {
      clearTimer();
      const code = stream.rstCode ?? NGHTTP2_NO_ERROR;
      if (code !== NGHTTP2_NO_ERROR && !up.closed) up.close(code);
    });
    if (!endStream) stream.pipe(up);
  }

  /** Graceful stop: GOAWAY to every client session; open streams finish, then their connections close. */
  drain(): void {
    this.draining = true;
    for (const session of this.sessions) session.close();
  }

  /** After the drain: the upstream connections kept for reuse are closed. */
  close(): void {
    this.h2c.close();
    this.agent.destroy();
  }

  /** HTTP/2 connections open now. */
  get open(): number {
    return this.sessions.size;
  }
}
