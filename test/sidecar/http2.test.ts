import { constants } from 'node:http2';
import { connect as tlsConnect } from 'node:tls';
import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { passedFields, upstreamFields } from '../../sidecar/stream-fields.ts';
import type { RunningSidecar } from '../../sidecar/sidecar.ts';
import { h2Client, h2Request, startH2cUpstream } from '../support/h2-fixtures.ts';
import { startTestSidecar } from '../support/sidecar.ts';
import { httpsGet, makePki, type Pki, startMockUpstream, tlsDir } from '../support/tls-fixtures.ts';

const MODES = ['standard', 'flexible', 'strict'] as const;
type Mode = (typeof MODES)[number];

const sidecarFor = (dir: string, upstreamPort: number, extra: string[] = []): Promise<RunningSidecar> =>
  startTestSidecar({
    tlsDir: dir,
    upstreamPort,
    listen: MODES.map((mode) => `${mode}=0`),
    extra: ['--upstream-timeout', '1000', ...extra],
  });

describe('sidecar fields for HTTP/2 streams (pure)', () => {
  const identity: [string, string][] = [
    ['x-client-verify', 'SUCCESS'],
    ['x-forwarded-client-cert', 'Hash=ab;Subject="CN=billing"'],
    ['x-forwarded-proto', 'https'],
  ];
  const client = {
    ':method': 'GET',
    ':path': '/a',
    ':authority': 'payments:8443',
    ':scheme': 'https',
    te: 'trailers',
    'x-forwarded-client-cert': 'forged',
    x_client_verify: 'forged',
    'X-Forwarded-Proto': 'http',
    'x-forwarded-for': '10.0.0.9',
    accept: 'application/json',
  };

  it('HTTP/1.1 upstream: identity first, client copies gone, Host from :authority, no te', () => {
    expect(upstreamFields(client, identity, '127.0.0.1', 'http1')).toEqual({
      'x-client-verify': 'SUCCESS',
      'x-forwarded-client-cert': 'Hash=ab;Subject="CN=billing"',
      'x-forwarded-proto': 'https',
      'x-forwarded-for': '10.0.0.9, 127.0.0.1',
      host: 'payments:8443',
      accept: 'application/json',
    });
  });

  it('h2c upstream: pseudo-fields and te: trailers kept (gRPC needs it)', () => {
    const out = upstreamFields(client, identity, '127.0.0.1', 'h2c');
    expect(out).toMatchObject({ ':path': '/a', ':authority': 'payments:8443', te: 'trailers' });
    expect(out['x-forwarded-client-cert']).toBe('Hash=ab;Subject="CN=billing"');
    expect(out['x_client_verify']).toBeUndefined();
  });

  it('a client copy of an identity field is dropped in any spelling; its X-Forwarded-For values come first', () => {
    const out = upstreamFields(
      { ':method': 'GET', X_FORWARDED_FOR: '10.0.0.7', 'x-forwarded-for': ['10.0.0.8', '10.0.0.9'], XCustom: 'kept' },
      identity,
      '127.0.0.1',
      'h2c',
    );
    expect(out['x-forwarded-for']).toBe('10.0.0.7, 10.0.0.8, 10.0.0.9, 127.0.0.1');
    expect(Object.keys(out).filter((name) => /forwarded.for/i.test(name))).toEqual(['x-forwarded-for']);
    expect(out.XCustom).toBe('kept');
  });

  it('response fields start with the status when one is given', () => {
    expect(passedFields({ ':status': '204', 'x-a': '1' }, 204)).toEqual({ ':status': 204, 'x-a': '1' });
  });

  it('response fields: connection fields and the fields Connection names are not passed on', () => {
    expect(
      passedFields({
        connection: 'close, x-hop',
        'x-hop': '1',
        'keep-alive': 'timeout=5',
        'transfer-encoding': 'chunked',
        'content-type': 'text/plain',
        ':status': '200',
      }),
    ).toEqual({ 'content-type': 'text/plain' });
  });
});

