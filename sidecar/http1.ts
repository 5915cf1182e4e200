/**
 * Just enough HTTP/1.x for a relaying proxy: a request head parser that rewrites the identity headers and
 * finds the body's framing, a response head parser that finds the response's framing, and a chunked-body
 * tracker that finds where a chunked body ends without copying it. Strict where a lenient reading could
 * make the sidecar and the upstream disagree about where a request ends (request smuggling): obs-fold,
 * whitespace before a colon, bare CR/LF, both Content-Length and Transfer-Encoding, bad chunk sizes, sloppy
 * trailers, whitespace other than SP/HTAB around a length or coding. The upstream connection belongs to one
 * client connection, so a smuggled request would carry whatever identity headers the client wrote itself:
 * those are stripped here (also in their underscore spelling), and h2c upgrades are refused.
 *
 * What goes upstream is re-serialised from what was parsed, never bytes the sidecar did not understand: the
 * request line (HTTP/1.0 or 1.1 only), the framing it decided (one Content-Length, or Transfer-Encoding:
 * chunked with the body re-chunked: sizes re-written, extensions and trailers dropped), its own Connection
 * and Upgrade lines in place of the client's hop-by-hop headers (RFC 9110 7.6.1), and the other header lines
 * as written, which the parser has checked.
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
  /**
   * Byte ranges [from, to) of the client's header lines (each with its CRLF) that are not forwarded as
   * written, in order: identity headers, framing headers (re-stated in `extra`), hop-by-hop headers.
   */
  drops: number[];
  /** Header lines (each with CRLF) the sidecar states itself from what it parsed: framing, connection, TE. */
  extra: string;
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

/** A hex digit's value by byte, -1 for other bytes. */
const HEX = new Int8Array(256).fill(-1);
for (let d = 0; d < 16; d++) {
  HEX['0123456789abcdef'.charCodeAt(d)] = d;
  HEX['0123456789ABCDEF'.charCodeAt(d)] = d;
}

/** The bytes of a host name or IPv4 address (RFC 3986 unreserved, no percent-encoding or sub-delims). */
const REG_NAME = new Uint8Array(256);
for (const c of '-._~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ') REG_NAME[c.charCodeAt(0)] = 1;

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
export const IDENTITY_HEADERS = ['x-forwarded-client-cert', 'x-client-verify', 'x-forwarded-proto', 'x-forwarded-for'];
const isIdentityHeader = (buf: Buffer, from: number, to: number) =>
  IDENTITY_HEADERS.some((name) => nameIs(buf, from, to, name, true));

/** [from, to) with SP/HTAB trimmed at both ends (RFC 9110 5.6.3: optional whitespace is only those two). */
function trimOws(buf: Buffer, from: number, to: number): [number, number] {
  while (from < to && (buf[from] === SP || buf[from] === HTAB)) from++;
  while (to > from && (buf[to - 1] === SP || buf[to - 1] === HTAB)) to--;
  return [from, to];
}

