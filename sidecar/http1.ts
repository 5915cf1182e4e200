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
  /** Offset of the CR that ends the request line. */
  lineEnd: number;
  /** Byte ranges [from, to) of the client's identity-header lines (each with its CRLF), to leave out. */
  drops: number[];
  /** The client's own X-Forwarded-For values (dropped), comma-joined, or ''. */
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

const CR = 13;
const LF = 10;
const SP = 32;
const HTAB = 9;
const COLON = 58;
const COMMA = 44;

/** tchar (RFC 9110 5.6.2) by byte: the characters of a method, a field name, a token. */
export const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
  TCHAR[c.charCodeAt(0)] = 1;

/**
 * Header lines a request may carry (Apache's LimitRequestFields): an upstream that keeps only the first N
 * headers (Node's http keeps 1,000) must never be handed more than it reads.
 */
export const MAX_HEADER_LINES = 100;

/** Whether buf[from, to) is `lower` (ASCII letters and '-'), ignoring case; `loose` also takes '_' for '-'. */
function nameIs(buf: Buffer, from: number, to: number, lower: string, loose = false): boolean {
  if (to - from !== lower.length) return false;
  for (let i = 0; i < lower.length; i++) {
    const b = buf[from + i]!;
    const c = lower.charCodeAt(i);
    // `| 0x20` folds A-Z onto a-z; '-' (0x2d) already has the bit, and no other tchar folds onto a letter or '-'.
    if ((b | 0x20) !== c && !(loose && c === 45 && b === 95)) return false;
  }
  return true;
}

/** Whether buf holds exactly `text` (ASCII) at `at`; "HTTP" is case-sensitive (RFC 9112 2.3). */
function startsWith(buf: Buffer, at: number, text: string): boolean {
  for (let i = 0; i < text.length; i++) if (buf[at + i] !== text.charCodeAt(i)) return false;
  return true;
}

/** Headers only the sidecar sets: whatever a client sends under these names is dropped (also spelled with
 * underscores: CGI, WSGI and PHP upstreams map '_' and '-' to the same variable). */
const IDENTITY_HEADERS = ['x-forwarded-client-cert', 'x-client-verify', 'x-forwarded-proto', 'x-forwarded-for'];
const isIdentityHeader = (buf: Buffer, from: number, to: number) =>
  IDENTITY_HEADERS.some((name) => nameIs(buf, from, to, name, true));

/** [from, to) with SP/HTAB trimmed at both ends (RFC 9110 5.6.3: optional whitespace is only those two). */
function trimOws(buf: Buffer, from: number, to: number): [number, number] {
  while (from < to && (buf[from] === SP || buf[from] === HTAB)) from++;
  while (to > from && (buf[to - 1] === SP || buf[to - 1] === HTAB)) to--;
  return [from, to];
}

