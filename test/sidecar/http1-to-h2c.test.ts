import { Agent, request as httpsRequest } from 'node:https';
import { constants } from 'node:http2';
import { createServer as createHttpServer, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { PemPair } from '../../operator/pki/issue.ts';
import type { RunningSidecar } from '../../sidecar/sidecar.ts';
import { startH2cUpstream } from '../support/h2-fixtures.ts';
import { startTestSidecar } from '../support/sidecar.ts';
import { httpsGet, makePki, type Pki, tlsDir } from '../support/tls-fixtures.ts';

/**
 * HTTP/1.1 clients of a sidecar whose upstream speaks h2c (`--upstream-protocol h2c`): each request is one stream
 * of the shared h2c connection (sidecar/http1-to-h2c.ts), against node:http2's h2c mock upstream.
 */

const MODES = ['standard', 'strict'] as const;

const h2cSidecar = (dir: string, upstreamPort: number, extra: string[] = []): Promise<RunningSidecar> =>
  startTestSidecar({
    tlsDir: dir,
    upstreamPort,
    listen: MODES.map((mode) => `${mode}=0`),
    extra: ['--upstream-protocol', 'h2c', '--upstream-timeout', '1000', ...extra],
  });

/** A TLS connection speaking HTTP/1.1 (ALPN http/1.1), for requests written byte by byte. */
function h1Socket(port: number, ca: string, client?: PemPair): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      port,
      host: '127.0.0.1',
      servername: 'localhost',
      ca,
      cert: client?.certPem,
      key: client?.keyPem,
      ALPNProtocols: ['http/1.1'],
    });
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Writes raw request bytes and returns everything the sidecar sent until it closed the connection. */
async function rawExchange(port: number, ca: string, bytes: string, client?: PemPair): Promise<string> {
  const socket = await h1Socket(port, ca, client);
  return new Promise((resolve) => {
    let out = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (out += d));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(out));
    socket.write(bytes);
    setTimeout(() => socket.destroy(), 3_000).unref();
  });
}

interface H1Result {
  status?: number;
  headers?: IncomingHttpHeaders;
  trailers?: NodeJS.Dict<string>;
  body: string;
  error?: string;
  reusedSocket?: boolean;
}

/** One request with node's HTTPS client (ALPN http/1.1), optionally on a kept-alive agent. */
function h1Request(
  port: number,
  opts: { ca: string; path: string; method?: string; headers?: Record<string, string>; body?: string; agent?: Agent },
): Promise<H1Result> {
  return new Promise((resolve) => {
    const result: H1Result = { body: '' };
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        servername: 'localhost',
        ca: opts.ca,
        path: opts.path,
        method: opts.method ?? 'GET',
        headers: opts.headers,
        agent: opts.agent ?? false,
      },
      (res) => {
        result.status = res.statusCode;
        result.headers = res.headers;
        res.setEncoding('utf8');
        res.on('data', (d: string) => (result.body += d));
        res.on('end', () => resolve({ ...result, trailers: res.trailers, reusedSocket: req.reusedSocket }));
        res.on('error', (err) => resolve({ ...result, error: err.message }));
      },
    );
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ ...result, error: err.code ?? err.message }));
    req.end(opts.body);
  });
}

const until = async (done: () => boolean, ms = 2_000) => {
  const end = Date.now() + ms;
  while (!done() && Date.now() < end) await new Promise((resolve) => setTimeout(resolve, 20));
};