/** A Content-Length value: digits only, at most 15 of them after leading zeros. -1 if it is not one. */
function contentLength(buf: Buffer, from: number, to: number): number {
  [from, to] = trimOws(buf, from, to);
  if (to === from) return -1;
  while (to - from > 1 && buf[from] === 48) from++;
  if (to - from > 15) return -1;
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
const TOKEN_FRAMING = 16;
const TOKEN_OTHER = 32;

/** Hop-by-hop headers (RFC 9110 7.6.1) the sidecar always removes, whether Connection names them or not. */
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade'];

/**
 * The Connection tokens of buf[from, to) that matter here, as a bit set; TOKEN_OTHER for any other token (a
 * header the client marked hop-by-hop, to be removed: see dropConnectionNamed). `named`, when given, collects
 * those other tokens, lower-cased.
 */
function connectionTokens(buf: Buffer, from: number, to: number, named?: string[]): number {
  let bits = 0;
  while (from < to) {
    let comma = buf.indexOf(COMMA, from);
    if (comma < 0 || comma > to) comma = to;
    const [a, b] = trimOws(buf, from, comma);
    if (nameIs(buf, a, b, 'close')) bits |= TOKEN_CLOSE;
    else if (nameIs(buf, a, b, 'keep-alive')) bits |= TOKEN_KEEP_ALIVE;
    else if (nameIs(buf, a, b, 'upgrade')) bits |= TOKEN_UPGRADE;
    else if (isIdentityHeader(buf, a, b)) bits |= TOKEN_IDENTITY;
    else if (nameIs(buf, a, b, 'content-length') || nameIs(buf, a, b, 'transfer-encoding') || nameIs(buf, a, b, 'host'))
      bits |= TOKEN_FRAMING;
    else if (b > a) {
      bits |= TOKEN_OTHER;
      named?.push(buf.toString('latin1', a, b).toLowerCase());
    }
    from = comma + 1;
  }
  return bits;
}

/**
 * Whether a Host value (OWS-trimmed) is a uri-host with an optional port (RFC 9110 7.2, RFC 3986 3.2.2):
 * a name or IPv4 address of letters, digits, '-', '.', '_', '~', or an IPv6 literal in brackets. No
 * userinfo, path, query, whitespace or percent-encoding: an upstream that splits them differently would
 * route or authorise on another host.
 */
export function validHost(buf: Buffer, from: number, to: number): boolean {
  [from, to] = trimOws(buf, from, to);
  let i = from;
  if (buf[i] === 0x5b) {
    i++;
    while (i < to && (HEX[buf[i]!]! >= 0 || buf[i] === COLON || buf[i] === 0x2e)) i++;
    if (i === from + 1 || buf[i] !== 0x5d) return false;
    i++;
  } else {
    while (i < to && REG_NAME[buf[i]!]) i++;
    if (i === from) return false;
  }
  if (i === to) return true;
  if (buf[i] !== COLON) return false;
  for (i++; i < to; i++) if (buf[i]! < 48 || buf[i]! > 57) return false;
  return true;
}

/**
 * Whether buf[from, to), a request target not starting with "/", is one of the other forms of RFC 9112 3.2 the
 * sidecar forwards: "*" (asterisk-form; OPTIONS only, checked by the caller) or absolute-form, a scheme then "://"
 * (as llhttp reads it). Anything else ("!", a relative path) is refused: the upstream may reject it or read it as
 * something other than what the sidecar forwarded.
 */
function otherTargetForm(buf: Buffer, from: number, to: number): boolean {
  if (to - from === 1) return buf[from] === 0x2a;
  const b = buf[from]! | 0x20;
  if (b < 0x61 || b > 0x7a) return false;
  let i = from + 1;
  // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
  for (; i < to; i++) {
    const c = buf[i]!;
    const letter = (c | 0x20) >= 0x61 && (c | 0x20) <= 0x7a;
    if (!letter && !(c >= 48 && c <= 57) && c !== 0x2b && c !== 0x2d && c !== 0x2e) break;
  }
  return startsWith(buf, i, '://') && i + 3 < to;
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
  const targetEnd = i;
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
  // HTTP/1.2-1.9 do not exist: reading them as 1.1 would forward a version the sidecar did not understand.
  if (major !== 1 || minorDigit > 1) throw new HttpError(505, `HTTP/${major}.${minorDigit} is not supported`);
  if (method === 'CONNECT') throw new HttpError(405, 'CONNECT is not supported');
  if (buf[targetStart] !== 0x2f && !otherTargetForm(buf, targetStart, targetEnd))
    throw new HttpError(400, 'invalid request target (a path starting with "/", an absolute URI, or * for OPTIONS)');
  if (target === '*' && method !== 'OPTIONS') throw new HttpError(400, 'request target * is for OPTIONS only');
  const minor = minorDigit;
  if (lines - 1 > MAX_HEADER_LINES) throw new HttpError(431, `more than ${MAX_HEADER_LINES} header lines`);

  let length = -1;
  /** The client's (first) Content-Length line is forwarded as written. */
  let lengthKept = false;
  /** Transfer codings of all Transfer-Encoding lines, in order (several lines form one list). */
  let codings: string[] | undefined;
  /** Upgrade protocols, h2c left out; undefined without an Upgrade header. */
  let protocols: string[] | undefined;
  let h2c = false;
  let teTrailers = false;
  let emptyCoding = false;
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
    // Framing and hop-by-hop lines are left out (drop = true) and re-stated from what was parsed.
    let drop = false;
    switch (n - ls) {
      case 14:
        if (nameIs(buf, ls, n, 'content-length')) {
          const value = contentLength(buf, vs, le);
          if (value < 0) throw new HttpError(400, 'invalid Content-Length');
          if (length >= 0 && value !== length) throw new HttpError(400, 'conflicting Content-Length headers');
          // The first line goes on as written when it already says just the number; otherwise (leading zeros)
          // it is re-stated, and a repeated line is dropped (RFC 9110 8.6).
          const [a] = trimOws(buf, vs, le);
          if (length < 0 && (buf[a] !== 48 || (value === 0 && buf[a + 1] !== 48))) lengthKept = true;
          else drop = true;
          length = value;
        }
        break;
      case 17:
        if (nameIs(buf, ls, n, 'transfer-encoding')) {
          const list = lowerList(buf, vs, le);
          // An empty element (",chunked", "chunked,", an empty line): RFC 9110 5.6.1 lets a recipient ignore it,
          // but nginx refuses the request, and a proxy before or after the sidecar may read it as another coding.
          if (list.length === 0 || list.length !== buf.toString('latin1', vs, le).split(',').length) emptyCoding = true;
          (codings ??= []).push(...list);
          drop = true;
        }
        break;
      case 10:
        if (nameIs(buf, ls, n, 'connection')) {
          connection |= connectionTokens(buf, vs, le);
          drop = true;
        } else drop = nameIs(buf, ls, n, 'keep-alive');
        break;
      case 16:
        drop = nameIs(buf, ls, n, 'proxy-connection');
        break;
      case 2:
        if (nameIs(buf, ls, n, 'te')) {
          teTrailers ||= lowerList(buf, vs, le).some((c) => c === 'trailers' || c.startsWith('trailers;'));
          drop = true;
        }
        break;
      case 7:
        if (nameIs(buf, ls, n, 'upgrade')) {
          protocols ??= [];
          for (const p of buf.toString('latin1', vs, le).split(',')) {
            const protocol = p.replace(/^[ \t]+|[ \t]+$/g, '');
            if (!protocol) continue;
            if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+(\/[!#$%&'*+\-.^_`|~0-9A-Za-z]+)?$/.test(protocol))
              throw new HttpError(400, 'invalid Upgrade header');
            // h2c (RFC 7540 3.2, cleartext only): behind a tunnel the client would speak HTTP/2 to the
            // upstream, past the identity-header rewrite. Over TLS it has no legitimate use: left out.
            if (/^h2c(\/|$)/i.test(protocol)) h2c = true;
            else protocols.push(protocol);
          }
          drop = true;
        }
        break;
      case 4:
        if (nameIs(buf, ls, n, 'host')) {
          if (++hosts > 1) throw new HttpError(400, 'more than one Host header');
          if (!validHost(buf, vs, le))
            throw new HttpError(400, 'invalid Host header (a host name or address, and an optional port)');
        }
        break;
    }
    if (drop) drops.push(ls, le + 2);
    else if ((n - ls === 15 || n - ls === 17 || n - ls === 23) && isIdentityHeader(buf, ls, n)) {
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
    if (emptyCoding)
      throw new HttpError(400, 'Transfer-Encoding with an empty list element or line (send "chunked" alone)');
    chunked = codings.indexOf('chunked') === codings.length - 1;
    if (!chunked) throw new HttpError(400, 'Transfer-Encoding must end with chunked');
    // Other codings (gzip, chunked) are refused as nginx refuses them: only chunked is forwarded.
    if (codings.length > 1)
      throw new HttpError(501, `Transfer-Encoding "${codings.join(', ')}" is not implemented (only chunked)`);
  }
  if (hosts === 0 && minor === 1) throw new HttpError(400, 'no Host header in an HTTP/1.1 request');
  // An upstream that is itself a proxy would remove the headers Connection names: the identity headers
  // must reach the service behind it.
  if (connection & TOKEN_IDENTITY) throw new HttpError(400, 'Connection names an identity header');
  // Removing them as hop-by-hop would change how the request is framed or routed.
  if (connection & TOKEN_FRAMING) throw new HttpError(400, 'Connection names a framing header or Host');
  if (connection & TOKEN_OTHER) dropConnectionNamed(buf, lineEnd + 2, end, drops);
  if (h2c && protocols!.length === 0) throw new HttpError(400, 'h2c upgrade is not supported');
  const keepAlive = minor === 1 ? !(connection & TOKEN_CLOSE) : !!(connection & TOKEN_KEEP_ALIVE);
  const upgrade = !!protocols?.length && !!(connection & TOKEN_UPGRADE);
  return {
    method,
    target,
    minor,
    body: chunked ? BODY_CHUNKED : length > 0 ? BODY_LENGTH : BODY_NONE,
    length: Math.max(length, 0),
    keepAlive,
    upgrade,
    lineEnd,
    drops,
    extra: drops.length
      ? restated(chunked, lengthKept ? -1 : length, minor, keepAlive, upgrade ? protocols! : null, teTrailers)
      : '',
    forwardedFor,
  };
}

/**
 * The header lines the sidecar writes in place of the framing and hop-by-hop lines it removed: one
 * Content-Length (`length` -1 when the client's own line is kept) or `Transfer-Encoding: chunked`, its own Connection for the upstream hop, the Upgrade it
 * tunnels, and `TE: trailers` when the client accepts trailers in the response.
 */
function restated(
  chunked: boolean,
  length: number,
  minor: number,
  keepAlive: boolean,
  upgrade: string[] | null,
  teTrailers: boolean,
): string {
  // The usual cases, without building a string.
  if (!chunked && length < 0 && !upgrade && !teTrailers)
    return minor === 1 ? (keepAlive ? '' : 'connection: close\r\n') : keepAlive ? 'connection: keep-alive\r\n' : '';
  let extra = chunked ? 'transfer-encoding: chunked\r\n' : length >= 0 ? `content-length: ${length}\r\n` : '';
  if (upgrade) extra += `connection: upgrade\r\nupgrade: ${upgrade.join(', ')}\r\n`;
  else if (minor === 1 && !keepAlive) extra += 'connection: close\r\n';
  else if (minor === 0 && keepAlive) extra += 'connection: keep-alive\r\n';
  if (teTrailers) extra += 'te: trailers\r\n';
  return extra;
}

/** The name of the header line at `ls` ending at `le` is one of `names` (lower-case). */
function lineNamed(buf: Buffer, ls: number, le: number, names: string[]): boolean {
  const colon = buf.indexOf(COLON, ls);
  return colon > ls && colon < le && names.some((name) => nameIs(buf, ls, colon, name));
}

/**
 * Adds to `drops` (kept in order) the header lines of buf[from, end) that the Connection lines name (RFC 9110
 * 7.6.1). Runs only for a Connection header that names something besides close, keep-alive and upgrade.
 */
function dropConnectionNamed(buf: Buffer, from: number, end: number, drops: number[]): void {
  const lines: [number, number][] = [];
  for (let ls = from; ls < end + 2;) {
    let le = buf.indexOf(CR, ls);
    if (le < 0 || le > end) le = end;
    lines.push([ls, le]);
    ls = le + 2;
  }
  const named: string[] = [];
  for (const [ls, le] of lines)
    if (lineNamed(buf, ls, le, ['connection'])) connectionTokens(buf, buf.indexOf(COLON, ls) + 1, le, named);
  const others = named.filter((name) => !HOP_BY_HOP.includes(name));
  const ranges: [number, number][] = [];
  for (let i = 0; i < drops.length; i += 2) ranges.push([drops[i]!, drops[i + 1]!]);
  for (const [ls, le] of lines)
    if (lineNamed(buf, ls, le, others) && !ranges.some(([a]) => a === ls)) ranges.push([ls, le + 2]);
  ranges.sort((a, b) => a[0] - b[0]);
  drops.length = 0;
  for (const [a, b] of ranges) drops.push(a, b);
}

/**
 * The head forwarded upstream, re-serialised from what was parsed: the request line, `block` (the sidecar's
 * identity lines: first, so an upstream that reads only so many headers still gets them), the re-stated
 * framing and connection lines, then the client's other header lines as written, and the blank line. Built
 * as bytes with a few copies: no string per line.
 */
export function upstreamHeadBytes(buf: Buffer, end: number, head: RequestHead, block: Buffer): Buffer {
  const lineTo = head.lineEnd + 2;
  const headTo = end + 4;
  let dropped = 0;
  for (let i = 0; i < head.drops.length; i += 2) dropped += head.drops[i + 1]! - head.drops[i]!;
  const out = Buffer.allocUnsafe(headTo + block.length + head.extra.length - dropped);
  let at = buf.copy(out, 0, 0, lineTo);
  at += block.copy(out, at);
  if (head.extra) at += out.write(head.extra, at, 'latin1');
  let from = lineTo;
  for (let i = 0; i < head.drops.length; i += 2) {
    at += buf.copy(out, at, from, head.drops[i]);
    from = head.drops[i + 1]!;
  }
  buf.copy(out, at, from, headTo);
  return out;
}

/**
 * Whether the bytes of an incomplete head from `from` on hold a bare LF, or a CR followed by something
 * other than LF: such a head can never be accepted, so it is refused at once rather than at the headers
 * timeout. A CR at the very end may still be followed by its LF.
 */
export function bareLineBreak(buf: Buffer, from: number): boolean {
  for (let i = buf.indexOf(LF, from); i >= 0; i = buf.indexOf(LF, i + 1)) if (i === 0 || buf[i - 1] !== CR) return true;
  for (let i = buf.indexOf(CR, from); i >= 0 && i + 1 < buf.length; i = buf.indexOf(CR, i + 1))
    if (buf[i + 1] !== LF) return true;
  return false;
}

/** A request head as text (without the blank line that ends it), and what would be forwarded of it. */
export function parseRequestHead(head: string): RequestHead & { kept: string } {
  const buf = Buffer.from(`${head}\r\n\r\n`, 'latin1');
  const parsed = parseRequestHeadBytes(buf, 0, buf.length - 4);
  const forwarded = upstreamHeadBytes(buf, buf.length - 4, parsed, Buffer.alloc(0));
  return { ...parsed, kept: forwarded.toString('latin1').replace(/(\r\n)+$/, '') };
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
const SIZE_WS = 12;

/** The largest chunk size taken: 12 hex digits, leading zeros aside. */
const MAX_CHUNK_SIZE = 2 ** 48 - 1;
const MAX_LINE = 4096;
const MAX_TRAILERS = 16 * 1024;
const CRLF_BYTES = Buffer.from('\r\n');
const LAST_CHUNK = Buffer.from('0\r\n\r\n');

/**
 * Follows a chunked body as it streams by, without copying it: `feed` says where the body ends (the
 * offset just past the final CRLF) or -1 when the buffer ended first. Throws HttpError(400) on bad framing.
 * Given `out`, it also re-serialises the body into it as it goes (the data as views of `buf`): sizes in
 * lower-case hex without leading zeros, no chunk extensions, no trailers (dropped, as nginx drops them:
 * an upstream that merged them into the headers would read forged identity or framing fields).
 */
export class ChunkedBody {
  private state = SIZE;
  private size = 0;
  private digits = 0;
  private line = 0;
  private trailers = 0;

  feed(buf: Buffer, start: number, out?: Buffer[]): number {
    let i = start;
    const n = buf.length;
    while (i < n) {
      const state = this.state;
      if (state === DATA) {
        const take = Math.min(this.size, n - i);
        if (out) out.push(buf.subarray(i, i + take));
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
            // Leading zeros do not count against the size limit, only against the line's.
            if (++this.digits > MAX_LINE) throw new HttpError(400, 'chunk size line too long');
            this.size = this.size * 16 + v;
            if (this.size > MAX_CHUNK_SIZE) throw new HttpError(400, 'chunk size too large');
          } else if (this.digits > 0 && c === 13) {
            this.state = SIZE_LF;
          } else if (this.digits > 0 && c === 59) {
            this.state = EXTENSION;
            this.line = 0;
          } else if (this.digits > 0 && (c === 32 || c === 9)) {
            this.state = SIZE_WS;
            this.line = 0;
          } else {
            throw new HttpError(400, 'invalid chunk size');
          }
          break;
        }
        // RFC 9112 7.1.1: whitespace after the size only before a ';' extension ("1 0", "a " are not sizes).
        case SIZE_WS:
          if (c === 59) this.state = EXTENSION;
          else if ((c !== 32 && c !== 9) || ++this.line > MAX_LINE)
            throw new HttpError(400, 'invalid chunk size (only ";" extensions may follow it)');
          break;
        case EXTENSION:
          if (c === 13) this.state = SIZE_LF;
          else if ((c < 32 && c !== 9) || c === 127 || ++this.line > MAX_LINE)
            throw new HttpError(400, 'invalid chunk extension');
          break;
        case SIZE_LF:
          if (c !== 10) throw new HttpError(400, 'chunk size line must end with CRLF');
          this.digits = 0;
          this.state = this.size === 0 ? TRAILER_START : DATA;
          if (out && this.size > 0) out.push(Buffer.from(`${this.size.toString(16)}\r\n`, 'latin1'));
          break;
        case DATA_CR:
          if (c !== 13) throw new HttpError(400, 'chunk data must end with CRLF');
          this.state = DATA_LF;
          break;
        case DATA_LF:
          if (c !== 10) throw new HttpError(400, 'chunk data must end with CRLF');
          this.state = SIZE;
          if (out) out.push(CRLF_BYTES);
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
          if (out) out.push(LAST_CHUNK);
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

/**
 * Where a message body ends, for requests and responses alike (RFC 9112 6.3), from the framing its head decided:
 * none, a length, chunked, or (responses only) until the connection closes. The one place body framing is
 * followed: `end` takes the bytes as they arrive.
 */
export class BodyFraming {
  readonly kind: BodyKind;
  /** BODY_LENGTH: bytes of the body still to come. */
  private left: number;
  private readonly chunks: ChunkedBody | null;

  constructor(kind: BodyKind, length: number) {
    this.kind = kind;
    this.left = kind === BODY_LENGTH ? length : 0;
    this.chunks = kind === BODY_CHUNKED ? new ChunkedBody() : null;
  }

  /**
   * The offset in `buf` just past the body's end, the body continuing from `at`; -1 when all of buf[at..] is
   * body and more is to come. Given `out`, what goes on of buf[at..end) is appended to it: a length's bytes as
   * they are, a chunked body re-serialised (see ChunkedBody). Throws HttpError(400) on bad chunked framing.
   */
  end(buf: Buffer, at: number, out?: Buffer[]): number {
    switch (this.kind) {
      case BODY_NONE:
        return at;
      case BODY_LENGTH: {
        const available = buf.length - at;
        const end = this.left > available ? -1 : at + this.left;
        this.left = end < 0 ? this.left - available : 0;
        const to = end < 0 ? buf.length : end;
        if (out && to > at) out.push(at === 0 && to === buf.length ? buf : buf.subarray(at, to));
        return end;
      }
      case BODY_CHUNKED:
        return this.chunks!.feed(buf, at, out);
      case BODY_UNTIL_CLOSE:
        if (out && at < buf.length) out.push(at === 0 ? buf : buf.subarray(at));
        return -1;
    }
  }
}

/** The framing of every body-less message: it holds no state, so one object serves them all. */
export const NO_BODY = new BodyFraming(BODY_NONE, 0);

/** The framing of a message whose head says `kind` (and `length`, for BODY_LENGTH). */
export const bodyFraming = (kind: BodyKind, length: number): BodyFraming =>
  kind === BODY_NONE ? NO_BODY : new BodyFraming(kind, length);

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
