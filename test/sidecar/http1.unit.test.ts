import {
  BODY_CHUNKED,
  BODY_LENGTH,
  BODY_NONE,
  BODY_UNTIL_CLOSE,
  BodyFraming,
  ChunkedBody,
  bareLineBreak,
  errorResponse,
  HttpError,
  parseRequestHead,
  parseResponseHead,
} from '../../sidecar/http1.ts';
import { prng, SEED } from '../reliability/support.ts';

/**
 * Unit tests of the sidecar's HTTP/1.x parsing (sidecar/http1.ts). The sidecar keeps one upstream connection
 * per client connection, so a request the sidecar and the upstream frame differently lets a client smuggle a
 * second request past the identity-header rewrite (a forged X-Client-Verify / X-Forwarded-Client-Cert). Every
 * ambiguous form is therefore refused, never "repaired".
 */

/** A request head as the forwarding path hands it over: lines joined by CRLF, without the blank line. */
const head = (...lines: string[]) => lines.join('\r\n');
const GET = (...headers: string[]) => head('GET / HTTP/1.1', 'Host: a', ...headers);
const POST = (...headers: string[]) => head('POST /upload HTTP/1.1', 'Host: a', ...headers);

function refusal(text: string): HttpError | undefined {
  try {
    parseRequestHead(text);
    return undefined;
  } catch (err) {
    if (!(err instanceof HttpError)) throw err;
    return err;
  }
}

/** Asserts that the head is refused with `status` (and a message matching `why`, when given). */
function expectRefused(text: string, status: number, why?: RegExp): void {
  const err = refusal(text);
  if (!err) throw new Error(`accepted, expected ${status}: ${JSON.stringify(text)}`);
  expect(err.status).toBe(status);
  if (why) expect(err.message).toMatch(why);
}

describe('parseRequestHead: the request line', () => {
  it('reads method, target and version', () => {
    const h = parseRequestHead(head('DELETE /a/b?c=d%20e HTTP/1.1', 'Host: x'));
    expect(h).toMatchObject({ method: 'DELETE', target: '/a/b?c=d%20e', minor: 1, body: BODY_NONE, length: 0 });
    expect(parseRequestHead(head('OPTIONS * HTTP/1.1', 'Host: x')).target).toBe('*');
    expect(parseRequestHead(head('GET http://a.example/x HTTP/1.1', 'Host: a.example')).target).toBe(
      'http://a.example/x',
    );
    expect(parseRequestHead('GET / HTTP/1.0').minor).toBe(0);
    expect(parseRequestHead(head('GET h2+x.y-z://a/x HTTP/1.1', 'Host: a')).target).toBe('h2+x.y-z://a/x');
  });

  // http-garden TROPHIES server bug 7 ("GET ! HTTP/1.1"): forwarded, and refused by the upstream's llhttp.
  it.each([
    ['a bare "!"', 'GET ! HTTP/1.1'],
    ['a relative path', 'GET a/b HTTP/1.1'],
    ['a scheme without "//"', 'GET http:a HTTP/1.1'],
    ['a scheme and nothing else', 'GET http:// HTTP/1.1'],
    ['a scheme starting with a digit', 'GET 1http://a/ HTTP/1.1'],
    ['* for GET', 'GET * HTTP/1.1'],
    ['** for OPTIONS', 'OPTIONS ** HTTP/1.1'],
  ])('refuses a request target that is no form of RFC 9112 3.2 (%s) with 400', (_name, line) => {
    expectRefused(head(line, 'Host: a'), 400, /request target/);
  });

  it.each([
    ['two spaces', 'GET  / HTTP/1.1'],
    ['a tab as separator', 'GET\t/ HTTP/1.1'],
    ['lower-case protocol', 'GET / http/1.1'],
    ['no version', 'GET /'],
    ['trailing space', 'GET / HTTP/1.1 '],
    ['leading space', ' GET / HTTP/1.1'],
    ['space in the target', 'GET /a b HTTP/1.1'],
    ['two-digit version', 'GET / HTTP/1.10'],
    ['no target', 'GET HTTP/1.1'],
    ['method with a separator', 'GE(T / HTTP/1.1'],
    ['empty', ''],
  ])('refuses a malformed request line (%s) with 400', (_name, line) => {
    expectRefused(head(line, 'Host: a'), 400);
  });

  it('refuses HTTP/2.0 (and the HTTP/2 connection preface), HTTP/0.9 and HTTP/3.0 with 505', () => {
    expectRefused(head('GET / HTTP/2.0', 'Host: a'), 505, /HTTP\/2\.0/);
    expectRefused('PRI * HTTP/2.0', 505);
    expectRefused('GET / HTTP/0.9', 505);
    expectRefused(head('GET / HTTP/3.0', 'Host: a'), 505);
  });

  it('refuses CONNECT with 405 (the sidecar is no tunnel to anywhere)', () => {
    expectRefused(head('CONNECT internal.example:443 HTTP/1.1', 'Host: internal.example:443'), 405);
  });
});

