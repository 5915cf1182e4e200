import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import { createServer as createH2Server, type IncomingHttpHeaders } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../local/controlplane/local-control-plane.ts';
import { type AddressInfo, connect, createServer as createNetServer, type Server, type Socket } from 'node:net';
import { parseSidecarConfig } from '../../sidecar/flags.ts';
import { setLogLevel } from '../../sidecar/log.ts';
import { type RunningSidecar, startSidecar } from '../../sidecar/sidecar.ts';
import {
  MAX_SILENT_PROBES,
  STREAM_PROBE_INTERVAL_MS,
  type UpstreamProtocolFinding,
} from '../../sidecar/upstream-protocol.ts';
import { echoClient, startEchoServer, unary } from '../support/grpc/echo.ts';
import { h2Client, h2Request, startH2cUpstream } from '../support/h2-fixtures.ts';
import { httpsGet, makePki, type Pki, startMockUpstream, tlsDir } from '../support/tls-fixtures.ts';

/**
 * `--upstream-protocol auto` against real upstreams: node:http2's h2c server, node:http's HTTP/1.1 server, a
 * server that speaks both on one port (as Go's h2c handler and gRPC servers do), one that accepts and says
 * nothing, and one that is not listening when the sidecar starts. Every case is checked with an h2 client and
 * an HTTP/1.1 client through the sidecar, and through the admin port's /status and /metrics.
 */

const PROBE = { timeoutMs: 300, backoff: { first: 50, max: 200 } };

async function autoSidecar(dir: string, upstreamPort: number, probe = PROBE): Promise<RunningSidecar> {
  const config = parseSidecarConfig([
    '--listen',
    'flexible=0',
    '--upstream',
    `127.0.0.1:${upstreamPort}`,
    '--upstream-protocol',
    'auto',
    '--tls-dir',
    dir,
    '--admin',
    '127.0.0.1:0',
    '--upstream-timeout',
    '2000',
  ]);
  return startSidecar(config, { probe });
}

/** Polls the sidecar's finding until it is no longer unknown (at most `ms`). */
async function detected(sidecar: RunningSidecar, ms = 5_000): Promise<UpstreamProtocolFinding> {
  const until = Date.now() + ms;
  while (sidecar.upstreamProtocol().detected === 'unknown' && Date.now() < until)
    await new Promise((resolve) => setTimeout(resolve, 25));
  return sidecar.upstreamProtocol();
}

async function admin(sidecar: RunningSidecar, path: string): Promise<string> {
  return (await fetch(`http://127.0.0.1:${sidecar.adminPort}${path}`)).text();
}

/**
 * One server port that takes h2c prior knowledge and HTTP/1.1 alike, told apart by the first bytes (as Go's h2c
 * handler does); each connection is relayed to a node:http2 or a node:http server behind it.
 */
async function startDualUpstream(): Promise<{
  port: number;
  seen: { protocol: string; path: string }[];
  close: () => void;
}> {
  const seen: { protocol: string; path: string }[] = [];
  const h2 = createH2Server();
  h2.on('stream', (stream, headers: IncomingHttpHeaders) => {
    seen.push({ protocol: 'h2c', path: String(headers[':path']) });
    stream.respond({ ':status': 200 });
    stream.end('h2c');
  });
  const h1 = createHttpServer((req: IncomingMessage, res) => {
    seen.push({ protocol: 'http1', path: req.url! });
    res.end('http1');
  });
  const listen = async (server: Server | typeof h2 | typeof h1) => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return (server.address() as AddressInfo).port;
  };
  const [h2Port, h1Port] = [await listen(h2), await listen(h1)];
  const sockets = new Set<Socket>();
  const front = createNetServer((socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.once('data', (first: Buffer) => {
      const back = connect(first.subarray(0, 3).toString('latin1') === 'PRI' ? h2Port : h1Port, '127.0.0.1');
      sockets.add(back);
      back.on('close', () => sockets.delete(back));
      back.on('error', () => socket.destroy());
      back.write(first);
      socket.pipe(back).pipe(socket);
    });
  });
  const port = await listen(front);
  return {
    port,
    seen,
    close: () => {
      for (const socket of sockets) socket.destroy();
      for (const server of [front, h2, h1]) server.close();
    },
  };
}

/**
 * Debian's nginx as a plain upstream: `http2` on its cleartext listener (h2c prior knowledge) or not (HTTP/1.1
 * only, where it answers an h2c preface with 400). Answers "nginx <protocol>" to every request.
 */
