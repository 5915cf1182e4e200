import {
  Agent,
  type ClientRequest,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  request as httpRequest,
} from 'node:http';
import {
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
import {
  type ClientExchange,
  failExchange,
  H2cUpstream,
  relayToH2c,
  type ResponseBody,
  type ResponseHead,
  upstreamTimer,
} from './h2c-relay.ts';
import { Http1ToH2c } from './http1-to-h2c.ts';
import type { RefusalReason } from './refusal-log.ts';
import { relay } from './relay.ts';
import { passedFields, upstreamFields } from './stream-fields.ts';
import type { UpstreamProtocolChoice } from './upstream-protocol.ts';

/**
 * HTTP/2 clients (ALPN `h2`): Node's own node:http2 (nghttp2) reads the frames, HPACK and flow control; this
 * module only relays each stream to the upstream, as an HTTP/1.1 request on a kept-alive connection or as a
 * stream of one shared h2c connection (`--upstream-protocol`, or what `auto` found: upstream-protocol.ts;
 * h2c-relay.ts), with the identity fields of the connection set on every stream and any client-sent copy
 * removed, as the HTTP/1.1 path does. HTTP/1.1 clients reach this module only when the upstream speaks h2c
 * (proxy.ts hands them to http1-to-h2c.ts through serveHttp1); otherwise they stay on forward.ts.
 */

const {
  HTTP2_HEADER_STATUS,
  HTTP2_HEADER_METHOD,
  HTTP2_HEADER_PATH,
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

interface Refusal {
  status: number;
  text: string;
  grpcStatus: number;
}

/** The gRPC status a gRPC client gets for an answer of the sidecar's own. */
const GRPC_STATUS_FOR: Record<number, number> = { 502: GRPC_UNAVAILABLE, 504: GRPC_DEADLINE_EXCEEDED };

/** A client's HTTP/2 stream as the client side of a relayed request. */
class H2StreamExchange implements ClientExchange {
  readonly protocol = 'h2';
  readonly startedAt = performance.now();
  readonly grpc: boolean;
  readonly body: ServerHttp2Stream | null;
  readonly stream: ServerHttp2Stream;

  constructor(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, endStream: boolean) {
    this.stream = stream;
    this.grpc = isGrpc(headers);
    this.body = endStream ? null : stream;
  }

  get gone(): boolean {
    return this.stream.closed || this.stream.destroyed;
  }

  respond(head: ResponseHead, done: () => void): ResponseBody | null {
    const { stream } = this;
    // head.fields is this response's own object (passedFields): the status goes in, not into a copy.
    head.fields[HTTP2_HEADER_STATUS] = head.status;
    stream.respond(head.fields, { endStream: head.ended, waitForTrailers: !head.ended });
    if (head.ended) {
      done();
      return null;
    }
    let trailers: H2OutgoingHeaders | null = null;
    // Node cannot end a stream with its last DATA frame once trailers may follow: when the upstream sent none,
    // the stream ends with an empty trailer section.
    stream.once('wantTrailers', () => {
      stream.sendTrailers(trailers ?? {});
      done();
    });
    return {
      sink: stream,
      end: (upstreamTrailers) => {
        trailers = upstreamTrailers;
        stream.end();
      },
    };
  }

  answer(status: number, text: string): void {
    answerStream(this.stream, { grpc: this.grpc, status, text, grpcStatus: GRPC_STATUS_FOR[status] ?? GRPC_INTERNAL });
  }

  cut(code: number): void {
    this.stream.close(code);
  }

  onClose(callback: (code: number) => void): void {
    this.stream.once('close', () => callback(this.stream.rstCode ?? NGHTTP2_NO_ERROR));
  }
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
  private readonly http1: Http1ToH2c;
  private draining = false;

  constructor(ctx: ForwardContext, protocol: UpstreamProtocolChoice) {
    this.ctx = ctx;
    this.protocol = protocol;
    const s = ctx.settings;
    this.server = createH2Server(sessionOptions(s.maxHeaderBytes));
    this.agent = new Agent({ keepAlive: true, scheduling: 'lifo' });
    this.h2c = new H2cUpstream(s.upstreamHost, s.upstreamPort);
    this.http1 = new Http1ToH2c(ctx, this.h2c);
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
   * Serves a verified HTTP/1.1 connection when the upstream speaks h2c: each request becomes a stream of the
   * same shared h2c connection the HTTP/2 clients' streams use (http1-to-h2c.ts).
   */
  serveHttp1(socket: TLSSocket, identity: [string, string][]): void {
    this.http1.serve(socket, identity);
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
    const refusal = this.refusals.get(session);
    if (refusal) {
      this.ctx.countRequest(refusal.status, 0);
      answerStream(stream, { grpc: isGrpc(headers), ...refusal });
      session.close();
      return;
    }
    const identity = this.identities.get(session);
    if (!identity) return void stream.close(NGHTTP2_REFUSED_STREAM);
    const exchange = new H2StreamExchange(stream, headers, (flags & NGHTTP2_FLAG_END_STREAM) !== 0);
    if (headers[HTTP2_HEADER_METHOD] === 'CONNECT') {
      this.ctx.countRequest(501, exchange.startedAt);
      const text = 'CONNECT is not forwarded by the mTLS sidecar\n';
      return answerStream(stream, { grpc: exchange.grpc, status: 501, text, grpcStatus: GRPC_UNIMPLEMENTED });
    }
    const forward = (protocol: StreamProtocol) => {
      if (stream.closed || stream.destroyed) return;
      const fields = upstreamFields(headers, identity.fields, identity.peer, protocol);
      if (protocol === 'h2c') relayToH2c(this.ctx, this.h2c, fields, exchange);
      else this.toHttp1(exchange, headers, fields);
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

  /** One stream as one HTTP/1.1 request on the listener's kept-alive connections (node:http's Agent). */
  private toHttp1(
    exchange: H2StreamExchange,
    client: IncomingHttpHeaders,
    fields: Record<string, string | string[]>,
  ): void {
    const s = this.ctx.settings;
    const { stream } = exchange;
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
      this.ctx.countRequest(400, exchange.startedAt);
      return exchange.answer(400, `request cannot be forwarded as HTTP/1.1: ${(err as Error).message}\n`);
    }
    let answered = false;
    const clearTimer = upstreamTimer(exchange.body, s.upstreamTimeoutMs, () => {
      if (answered) return;
      answered = true;
      req.destroy();
      failExchange(this.ctx, exchange, 504, `no response within ${s.upstreamTimeoutMs} ms`);
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      clearTimer();
      // The client went away first (its reset destroyed this request): nothing to answer, nothing to report.
      if (stream.closed) return;
      if (answered) return void stream.close(NGHTTP2_INTERNAL_ERROR);
      answered = true;
      failExchange(this.ctx, exchange, 502, err.code ?? err.message);
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
        const why = `response cannot be sent over HTTP/2: ${(err as Error).message}`;
        return failExchange(this.ctx, exchange, 502, why);
      }
      res.on('end', () => this.ctx.countRequest(status, exchange.startedAt));
      res.on('close', () => {
        if (!res.complete) stream.close(NGHTTP2_INTERNAL_ERROR);
      });
      if (noBody) return void res.resume();
      if (trailers) stream.once('wantTrailers', () => stream.sendTrailers(passedFields(res.trailers)));
      relay(res, stream);
    });
    // A stream the client reset (or whose connection went away) abandons its upstream request.
    stream.on('close', () => {
      clearTimer();
      if (stream.rstCode !== NGHTTP2_NO_ERROR) req.destroy();
    });
    if (!exchange.body) return void req.end();
    // node:http holds the head until the first body byte: an upstream must see the request at once (a client
    // may wait for the response head before it sends its body).
    req.flushHeaders();
    relay(stream, req);
  }

  /**
   * Graceful stop: GOAWAY to every client session, and the HTTP/1.1 connections relayed to h2c closed once idle;
   * open streams and requests finish, then their connections close.
   */
  drain(): void {
    this.draining = true;
    for (const session of this.sessions) session.close();
    this.http1.drain();
  }

  /** After the drain: the upstream connections kept for reuse are closed. */
  close(): void {
    this.http1.close();
    this.h2c.close();
    this.agent.destroy();
  }

  /** Client connections open now: HTTP/2 ones and the HTTP/1.1 ones relayed to h2c. */
  get open(): number {
    return this.sessions.size + this.http1.open;
  }
}