describe('parseRequestHead: body framing (request smuggling)', () => {
  it('Content-Length gives a fixed-length body; 0 or absent gives none', () => {
    expect(parseRequestHead(POST('Content-Length: 12'))).toMatchObject({ body: BODY_LENGTH, length: 12 });
    expect(parseRequestHead(POST('Content-Length: 0'))).toMatchObject({ body: BODY_NONE, length: 0 });
    expect(parseRequestHead(POST())).toMatchObject({ body: BODY_NONE, length: 0 });
    expect(parseRequestHead(POST('content-length:\t7 '))).toMatchObject({ body: BODY_LENGTH, length: 7 });
    expect(parseRequestHead(POST('Content-Length: 999999999999999')).length).toBe(999_999_999_999_999);
  });

  it('accepts a repeated identical Content-Length, refuses conflicting ones', () => {
    expect(parseRequestHead(POST('Content-Length: 5', 'Content-Length: 5'))).toMatchObject({ length: 5 });
    expectRefused(POST('Content-Length: 5', 'Content-Length: 6'), 400, /conflicting/);
    expectRefused(POST('Content-Length: 0', 'Content-Length: 6'), 400, /conflicting/);
    expectRefused(POST('Content-Length: 06', 'Content-Length: 6 ', 'Content-Length: 7'), 400);
  });

  it.each([
    ['a list', '5, 5'],
    ['a list of different values', '5,6'],
    ['a sign', '+5'],
    ['a negative value', '-1'],
    ['hex', '0x10'],
    ['two numbers', '5 5'],
    ['an empty value', ''],
    ['a fraction', '5.0'],
    ['16 digits (beyond 2^53 territory)', '1234567890123456'],
    ['a unit', '5 bytes'],
    ['a vertical tab', '5\x0b'],
    ['a form feed', '\x0c5'],
    ['a no-break space after it', '5\xa0'],
    ['a no-break space before it', '\xa05'],
  ])('refuses an invalid Content-Length (%s) with 400', (_name, value) => {
    expectRefused(POST(`Content-Length: ${value}`), 400);
  });

  it('Transfer-Encoding: chunked gives a chunked body (other codings before it: 501, see issue 19 below)', () => {
    expect(parseRequestHead(POST('Transfer-Encoding: chunked')).body).toBe(BODY_CHUNKED);
    expect(parseRequestHead(POST('transfer-encoding:  Chunked\t')).body).toBe(BODY_CHUNKED);
  });

  it('refuses Content-Length together with Transfer-Encoding, in either order (CL.TE / TE.CL)', () => {
    expectRefused(POST('Content-Length: 4', 'Transfer-Encoding: chunked'), 400, /both/);
    expectRefused(POST('Transfer-Encoding: chunked', 'Content-Length: 4'), 400, /both/);
    expectRefused(POST('Transfer-Encoding: chunked', 'Content-Length: 0'), 400, /both/);
  });

  it.each([
    ['chunked not last', 'chunked, gzip'],
    ['no chunked at all', 'gzip'],
    ['identity', 'identity'],
    ['chunked twice in one header', 'chunked, chunked'],
    ['an empty value', ''],
    ['only commas', ' , ,'],
    ['a look-alike', 'xchunked'],
    ['a quoted chunked', '"chunked"'],
    ['chunked with a parameter', 'chunked;q=1'],
    ['a vertical tab before chunked', '\x0bchunked'],
    ['a no-break space after chunked', 'chunked\xa0'],
    ['a no-break space before chunked', '\xa0chunked'],
  ])('refuses a Transfer-Encoding that does not end in a clean chunked (%s) with 400', (_name, value) => {
    expectRefused(POST(`Transfer-Encoding: ${value}`), 400);
  });

  it('refuses chunked applied twice across two Transfer-Encoding headers', () => {
    expectRefused(POST('Transfer-Encoding: chunked', 'Transfer-Encoding: chunked'), 400);
    expectRefused(POST('Transfer-Encoding: chunked', 'Transfer-Encoding: gzip'), 400);
  });

  it('refuses Transfer-Encoding in an HTTP/1.0 request (RFC 9112 6.1)', () => {
    expectRefused(head('POST / HTTP/1.0', 'Transfer-Encoding: chunked'), 400, /HTTP\/1\.0/);
    expect(parseRequestHead(head('POST / HTTP/1.0', 'Content-Length: 3'))).toMatchObject({ body: BODY_LENGTH });
  });
});

describe('parseRequestHead: header syntax', () => {
  it('refuses obs-fold (a line starting with SP or HTAB)', () => {
    expectRefused(GET('X-A: 1', ' folded'), 400);
    expectRefused(GET('X-A: 1', '\tfolded'), 400);
    expectRefused(POST('Transfer-Encoding: gzip,', ' chunked'), 400);
    expectRefused(GET('X-A: 1', ' X-Client-Verify: SUCCESS'), 400);
  });

  it('refuses whitespace between a header name and its colon', () => {
    expectRefused(POST('Transfer-Encoding : chunked'), 400, /header name/);
    expectRefused(POST('Content-Length\t: 5'), 400, /header name/);
    expectRefused(GET('X-Client-Verify : SUCCESS'), 400);
  });

  it.each([
    ['no colon', 'NoColon'],
    ['an empty name', ': value'],
    ['a space inside the name', 'X A: 1'],
    ['a quote in the name', 'X"A: 1'],
    ['a non-ASCII name', 'X-\xe9: 1'],
    ['a slash in the name', 'X/A: 1'],
  ])('refuses a malformed header line (%s)', (_name, line) => {
    expectRefused(GET(line), 400);
  });

  it.each([
    ['a bare CR in a value', GET('X-A: 1\r2')],
    ['a bare LF in a value', GET('X-A: 1\n2')],
    ['a bare LF as the line end', head('GET / HTTP/1.1\nHost: a')],
    ['a bare CR as the line end', head('GET / HTTP/1.1\rHost: a')],
    ['a NUL in a value', GET('X-A: 1\x002')],
    ['a NUL in the target', head('GET /\x00 HTTP/1.1', 'Host: a')],
    ['a DEL in a value', GET('X-A: \x7f')],
    ['an ESC in a value', GET('X-A: \x1b[31m')],
    ['a vertical tab in a value', GET('X-A: \x0b')],
    ['a NUL in a header name', GET('X-\x00A: 1')],
  ])('refuses control characters and bare CR/LF (%s)', (_name, text) => {
    expectRefused(text, 400, /control character|bare CR/);
  });

  it('accepts HTAB and obs-text (bytes 0x80-0xFF) inside a value', () => {
    const h = parseRequestHead(GET('X-A: a\tb', 'X-B: caf\xe9'));
    expect(h.kept).toContain('X-B: caf\xe9');
  });

  it('refuses a second Host header, and an HTTP/1.1 request without one (RFC 9112 3.2)', () => {
    expectRefused(head('GET / HTTP/1.1', 'Host: a', 'Host: b'), 400, /Host/);
    expectRefused(head('GET / HTTP/1.1', 'X-A: 1'), 400, /Host/);
    expect(parseRequestHead('GET / HTTP/1.0').method).toBe('GET');
  });

  it('refuses a head with more header lines than an upstream keeps (identity headers appended after them would be lost)', () => {
    const many = Array.from({ length: 1_500 }, (_, i) => `a${i}:`);
    expectRefused(GET(...many), 431, /header/);
    expect(parseRequestHead(GET(...many.slice(0, 50))).method).toBe('GET');
  });
});

