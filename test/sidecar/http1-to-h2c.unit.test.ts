import { h2cFieldsFromHttp1 } from '../../sidecar/http1-to-h2c.ts';
import { upstreamFields } from '../../sidecar/stream-fields.ts';

describe('h2cFieldsFromHttp1 (pure): an HTTP/1.1 request as the fields of an h2c stream', () => {
  it('sets the pseudo-fields from the method, the target and Host, and keeps the end-to-end fields', () => {
    expect(
      h2cFieldsFromHttp1(
        { host: ['payments:8443'], accept: ['application/json'], 'x-many': ['a', 'b'] },
        'GET',
        '/a?b=1',
      ),
    ).toEqual({
      ok: true,
      fields: {
        ':method': 'GET',
        ':scheme': 'http',
        ':path': '/a?b=1',
        ':authority': 'payments:8443',
        accept: 'application/json',
        'x-many': ['a', 'b'],
      },
      body: false,
      trailers: false,
    });
  });

  it('removes the hop-by-hop fields, those Connection names, and te unless it is trailers', () => {
    const result = h2cFieldsFromHttp1(
      {
        host: ['svc'],
        connection: ['keep-alive, X-Hop', 'close'],
        'x-hop': ['1'],
        'keep-alive': ['timeout=5'],
        'proxy-connection': ['keep-alive'],
        'transfer-encoding': ['chunked'],
        upgrade: ['websocket'],
        te: ['gzip, trailers;q=1'],
        expect: ['100-continue'],
        'x-kept': ['yes'],
      },
      'POST',
      '/upload',
    );
    expect(result).toEqual({
      ok: true,
      fields: {
        ':method': 'POST',
        ':scheme': 'http',
        ':path': '/upload',
        ':authority': 'svc',
        'x-kept': 'yes',
        te: 'trailers',
      },
      body: true,
      trailers: true,
    });
    const noTrailers = h2cFieldsFromHttp1({ host: ['svc'], te: ['gzip'] }, 'GET', '/');
    expect(noTrailers).toMatchObject({ ok: true, trailers: false });
    expect(noTrailers.ok && noTrailers.fields.te).toBeUndefined();
  });

  it('says whether a body follows: a Content-Length above 0 or chunked', () => {
    const body = (headers: Record<string, string[]>) =>
      (h2cFieldsFromHttp1({ host: ['svc'], ...headers }, 'POST', '/') as { body: boolean }).body;
    expect(body({})).toBe(false);
    expect(body({ 'content-length': ['0'] })).toBe(false);
    expect(body({ 'content-length': ['12'] })).toBe(true);
    expect(body({ 'transfer-encoding': ['chunked'] })).toBe(true);
  });

  it('takes :authority from an absolute-form target over Host, and keeps * for OPTIONS', () => {
    expect(h2cFieldsFromHttp1({ host: ['ignored'] }, 'GET', 'http://payments:8443/x?y')).toMatchObject({
      ok: true,
      fields: { ':path': '/x?y', ':authority': 'payments:8443' },
    });
    expect(h2cFieldsFromHttp1({ host: ['svc'] }, 'GET', 'https://svc')).toMatchObject({ fields: { ':path': '/' } });
    expect(h2cFieldsFromHttp1({ host: ['svc'] }, 'OPTIONS', '*')).toMatchObject({ fields: { ':path': '*' } });
    // HTTP/1.0 without Host: no :authority.
    const bare = h2cFieldsFromHttp1({}, 'GET', '/');
    expect(bare.ok && bare.fields[':authority']).toBeUndefined();
  });

  it('refuses with 400 what would let the sidecar and the upstream disagree about the request', () => {
    const status = (headers: Record<string, string[]>, method: string, url: string) => {
      const result = h2cFieldsFromHttp1(headers, method, url);
      return result.ok ? 'ok' : result.status;
    };
    expect(status({ host: ['svc', 'admin'] }, 'GET', '/')).toBe(400);
    expect(status({ host: ['svc/admin'] }, 'GET', '/')).toBe(400);
    expect(status({ host: ['user@svc'] }, 'GET', '/')).toBe(400);
    expect(status({ host: ['svc'] }, 'GET', '*')).toBe(400);
    expect(status({ host: ['svc'] }, 'GET', 'relative/path')).toBe(400);
    expect(status({ host: ['svc'] }, 'GET', 'ftp://svc/x')).toBe(400);
    expect(status({ host: ['svc'] }, 'GET', 'http://user@svc/x')).toBe(400);
  });

  it('answers upgrades and CONNECT 501 with the reason (nothing of them can cross to h2c)', () => {
    const ws = h2cFieldsFromHttp1({ host: ['svc'], connection: ['Upgrade'], upgrade: ['websocket'] }, 'GET', '/socket');
    expect(ws).toMatchObject({ ok: false, status: 501, reason: expect.stringContaining('websocket') });
    expect(h2cFieldsFromHttp1({ host: ['svc:443'] }, 'CONNECT', 'svc:443')).toMatchObject({ ok: false, status: 501 });
    // Upgrade without Connection: upgrade is no upgrade request: the field is dropped and the request goes on.
    expect(h2cFieldsFromHttp1({ host: ['svc'], upgrade: ['websocket'] }, 'GET', '/')).toMatchObject({
      ok: true,
      fields: { ':path': '/' },
    });
  });

  it('leaves identity to upstreamFields: client copies (underscore spellings too) go, the identity is set', () => {
    const result = h2cFieldsFromHttp1(
      {
        host: ['svc'],
        'x-client-verify': ['SUCCESS'],
        x_forwarded_client_cert: ['Hash=0;Subject="CN=admin"'],
        'x-forwarded-for': ['10.0.0.9'],
      },
      'GET',
      '/',
    );
    if (!result.ok) throw new Error('expected a conversion');
    const identity: [string, string][] = [
      ['x-client-verify', 'NONE'],
      ['x-forwarded-proto', 'https'],
    ];
    expect(upstreamFields(result.fields, identity, '127.0.0.1', 'h2c')).toEqual({
      'x-client-verify': 'NONE',
      'x-forwarded-proto': 'https',
      ':method': 'GET',
      ':scheme': 'http',
      ':path': '/',
      ':authority': 'svc',
      'x-forwarded-for': '10.0.0.9, 127.0.0.1',
    });
  });
});
