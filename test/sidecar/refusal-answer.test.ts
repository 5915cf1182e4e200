import { parseResponseHead } from '../../sidecar/http1.ts';
import { refusalResponse, refusedInput } from '../../sidecar/refusal-answer.ts';
import type { RefusalReason } from '../../sidecar/refusal-log.ts';

/** Status, headers and body of a response the sidecar writes itself. */
function parse(response: string) {
  const at = response.indexOf('\r\n\r\n');
  const head = response.slice(0, at);
  const body = response.slice(at + 4);
  const headers = Object.fromEntries(
    head
      .split('\r\n')
      .slice(1)
      .map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]),
  );
  return { line: head.split('\r\n')[0], framing: parseResponseHead(head, 'GET'), headers, body };
}

describe('sidecar: what a refused client is told', () => {
  const cases: [RefusalReason, number, RegExp][] = [
    ['no_certificate', 400, /^No required SSL certificate was sent \(no_certificate\): .*tls\.crt and tls\.key\n$/],
    ['unknown_ca', 400, /^The SSL certificate error \(unknown_ca\): .*not issued by this endpoint's CA/],
    ['expired', 400, /^The SSL certificate error \(expired\): .*has expired/],
    ['revoked', 400, /^The SSL certificate error \(revoked\): .*revoked/],
    ['bad_certificate', 400, /^The SSL certificate error \(bad_certificate\): .*cannot be used/],
    ['not_allowed', 403, /^Access denied \(not_allowed\): .*allowedClients/],
  ];
  for (const [reason, status, body] of cases) {
    it(`${reason}: ${status}, with the reason, and the connection closes`, () => {
      const response = parse(refusalResponse({ reason }));
      expect(response.line).toBe(`HTTP/1.1 ${status} ${status === 403 ? 'Forbidden' : 'Bad Request'}`);
      expect(response.body).toMatch(body);
      expect(response.headers).toMatchObject({ connection: 'close', 'content-type': 'text/plain' });
      expect(Number(response.headers['content-length'])).toBe(Buffer.byteLength(response.body));
      expect(response.framing.close).toBe(true);
    });
  }

  it("names the client's certificate, and OpenSSL's code where the reason alone says little", () => {
    const body = parse(
      refusalResponse({ reason: 'bad_certificate', detail: 'CERT_NOT_YET_VALID', subject: 'CN=future' }),
    ).body;
    expect(body).toContain('(certificate CN=future)');
    expect(body).toContain('[CERT_NOT_YET_VALID]');
    expect(parse(refusalResponse({ reason: 'expired', detail: 'CERT_HAS_EXPIRED' })).body).not.toContain('[');
  });

  it('cannot be made to carry a header or a second response through a subject', () => {
    const response = refusalResponse({ reason: 'not_allowed', subject: 'CN=x\r\nset-cookie: a=b\r\n\r\nHTTP/1.1 200' });
    expect(response.split('\r\n\r\n')).toHaveLength(2);
    expect(parse(response).headers['set-cookie']).toBeUndefined();
  });
});

describe('sidecar: when a refused connection is answered', () => {
  const b = (text: string) => Buffer.from(text, 'latin1');
  const MAX = 16 * 1024;

  it('waits for a whole request head, then answers in HTTP', () => {
    expect(refusedInput(b(''), MAX)).toBe('wait');
    expect(refusedInput(b('GE'), MAX)).toBe('wait');
    expect(refusedInput(b('GET /orders HTTP/1.1\r\nHost: x\r\n'), MAX)).toBe('wait');
    expect(refusedInput(b('GET /orders HTTP/1.1\r\nHost: x\r\n\r\n'), MAX)).toBe('http');
    expect(refusedInput(b('POST / HTTP/1.0\r\n\r\n{"a":1}'), MAX)).toBe('http');
  });

  it('answers a head that never ends once it reaches the size limit, the timeout or a half-close', () => {
    expect(refusedInput(b(`GET / HTTP/1.1\r\nX: ${'a'.repeat(100)}`), 64)).toBe('http');
    expect(refusedInput(b('GET /slow'), MAX, true)).toBe('http');
    expect(refusedInput(b('GET /slow'), MAX)).toBe('wait');
  });

  it('does not answer in HTTP what is not HTTP', () => {
    expect(refusedInput(b('\x00\x01garbage\r\n\r\n'), MAX)).toBe('other');
    expect(refusedInput(b('SSH-2.0-OpenSSH_9.2\r\n'), MAX)).toBe('other');
    expect(refusedInput(b('HELLO there friend\r\n\r\n'), MAX)).toBe('other');
    expect(refusedInput(b(' GET / HTTP/1.1\r\n\r\n'), MAX)).toBe('other');
    expect(refusedInput(b('GET'.repeat(30)), 64)).toBe('other');
    expect(refusedInput(b(''), MAX, true)).toBe('other');
    expect(refusedInput(b('GET'), MAX, true)).toBe('other');
  });
});