describe('sidecar: HTTP/1.1 clients converted to h2c streams', () => {
  let pki: Pki;
  let sidecar: RunningSidecar;
  let up: Awaited<ReturnType<typeof startH2cUpstream>>;
  const port = () => sidecar.ports[0]!;
  const strictPort = () => sidecar.ports[1]!;
  const paths = () => up.seen.map((s) => String(s.headers[':path']));

  beforeAll(async () => {
    pki = await makePki();
    up = await startH2cUpstream();
    sidecar = await h2cSidecar(await tlsDir(pki), up.port);
  });
  afterAll(async () => {
    await sidecar?.stop(1_000);
    up?.server.close();
  });

  it('sends each request as one h2c stream: pseudo-fields, identity set, hop-by-hop fields and client copies gone', async () => {
    const result = await httpsGet(strictPort(), {
      ca: pki.ca.certPem,
      client: pki.client,
      path: '/fields?q=1',
      headers: {
        connection: 'keep-alive, x-hop',
        'x-hop': 'must go',
        'keep-alive': 'timeout=5',
        'proxy-connection': 'keep-alive',
        te: 'gzip',
        'x-client-verify': 'NONE',
        x_forwarded_client_cert: 'Hash=0;Subject="CN=admin"',
        'x-forwarded-for': '10.9.9.9',
        accept: 'application/json',
      },
    });
    expect(result.status).toBe(200);
    const seen = up.seen.at(-1)!.headers;
    expect(seen).toMatchObject({
      ':method': 'GET',
      ':path': '/fields?q=1',
      ':scheme': 'http',
      ':authority': `127.0.0.1:${strictPort()}`,
      'x-client-verify': 'SUCCESS',
      'x-forwarded-proto': 'https',
      'x-forwarded-for': '10.9.9.9, 127.0.0.1',
      accept: 'application/json',
    });
    expect(String(seen['x-forwarded-client-cert'])).toMatch(/^Hash=[0-9a-f]{64};Subject="CN=billing";URI=/);
    for (const name of [
      'connection',
      'x-hop',
      'keep-alive',
      'proxy-connection',
      'te',
      'host',
      'x_forwarded_client_cert',
    ])
      expect(seen[name]).toBeUndefined();
  });

  it('streams a POST body to the upstream and the echo back, chunk by chunk', async () => {
    const agent = new Agent({ keepAlive: false });
    const req = httpsRequest({
      host: '127.0.0.1',
      port: port(),
      servername: 'localhost',
      ca: pki.ca.certPem,
      path: '/echo',
      method: 'POST',
      agent,
    });
    const res = await new Promise<IncomingMessage>((resolve) => {
      req.once('response', resolve);
      req.write('chunk-0');
    });
    expect(res.statusCode).toBe(200);
    const echoed: string[] = [];
    const next = () => new Promise<string>((resolve) => res.once('data', (d: Buffer) => resolve(d.toString())));
    echoed.push(await next());
    for (let i = 1; i < 3; i++) {
      const got = next();
      req.write(`chunk-${i}`);
      echoed.push(await got);
    }
    const ended = new Promise((resolve) => res.once('end', resolve));
    res.resume();
    req.end();
    await ended;
    agent.destroy();
    expect(echoed).toEqual(['chunk-0', 'chunk-1', 'chunk-2']);
  });

  it('carries a fixed-length POST body and a chunked request body, without the HTTP/1.1 framing fields', async () => {
    const body = 'x'.repeat(300_000);
    const fixed = await h1Request(port(), { ca: pki.ca.certPem, path: '/post', method: 'POST', body });
    expect(fixed.status).toBe(200);
    expect(JSON.parse(fixed.body).bodyBytes).toBe(body.length);
    expect(up.seen.at(-1)!.headers['content-length']).toBe(String(body.length));

    const chunked = await rawExchange(
      port(),
      pki.ca.certPem,
      'POST /chunked HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n' +
        '5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-req-trailer: dropped\r\n\r\n',
    );
    expect(chunked).toMatch(/^HTTP\/1\.1 200 /);
    expect(chunked).toContain('"bodyBytes":11');
    const seen = up.seen.at(-1)!;
    expect(seen.headers[':path']).toBe('/chunked');
    expect(seen.headers[':authority']).toBe('svc');
    expect(seen.headers['transfer-encoding']).toBeUndefined();
    expect(seen.headers['x-req-trailer']).toBeUndefined();
  });

  it('renders a response without a length as chunked; trailers only for a client that sent TE: trailers', async () => {
    const plain = await h1Request(port(), { ca: pki.ca.certPem, path: '/no-te' });
    expect(plain.status).toBe(200);
    expect(plain.headers?.['transfer-encoding']).toBe('chunked');
    expect(plain.headers?.['content-length']).toBeUndefined();
    expect(plain.trailers).toEqual({});
    expect(up.seen.at(-1)!.headers.te).toBeUndefined();

    const withTe = await h1Request(port(), { ca: pki.ca.certPem, path: '/te', headers: { te: 'trailers' } });
    expect(withTe.status).toBe(200);
    expect(withTe.headers?.['transfer-encoding']).toBe('chunked');
    expect(withTe.trailers).toEqual({ 'x-trailer': 'from-upstream' });
    expect(JSON.parse(withTe.body).headers[':path']).toBe('/te');
    expect(up.seen.at(-1)!.headers.te).toBe('trailers');
  });

  it('keeps the connection alive across several requests', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const results: H1Result[] = [];
    for (let i = 0; i < 4; i++) results.push(await h1Request(port(), { ca: pki.ca.certPem, path: `/ka/${i}`, agent }));
    agent.destroy();
    expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200]);
    expect(results.map((r) => r.reusedSocket)).toEqual([false, true, true, true]);
    expect(paths().filter((p) => p.startsWith('/ka/'))).toEqual(['/ka/0', '/ka/1', '/ka/2', '/ka/3']);
  });

  it('answers 502 when the upstream resets the stream before its response head', async () => {
    const result = await h1Request(port(), { ca: pki.ca.certPem, path: '/refuse' });
    expect({ status: result.status, body: result.body }).toEqual({ status: 502, body: 'upstream unavailable\n' });
  });

  it('cuts the client connection when the upstream resets the stream inside its response', async () => {
    const req = httpsRequest({
      host: '127.0.0.1',
      port: port(),
      servername: 'localhost',
      ca: pki.ca.certPem,
      path: '/cut',
      method: 'POST',
      agent: false,
    });
    req.on('error', () => undefined);
    const outcome = await new Promise<{ status?: number; body: string; ended: string }>((resolve) => {
      req.once('response', (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode, body, ended: 'complete' }));
        res.on('error', () => resolve({ status: res.statusCode, body, ended: 'cut' }));
      });
      req.write('x');
    });
    expect(outcome).toEqual({ status: 200, body: 'partial', ended: 'cut' });
    req.destroy();

    // A reset that follows a complete response (END_STREAM, then RST_STREAM) only ends the request side.
    const complete = await h1Request(port(), { ca: pki.ca.certPem, path: '/reset' });
    expect({ status: complete.status, body: complete.body, error: complete.error }).toEqual({
      status: 200,
      body: 'partial',
      error: undefined,
    });
  });

  it('answers 504 when the upstream does not answer in time, and cancels its stream', async () => {
    const before = up.seen.length;
    const result = await h1Request(port(), { ca: pki.ca.certPem, path: '/hang' });
    expect({ status: result.status, body: result.body }).toEqual({ status: 504, body: 'upstream timed out\n' });
    await until(() => up.seen[before]?.rstCode !== undefined);
    expect(up.seen[before]?.rstCode).toBe(constants.NGHTTP2_CANCEL);
  });

  it('cancels the upstream stream (RST_STREAM CANCEL) when the client goes away', async () => {
    const before = up.seen.length;
    const socket = await h1Socket(port(), pki.ca.certPem);
    socket.write('GET /hang HTTP/1.1\r\nHost: svc\r\n\r\n');
    await until(() => up.seen.length > before);
    socket.destroy();
    await until(() => up.seen[before]?.rstCode !== undefined);
    expect(up.seen[before]?.rstCode).toBe(constants.NGHTTP2_CANCEL);
  });

  it('answers an upgrade (WebSocket) and CONNECT 501 with the reason; nothing reaches the upstream', async () => {
    const before = up.seen.length;
    const upgrade = await rawExchange(
      port(),
      pki.ca.certPem,
      'GET /ws HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    expect(upgrade).toMatch(/^HTTP\/1\.1 501 /);
    expect(upgrade).toContain('cannot cross to the h2c upstream');
    const connect = await rawExchange(port(), pki.ca.certPem, 'CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n');
    expect(connect).toMatch(/^HTTP\/1\.1 501 /);
    expect(connect).toContain('CONNECT cannot be relayed');
    expect(up.seen.length).toBe(before);
  });

  it('refuses smuggling-shaped framing (llhttp, strict) with 400 before anything reaches the upstream', async () => {
    const before = up.seen.length;
    const clTe = await rawExchange(
      port(),
      pki.ca.certPem,
      'POST /smuggle HTTP/1.1\r\nHost: svc\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n' +
        '0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: svc\r\n\r\n',
    );
    const twoLengths = await rawExchange(
      port(),
      pki.ca.certPem,
      'POST /smuggle HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc',
    );
    const twoHosts = await rawExchange(
      port(),
      pki.ca.certPem,
      'GET /smuggle HTTP/1.1\r\nHost: svc\r\nHost: admin\r\n\r\n',
    );
    for (const answer of [clTe, twoLengths, twoHosts]) expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(up.seen.length).toBe(before);
  });

  it('strict mode still refuses an HTTP/1.1 client without a certificate; nothing reaches the upstream', async () => {
    const before = up.seen.length;
    const result = await httpsGet(strictPort(), { ca: pki.ca.certPem, path: '/must-not-arrive' });
    expect(result.status).toBe(400);
    expect(result.body).toContain('(no_certificate)');
    expect(up.seen.length).toBe(before);
  });

  it('counts the requests in mtls_sidecar_requests_total', async () => {
    const text = sidecar.metrics.registry.metricsText();
    expect(text).toMatch(/mtls_sidecar_requests_total\{mode="standard",code="200"\} [1-9]/);
    expect(text).toMatch(/mtls_sidecar_requests_total\{mode="standard",code="501"\} 2/);
  });
});