describe('parseRequestHead: identity headers', () => {
  const spoofed = [
    'X-Forwarded-Client-Cert: Hash=0;Subject="CN=admin"',
    'X-Client-Verify: SUCCESS',
    'X-Forwarded-Proto: http',
  ];

  it('removes X-Forwarded-Client-Cert, X-Client-Verify, X-Forwarded-Proto and X-Forwarded-For, in any case', () => {
    const h = parseRequestHead(
      GET('Accept: */*', ...spoofed, 'x-CLIENT-verify: SUCCESS', 'X-Forwarded-For: 10.0.0.1', 'X-Last: 1'),
    );
    expect(h.kept).toBe(head('GET / HTTP/1.1', 'Host: a', 'Accept: */*', 'X-Last: 1'));
    expect(h.kept).not.toMatch(/forwarded|verify/i);
  });

  it('removes the underscore spellings too (CGI, WSGI and PHP upstreams read them as the same header)', () => {
    const h = parseRequestHead(
      GET('X_Client_Verify: SUCCESS', 'x_forwarded_client_cert: Hash=0', 'X-Client_Verify: SUCCESS', 'X-Keep: 1'),
    );
    expect(h.kept).toBe(head('GET / HTTP/1.1', 'Host: a', 'X-Keep: 1'));
  });

  it('collects the client X-Forwarded-For values in order, comma-joined, empty ones skipped', () => {
    const h = parseRequestHead(
      GET('X-Forwarded-For: 10.0.0.1, 10.0.0.2', 'X-Forwarded-For:', 'x-forwarded-for: \t10.0.0.3 '),
    );
    expect(h.forwardedFor).toBe('10.0.0.1, 10.0.0.2, 10.0.0.3');
    expect(h.kept).toBe(GET());
    expect(parseRequestHead(GET()).forwardedFor).toBe('');
  });

  it('leaves the head untouched (same string) when there is nothing to remove', () => {
    const text = GET('Accept: */*', 'X-Forwarded-Host: a', 'Forwarded-Thing: 1');
    expect(parseRequestHead(text).kept).toBe(text);
  });

  it('refuses a Connection header that names an identity header (a proxying upstream would drop it)', () => {
    expectRefused(GET('Connection: keep-alive, X-Client-Verify'), 400, /identity header/);
    expectRefused(GET('Connection: x_forwarded_client_cert'), 400, /identity header/);
    expect(parseRequestHead(GET('Connection: keep-alive, X-Other')).keepAlive).toBe(true);
  });

  it('keeps the order of the remaining headers when identity headers sit between them', () => {
    const h = parseRequestHead(GET('A: 1', spoofed[0]!, 'B: 2', spoofed[1]!, 'C: 3'));
    expect(h.kept).toBe(GET('A: 1', 'B: 2', 'C: 3'));
  });
});

describe('parseRequestHead: connection management', () => {
  const ka = (text: string) => parseRequestHead(text).keepAlive;
  it('HTTP/1.1 is persistent unless Connection: close', () => {
    expect(ka(GET())).toBe(true);
    expect(ka(GET('Connection: close'))).toBe(false);
    expect(ka(GET('Connection: keep-alive, Close'))).toBe(false);
    expect(ka(GET('Connection: keep-alive', 'Connection: close'))).toBe(false);
    expect(ka(GET('Connection: closed'))).toBe(true);
  });

  it('HTTP/1.0 closes unless Connection: keep-alive', () => {
    expect(ka('GET / HTTP/1.0')).toBe(false);
    expect(ka(head('GET / HTTP/1.0', 'Connection: Keep-Alive'))).toBe(true);
    expect(ka(head('GET / HTTP/1.0', 'Connection: keep-alive, close'))).toBe(true);
  });

  it('an upgrade needs both Connection: upgrade and an Upgrade header', () => {
    expect(parseRequestHead(GET('Connection: Upgrade', 'Upgrade: websocket')).upgrade).toBe(true);
    expect(parseRequestHead(GET('Upgrade: websocket')).upgrade).toBe(false);
    expect(parseRequestHead(GET('Connection: upgrade')).upgrade).toBe(false);
  });

  it('refuses an h2c upgrade (HTTP/2 behind the tunnel would bypass the identity-header rewrite)', () => {
    expectRefused(GET('Connection: Upgrade, HTTP2-Settings', 'Upgrade: h2c', 'HTTP2-Settings: AAMAAABkAAQAAP__'), 400);
    expectRefused(GET('Connection: upgrade', 'Upgrade: H2C/1'), 400);
  });
});

