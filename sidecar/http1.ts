/**
 * Just enough HTTP/1.x for a relaying proxy: a request head parser that rewrites the identity headers and
 * finds the body's framing, a response head parser that finds the response's framing, and a chunked-body
 * tracker that finds where a chunked body ends without copying it. Strict where a lenient reading could
 * make the sidecar and the upstream disagree about where a request ends (request smuggling): obs-fold,
 * whitespace before a colon, bare CR/LF, both Content-Length and Transfer-Encoding, bad chunk sizes, sloppy
 * trailers, whitespace other than SP/HTAB around a length or coding. The upstream connection belongs to one
 * client connection, so a smuggled request would carry whatever identity headers the client wrote itself:
 * those are stripped here (also in their underscore spelling), and h2c upgrades are refused.
 */

/** A request the sidecar answers itself (400, 408, 431, 501, 505), with what was wrong for the log. */
export class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

export const BODY_NONE = 0;
export const BODY_LENGTH = 1;
export const BODY_CHUNKED = 2;
/** Responses only: the body ends when the upstream closes the connection. */
export const BODY_UNTIL_CLOSE = 3;
export type BodyKind = typeof BODY_NONE | typeof BODY_LENGTH | typeof BODY_CHUNKED | typeof BODY_UNTIL_CLOSE;

export interface RequestHead {
  method: string;
  target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: number;
  body: BodyKind;
  /** Content-Length, when body is BODY_LENGTH. */
  length: number;
  keepAlive: boolean;
  /** Connection: upgrade with an Upgrade header (WebSocket). */
  upgrade: boolean;
  /** Request line and headers to forward (no trailing CRLF): the client's identity headers removed. */
  kept: string;
  /** The client's own X-Forwarded-For values (removed from `kept`), comma-joined, or ''. */
  forwardedFor: string;
}

export interface ResponseHead {
  status: number;
  body: BodyKind;
  length: number;
  /** The upstream will close the connection after this response. */
  close: boolean;
}

export const CRLFCRLF = Buffer.from('\r\n\r\n');

const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([\x21-\x7e\x80-\xff]+) HTTP\/(\d)\.(\d)$/;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Control characters other than HTAB, and CR or LF that are not part of a CRLF. */
// eslint-disable-next-line no-control-regex
const BAD_BYTES = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n/;
const DIGITS = /^\d{1,15}$/;
/** Optional whitespace (RFC 9110 5.6.3) is SP and HTAB only; String.trim() would also drop U+00A0 (a latin1 0xA0). */
const OWS_EDGES = /^[ \t]+|[ \t]+$/g;
const ows = (value: string) => value.replace(OWS_EDGES, '');

/**
 * Header lines a request may carry (Apache's LimitRequestFields). The identity headers go after the client's
 * own, and an upstream that keeps only the first N (Node's http keeps 1,000) would silently lose them.
 */
export const MAX_HEADER_LINES = 100;

/** Headers only the sidecar sets: whatever a client sends under these names is dropped. */
const STRIPPED = new Set(['x-forwarded-client-cert', 'x-client-verify', 'x-forwarded-proto', 'x-forwarded-for']);

/** Whether a (lower-case) header name is an identity header, also in its underscore spelling (CGI maps _ to -). */
function stripped(name: string): boolean {
  return STRIPPED.has(name) || (name.includes('_') && STRIPPED.has(name.replaceAll('_', '-')));
}

function connectionTokens(value: string, into: Set<string>): void {
  for (const token of value.split(',')) {
    const t = ows(token).toLowerCase();
    if (t) into.add(t);
  }
}

