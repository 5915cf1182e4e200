import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { ForwardContext, ProxyConnection } from '../../sidecar/forward.ts';
import type { Logger } from '../../sidecar/log.ts';
import { SidecarMetrics } from '../../sidecar/metrics.ts';
import { RefusalLog } from '../../sidecar/refusal-log.ts';

/**
 * The forwarding state machine (sidecar/forward.ts) over loopback sockets, without TLS or a sidecar process: a
 * plain TCP connection stands in for the verified TLS one (ProxyConnection only uses its net.Socket side), and a
 * Node HTTP server (llhttp) is the upstream. Every case also checks that no invariant of the state machine broke
 * (they are logged at error level).
 */

const IDENTITY = 'x-client-verify: SUCCESS\r\n';

interface Logged {
  level: string;
  message: string;
  fields?: object;
}

function recordingLogger(into: Logged[]): Logger {
  const at = (level: string) => (message: string, fields?: object) => void into.push({ level, message, fields });
  return { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') };
}

const listen = async <T extends Server | HttpServer>(server: T): Promise<number> => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
};

describe('ProxyConnection: one client connection relayed to the upstream', () => {
  const logged: Logged[] = [];
  const seen: string[] = [];
  let upstream: HttpServer;
  let front: Server;
  let frontPort = 0;
  let ctx: ForwardContext;

  beforeAll(async () => {
    // The upstream answers with what it parsed: method, target and body.
    upstream = createHttpServer((req, res) => {
      let body = '';
      req.setEncoding('latin1');
      req.on('data', (d: string) => (body += d));
      req.on('end', () => {
        const text = `${req.method} ${req.url} ${body} ${req.headers['x-client-verify']}`;
        seen.push(text);
        res.setHeader('content-length', Buffer.byteLength(text));
        res.end(text);
      });
    });
    const upstreamPort = await listen(upstream);
    const log = recordingLogger(logged);
    ctx = new ForwardContext({
      upstreamHost: '127.0.0.1',
      upstreamPort,
      upstream: `127.0.0.1:${upstreamPort}`,
      headersTimeoutMs: 10_000,
      requestTimeoutMs: 10_000,
      idleTimeoutMs: 10_000,
      upstreamTimeoutMs: 10_000,
      maxHeaderBytes: 16 * 1024,
      mode: 'standard',
      listener: () => frontPort,
      log,
      refusals: new RefusalLog(log),
      metrics: new SidecarMetrics({ sampleProcess: false }),
    });
    // ProxyConnection reads, writes, pauses and ends its client through net.Socket's API only.
    front = createServer((socket) => new ProxyConnection(socket as unknown as TLSSocket, ctx, IDENTITY));
    frontPort = await listen(front);
  });

  afterAll(() => {
    for (const conn of ctx.connections) conn.destroy();
    front.close();
    upstream.closeAllConnections();
    upstream.close();
  });

  afterEach(() => {
    expect(logged.filter((l) => l.level === 'error')).toEqual([]);
    logged.length = 0;
    seen.length = 0;
  });

  /** Writes `pieces` one after another (each its own write), then reads until `responses` bodies arrived. */
  async function converse(pieces: string[], responses: number): Promise<string> {
    const socket: Socket = connect(frontPort, '127.0.0.1');
    let text = '';
    const done = new Promise<void>((resolve) => {
      socket.on('data', (d: Buffer) => {
        text += d.toString('latin1');
        if ((text.match(/HTTP\/1\.1 \d{3} /g) ?? []).length >= responses && text.endsWith(seen.at(-1) ?? '\0'))
          resolve();
      });
      socket.on('close', () => resolve());
    });
    for (const piece of pieces) {
      socket.write(piece);
      await new Promise((resolve) => setImmediate(resolve));
    }
    await done;
    socket.destroy();
    return text;
  }

  it('answers pipelined requests in order, each forwarded with the identity lines', async () => {
    const get = (path: string) => `GET ${path} HTTP/1.1\r\nHost: a\r\n\r\n`;
    const text = await converse([get('/one') + get('/two') + get('/three')], 3);
    expect(seen).toEqual(['GET /one  SUCCESS', 'GET /two  SUCCESS', 'GET /three  SUCCESS']);
    expect(text.indexOf('GET /one')).toBeLessThan(text.indexOf('GET /two'));
    expect(text.indexOf('GET /two')).toBeLessThan(text.indexOf('GET /three'));
  });

  it('forwards a length body and a chunked body split across reads, then the request after them', async () => {
    const text = await converse(
      [
        'POST /len HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123',
        '456789POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab',
        'cde\r\n3;ext=1\r\nfgh\r\n0\r\nX-Trailer: 1\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n',
      ],
      3,
    );
    expect(seen).toEqual(['POST /len 0123456789 SUCCESS', 'POST /chunked abcdefgh SUCCESS', 'GET /after  SUCCESS']);
    expect(text).toContain('GET /after  SUCCESS');
  });

  it('refuses a bad chunk with 400 and closes, having forwarded nothing after it', async () => {
    const text = await converse(
      ['POST /bad HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET /smuggled HTTP/1.1\r\n\r\n'],
      1,
    );
    expect(text).toMatch(/^HTTP\/1\.1 400 /);
    expect(seen.filter((s) => s.includes('/smuggled'))).toEqual([]);
  });
});