describe('parseResponseHead: response framing (RFC 9112 6.3)', () => {
  const res = (...lines: string[]) => lines.join('\r\n');

  it('HEAD, 204, 304 and 1xx responses have no body whatever their headers say', () => {
    expect(parseResponseHead(res('HTTP/1.1 200 OK', 'Content-Length: 100'), 'HEAD')).toMatchObject({
      body: BODY_NONE,
      length: 0,
    });
    expect(parseResponseHead(res('HTTP/1.1 200 OK', 'Transfer-Encoding: chunked'), 'HEAD').body).toBe(BODY_NONE);
    expect(parseResponseHead(res('HTTP/1.1 204 No Content', 'Content-Length: 5'), 'DELETE').body).toBe(BODY_NONE);
    expect(parseResponseHead(res('HTTP/1.1 304 Not Modified', 'Content-Length: 5'), 'GET').body).toBe(BODY_NONE);
    expect(parseResponseHead('HTTP/1.1 100 Continue', 'POST')).toMatchObject({ status: 100, body: BODY_NONE });
    expect(parseResponseHead(res('HTTP/1.1 103 Early Hints', 'Link: </a>'), 'GET').body).toBe(BODY_NONE);
    expect(parseResponseHead(res('HTTP/1.1 101 Switching Protocols', 'Upgrade: websocket'), 'GET').body).toBe(
      BODY_NONE,
    );
  });

  it('Content-Length, chunked (which wins over Content-Length), and until-close bodies', () => {
    expect(parseResponseHead(res('HTTP/1.1 200 OK', 'Content-Length: 42'), 'GET')).toMatchObject({
      status: 200,
      body: BODY_LENGTH,
      length: 42,
      close: false,
    });
    expect(parseResponseHead(res('HTTP/1.1 200 OK', 'Content-Length: 0'), 'GET').body).toBe(BODY_NONE);
    expect(parseResponseHead(res('HTTP/1.1 200 OK', 'Transfer-Encoding: chunked'), 'GET').body).toBe(BODY_CHUNKED);
    expect(
      parseResponseHead(res('HTTP/1.1 200 OK', 'Content-Length: 9', 'Transfer-Encoding: gzip, chunked'), 'GET').body,
    ).toBe(BODY_CHUNKED);
    expect(parseResponseHead(res('HTTP/1.1 200 OK', 'Transfer-Encoding: gzip'), 'GET')).toMatchObject({
      body: BODY_UNTIL_CLOSE,
      close: true,
    });
    expect(parseResponseHead(res('HTTP/1.1 200 OK', 'X-A: 1'), 'GET')).toMatchObject({
      body: BODY_UNTIL_CLOSE,
      close: true,
    });
    expect(parseResponseHead('HTTP/1.1 500', 'GET')).toMatchObject({ status: 500, body: BODY_UNTIL_CLOSE });
  });

  it('keep-alive: HTTP/1.1 unless Connection: close, HTTP/1.0 only with Connection: keep-alive', () => {
    const close = (text: string) => parseResponseHead(text, 'GET').close;
    expect(close(res('HTTP/1.1 200 OK', 'Content-Length: 1'))).toBe(false);
    expect(close(res('HTTP/1.1 200 OK', 'Connection: close', 'Content-Length: 1'))).toBe(true);
    expect(close(res('HTTP/1.0 200 OK', 'Content-Length: 1'))).toBe(true);
    expect(close(res('HTTP/1.0 200 OK', 'Connection: keep-alive', 'Content-Length: 1'))).toBe(false);
    expect(close(res('HTTP/1.1 204 No Content', 'Connection: close'))).toBe(true);
  });

  it('throws on a malformed status line or conflicting lengths', () => {
    expect(() => parseResponseHead('HTTP/2 200', 'GET')).toThrow(/status line/);
    expect(() => parseResponseHead('HTTP/1.1 20 OK', 'GET')).toThrow(/status line/);
    expect(() => parseResponseHead('ICY 200 OK', 'GET')).toThrow(/status line/);
    expect(() => parseResponseHead(res('HTTP/1.1 200 OK', 'Content-Length: 1', 'Content-Length: 2'), 'GET')).toThrow(
      /conflicting/,
    );
    expect(() => parseResponseHead(res('HTTP/1.1 200 OK', 'Content-Length: -1'), 'GET')).toThrow(/Content-Length/);
    expect(() => parseResponseHead(res('HTTP/1.1 200 OK', 'Content-Length: 5\xa0'), 'GET')).toThrow(/Content-Length/);
    expect(() => parseResponseHead(res('HTTP/1.1 200 OK', 'no colon'), 'GET')).toThrow(/header line/);
  });
});

/** Feeds a whole buffer at once; returns the body end, -1, or the error message. */
function feedWhole(buf: Buffer): number | string {
  try {
    return new ChunkedBody().feed(buf, 0);
  } catch (err) {
    return `error: ${(err as Error).message}`;
  }
}