describe('sidecar: HTTP/1.1 to h2c when the upstream fails or the sidecar drains', () => {
  let pki: Pki;
  beforeAll(async () => {
    pki = await makePki();
  });

  it('answers 502 when the h2c upstream is not listening', async () => {
    const closed = createHttpServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const deadPort = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const sidecar = await h2cSidecar(await tlsDir(pki), deadPort);
    try {
      const result = await h1Request(sidecar.ports[0]!, { ca: pki.ca.certPem, path: '/' });
      expect({ status: result.status, body: result.body }).toEqual({ status: 502, body: 'upstream unavailable\n' });
    } finally {
      await sidecar.stop(1_000);
    }
  });

  it('answers 408 and closes when a request head does not arrive within the headers timeout', async () => {
    const up = await startH2cUpstream();
    const sidecar = await h2cSidecar(await tlsDir(pki), up.port, ['--headers-timeout', '300']);
    try {
      const started = Date.now();
      const answer = await rawExchange(sidecar.ports[0]!, pki.ca.certPem, 'GET /slow HTTP/1.1\r\nHost: svc\r\n');
      expect(answer).toMatch(/^HTTP\/1\.1 408 /);
      expect(Date.now() - started).toBeLessThan(2_000);
      expect(up.seen).toEqual([]);
    } finally {
      await sidecar.stop(1_000);
      up.server.close();
    }
  });

  it('drain closes an idle connection at once and a busy one after its response', async () => {
    const up = await startH2cUpstream();
    const sidecar = await h2cSidecar(await tlsDir(pki), up.port);
    try {
      const idle = await h1Socket(sidecar.ports[0]!, pki.ca.certPem);
      const idleClosed = new Promise((resolve) => idle.once('close', resolve));
      idle.on('error', () => undefined);
      const firstAnswer = new Promise((resolve) => idle.once('data', resolve));
      idle.write('GET /first HTTP/1.1\r\nHost: svc\r\n\r\n');
      await firstAnswer;

      const busy = httpsRequest({
        host: '127.0.0.1',
        port: sidecar.ports[0]!,
        servername: 'localhost',
        ca: pki.ca.certPem,
        path: '/echo',
        method: 'POST',
        agent: false,
      });
      const res = await new Promise<IncomingMessage>((resolve) => {
        busy.once('response', resolve);
        busy.write('a');
      });
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      const busyClosed = new Promise((resolve) => res.socket.once('close', resolve));

      const stopped = sidecar.stop(5_000);
      await idleClosed;
      busy.end('b');
      await busyClosed;
      await stopped;
      expect(body).toBe('ab');
      expect(res.complete).toBe(true);
    } finally {
      up.server.close();
    }
  });
});