for (const upstreamProtocol of ['http1', 'h2c'] as const) {
  describe(`sidecar: HTTP/2 clients, upstream ${upstreamProtocol}`, () => {
    let pki: Pki;
    let sidecar: RunningSidecar;
    let seenPaths: () => string[];
    let lastHeaders: () => Record<string, unknown>;
    let close: () => void;
    const port = (mode: Mode) => sidecar.ports[MODES.indexOf(mode)]!;

    beforeAll(async () => {
      pki = await makePki();
      const dir = await tlsDir(pki);
      if (upstreamProtocol === 'h2c') {
        const up = await startH2cUpstream();
        seenPaths = () => up.seen.map((s) => String(s.headers[':path']));
        lastHeaders = () => up.seen.at(-1)!.headers as Record<string, unknown>;
        close = () => up.server.close();
        sidecar = await sidecarFor(dir, up.port, ['--upstream-protocol', 'h2c']);
      } else {
        const up = await startMockUpstream();
        seenPaths = () => up.requests.map((r) => r.url!);
        lastHeaders = () => up.requests.at(-1)!.headers as Record<string, unknown>;
        close = () => up.server.close();
        sidecar = await sidecarFor(dir, up.port);
      }
    });
    afterAll(async () => {
      await sidecar?.stop(1_000);
      close?.();
    });

    it('offers h2 and http/1.1 by ALPN; an HTTP/1.1 client reaches the upstream in its protocol', async () => {
      const chosen = (protocols: string[]) =>
        new Promise<string | false | null>((resolve, reject) => {
          const socket = tlsConnect({
            port: port('standard'),
            host: '127.0.0.1',
            servername: 'localhost',
            ca: pki.ca.certPem,
            ALPNProtocols: protocols,
          });
          socket.once('secureConnect', () => {
            resolve(socket.alpnProtocol);
            socket.destroy();
          });
          socket.once('error', reject);
        });
      expect(await chosen(['h2', 'http/1.1'])).toBe('h2');
      expect(await chosen(['http/1.1'])).toBe('http/1.1');
      // An HTTP/1.1 client's request reaches an h2c upstream as an h2c stream, identity fields set, copies gone.
      const h1 = await httpsGet(port('strict'), {
        ca: pki.ca.certPem,
        client: pki.client,
        path: '/h1',
        headers: { 'x-client-verify': 'NONE', 'x-forwarded-client-cert': 'Hash=0;Subject="CN=admin"' },
      });
      expect(h1.status).toBe(200);
      expect(seenPaths().at(-1)).toBe('/h1');
      expect(lastHeaders()['x-client-verify']).toBe('SUCCESS');
      expect(String(lastHeaders()['x-forwarded-client-cert'])).toMatch(/^Hash=[0-9a-f]{64};Subject="CN=billing";URI=/);
      if (upstreamProtocol === 'h2c') expect(lastHeaders()[':scheme']).toBe('http');
    });

    const TABLE = {
      none: { standard: 'accepted', flexible: 'accepted', strict: 'no_certificate' },
      valid: { standard: 'accepted', flexible: 'accepted', strict: 'accepted' },
      unknownCa: { standard: 'accepted', flexible: 'unknown_ca', strict: 'unknown_ca' },
      expired: { standard: 'accepted', flexible: 'expired', strict: 'expired' },
      revoked: { standard: 'accepted', flexible: 'revoked', strict: 'revoked' },
    } as const;
    for (const kind of Object.keys(TABLE) as (keyof typeof TABLE)[]) {
      for (const mode of MODES) {
        const expected = TABLE[kind][mode];
        it(`${mode} over h2: ${kind} certificate -> ${expected}`, async () => {
          const client = kind === 'none' ? undefined : kind === 'valid' ? pki.client : pki[kind];
          const session = await h2Client(port(mode), { ca: pki.ca.certPem, client });
          const path = expected === 'accepted' ? `/ok/${mode}/${kind}` : `/must-not-arrive/${mode}/${kind}`;
          const result = await h2Request(session, { ':path': path });
          session.close();
          if (expected === 'accepted') {
            expect(result.status).toBe(200);
            const verified = kind === 'valid' && mode !== 'standard';
            expect(lastHeaders()['x-client-verify']).toBe(verified ? 'SUCCESS' : 'NONE');
            if (verified) expect(String(lastHeaders()['x-forwarded-client-cert'])).toContain('Subject="CN=billing"');
            else expect(lastHeaders()['x-forwarded-client-cert']).toBeUndefined();
          } else {
            expect(result.status).toBe(400);
            expect(result.body).toContain(`(${expected})`);
          }
        });
      }
    }

    it('never forwards a stream of a refused client', () => {
      expect(seenPaths().filter((p) => p.startsWith('/must-not-arrive'))).toEqual([]);
      expect(seenPaths().filter((p) => p.startsWith('/ok/'))).toHaveLength(8);
    });

    it("sets the identity fields on every stream of a connection and drops the client's copies", async () => {
      const session = await h2Client(port('strict'), { ca: pki.ca.certPem, client: pki.client });
      const forged = {
        'x-forwarded-client-cert': 'Hash=0;Subject="CN=admin"',
        x_forwarded_client_cert: 'Hash=0;Subject="CN=admin"',
        'x-client-verify': 'NONE',
        'x-forwarded-for': '10.9.9.9',
      };
      const seen: Record<string, unknown>[] = [];
      for (let i = 0; i < 5; i++) {
        const result = await h2Request(session, { ':path': `/stream/${i}`, ...forged });
        expect(result.status).toBe(200);
        seen.push(lastHeaders());
      }
      session.close();
      for (const headers of seen) {
        expect(headers['x-client-verify']).toBe('SUCCESS');
        expect(String(headers['x-forwarded-client-cert'])).toMatch(/^Hash=[0-9a-f]{64};Subject="CN=billing";URI=/);
        expect(headers['x_forwarded_client_cert']).toBeUndefined();
        expect(headers['x-forwarded-for']).toBe('10.9.9.9, 127.0.0.1');
        expect(headers['x-forwarded-proto']).toBe('https');
      }
    });

    it('carries request bodies and concurrent streams on one connection', async () => {
      const session = await h2Client(port('flexible'), { ca: pki.ca.certPem, client: pki.client });
      const body = 'x'.repeat(300_000);
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => h2Request(session, { ':path': `/post/${i}`, ':method': 'POST' }, body)),
      );
      session.close();
      for (const result of results) {
        expect(result.status).toBe(200);
        expect(JSON.parse(result.body).bodyBytes).toBe(body.length);
      }
    });

    it('answers 504 when the upstream does not answer in time', async () => {
      const session = await h2Client(port('standard'), { ca: pki.ca.certPem });
      const slow = await h2Request(session, { ':path': upstreamProtocol === 'h2c' ? '/hang' : '/slow' });
      session.close();
      expect(slow.status).toBe(504);
    });
  });
}

