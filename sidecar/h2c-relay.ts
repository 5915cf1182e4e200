import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect as h2connect,
  constants,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
} from 'node:http2';
import type { Readable, Writable } from 'node:stream';
import type { ForwardContext } from './forward.ts';
import { relay } from './relay.ts';
import { passedFields } from './stream-fields.ts';
import { h2cAuthority } from './upstream-protocol.ts';

/**
 * One request relayed as one stream of the listener's shared h2c upstream connection, whatever the client
 * speaks: the client side is a ClientExchange (an HTTP/2 stream in http2.ts, an HTTP/1.1 request and response in
 * http1-to-h2c.ts), and everything that happens on the upstream stream (response head, body, trailers, resets
 * both ways, the upstream timeout, 502/504) is handled here once.
 */

const { HTTP2_HEADER_STATUS, NGHTTP2_CANCEL, NGHTTP2_FLAG_END_STREAM, NGHTTP2_NO_ERROR } = constants;

/** The upstream's response head, its fields already filtered for the client (passedFields). */
export interface ResponseHead {
  status: number;
  fields: OutgoingHttpHeaders;
  /** The upstream ended the stream with its head: no body, no trailers. */
  ended: boolean;
}

/** Where a response body goes, and how it ends (with the upstream's trailers, filtered, or none). */
export interface ResponseBody {
  sink: Writable;
  end(trailers: OutgoingHttpHeaders | null): void;
}

/** The client side of one relayed request. */
export interface ClientExchange {
  /** For log lines: what the client speaks. */
  readonly protocol: 'h2' | 'http/1.1';
  readonly startedAt: number;
  /** The request body still to come ('end' once it has all arrived), or null: the request ended with its head. */
  readonly body: Readable | null;
  /** The client side is closed: nothing more can be answered. */
  readonly gone: boolean;
  /**
   * Sends the response head (throws, having sent nothing, if this client cannot be given it); `done` once the
   * whole response went out. Returns where the body goes, or null when the head ended the response.
   */
  respond(head: ResponseHead, done: () => void): ResponseBody | null;
  /** The sidecar's own answer (400, 502, 504), or, once a response head went out, the response cut. */
  answer(status: number, text: string): void;
  /** The upstream reset the stream inside its response: the client must see the response cut, not complete. */
  cut(code: number): void;
  /** Calls back once the client side closes: NO_ERROR if it completed, else the code to reset the upstream with. */
  onClose(callback: (code: number) => void): void;
}

/** One h2c connection to the upstream shared by the listener's streams; reopened when it goes away. */
export class H2cUpstream {
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

/**
 * The upstream timeout, counted from the end of the client's request as on the HTTP/1.1 path (a long upload
 * is not the upstream being slow); the returned function stops it, also before it started.
 */
export function upstreamTimer(body: Readable | null, ms: number, onTimeout: () => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  let cleared = false;
  const start = () => {
    if (cleared) return;
    timer = setTimeout(onTimeout, ms);
    timer.unref();
  };
  if (body) body.once('end', start);
  else start();
  return () => {
    cleared = true;
    clearTimeout(timer);
  };
}

/** 502/504 for a request the upstream failed before answering (a cut response if part of it went out). */
export function failExchange(ctx: ForwardContext, client: ClientExchange, status: 502 | 504, why: string): void {
  const s = ctx.settings;
  s.log.warn(status === 502 ? 'upstream unavailable' : 'upstream timed out', {
    listener: s.listener(),
    mode: s.mode,
    protocol: client.protocol,
    upstream: s.upstream,
    status,
    error: why,
  });
  ctx.countRequest(status, client.startedAt);
  client.answer(status, status === 502 ? 'upstream unavailable\n' : 'upstream timed out\n');
}

/** node:http2 refuses fields it cannot send (a single-value field given twice, a bad value): the client's request. */
const isFieldError = (err: NodeJS.ErrnoException) =>
  /^ERR_(HTTP2_HEADER|HTTP2_INVALID_HEADER|HTTP2_INVALID_PSEUDOHEADER|INVALID_CHAR|INVALID_HTTP_TOKEN)/.test(
    err.code ?? '',
  );

/** One request as one stream of the shared h2c connection: trailers and resets pass both ways. */
export function relayToH2c(
  ctx: ForwardContext,
  upstream: H2cUpstream,
  fields: Record<string, string | string[]>,
  client: ClientExchange,
): void {
  const s = ctx.settings;
  let up: ClientHttp2Stream;
  try {
    up = upstream.get().request(fields, { endStream: client.body === null });
  } catch (err) {
    if (!isFieldError(err as NodeJS.ErrnoException)) return failExchange(ctx, client, 502, (err as Error).message);
    ctx.countRequest(400, client.startedAt);
    return client.answer(400, `request cannot be forwarded as h2c: ${(err as Error).message}\n`);
  }
  // waiting: no answer yet; failed: the sidecar answered itself; relaying: the upstream's response is going out.
  let phase: 'waiting' | 'failed' | 'relaying' = 'waiting';
  const fail = (status: 502 | 504, why: string) => {
    phase = 'failed';
    failExchange(ctx, client, status, why);
  };
  let trailers: IncomingHttpHeaders | null = null;
  const clearTimer = upstreamTimer(client.body, s.upstreamTimeoutMs, () => {
    if (phase !== 'waiting') return;
    up.close(NGHTTP2_CANCEL);
    fail(504, `no response within ${s.upstreamTimeoutMs} ms`);
  });
  up.on('error', (err: NodeJS.ErrnoException) => {
    clearTimer();
    if (phase === 'waiting' && !client.gone) fail(502, err.code ?? err.message);
  });
  up.on('response', (headers: IncomingHttpHeaders, flags: number) => {
    clearTimer();
    if (phase !== 'waiting') return;
    phase = 'relaying';
    const status = Number(headers[HTTP2_HEADER_STATUS]);
    const ended = (flags & NGHTTP2_FLAG_END_STREAM) !== 0;
    let body: ResponseBody | null;
    try {
      body = client.respond({ status, fields: passedFields(headers), ended }, () =>
        ctx.countRequest(status, client.startedAt),
      );
    } catch (err) {
      up.close(NGHTTP2_CANCEL);
      return fail(502, `response not valid: ${(err as Error).message}`);
    }
    if (!body) return;
    relay(up, body.sink, { end: false });
    up.once('end', () => body.end(trailers ? passedFields(trailers) : null));
  });
  up.on('trailers', (headers: IncomingHttpHeaders) => (trailers = headers));
  // RST_STREAM from the upstream reaches the client (an HTTP/2 client with the same code), and the other way round.
  up.on('close', () => {
    clearTimer();
    const code = up.rstCode ?? NGHTTP2_NO_ERROR;
    if (code === NGHTTP2_NO_ERROR || client.gone) return;
    if (phase === 'waiting') return fail(502, `the upstream reset the stream (HTTP/2 error code ${code})`);
    if (phase === 'relaying') client.cut(code);
  });
  client.onClose((code) => {
    clearTimer();
    if (code !== NGHTTP2_NO_ERROR && !up.closed) up.close(code);
  });
  if (client.body) relay(client.body, up);
}