/** Feeds the buffer in pieces of the given sizes (1 = byte by byte); returns the end as an offset in `buf`. */
function feedPieces(buf: Buffer, sizes: () => number): number | string {
  const body = new ChunkedBody();
  try {
    for (let at = 0; at < buf.length;) {
      const size = Math.max(1, Math.min(sizes(), buf.length - at));
      const piece = buf.subarray(at, at + size);
      const end = body.feed(piece, 0);
      if (end >= 0) return at + end;
      at += size;
    }
    return -1;
  } catch (err) {
    return `error: ${(err as Error).message}`;
  }
}

const bytes = (text: string) => Buffer.from(text, 'latin1');

describe('ChunkedBody', () => {
  it('finds the end of a chunked body, and stops there (a pipelined request may follow)', () => {
    const body = '5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n';
    expect(feedWhole(bytes(body))).toBe(body.length);
    expect(feedWhole(bytes(body + 'GET /next HTTP/1.1\r\n'))).toBe(body.length);
    expect(feedWhole(bytes('5\r\nhel'))).toBe(-1);
    const tracker = new ChunkedBody();
    expect(tracker.done).toBe(false);
    expect(tracker.feed(bytes('0\r\n\r\nXYZ'), 0)).toBe(5);
    expect(tracker.done).toBe(true);
    // Fed again once done, it consumes nothing.
    expect(tracker.feed(bytes('XYZ'), 1)).toBe(1);
  });

  it('honours the start offset', () => {
    const buf = bytes('HEADER3\r\nabc\r\n0\r\n\r\n');
    expect(new ChunkedBody().feed(buf, 6)).toBe(buf.length);
  });

  it('accepts hex sizes in either case, leading zeros, extensions and trailers', () => {
    for (const body of [
      'A\r\n0123456789\r\n0\r\n\r\n',
      'a\r\n0123456789\r\n0\r\n\r\n',
      '00003\r\nabc\r\n0000\r\n\r\n',
      '3;name=value\r\nabc\r\n0;last\r\n\r\n',
      '3;name="quoted;value"\r\nabc\r\n0\r\n\r\n',
      '3 ;bws\r\nabc\r\n0\r\n\r\n',
      '3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-Other: caf\xe9\r\n\r\n',
    ]) {
      expect([body, feedWhole(bytes(body))]).toEqual([body, body.length]);
    }
  });

  it.each([
    ['an empty size line', '\r\nabc\r\n0\r\n\r\n', /chunk size/],
    ['a negative size', '-3\r\nabc\r\n0\r\n\r\n', /chunk size/],
    ['a 0x prefix', '0x3\r\nabc\r\n0\r\n\r\n', /chunk size/],
    ['a non-hex digit', '3g\r\nabc\r\n0\r\n\r\n', /chunk size/],
    ['a leading space', ' 3\r\nabc\r\n0\r\n\r\n', /chunk size/],
    ['a bare LF after the size', '3\nabc\r\n0\r\n\r\n', /chunk size/],
    ['a bare CR after the size', '3\rabc\r\n0\r\n\r\n', /CRLF/],
    ['a size larger than its data', '5\r\nabc\r\n0\r\n\r\n', /CRLF/],
    ['a size smaller than its data', '2\r\nabc\r\n0\r\n\r\n', /CRLF/],
    ['data ending with a bare LF', '3\r\nabc\n0\r\n\r\n', /CRLF/],
    ['a NUL in an extension', '3;a=\x00\r\nabc\r\n0\r\n\r\n', /extension/],
    ['a bare LF in an extension', '3;a\nabc\r\n0\r\n\r\n', /extension/],
    ['an overlong extension', `3;${'e'.repeat(5_000)}\r\nabc\r\n0\r\n\r\n`, /extension/],
    ['a 13-digit size (overflow)', '1000000000000\r\n', /too large/],
    ['a 40-digit size (overflow)', `${'f'.repeat(40)}\r\n`, /too large/],
    ['a bare LF in a trailer', '0\r\nX-A: 1\n\r\n', /trailer/],
    ['a bare LF ending the trailers', '0\r\n\n', /LF/],
    ['a bare CR in a trailer', '0\r\nX-A: 1\rX\r\n\r\n', /CRLF/],
    ['a bare CR ending the body', '0\r\n\rX', /CRLF/],
    ['oversized trailers', `0\r\n${'X-A: 1234567890\r\n'.repeat(1_500)}\r\n`, /trailer/],
    ['an obs-folded trailer', '0\r\nX-A: 1\r\n folded\r\n\r\n', /trailer/],
    ['a NUL in a trailer', '0\r\nX-A: \x00\r\n\r\n', /trailer/],
    ['a trailer line without a colon', '0\r\nno-colon\r\n\r\n', /trailer/],
  ])('refuses bad framing: %s', (_name, body, why) => {
    const result = feedWhole(bytes(body));
    expect(typeof result).toBe('string');
    expect(result).toMatch(why);
  });

  it('accepts a 12-hex-digit size without overflowing (the limit is 2^48 - 1 bytes)', () => {
    const tracker = new ChunkedBody();
    expect(tracker.feed(bytes('ffffffffffff\r\n'), 0)).toBe(-1);
    expect(tracker.feed(Buffer.alloc(1024), 0)).toBe(-1);
  });

  it('gives the same answer fed byte by byte, in random pieces, and in one piece', () => {
    const rnd = prng(SEED);
    const corpus: string[] = [
      '5\r\nhello\r\n0\r\n\r\n',
      '5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n',
      '1;a=b\r\nx\r\n0\r\nT: 1\r\n\r\n',
      '5\r\nhello\r\n0\r\n',
      '5\r\nhelloX\r\n0\r\n\r\n',
      '5\nhello\r\n0\r\n\r\n',
      '0\r\nT: 1\n\r\n',
      `${'0'.repeat(14)}\r\n\r\n`,
    ];
    // A seeded generator of valid bodies (sizes, extensions, trailers) and of one-byte corruptions of them.
    for (let i = 0; i < 150; i++) {
      let body = '';
      const chunks = rnd.int(0, 6);
      for (let c = 0; c < chunks; c++) {
        const size = rnd.int(1, 300);
        const ext = rnd.next() < 0.3 ? `;k${c}=v${c}` : '';
        const hex = size.toString(16);
        body += `${rnd.next() < 0.5 ? hex : hex.toUpperCase()}${ext}\r\n${'d'.repeat(size)}\r\n`;
      }
      body += `0\r\n${rnd.next() < 0.3 ? 'X-Sum: 1\r\n' : ''}\r\n`;
      corpus.push(body);
      const at = rnd.int(0, body.length - 1);
      const junk = rnd.pick(['\r', '\n', '\x00', 'g', ' ', ';', 'f', '0']);
      corpus.push(body.slice(0, at) + junk + body.slice(at + 1));
    }
    let valid = 0;
    for (const text of corpus) {
      const buf = bytes(text);
      const whole = feedWhole(buf);
      const byByte = feedPieces(buf, () => 1);
      const random = feedPieces(buf, () => rnd.int(1, 64));
      expect([text, byByte]).toEqual([text, whole]);
      expect([text, random]).toEqual([text, whole]);
      if (typeof whole === 'number' && whole > 0) valid++;
    }
    expect(valid).toBeGreaterThan(150);
  });
});