/** A Content-Length value: 1 to 15 digits, nothing else. -1 if it is not one. */
function contentLength(buf: Buffer, from: number, to: number): number {
  [from, to] = trimOws(buf, from, to);
  if (to === from || to - from > 15) return -1;
  let n = 0;
  for (let i = from; i < to; i++) {
    const d = buf[i]! - 48;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

const TOKEN_CLOSE = 1;
const TOKEN_KEEP_ALIVE = 2;
const TOKEN_UPGRADE = 4;
const TOKEN_IDENTITY = 8;

/** The Connection tokens of buf[from, to) that matter here, as a bit set. */
function connectionTokens(buf: Buffer, from: number, to: number): number {
  let bits = 0;
  while (from < to) {
    let comma = buf.indexOf(COMMA, from);
    if (comma < 0 || comma > to) comma = to;
    const [a, b] = trimOws(buf, from, comma);
    if (nameIs(buf, a, b, 'close')) bits |= TOKEN_CLOSE;
    else if (nameIs(buf, a, b, 'keep-alive')) bits |= TOKEN_KEEP_ALIVE;
    else if (nameIs(buf, a, b, 'upgrade')) bits |= TOKEN_UPGRADE;
    else if (isIdentityHeader(buf, a, b)) bits |= TOKEN_IDENTITY;
    from = comma + 1;
  }
  return bits;
}

/** The comma-separated list of buf[from, to), OWS-trimmed, lower-cased, empty elements left out. */
function lowerList(buf: Buffer, from: number, to: number): string[] {
  const out: string[] = [];
  for (const part of buf.toString('latin1', from, to).split(',')) {
    const item = part.replace(/^[ \t]+|[ \t]+$/g, '').toLowerCase();
    if (item) out.push(item);
  }
  return out;
}

/**
 * Parses a request head: buf[start, end), where `end` is the offset of the blank line's CRLFCRLF. Works on
 * the bytes (no string per line): this runs for every request. Throws HttpError.
 */
export function parseRequestHeadBytes(buf: Buffer, start: number, end: number): RequestHead {
  // One pass for the bytes no head may hold, counting lines: control characters other than HTAB, and CR or
  // LF that are not part of a CRLF.
  let lines = 1;
  let lineEnd = -1;
  for (let i = start; i < end; i++) {
    const b = buf[i]!;
    if (b >= 0x20 && b !== 0x7f) continue;
    if (b === CR && i + 1 < end && buf[i + 1] === LF) {
      if (lineEnd < 0) lineEnd = i;
      lines++;
      i++;
    } else if (b !== HTAB) {
      throw new HttpError(400, 'control character or bare CR/LF in the request head');
    }
  }
  if (lineEnd < 0) lineEnd = end;

  // method SP request-target SP HTTP/d.d
  let i = start;
  while (i < lineEnd && TCHAR[buf[i]!]) i++;
  if (i === start || buf[i] !== SP) throw new HttpError(400, 'malformed request line');
  const method = buf.toString('latin1', start, i);
  const targetStart = ++i;
  while (i < lineEnd && buf[i]! > SP && buf[i] !== 0x7f) i++;
  if (i === targetStart || buf[i] !== SP) throw new HttpError(400, 'malformed request line');
  const target = buf.toString('latin1', targetStart, i);
  const v = i + 1;
  const major = buf[v + 5]! - 48;
  const minorDigit = buf[v + 7]! - 48;
  if (
    lineEnd - v !== 8 ||
    !startsWith(buf, v, 'HTTP/') ||
    major < 0 ||
    major > 9 ||
    buf[v + 6] !== 0x2e ||
    minorDigit < 0 ||
    minorDigit > 9
  ) {
    throw new HttpError(400, 'malformed request line');
  }
  if (major !== 1) throw new HttpError(505, `HTTP/${major}.${minorDigit} is not supported`);
  if (method === 'CONNECT') throw new HttpError(405, 'CONNECT is not supported');
  const minor = minorDigit === 0 ? 0 : 1;
  if (lines - 1 > MAX_HEADER_LINES) throw new HttpError(431, `more than ${MAX_HEADER_LINES} header lines`);

  let length = -1;
  /** Transfer codings of all Transfer-Encoding lines, in order (several lines form one list). */
  let codings: string[] | undefined;
  let upgradeHeader = false;
  let hosts = 0;
  let forwardedFor = '';
  let connection = 0;
  const drops: number[] = [];
  for (let ls = lineEnd + 2; ls < end + 2;) {
    let le = buf.indexOf(CR, ls);
    if (le < 0 || le > end) le = end;
    let n = ls;
    while (n < le && TCHAR[buf[n]!]) n++;
    if (n === ls || buf[n] !== COLON) {
      const colon = buf.indexOf(COLON, ls);
      if (colon <= ls || colon >= le) throw new HttpError(400, 'malformed header line');
      throw new HttpError(400, `malformed header name "${buf.toString('latin1', ls, Math.min(colon, ls + 40))}"`);
    }
    const vs = n + 1;
    switch (n - ls) {
      case 14:
        if (nameIs(buf, ls, n, 'content-length')) {
          const value = contentLength(buf, vs, le);
          if (value < 0) throw new HttpError(400, 'invalid Content-Length');
          if (length >= 0 && value !== length) throw new HttpError(400, 'conflicting Content-Length headers');
          length = value;
        }
        break;
      case 17:
        if (nameIs(buf, ls, n, 'transfer-encoding')) (codings ??= []).push(...lowerList(buf, vs, le));
        break;
      case 10:
        if (nameIs(buf, ls, n, 'connection')) connection |= connectionTokens(buf, vs, le);
        break;
      case 7:
        if (nameIs(buf, ls, n, 'upgrade')) {
          upgradeHeader = true;
          // h2c (RFC 7540 3.2, cleartext only): behind a tunnel the client would speak HTTP/2 to the upstream,
          // past the identity-header rewrite. Over TLS it has no legitimate use.
          if (lowerList(buf, vs, le).some((p) => /^h2c(\/|$)/.test(p)))
            throw new HttpError(400, 'h2c upgrade is not supported');
        }
        break;
      case 4:
        if (nameIs(buf, ls, n, 'host') && ++hosts > 1) throw new HttpError(400, 'more than one Host header');
        break;
    }
    if ((n - ls === 15 || n - ls === 17 || n - ls === 23) && isIdentityHeader(buf, ls, n)) {
      drops.push(ls, le + 2);
      if (nameIs(buf, ls, n, 'x-forwarded-for', true)) {
        const [a, b] = trimOws(buf, vs, le);
        if (b > a) {
          const value = buf.toString('latin1', a, b);
          forwardedFor = forwardedFor ? `${forwardedFor}, ${value}` : value;
        }
      }
    }
    ls = le + 2;
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
  // An upstream that is itself a proxy would remove the headers Connection names: the identity headers
  // must reach the service behind it.
  if (connection & TOKEN_IDENTITY) throw new HttpError(400, 'Connection names an identity header');
  return {
    method,
    target,
    minor,
    body: chunked ? BODY_CHUNKED : length > 0 ? BODY_LENGTH : BODY_NONE,
    length: Math.max(length, 0),
    keepAlive: minor === 1 ? !(connection & TOKEN_CLOSE) : !!(connection & TOKEN_KEEP_ALIVE),
    upgrade: upgradeHeader && !!(connection & TOKEN_UPGRADE),
    lineEnd,
    drops,
    forwardedFor,
  };
}

/** A request head as text (without the blank line that ends it), and what would be forwarded of it. */
export function parseRequestHead(head: string): RequestHead & { kept: string } {
  const buf = Buffer.from(`${head}\r\n\r\n`, 'latin1');
  const parsed = parseRequestHeadBytes(buf, 0, buf.length - 4);
  let kept = '';
  let from = 0;
  for (let i = 0; i < parsed.drops.length; i += 2) {
    kept += buf.toString('latin1', from, parsed.drops[i]);
    from = parsed.drops[i + 1]!;
  }
  kept = (kept + buf.toString('latin1', from)).replace(/(\r\n)+$/, '');
  return { ...parsed, kept };
}

/** Parses a response head, buf[start, end) with `end` at its CRLFCRLF, to find its framing (RFC 9112 6.3). */
export function parseResponseHeadBytes(buf: Buffer, start: number, end: number, requestMethod: string): ResponseHead {
  let lineEnd = buf.indexOf(CR, start);
  if (lineEnd < 0 || lineEnd > end) lineEnd = end;
  // HTTP/1.x SP 3DIGIT [SP reason]
  const minorDigit = buf[start + 7]! - 48;
  const statusOk =
    lineEnd - start >= 12 &&
    startsWith(buf, start, 'HTTP/1.') &&
    (minorDigit === 0 || minorDigit === 1) &&
    buf[start + 8] === SP &&
    (lineEnd - start === 12 || buf[start + 12] === SP);
  let status = 0;
  for (let i = start + 9; statusOk && i < start + 12; i++) {
    const d = buf[i]! - 48;
    if (d < 0 || d > 9) {
      status = -1;
      break;
    }
    status = status * 10 + d;
  }
  if (!statusOk || status < 0)
    throw new Error(`malformed status line "${buf.toString('latin1', start, Math.min(lineEnd, start + 60))}"`);
  let length = -1;
  let chunked = false;
  let transferEncoding = false;
  let connection = 0;
  for (let ls = lineEnd + 2; ls < end + 2;) {
    let le = buf.indexOf(CR, ls);
    if (le < 0 || le > end) le = end;
    const colon = buf.indexOf(COLON, ls);
    if (colon <= ls || colon >= le) throw new Error('malformed response header line');
    // Only three names matter; their lengths are checked before anything else.
    const n = colon - ls;
    if (n === 14 && nameIs(buf, ls, colon, 'content-length')) {
      const value = contentLength(buf, colon + 1, le);
      if (value < 0) throw new Error('invalid Content-Length in the response');
      if (length >= 0 && value !== length) throw new Error('conflicting Content-Length in the response');
      length = value;
    } else if (n === 17 && nameIs(buf, ls, colon, 'transfer-encoding')) {
      transferEncoding = true;
      const codings = buf.toString('latin1', colon + 1, le).split(',');
      chunked = codings[codings.length - 1]!.replace(/^[ \t]+|[ \t]+$/g, '').toLowerCase() === 'chunked';
    } else if (n === 10 && nameIs(buf, ls, colon, 'connection')) {
      connection |= connectionTokens(buf, colon + 1, le);
    }
    ls = le + 2;
  }
  const close = minorDigit === 0 ? !(connection & TOKEN_KEEP_ALIVE) : !!(connection & TOKEN_CLOSE);
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

/** A response head as text (without the blank line that ends it). */
export function parseResponseHead(head: string, requestMethod: string): ResponseHead {
  const buf = Buffer.from(`${head}\r\n\r\n`, 'latin1');
  return parseResponseHeadBytes(buf, 0, buf.length - 4, requestMethod);
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
  403: 'Forbidden',
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
