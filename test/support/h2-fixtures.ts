import {
  type ClientHttp2Session,
  connect,
  constants,
  createServer as createH2cServer,
  type Http2Server,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
} from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { PemPair } from '../../operator/pki/issue.ts';

/** An h2 client session over TLS to the sidecar, with an optional client certificate. */
export function h2Client(port: number, opts: { ca: string; client?: PemPair }): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = connect(`https://localhost:${port}`, {
      ca: opts.ca,
      cert: opts.client?.certPem,
      key: opts.client?.keyPem,
      servername: 'localhost',
    });
    session.once('connect', () => resolve(session));
    session.once('error', reject);
  });
}

export interface H2Result {
  status?: number;
  headers?: IncomingHttpHeaders;
  trailers?: IncomingHttpHeaders;
  body: string;
  rstCode?: number;
  error?: string;
}

/** One request on a session; resolves when the stream closes, however it closes. */
export function h2Request(
  session: ClientHttp2Session,
  headers: OutgoingHttpHeaders,
  body?: string | Buffer,
): Promise<H2Result> {
  return new Promise((resolve) => {
    const result: H2Result = { body: '' };
    let req;
    try {
      req = session.request({ ':path': '/', ...headers }, { endStream: body === undefined });
    } catch (err) {
      return resolve({ ...result, error: (err as Error).message });
    }
    req.on('response', (h) => {
      result.status = Number(h[':status']);
      result.headers = h;
    });
    req.on('trailers', (t) => (result.trailers = t));
    req.setEncoding('utf8');
    req.on('data', (d: string) => (result.body += d));
    req.on('error', (err: NodeJS.ErrnoException) => (result.error = err.code ?? err.message));
    req.on('close', () => resolve({ ...result, rstCode: req.rstCode }));
    if (body !== undefined) req.end(body);
  });
}

/** What the h2c mock upstream saw of each stream. */
export interface SeenStream {
  headers: IncomingHttpHeaders;
  bodyBytes: number;
  rstCode?: number;
}

/**
 * An h2c (prior knowledge) mock upstream: echoes the request fields as JSON with a trailer; `/reset` resets the
 * stream with ENHANCE_YOUR_CALM after the response headers (node:http2 ends the response, END_STREAM, before the
 * RST_STREAM), `/cut` resets it with INTERNAL_ERROR inside the response (no END_STREAM), `/refuse` before any
 * response, `/hang` never answers, `/echo` streams the body back as it arrives.
 */
export async function startH2cUpstream(port = 0): Promise<{ server: Http2Server; port: number; seen: SeenStream[] }> {
  const seen: SeenStream[] = [];
  const server = createH2cServer();
  server.on('stream', (stream, headers) => {
    const record: SeenStream = { headers, bodyBytes: 0 };
    seen.push(record);
    stream.on('error', () => undefined);
    stream.on('close', () => (record.rstCode = stream.rstCode));
    const path = headers[':path'];
    if (path === '/hang') return;
    if (path === '/echo') {
      stream.respond({ ':status': 200 }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'x-done': 'yes' }));
      stream.pipe(stream);
      return;
    }
    if (path === '/refuse') return void stream.close(constants.NGHTTP2_INTERNAL_ERROR);
    if (path === '/cut') {
      stream.respond({ ':status': 200 });
      stream.write('partial');
      setTimeout(() => stream.destroy(new Error('cut inside the response')), 20);
      return;
    }
    if (path === '/reset') {
      stream.respond({ ':status': 200 });
      stream.write('partial');
      setTimeout(() => stream.close(constants.NGHTTP2_ENHANCE_YOUR_CALM), 20);
      return;
    }
    stream.on('data', (d: Buffer) => (record.bodyBytes += d.length));
    stream.on('end', () => {
      if (stream.closed) return;
      stream.respond({ ':status': 200, 'content-type': 'application/json' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'x-trailer': 'from-upstream' }));
      stream.end(JSON.stringify({ headers, bodyBytes: record.bodyBytes }));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return { server, port: (server.address() as AddressInfo).port, seen };
}
