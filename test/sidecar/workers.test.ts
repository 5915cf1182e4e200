import { execFileSync, spawn } from 'node:child_process';
import type { Server } from 'node:http';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { freePort } from '../../local/controlplane/local-control-plane.ts';
import { waitFor } from '../support/cluster.ts';
import { httpsGet, makePki, type Pki, startMockUpstream, tlsDir } from '../support/tls-fixtures.ts';

const CLI = new URL('../../operator/cli.ts', import.meta.url).pathname;

/** The pids that own sockets on a local port, as `ss` reports them ("listening" or "established"). */
function socketOwners(port: number, state: 'listening' | 'established'): Set<number> {
  const out = execFileSync('ss', ['-Htnp', 'state', state, `( sport = :${port} )`]).toString();
  return new Set([...out.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1])));
}

const metric = (text: string, series: string) =>
  Number(
    text
      .split('\n')
      .find((line) => line.startsWith(`${series} `))
      ?.split(' ')[1] ?? 0,
  );

describe('sidecar: --workers', () => {
  let pki: Pki;
  let upstream: { server: Server; port: number };
  beforeAll(async () => {
    pki = await makePki();
    upstream = await startMockUpstream();
  });
  afterAll(() => upstream?.server.close());

  it('shares the ports between processes, sums their metrics, restarts a dead worker, and stops them all', async () => {
    const dir = await tlsDir(pki);
    const port = await freePort();
    const admin = await freePort();
    const primary = spawn(process.execPath, [
      CLI,
      'sidecar',
      '--listen',
      `strict=${port}`,
      '--upstream',
      `127.0.0.1:${upstream.port}`,
      '--tls-dir',
      dir,
      '--admin',
      `127.0.0.1:${admin}`,
      '--workers',
      '2',
    ]);
    let logs = '';
    primary.stderr.on('data', (d: Buffer) => (logs += d.toString()));
    primary.stdout.on('data', (d: Buffer) => (logs += d.toString()));
    const sockets: TLSSocket[] = [];
    try {
      await waitFor('two processes listening', async () => socketOwners(port, 'listening').size === 2);
      const [worker] = [...socketOwners(port, 'listening')].filter((pid) => pid !== primary.pid);
      expect(worker).toBeDefined();

      for (let i = 0; i < 40; i++) {
        expect((await httpsGet(port, { ca: pki.ca.certPem, client: pki.client })).status).toBe(200);
      }
      expect((await httpsGet(port, { ca: pki.ca.certPem, client: pki.unknownCa })).status).toBe(400);
      // The kernel spreads connections: with 24 held open, both processes own some (1 in 2^23 to fail).
      for (let i = 0; i < 24; i++) {
        const socket = tlsConnect({
          host: '127.0.0.1',
          port,
          ca: pki.ca.certPem,
          cert: pki.client.certPem,
          key: pki.client.keyPem,
          servername: 'localhost',
        });
        await new Promise((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
        sockets.push(socket);
      }
      expect(socketOwners(port, 'established')).toEqual(new Set([primary.pid, worker]));

      // One admin port, everyone's counts (a TLS 1.3 server finishes its side just after the client, so the
      // held connections stay open until it has).
      const metrics = async () => (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
      await waitFor('64 handshakes counted', async () =>
        metric(await metrics(), 'mtls_sidecar_handshakes_total{mode="strict",result="success"}') === 64
          ? true
          : undefined,
      );
      const text = await metrics();
      expect(metric(text, 'mtls_sidecar_requests_total{mode="strict",code="200"}')).toBe(40);
      expect(metric(text, 'mtls_sidecar_handshakes_total{mode="strict",result="unknown_ca"}')).toBe(1);
      for (const socket of sockets.splice(0)) socket.destroy();

      process.kill(worker!, 'SIGKILL');
      await waitFor('the worker to be replaced', async () => {
        const owners = socketOwners(port, 'listening');
        return owners.size === 2 && !owners.has(worker!);
      });
      expect(logs).toContain('sidecar worker died; restarting it');
      for (let i = 0; i < 10; i++) {
        expect((await httpsGet(port, { ca: pki.ca.certPem, client: pki.client })).status).toBe(200);
      }

      primary.kill('SIGTERM');
      expect(await new Promise((resolve) => primary.on('exit', resolve))).toBe(0);
      expect(socketOwners(port, 'listening').size).toBe(0);
      expect(logs).not.toContain('PRIVATE KEY');
    } finally {
      for (const socket of sockets) socket.destroy();
      primary.kill('SIGKILL');
    }
  });

  it('refuses a bad --workers value', () => {
    const result = spawn(process.execPath, [
      CLI,
      'sidecar',
      '--listen',
      'strict=1',
      '--upstream',
      'x:1',
      '--tls-dir',
      '/x',
      '--workers',
      '0',
    ]);
    let err = '';
    result.stderr.on('data', (d: Buffer) => (err += d.toString()));
    return new Promise<void>((resolve) =>
      result.on('exit', (code) => {
        expect(code).toBe(2);
        expect(err).toContain('--workers: "0" is not a positive whole number');
        resolve();
      }),
    );
  });
});