async function startNginx(h2c: boolean): Promise<{ port: number; stop: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), 'auto-nginx-'));
  const port = await freePort();
  writeFileSync(
    join(dir, 'nginx.conf'),
    `worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 64; }
http {
  access_log off;
  server {
    listen 127.0.0.1:${port}${h2c ? ' http2' : ''};
    location / { return 200 "nginx $server_protocol"; }
  }
}
`,
  );
  const child = spawn('/usr/sbin/nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore' });
  const until = Date.now() + 15_000;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (up) break;
    if (Date.now() > until) throw new Error(`nginx did not listen on ${port}; see ${dir}/error.log`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    port,
    stop: () => {
      child.kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('sidecar: --upstream-protocol auto', () => {
  let pki: Pki;
  let dir: string;
  const cleanups: (() => unknown)[] = [];

  beforeAll(async () => {
    pki = await makePki();
    dir = await tlsDir(pki);
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  /** Waits (at most 3 s) until the sidecar has made `count` probes; the test then asserts what they found. */
  const probesMade = async (sidecar: RunningSidecar, count: number) => {
    const until = Date.now() + 3_000;
    while (sidecar.upstreamProtocol().probes < count && Date.now() < until)
      await new Promise((resolve) => setTimeout(resolve, 25));
  };

  /**
   * A sidecar whose upstream is not listening yet, after its first probe found nothing, with a backoff far longer
   * than a test: only a stream or a connection can cause its next probe.
   */
  const sidecarWaitingForUpstream = async () => {
    const port = await freePort();
    const sidecar = await autoSidecar(dir, port, { timeoutMs: 1_000, backoff: { first: 600_000, max: 600_000 } });
    cleanups.push(() => sidecar.stop(500));
    await probesMade(sidecar, 1);
    expect(sidecar.upstreamProtocol()).toMatchObject({ detected: 'unknown', probes: 1 });
    return { port, sidecar };
  };

  const h2Get = async (sidecar: RunningSidecar, path: string) => {
    const session = await h2Client(sidecar.ports[0]!, { ca: pki.ca.certPem, client: pki.client });
    try {
      return await h2Request(session, { ':path': path });
    } finally {
      session.close();
    }
  };
  const h1Get = (sidecar: RunningSidecar, path: string) =>
    httpsGet(sidecar.ports[0]!, { ca: pki.ca.certPem, client: pki.client, path });

  it('finds h2c on an h2c server: h2 streams go on as h2c (trailers and all); says so in the log, /status, /metrics', async () => {
    const up = await startH2cUpstream();
    cleanups.push(() => up.server.close());
    const lines: string[] = [];
    const write = process.stderr.write;
    process.stderr.write = ((chunk: string | Uint8Array) => lines.push(String(chunk)) > 0) as typeof write;
    setLogLevel('info');
    cleanups.push(() => {
      process.stderr.write = write;
      setLogLevel(process.env.MTLS_LOG_LEVEL ?? process.env.LOG_LEVEL ?? 'info');
    });
    const sidecar = await autoSidecar(dir, up.port);
    cleanups.push(() => sidecar.stop(500));

    const finding = await detected(sidecar);
    expect(finding).toMatchObject({ requested: 'auto', detected: 'h2c', probes: 1 });
    const logged = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(logged.find((line) => line.message === 'upstream protocol detected')).toMatchObject({
      component: 'sidecar',
      level: 'info',
      upstream: `127.0.0.1:${up.port}`,
      requested: 'auto',
      detected: 'h2c',
      probes: 1,
      reason: expect.stringContaining('SETTINGS'),
    });
    const answer = await h2Get(sidecar, '/grpc-like');
    expect(answer.status).toBe(200);
    expect(answer.trailers?.['x-trailer']).toBe('from-upstream');
    expect(up.seen.at(-1)!.headers['x-client-verify']).toBe('SUCCESS');

    expect(JSON.parse(await admin(sidecar, '/status')).upstreamProtocol).toMatchObject({ detected: 'h2c' });
    expect(await admin(sidecar, '/metrics')).toContain(
      'mtls_sidecar_upstream_protocol{requested="auto",detected="h2c"} 1',
    );
    // HTTP/1.1 clients' requests go as h2c streams too (an h2c-only server cannot read HTTP/1.1), with the identity.
    const h1 = await httpsGet(sidecar.ports[0]!, {
      ca: pki.ca.certPem,
      client: pki.client,
      path: '/h1',
      headers: { 'x-forwarded-client-cert': 'Hash=0;Subject="CN=admin"' },
    });
    expect(h1.status).toBe(200);
    const seen = up.seen.at(-1)!.headers;
    expect(seen[':path']).toBe('/h1');
    expect(seen['x-client-verify']).toBe('SUCCESS');
    expect(String(seen['x-forwarded-client-cert'])).toMatch(/^Hash=[0-9a-f]{64};Subject="CN=billing";URI=/);
  });

  it('finds h2c on a real gRPC server (@grpc/grpc-js): a grpc-js client gets its answer and identity through auto', async () => {
    const mock = await startEchoServer();
    cleanups.push(() => mock.stop());
    const sidecar = await autoSidecar(dir, mock.port);
    cleanups.push(() => sidecar.stop(500));

    expect((await detected(sidecar)).detected).toBe('h2c');
    const client = echoClient(sidecar.ports[0]!, pki.ca.certPem, pki.client);
    cleanups.push(() => client.close());
    const result = await unary(client, { text: 'through-auto' });
    expect(result.code).toBeUndefined();
    expect(result.reply).toMatchObject({ text: 'through-auto', clientVerify: 'SUCCESS' });
    expect(mock.seen).toEqual(['through-auto']);
  });

  it('finds http1 on an HTTP/1.1-only server: h2 and HTTP/1.1 clients both reach it', async () => {
    const up = await startMockUpstream();
    cleanups.push(() => up.server.close());
    const sidecar = await autoSidecar(dir, up.port);
    cleanups.push(() => sidecar.stop(500));

    const finding = await detected(sidecar);
    expect(finding).toMatchObject({ detected: 'http1', probes: 1 });
    expect(finding.reason).toMatch(/something other than HTTP\/2|closed the connection/);
    expect((await h2Get(sidecar, '/from-h2')).status).toBe(200);
    expect((await h1Get(sidecar, '/from-h1')).status).toBe(200);
    expect(up.requests.map((r) => r.url)).toEqual(expect.arrayContaining(['/from-h2', '/from-h1']));
    expect(await admin(sidecar, '/metrics')).toContain(
      'mtls_sidecar_upstream_protocol{requested="auto",detected="http1"} 1',
    );
  });

  for (const h2c of [false, true]) {
    it(`finds ${h2c ? 'h2c on nginx with http2 on its cleartext listener' : 'http1 on nginx without http2'}; h2 clients reach it`, async () => {
      const nginx = await startNginx(h2c);
      cleanups.push(() => nginx.stop());
      const sidecar = await autoSidecar(dir, nginx.port);
      cleanups.push(() => sidecar.stop(500));

      const finding = await detected(sidecar);
      expect(finding.detected).toBe(h2c ? 'h2c' : 'http1');
      const answer = await h2Get(sidecar, '/via-auto');
      expect(answer).toMatchObject({ status: 200, body: h2c ? 'nginx HTTP/2.0' : 'nginx HTTP/1.1' });
    });
  }

  it('finds h2c on a server that speaks both: h2 and HTTP/1.1 clients go as h2c', async () => {
    const up = await startDualUpstream();
    cleanups.push(() => up.close());
    const sidecar = await autoSidecar(dir, up.port);
    cleanups.push(() => sidecar.stop(500));

    expect((await detected(sidecar)).detected).toBe('h2c');
    expect((await h2Get(sidecar, '/a')).body).toBe('h2c');
    expect((await h1Get(sidecar, '/b')).body).toBe('h2c');
    expect(up.seen).toEqual([
      { protocol: 'h2c', path: '/a' },
      { protocol: 'h2c', path: '/b' },
    ]);
  });

  it('an upstream down at start is probed again with backoff; streams go as HTTP/1.1 until it is found', async () => {
    const port = await freePort();
    const sidecar = await autoSidecar(dir, port);
    cleanups.push(() => sidecar.stop(500));

    // Not found yet: unknown, the reason says why, and an h2 client meanwhile gets the HTTP/1.1 path's 502.
    await probesMade(sidecar, 3);
    const before = sidecar.upstreamProtocol();
    expect(before).toMatchObject({ detected: 'unknown' });
    expect(before.probes).toBeGreaterThanOrEqual(3);
    expect(before.reason).toMatch(/not reachable \(ECONNREFUSED\)/);
    expect(await admin(sidecar, '/metrics')).toContain(
      'mtls_sidecar_upstream_protocol{requested="auto",detected="unknown"} 1',
    );
    expect((await h2Get(sidecar, '/early')).status).toBe(502);

    const up = await startH2cUpstream(port);
    cleanups.push(() => up.server.close());
    const finding = await detected(sidecar);
    expect(finding.detected).toBe('h2c');
    const answer = await h2Get(sidecar, '/late');
    expect(answer.status).toBe(200);
    expect(up.seen.map((s) => s.headers[':path'])).toEqual(['/late']);
    // Kept for the life of the process: no further probe once decided.
    const probes = finding.probes;
    await new Promise((resolve) => setTimeout(resolve, 4 * PROBE.backoff.max));
    expect(sidecar.upstreamProtocol().probes).toBe(probes);
  });

  it('a stream brings the next probe forward and waits for it: the first call after the app starts goes as h2c', async () => {
    const { port, sidecar } = await sidecarWaitingForUpstream();

    const up = await startH2cUpstream(port);
    cleanups.push(() => up.server.close());
    await new Promise((resolve) => setTimeout(resolve, STREAM_PROBE_INTERVAL_MS + 50));
    const answer = await h2Get(sidecar, '/first-call');
    expect(answer.status).toBe(200);
    expect(answer.trailers?.['x-trailer']).toBe('from-upstream');
    expect(up.seen.map((s) => s.headers[':path'])).toEqual(['/first-call']);
    expect(sidecar.upstreamProtocol()).toMatchObject({ detected: 'h2c', probes: 2 });
  });

  for (const found of ['h2c', 'http1'] as const) {
    it(`an HTTP/1.1 connection waits, unread, for the probe it brings forward, then goes as ${found}`, async () => {
      const { port, sidecar } = await sidecarWaitingForUpstream();

      let seen: () => string[];
      if (found === 'h2c') {
        const up = await startH2cUpstream(port);
        cleanups.push(() => up.server.close());
        seen = () => up.seen.map((s) => String(s.headers[':path']));
      } else {
        const up = await startMockUpstream(port);
        cleanups.push(() => up.server.close());
        seen = () => up.requests.map((r) => r.url!);
      }
      await new Promise((resolve) => setTimeout(resolve, STREAM_PROBE_INTERVAL_MS + 50));
      // The request is written with the handshake: its bytes arrive while the connection waits for the probe.
      const answer = await h1Get(sidecar, '/first-h1');
      expect(answer.status).toBe(200);
      expect(seen()).toEqual(['/first-h1']);
      expect(sidecar.upstreamProtocol()).toMatchObject({ detected: found, probes: 2 });
    });
  }

  it('an upstream that accepts and never answers is taken as HTTP/1.1 after a bounded number of probes', async () => {
    const held = new Set<Socket>();
    const up = createNetServer((socket) => {
      held.add(socket);
      socket.resume(); // reads (and drops) the preface, so the probe's close is seen
      socket.on('error', () => undefined);
      socket.on('close', () => held.delete(socket));
    });
    await new Promise<void>((resolve) => up.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => {
      for (const socket of held) socket.destroy();
      up.close();
    });
    const sidecar = await autoSidecar(dir, (up.address() as AddressInfo).port);
    cleanups.push(() => sidecar.stop(500));

    const finding = await detected(sidecar, 10_000);
    expect(finding).toMatchObject({ detected: 'http1', probes: MAX_SILENT_PROBES });
    expect(finding.reason).toContain(`no answer to an h2c preface in ${MAX_SILENT_PROBES} probes`);
    // Every probe connection was closed by the sidecar once it timed out.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(held.size).toBe(0);
  });

  it('a probe in flight ends with the sidecar', async () => {
    const held = new Set<Socket>();
    const up = createNetServer((socket) => {
      held.add(socket);
      socket.resume();
      socket.on('error', () => undefined);
      socket.on('close', () => held.delete(socket));
    });
    await new Promise<void>((resolve) => up.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => {
      for (const socket of held) socket.destroy();
      up.close();
    });
    const sidecar = await autoSidecar(dir, (up.address() as AddressInfo).port, {
      timeoutMs: 60_000,
      backoff: PROBE.backoff,
    });
    const until = Date.now() + 3_000;
    while (held.size === 0 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 25));
    expect(held.size).toBe(1);
    await sidecar.stop(500);
    const closed = Date.now() + 3_000;
    while (held.size > 0 && Date.now() < closed) await new Promise((resolve) => setTimeout(resolve, 25));
    expect(held.size).toBe(0);
    expect(sidecar.upstreamProtocol()).toMatchObject({ detected: 'unknown', probes: 0 });
  });
});
