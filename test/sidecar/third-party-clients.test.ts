import { startTestSidecar } from '../support/sidecar.ts';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import type { RunningSidecar } from '../../sidecar/sidecar.ts';
import { ensureGoTool } from '../support/go-tools.ts';
import { type EchoServer, startEchoServer } from '../support/grpc/echo.ts';
import { pemFiles } from '../support/openssl.ts';
import { makePki, type Pki, tlsDir } from '../support/tls-fixtures.ts';

/** Exit status and output of a command (never rejects). */
function runTool(file: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 20_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` }),
    );
  });
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('sidecar with third-party clients and servers', () => {
  let pki: Pki;
  let files: Record<string, string>;

  beforeAll(async () => {
    pki = await makePki();
    files = pemFiles({
      'ca.pem': pki.ca.certPem,
      'client.pem': pki.client.certPem,
      'client.key': pki.client.keyPem,
    });
  });

  describe('grpc-health-probe (a Go gRPC client) through the strict listener', () => {
    let probe: string;
    let mock: EchoServer;
    let sidecar: RunningSidecar;

    beforeAll(async () => {
      probe = await ensureGoTool('grpc-health-probe');
      mock = await startEchoServer();
      sidecar = await startTestSidecar({
        listen: 'strict=0',
        upstreamPort: mock.port,
        tlsDir: await tlsDir(pki),
        extra: ['--upstream-protocol', 'h2c'],
      });
    }, 600_000);
    afterAll(async () => {
      await sidecar?.stop(1_000);
      await mock?.stop();
    });

    const args = () => [
      '-addr',
      `127.0.0.1:${sidecar.ports[0]}`,
      '-tls',
      '-tls-ca-cert',
      files['ca.pem']!,
      '-tls-server-name',
      'localhost',
    ];

    it('with the issued client certificate: SERVING', async () => {
      const result = await runTool(probe, [
        ...args(),
        '-tls-client-cert',
        files['client.pem']!,
        '-tls-client-key',
        files['client.key']!,
      ]);
      expect(result).toEqual({ code: 0, out: expect.stringContaining('status: SERVING') });
    });

    it("without one: the RPC fails Unauthenticated with the sidecar's reason", async () => {
      const result = await runTool(probe, args());
      // grpc-health-probe exits 3 for a failed RPC (2: no connection, 4: not serving).
      expect(result.code).toBe(3);
      expect(result.out).toMatch(/Unauthenticated/);
      expect(result.out).toMatch(/no_certificate/);
    });
  });

  describe('HAProxy reading the PROXY v2 header of a tcp listener', () => {
    let haproxy: ChildProcess;
    let sidecar: RunningSidecar;

    beforeAll(async () => {
      const port = await freePort();
      const dir = mkdtempSync(join(tmpdir(), 'mtls-haproxy-'));
      // HAProxy as the upstream: it accepts only PROXY-protocol connections and answers with what it read.
      writeFileSync(
        join(dir, 'haproxy.cfg'),
        [
          'defaults',
          '  mode http',
          '  timeout connect 2s',
          '  timeout client 10s',
          '  timeout server 10s',
          'frontend fe',
          `  bind 127.0.0.1:${port} accept-proxy`,
          '  http-request return status 200 content-type text/plain lf-string "src=%[src] port=%[src_port] authority=%[fc_pp_authority]\\n"',
          '',
        ].join('\n'),
      );
      haproxy = spawn('haproxy', ['-db', '-f', join(dir, 'haproxy.cfg')], { stdio: ['ignore', 'ignore', 'pipe'] });
      for (let i = 0; i < 100; i++) {
        const up = await new Promise<boolean>((resolve) => {
          const s = createServer();
          s.once('error', () => resolve(true));
          s.listen(port, '127.0.0.1', () => s.close(() => resolve(false)));
        });
        if (up) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      sidecar = await startTestSidecar({
        listen: 'strict=0/tcp',
        upstreamPort: port,
        tlsDir: await tlsDir(pki),
        extra: ['--proxy-protocol'],
      });
    });
    afterAll(async () => {
      await sidecar?.stop(500);
      haproxy?.kill();
    });

    it("sees the client's address and port and the SNI it sent", async () => {
      const socket = tlsConnect({
        host: '127.0.0.1',
        port: sidecar.ports[0]!,
        servername: 'localhost',
        ca: pki.ca.certPem,
        cert: pki.client.certPem,
        key: pki.client.keyPem,
      });
      await new Promise<void>((resolve, reject) => {
        socket.once('secureConnect', () => resolve());
        socket.once('error', reject);
      });
      const localPort = socket.localPort;
      const answer = await new Promise<string>((resolve) => {
        let text = '';
        socket.on('data', (d: Buffer) => (text += d.toString()));
        socket.on('close', () => resolve(text));
        socket.end('GET / HTTP/1.1\r\nHost: db\r\nConnection: close\r\n\r\n');
      });
      expect(answer).toMatch(/^HTTP\/1\.1 200/);
      expect(answer).toContain(`src=127.0.0.1 port=${localPort} authority=localhost\n`);
    });
  });
});