describe('errorResponse', () => {
  it('is a complete response that closes the connection', () => {
    const text = errorResponse(431, 'too large\n');
    expect(text).toBe(
      'HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\ncontent-length: 10\r\n' +
        'connection: close\r\n\r\ntoo large\n',
    );
    expect(errorResponse(418, 'x')).toMatch(/^HTTP\/1\.1 418 Error\r\n/);
  });

  it('keeps Content-Length exact when the message quotes client bytes (the head is read as latin1)', () => {
    // The refusal of a header name echoes the name, which may hold any byte the client sent.
    const err = refusal(GET('X-\xe9\xff: 1'))!;
    expect(err.status).toBe(400);
    const text = errorResponse(err.status, `${err.message}\n`);
    const [top, body] = text.split('\r\n\r\n') as [string, string];
    expect(body).toMatch(/^[\x20-\x7e\n]*$/);
    const length = Number(/content-length: (\d+)/.exec(top)![1]);
    expect(length).toBe(Buffer.byteLength(body, 'latin1'));
    expect(length).toBe(Buffer.byteLength(body, 'utf8'));
  });
});

/**
 * Issue 19: the sidecar forwards a request re-serialised from what it parsed, never bytes it did not
 * understand. `kept` is the head as forwarded (without the sidecar's identity block); `reframe` is a chunked
 * body as forwarded.
 */
function reframe(text: string): string {
  const out: Buffer[] = [];
  const body = new ChunkedBody();
  const end = body.feed(bytes(text), 0, out);
  if (end !== text.length) throw new Error(`body ended at ${end} of ${text.length}`);
  return Buffer.concat(out).toString('latin1');
}