/** Parses a request head (`head` without the blank line that ends it). Throws HttpError. */
export function parseRequestHead(head: string): RequestHead {
  if (BAD_BYTES.test(head)) throw new HttpError(400, 'control character or bare CR/LF in the request head');
  const lines = head.split('\r\n');
  const requestLine = REQUEST_LINE.exec(lines[0]!);
  if (!requestLine) throw new HttpError(400, 'malformed request line');
  if (requestLine[3] !== '1') throw new HttpError(505, `HTTP/${requestLine[3]}.${requestLine[4]} is not supported`);
  const method = requestLine[1]!;
  if (method === 'CONNECT') throw new HttpError(405, 'CONNECT is not supported');
  const minor = requestLine[4] === '0' ? 0 : 1;
  if (lines.length - 1 > MAX_HEADER_LINES) throw new HttpError(431, `more than ${MAX_HEADER_LINES} header lines`);
  let length = -1;
  /** Transfer codings of all Transfer-Encoding lines, in order (several lines form one list). */
  let codings: string[] | undefined;
  let upgradeHeader = false;
  let hosts = 0;
  let forwardedFor = '';
  const connection = new Set<string>();
  let parts: string[] | undefined;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new HttpError(400, 'malformed header line');
    const rawName = line.slice(0, colon);
    if (!TOKEN.test(rawName)) throw new HttpError(400, `malformed header name "${rawName.slice(0, 40)}"`);
    const name = rawName.toLowerCase();
    let keep = true;
    switch (name) {
      case 'content-length': {
        const value = ows(line.slice(colon + 1));
        if (!DIGITS.test(value)) throw new HttpError(400, 'invalid Content-Length');
        const n = Number(value);
        if (length >= 0 && n !== length) throw new HttpError(400, 'conflicting Content-Length headers');
        length = n;
        break;
      }
      case 'transfer-encoding':
        codings ??= [];
        for (const coding of line.slice(colon + 1).split(',')) {
          const c = ows(coding).toLowerCase();
          if (c) codings.push(c);
        }
        break;
      case 'connection':
        connectionTokens(line.slice(colon + 1), connection);
        break;
      case 'upgrade':
        upgradeHeader = true;
        // h2c (RFC 7540 3.2, cleartext only): behind a tunnel the client would speak HTTP/2 to the upstream,
        // past the identity-header rewrite. Over TLS it has no legitimate use.
        for (const protocol of line.slice(colon + 1).split(',')) {
          if (/^h2c(\/|$)/i.test(ows(protocol))) throw new HttpError(400, 'h2c upgrade is not supported');
        }
        break;
      case 'host':
        if (++hosts > 1) throw new HttpError(400, 'more than one Host header');
        break;
      default:
        if (stripped(name)) {
          keep = false;
          if (name === 'x-forwarded-for') {
            const value = ows(line.slice(colon + 1));
            if (value) forwardedFor = forwardedFor ? `${forwardedFor}, ${value}` : value;
          }
        }
    }
    if (!keep && !parts) parts = lines.slice(0, i);
    else if (keep && parts) parts.push(line);
  }
  let chunked = false;
  if (codings) {
    if (length >= 0) throw new HttpError(400, 'both Content-Length and Transfer-Encoding');
    if (minor === 0) throw new HttpError(400, 'Transfer-Encoding in an HTTP/1.0 request');
    // chunked must be the final coding, exactly once (RFC 9112 6.1); anything else has no length we can trust.
    if (codings.length === 0) throw new HttpError(400, 'invalid Transfer-Encoding');
    chunked = codings.indexOf('chunked') === codings.length - 1;
    if (!chunked) throw new HttpError(400, 'Transfer-Encoding must end with chunked');
  }
  if (hosts === 0 && minor === 1) throw new HttpError(400, 'no Host header in an HTTP/1.1 request');
  const keepAlive = minor === 1 ? !connection.has('close') : connection.has('keep-alive');
  return {
    method,
    target: requestLine[2]!,
    minor,
    body: chunked ? BODY_CHUNKED : length > 0 ? BODY_LENGTH : BODY_NONE,
    length: Math.max(length, 0),
    keepAlive,
    upgrade: upgradeHeader && connection.has('upgrade'),
    kept: parts ? parts.join('\r\n') : head,
    forwardedFor,
  };
}

const STATUS_LINE = /^HTTP\/1\.([01]) (\d{3})(?: [^\r\n]*)?$/;

/** Parses a response head to find its framing (RFC 9112 6.3). Throws Error on a malformed head. */
export function parseResponseHead(head: string, requestMethod: string): ResponseHead {
  const lines = head.split('\r\n');
  const statusLine = STATUS_LINE.exec(lines[0]!);
  if (!statusLine) throw new Error(`malformed status line "${lines[0]!.slice(0, 60)}"`);
  const status = Number(statusLine[2]);
  let length = -1;
  let chunked = false;
  let transferEncoding = false;
  const connection = new Set<string>();
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Error('malformed response header line');
    // Only three names matter; compare lengths first to avoid lowercasing every name.
    const n = colon;
    if (n !== 14 && n !== 17 && n !== 10) continue;
    const name = line.slice(0, colon).toLowerCase();
    if (name === 'content-length') {
      const value = ows(line.slice(colon + 1));
      if (!DIGITS.test(value)) throw new Error('invalid Content-Length in the response');
      if (length >= 0 && Number(value) !== length) throw new Error('conflicting Content-Length in the response');
      length = Number(value);
    } else if (name === 'transfer-encoding') {
      transferEncoding = true;
      const codings = line.slice(colon + 1).split(',');
      chunked = ows(codings[codings.length - 1]!).toLowerCase() === 'chunked';
    } else if (name === 'connection') {
      connectionTokens(line.slice(colon + 1), connection);
    }
  }
  const close = statusLine[1] === '0' ? !connection.has('keep-alive') : connection.has('close');
  if (requestMethod === 'HEAD' || status < 200 || status === 204 || status === 304) {
    return { status, body: BODY_NONE, length: 0, close };
  }
  if (transferEncoding) {
    return chunked
      ? { status, body: BODY_CHUNKED, length: 0, close }
      : { status, body: BODY_UNTIL_CLOSE, length: 0, close: true };
  }
  if (length >= 0) return { status, body: length > 0 ? BODY_LENGTH : BODY_NONE, length, close };
  return { status, body: BODY_UNTIL_CLOSE, length: 0, close: true };
}