describe('sidecar: HTTP/2 specifics with an h2c upstream', () => {
  let pki: Pki;
  let sidecar: RunningSidecar;
  let up: Awaited<ReturnType<typeof startH2cUpstream>>;

  beforeAll(async () => {
    pki = await makePki();
    up = await startH2cUpstream();
    sidecar = await sidecarFor(await tlsDir(pki), up.port, ['--upstream-protocol', 'h2c']);
  });
  afterAll(async () => {
    await sidecar?.stop(1_000);
    up?.server.close();
  });

  it("passes the upstream's trailers to the client", async () => {
    const session = await h2Client(sidecar.ports[0]!, { ca: pki.ca.certPem });
    const result = await h2Request(session, { ':path': '/t' });
    session.close();
    expect(result.status).toBe(200);
    expect(result.trailers?.['x-trailer']).toBe('from-upstream');
  });

  it('streams both ways: each chunk comes back before the client sends the next', async () => {
    const session = await h2Client(sidecar.ports[0]!, { ca: pki.ca.certPem });
    const req = session.request({ ':path': '/echo', ':method': 'POST' });
    const echoed: string[] = [];
    const next = () => new Promise<string>((resolve) => req.once('data', (d: Buffer) => resolve(d.toString())));
    for (let i = 0; i < 3; i++) {
      const got = next();
      req.write(`chunk-${i}`);
      echoed.push(await got);
    }
    const trailers = new Promise<Record<string, unknown>>((resolve) => req.once('trailers', resolve));
    req.end();
    expect(echoed).toEqual(['chunk-0', 'chunk-1', 'chunk-2']);
    expect((await trailers)['x-done']).toBe('yes');
    session.close();
  });

  it('RST_STREAM from the client reaches the upstream stream', async () => {
    const session = await h2Client(sidecar.ports[0]!, { ca: pki.ca.certPem });
    const before = up.seen.length;
    const req = session.request({ ':path': '/hang' });
    req.on('error', () => undefined);
    await new Promise((resolve) => setTimeout(resolve, 100));
    req.close(constants.NGHTTP2_CANCEL);
    for (let i = 0; i < 50 && up.seen[before]?.rstCode === undefined; i++) await new Promise((r) => setTimeout(r, 20));
    session.close();
    expect(up.seen[before]?.rstCode).toBe(constants.NGHTTP2_CANCEL);
  });

  it('RST_STREAM from the upstream reaches the client with its code', async () => {
    const session = await h2Client(sidecar.ports[0]!, { ca: pki.ca.certPem });
    // The request body stays open: the upstream resets a stream that is still open both ways.
    const req = session.request({ ':path': '/reset', ':method': 'POST' });
    req.on('error', () => undefined);
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    const status = new Promise((resolve) => req.once('response', (h) => resolve(h[':status'])));
    await new Promise((resolve) => req.once('close', resolve));
    session.close();
    expect({ status: await status, body, rstCode: req.rstCode }).toEqual({
      status: 200,
      body: 'partial',
      rstCode: constants.NGHTTP2_ENHANCE_YOUR_CALM,
    });
  });
});