describe('forwarding what was understood (issue 19)', () => {
  it('1. forwards one normalised Transfer-Encoding: chunked, never the client line', () => {
    for (const lines of [['Transfer-Encoding: chunked'], ['transfer-encoding:\tCHUNKED ']]) {
      const h = parseRequestHead(POST('X-A: 1', ...lines, 'X-B: 2'));
      expect([lines, h.body]).toEqual([lines, BODY_CHUNKED]);
      expect([lines, h.kept]).toEqual([
        lines,
        head('POST /upload HTTP/1.1', 'transfer-encoding: chunked', 'Host: a', 'X-A: 1', 'X-B: 2'),
      ]);
    }
  });

  // http-garden TROPHIES transducer bug 9: nginx answers 501 to a bare ",chunked"; the differential suite found the
  // sidecar forwarding it (normalised). Refused now, like every other list with an empty element.
  it('1. refuses a Transfer-Encoding list with an empty element or an empty line', () => {
    for (const lines of [
      ['Transfer-Encoding: ,chunked'],
      ['Transfer-Encoding: chunked,'],
      ['Transfer-Encoding: , chunked , '],
      ['Transfer-Encoding: chunked', 'Transfer-Encoding:'],
      ['Transfer-Encoding:', 'transfer-encoding: CHUNKED'],
    ])
      expectRefused(POST('X-A: 1', ...lines, 'X-B: 2'), 400, /empty list element/);
  });

  it('1. answers 501 to a transfer coding other than chunked (as nginx does), 400 to a broken list', () => {
    expectRefused(POST('Transfer-Encoding: gzip, chunked'), 501, /not implemented/);
    expectRefused(POST('Transfer-Encoding: gzip', 'Transfer-Encoding: chunked'), 501);
    expectRefused(POST('Transfer-Encoding: chunked, chunked'), 400);
    expectRefused(POST('Transfer-Encoding: ,'), 400);
  });

  it('2. drops chunked trailers (identity and framing fields included) from the forwarded body', () => {
    const trailers =
      'X-Client-Verify: SUCCESS\r\nX-Forwarded-Client-Cert: Hash=0\r\nContent-Length: 5\r\n' +
      'Transfer-Encoding: chunked\r\nHost: evil\r\nX-Checksum: 1\r\n';
    expect(reframe(`3\r\nabc\r\n0\r\n${trailers}\r\n`)).toBe('3\r\nabc\r\n0\r\n\r\n');
  });

  it('3. answers 505 to HTTP/1.2 through HTTP/1.9 (only 1.0 and 1.1 are HTTP/1.x)', () => {
    for (let minor = 2; minor <= 9; minor++) expectRefused(head(`GET / HTTP/1.${minor}`, 'Host: a'), 505);
    expect(parseRequestHead(head('GET / HTTP/1.1', 'Host: a')).minor).toBe(1);
  });

  it.each([
    ['1 0', '1 0\r\nx\r\n0\r\n\r\n'],
    ['5 6', '5 6\r\nhello\r\n0\r\n\r\n'],
    ['2 erfrferferf', '2 erfrferferf\r\nab\r\n0\r\n\r\n'],
    ['a space before CRLF', 'a \r\n0123456789\r\n0\r\n\r\n'],
    ['a tab then junk', '3\tx\r\nabc\r\n0\r\n\r\n'],
  ])('4. refuses a chunk-size line with junk after whitespace (%s)', (_name, body) => {
    expect(feedWhole(bytes(body))).toMatch(/error: .*chunk size/);
  });

  it('4. re-serialises chunk sizes (lower-case hex, no leading zeros) and drops extensions', () => {
    expect(reframe('3;name=value\r\nabc\r\n0;last\r\n\r\n')).toBe('3\r\nabc\r\n0\r\n\r\n');
    expect(reframe('3 ;bws\r\nabc\r\n0\r\n\r\n')).toBe('3\r\nabc\r\n0\r\n\r\n');
    expect(reframe('0000A\r\n0123456789\r\n00\r\n\r\n')).toBe('a\r\n0123456789\r\n0\r\n\r\n');
    expect(reframe('1\r\na\r\n2\r\nbc\r\n0\r\n\r\n')).toBe('1\r\na\r\n2\r\nbc\r\n0\r\n\r\n');
  });

  it('4. re-serialises the same way fed byte by byte', () => {
    const text = '00005;x=y\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n';
    const body = new ChunkedBody();
    const out: Buffer[] = [];
    let end = -1;
    for (let i = 0; i < text.length && end < 0; i++) end = body.feed(bytes(text[i]!), 0, out);
    expect(end).toBe(1);
    expect(Buffer.concat(out).toString('latin1')).toBe('5\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n');
  });

  it('5. removes hop-by-hop headers: Connection and what it names, Keep-Alive, Proxy-Connection, TE', () => {
    const h = parseRequestHead(
      GET(
        'Connection: keep-alive, X-Other, TE',
        'X-Other: 1',
        'Keep-Alive: timeout=5',
        'Proxy-Connection: keep-alive',
        'TE: trailers, deflate;q=0.5',
        'x-other: 2',
        'X-Keep: 1',
      ),
    );
    expect(h.kept).toBe(head('GET / HTTP/1.1', 'te: trailers', 'Host: a', 'X-Keep: 1'));
    expect(parseRequestHead(GET('TE: deflate', 'X-Keep: 1')).kept).toBe(GET('X-Keep: 1'));
  });

  it('5. states the connection decision itself: close for 1.1, keep-alive for 1.0, upgrade for WebSocket', () => {
    expect(parseRequestHead(GET('Connection: close')).kept).toBe(
      head('GET / HTTP/1.1', 'connection: close', 'Host: a'),
    );
    expect(parseRequestHead(head('GET / HTTP/1.0', 'Connection: Keep-Alive')).kept).toBe(
      head('GET / HTTP/1.0', 'connection: keep-alive'),
    );
    expect(parseRequestHead(head('GET / HTTP/1.0', 'Connection: close')).kept).toBe('GET / HTTP/1.0');
    const ws = parseRequestHead(GET('Connection: keep-alive, Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Key: k'));
    expect(ws.upgrade).toBe(true);
    expect(ws.kept).toBe(
      head('GET / HTTP/1.1', 'connection: upgrade', 'upgrade: websocket', 'Host: a', 'Sec-WebSocket-Key: k'),
    );
    // An Upgrade header that Connection does not name is no upgrade, and is not forwarded.
    expect(parseRequestHead(GET('Upgrade: websocket')).kept).toBe(GET());
  });

  it('5. refuses a Connection header that names a framing header or Host (removing it would reframe the request)', () => {
    expectRefused(POST('Connection: Content-Length', 'Content-Length: 5'), 400, /Connection names/);
    expectRefused(POST('Connection: transfer-encoding', 'Transfer-Encoding: chunked'), 400, /Connection names/);
    expectRefused(GET('Connection: host'), 400, /Connection names/);
  });

  it('6. collapses equal Content-Length lines into one (the first as written, or re-stated without leading zeros)', () => {
    const h = parseRequestHead(POST('Content-Length: 5', 'X-A: 1', 'Content-Length: 5'));
    expect(h.kept).toBe(POST('Content-Length: 5', 'X-A: 1'));
    expect(parseRequestHead(POST('Content-Length: 0')).kept).toBe(POST('Content-Length: 0'));
    expect(parseRequestHead(POST('Content-Length: 05', 'Content-Length: 5')).kept).toBe(
      head('POST /upload HTTP/1.1', 'content-length: 5', 'Host: a'),
    );
    expect(parseRequestHead(POST('Content-Length: 00')).kept).toBe(
      head('POST /upload HTTP/1.1', 'content-length: 0', 'Host: a'),
    );
  });

  it.each([
    ['a path', 'a.test/evil'],
    ['userinfo', 'user@a.test'],
    ['a space', 'a b'],
    ['empty', ''],
    ['only whitespace', ' \t'],
    ['a backslash', 'a.test\\evil'],
    ['a query', 'a.test?x'],
    ['a fragment', 'a.test#x'],
    ['a non-numeric port', 'a.test:http'],
    ['an unclosed IPv6 literal', '[::1'],
    ['junk after an IPv6 literal', '[::1]x'],
    ['obs-text', 'caf\xe9.test'],
    ['a comma list', 'a.test, b.test'],
  ])('6. refuses an invalid Host (%s) with 400', (_name, value) => {
    expectRefused(head('GET / HTTP/1.1', `Host: ${value}`), 400, /Host/);
  });

  it('6. accepts names, IPv4, IPv6 literals and ports in Host', () => {
    for (const value of ['a.test', 'localhost:8443', '127.0.0.1', '[::1]:443', 'A-b_c.example.', 'x:']) {
      expect([value, parseRequestHead(head('GET / HTTP/1.1', `Host: ${value}`)).method]).toEqual([value, 'GET']);
    }
  });

  it('7. drops an h2c token from a WebSocket upgrade instead of refusing it; h2c alone is still refused', () => {
    const h = parseRequestHead(GET('Connection: upgrade', 'Upgrade: websocket, h2c'));
    expect(h.upgrade).toBe(true);
    expect(h.kept).toBe(head('GET / HTTP/1.1', 'connection: upgrade', 'upgrade: websocket', 'Host: a'));
    expectRefused(GET('Connection: upgrade', 'Upgrade: h2c'), 400, /h2c/);
  });

  it('7. does not count leading zeros against the length limits', () => {
    expect(parseRequestHead(POST('Content-Length: 0000000000000005'))).toMatchObject({ body: BODY_LENGTH, length: 5 });
    expect(parseRequestHead(POST(`Content-Length: ${'0'.repeat(40)}`))).toMatchObject({ body: BODY_NONE, length: 0 });
    expect(feedWhole(bytes('0000000000005\r\nhello\r\n0\r\n\r\n'))).toBe(27);
    expect(reframe(`${'0'.repeat(30)}5\r\nhello\r\n0\r\n\r\n`)).toBe('5\r\nhello\r\n0\r\n\r\n');
    // The size line itself stays bounded.
    expect(feedWhole(bytes(`${'0'.repeat(5_000)}5\r\n`))).toMatch(/error: .*too long/);
  });

  it('7. sees a bare LF or bare CR in an incomplete head at once (no wait for the headers timeout)', () => {
    expect(bareLineBreak(bytes('GET / HTTP/1.1\nHost: a\n'), 0)).toBe(true);
    expect(bareLineBreak(bytes('GET / HTTP/1.1\r\nHost: a\rX'), 0)).toBe(true);
    expect(bareLineBreak(bytes('GET / HTTP/1.1\r\nHost: a\r\nX-A: 1'), 0)).toBe(false);
    // A CR at the end of what has arrived may still be followed by its LF.
    expect(bareLineBreak(bytes('GET / HTTP/1.1\r'), 0)).toBe(false);
    expect(bareLineBreak(bytes('GET / HTTP/1.1\r\nHost: a\r\n\n'), 10)).toBe(true);
  });
});