const SIZE = 0;
const EXTENSION = 1;
const SIZE_LF = 2;
const DATA = 3;
const DATA_CR = 4;
const DATA_LF = 5;
const TRAILER_START = 6;
const TRAILER_NAME = 7;
const TRAILER_VALUE = 8;
const TRAILER_LF = 9;
const END_LF = 10;
const DONE = 11;

/** tchar (RFC 9110 5.6.2) by byte: the characters of a field name. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
  TCHAR[c.charCodeAt(0)] = 1;

const MAX_SIZE_DIGITS = 12;
const MAX_LINE = 4096;
const MAX_TRAILERS = 16 * 1024;

/**
 * Follows a chunked body as it streams by, without copying it: `feed` says where the body ends (the
 * offset just past the final CRLF) or -1 when the buffer ended first. Throws HttpError(400) on bad framing.
 */
export class ChunkedBody {
  private state = SIZE;
  private size = 0;
  private digits = 0;
  private line = 0;
  private trailers = 0;

  feed(buf: Buffer, start: number): number {
    let i = start;
    const n = buf.length;
    while (i < n) {
      const state = this.state;
      if (state === DATA) {
        const take = Math.min(this.size, n - i);
        this.size -= take;
        i += take;
        if (this.size === 0) this.state = DATA_CR;
        continue;
      }
      const c = buf[i++]!;
      switch (state) {
        case SIZE: {
          const v = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1;
          if (v >= 0) {
            if (++this.digits > MAX_SIZE_DIGITS) throw new HttpError(400, 'chunk size too large');
            this.size = this.size * 16 + v;
          } else if (this.digits > 0 && c === 13) {
            this.state = SIZE_LF;
          } else if (this.digits > 0 && (c === 59 || c === 32 || c === 9)) {
            this.state = EXTENSION;
            this.line = 0;
          } else {
            throw new HttpError(400, 'invalid chunk size');
          }
          break;
        }
        case EXTENSION:
          if (c === 13) this.state = SIZE_LF;
          else if ((c < 32 && c !== 9) || c === 127 || ++this.line > MAX_LINE)
            throw new HttpError(400, 'invalid chunk extension');
          break;
        case SIZE_LF:
          if (c !== 10) throw new HttpError(400, 'chunk size line must end with CRLF');
          this.digits = 0;
          this.state = this.size === 0 ? TRAILER_START : DATA;
          break;
        case DATA_CR:
          if (c !== 13) throw new HttpError(400, 'chunk data must end with CRLF');
          this.state = DATA_LF;
          break;
        case DATA_LF:
          if (c !== 10) throw new HttpError(400, 'chunk data must end with CRLF');
          this.state = SIZE;
          break;
        // Trailer fields are held to the same syntax as header fields (name ":" value, no obs-fold, no
        // control characters): an upstream reading a sloppy trailer section differently would end the body
        // somewhere else.
        case TRAILER_START:
          if (c === 13) this.state = END_LF;
          else if (c === 10) throw new HttpError(400, 'bare LF in trailers');
          else if (TCHAR[c]) this.state = TRAILER_NAME;
          else throw new HttpError(400, 'invalid trailer field name (or obs-fold)');
          if (++this.trailers > MAX_TRAILERS) throw new HttpError(400, 'trailers too large');
          break;
        case TRAILER_NAME:
          if (c === 58) this.state = TRAILER_VALUE;
          else if (!TCHAR[c]) throw new HttpError(400, 'invalid trailer field name');
          if (++this.trailers > MAX_TRAILERS) throw new HttpError(400, 'trailers too large');
          break;
        case TRAILER_VALUE:
          if (c === 13) this.state = TRAILER_LF;
          else if ((c < 32 && c !== 9) || c === 127) throw new HttpError(400, 'invalid trailer (control character)');
          if (++this.trailers > MAX_TRAILERS) throw new HttpError(400, 'trailers too large');
          break;
        case TRAILER_LF:
          if (c !== 10) throw new HttpError(400, 'trailer line must end with CRLF');
          this.state = TRAILER_START;
          break;
        case END_LF:
          if (c !== 10) throw new HttpError(400, 'chunked body must end with CRLF');
          this.state = DONE;
          return i;
        default:
          return i - 1;
      }
    }
    return -1;
  }

  get done(): boolean {
    return this.state === DONE;
  }
}

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  431: 'Request Header Fields Too Large',
  501: 'Not Implemented',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
  505: 'HTTP Version Not Supported',
};

/** A complete response the sidecar writes itself; it always closes the connection after it. */
export function errorResponse(status: number, body: string): string {
  // Messages may quote client bytes: escape all but printable ASCII so the length holds in any encoding.
  body = body.replace(/[^\x20-\x7e\n]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return (
    `HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\ncontent-type: text/plain\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`
  );
}