describe('sidecar: an HTTP/2 connection that opens no stream', () => {
  it('is closed with GOAWAY after the headers timeout, as a silent HTTP/1.1 connection is', async () => {
    const pki = await makePki();
    const up = await startMockUpstream();
    const sidecar = await sidecarFor(await tlsDir(pki), up.port, ['--headers-timeout', '300']);
    try {
      const session = await h2Client(sidecar.ports[0]!, { ca: pki.ca.certPem });
      const goaway = new Promise<number>((resolve) => session.once('goaway', (code: number) => resolve(code)));
      const closed = new Promise((resolve) => session.once('close', resolve));
      expect(await goaway).toBe(constants.NGHTTP2_NO_ERROR);
      await closed;
      // A connection that does send a request is not cut: the timer stops at the first stream.
      const busy = await h2Client(sidecar.ports[0]!, { ca: pki.ca.certPem });
      expect((await h2Request(busy, { ':path': '/first' })).status).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 600));
      expect((await h2Request(busy, { ':path': '/later' })).status).toBe(200);
      busy.close();
    } finally {
      await sidecar.stop(1_000);
      up.server.close();
    }
  });
});

describe('sidecar: HTTP/2 trailers from an HTTP/1.1 upstream, and GOAWAY on drain', () => {
  for (const upstreamProtocol of ['http1', 'h2c']) {
    it(`answers 502 (gRPC: UNAVAILABLE) when the ${upstreamProtocol} upstream is not listening`, async () => {
      const pki = await makePki();
      const closed = createHttpServer();
      await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
      const deadPort = (closed.address() as AddressInfo).port;
      await new Promise((resolve) => closed.close(resolve));
      const sidecar = await sidecarFor(await tlsDir(pki), deadPort, ['--upstream-protocol', upstreamProtocol]);
      try {
        const session = await h2Client(sidecar.ports[0]!, { ca: pki.ca.certPem });
        const plain = await h2Request(session, { ':path': '/' });
        const grpc = await h2Request(
          session,
          { ':path': '/pkg.Svc/Call', ':method': 'POST', 'content-type': 'application/grpc' },
          '',
        );
        session.close();
        expect({ status: plain.status, body: plain.body }).toEqual({ status: 502, body: 'upstream unavailable\n' });
        expect({ status: grpc.status, grpcStatus: grpc.headers?.['grpc-status'] }).toEqual({
          status: 200,
          grpcStatus: '14',
        });
      } finally {
        await sidecar.stop(1_000);
      }
    });
  }

  it('passes announced chunked trailers, and finishes in-flight streams after GOAWAY', async () => {
    const pki = await makePki();
    let release: () => void = () => undefined;
    const upstream = createHttpServer((req: IncomingMessage, res) => {
      req.resume();
      if (req.url === '/trailers') {
        res.writeHead(200, { trailer: 'x-checksum', 'content-type': 'text/plain' });
        res.write('body');
        res.addTrailers({ 'x-checksum': 'abc' });
        return void res.end();
      }
      release = () => res.end('late');
      res.writeHead(200);
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    const sidecar = await sidecarFor(await tlsDir(pki), (upstream.address() as AddressInfo).port);
    try {
      const session = await h2Client(sidecar.ports[0]!, { ca: pki.ca.certPem });
      const withTrailers = await h2Request(session, { ':path': '/trailers' });
      expect(withTrailers.body).toBe('body');
      expect(withTrailers.trailers?.['x-checksum']).toBe('abc');
      const goaway = new Promise<number>((resolve) => session.once('goaway', (code: number) => resolve(code)));
      const inFlight = h2Request(session, { ':path': '/in-flight' });
      await new Promise((resolve) => setTimeout(resolve, 100));
      const stopped = sidecar.stop(5_000);
      expect(await goaway).toBe(constants.NGHTTP2_NO_ERROR);
      release();
      const result = await inFlight;
      expect({ status: result.status, body: result.body }).toEqual({ status: 200, body: 'late' });
      await stopped;
    } finally {
      upstream.close();
    }
  });
});