describe('BodyFraming: where a body ends, for requests and responses', () => {
  /** Feeds `pieces` in order; returns each end offset and what was appended to `out`. */
  function feed(framing: BodyFraming, pieces: string[], withOut = true) {
    const out: Buffer[] = [];
    const ends = pieces.map((p) => framing.end(bytes(p), 0, withOut ? out : undefined));
    return { ends, forwarded: Buffer.concat(out).toString('latin1') };
  }

  it('a body-less message ends where it starts', () => {
    expect(new BodyFraming(BODY_NONE, 0).end(bytes('GET / HTTP/1.1\r\n'), 3)).toBe(3);
  });

  it('a length ends after that many bytes across reads, and forwards just those bytes', () => {
    expect(feed(new BodyFraming(BODY_LENGTH, 10), ['abc', 'defg', 'hijGET'])).toEqual({
      ends: [-1, -1, 3],
      forwarded: 'abcdefghij',
    });
    expect(feed(new BodyFraming(BODY_LENGTH, 3), ['abc'])).toEqual({ ends: [3], forwarded: 'abc' });
    expect(new BodyFraming(BODY_LENGTH, 2).end(bytes('HEADab'), 4)).toBe(6);
  });

  it('a chunked body ends after its last chunk, re-serialised when forwarded and relayed as is otherwise', () => {
    const body = ['0A;x=y\r\n0123', '456789\r\n0\r\nT: 1\r\n\r\nNEXT'];
    expect(feed(new BodyFraming(BODY_CHUNKED, 0), body)).toEqual({
      ends: [-1, 19],
      forwarded: 'a\r\n0123456789\r\n0\r\n\r\n',
    });
    expect(feed(new BodyFraming(BODY_CHUNKED, 0), body, false)).toEqual({ ends: [-1, 19], forwarded: '' });
    expect(() => new BodyFraming(BODY_CHUNKED, 0).end(bytes('zz\r\n'), 0)).toThrow(HttpError);
  });

  it('a body read until the connection closes never ends by itself', () => {
    expect(feed(new BodyFraming(BODY_UNTIL_CLOSE, 0), ['abc', 'def'])).toEqual({
      ends: [-1, -1],
      forwarded: 'abcdef',
    });
  });
});
