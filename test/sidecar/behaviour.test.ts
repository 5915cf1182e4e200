import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import type { Server } from 'node:http';
import { connect as netConnect } from 'node:net';
import { issueCRL } from '../../operator/pki/crl-issuer.ts';
import { issueServer } from '../../operator/pki/issue.ts';
import { writeSecretVolume } from '../../sidecar/secret-volume.ts';
import { freePort } from '../../local/controlplane/local-control-plane.ts';
import { waitFor } from '../support/cluster.ts';
import { connectTls, nextData, readUntilClose, startTestSidecar, withSidecar } from '../support/sidecar.ts';
import { httpsGet, makePki, type Pki, startMockUpstream, tlsDir } from '../support/tls-fixtures.ts';

const CLI = new URL('../../operator/cli.ts', import.meta.url).pathname;

describe('sidecar: behaviour', () => {
  let pki: Pki;
  let upstream: { server: Server; port: number };
  beforeAll(async () => {
    pki = await makePki();
    upstream = await startMockUpstream();
  });
  afterAll(() => upstream?.server.close());

  it('--allow-client admits only the named clients', async () => {
    const opts = { tlsDir: await tlsDir(pki), upstreamPort: upstream.port, listen: 'strict=0' };
    await withSidecar({ ...opts, extra: ['--allow-client', 'billing'] }, async (sidecar) => {
      expect((await httpsGet(sidecar.ports[0]!, { ca: pki.ca.certPem, client: pki.client })).status).toBe(200);
      const denied = await httpsGet(sidecar.ports[0]!, { ca: pki.ca.certPem, client: pki.otherClient });
      expect(denied.status).toBe(403);
      expect(denied.body).toMatch(/^Access denied \(not_allowed\): .*\(certificate CN=shipping\)\n$/);
      const metrics = await (await fetch(`http://127.0.0.1:${sidecar.adminPort}/metrics`)).text();
      expect(metrics).toMatch(/mtls_sidecar_handshakes_total\{mode="strict",result="not_allowed"\} 1/);
    });
  });

  it('reloads a rotated certificate and a new CRL while a keep-alive connection stays open', async () => {
    const dir = await tlsDir(pki, {
      'ca.crl': await issueCRL({ ca: pki.ca, revoked: [], now: new Date(), nextUpdateMs: 86_400_000 }),
    });
    await withSidecar({ tlsDir: dir, upstreamPort: upstream.port, listen: 'strict=0' }, async (sidecar) => {
      const port = sidecar.ports[0]!;
      // A keep-alive connection made before the rotation.
      const socket = await connectTls(port, { ca: pki.ca.certPem, client: pki.client });
      const oldSerial = socket.getPeerCertificate().serialNumber;
      const ask = () => {
        const answer = nextData(socket);
        socket.write('GET /keepalive HTTP/1.1\r\nhost: localhost\r\n\r\n');
        return answer;
      };
      expect(await ask()).toMatch(/^HTTP\/1\.1 200/);
      expect((await httpsGet(port, { ca: pki.ca.certPem, client: pki.otherClient })).status).toBe(200);

      const rotated = await issueServer({
        algorithm: 'ECDSA-P256',
        validityMs: 86_400_000,
        ca: pki.ca,
        dnsNames: ['localhost'],
        now: new Date(),
      });
      const otherSerial = new X509Certificate(pki.otherClient.certPem).serialNumber.toLowerCase();
      await writeSecretVolume(dir, {
        'tls.crt': rotated.certPem,
        'tls.key': rotated.keyPem,
        'ca.crt': pki.ca.certPem,
        'ca.crl': await issueCRL({
          ca: pki.ca,
          revoked: [{ serial: otherSerial, revokedAt: new Date() }],
          now: new Date(),
          nextUpdateMs: 86_400_000,
        }),
      });
      await waitFor('the reload', async () =>
        (await (await fetch(`http://127.0.0.1:${sidecar.adminPort}/metrics`)).text()).includes(
          'mtls_sidecar_reloads_total{result="success"} 1',
        ),
      );
      // New handshakes see the new certificate and the new CRL...
      const fresh = await connectTls(port, { ca: pki.ca.certPem, client: pki.client });
      expect(fresh.getPeerCertificate().serialNumber.toLowerCase()).toBe(rotated.serial);
      expect(fresh.getPeerCertificate().serialNumber).not.toBe(oldSerial);
      fresh.destroy();
      // (shipping is revoked by the new CRL)
      expect((await httpsGet(port, { ca: pki.ca.certPem, client: pki.otherClient })).body).toMatch(/\(revoked\)/);
      // ...and the connection opened before keeps working.
      expect(await ask()).toMatch(/^HTTP\/1\.1 200/);
      socket.destroy();

      // A broken update keeps the working certificate in service.
      await writeSecretVolume(dir, { 'tls.crt': 'garbage', 'tls.key': rotated.keyPem, 'ca.crt': pki.ca.certPem });
      await waitFor('the failed reload', async () =>
        (await (await fetch(`http://127.0.0.1:${sidecar.adminPort}/metrics`)).text()).includes(
          'mtls_sidecar_reloads_total{result="failure"}',
        ),
      );
      expect((await httpsGet(port, { ca: pki.ca.certPem, client: pki.client })).status).toBe(200);
    });
  });

  it('answers 502 when the upstream is down and 504 when it is too slow', async () => {
    const dir = await tlsDir(pki);
    const closedPort = await freePort();
    const down = await startTestSidecar({ tlsDir: dir, upstreamPort: closedPort });
    const slow = await startTestSidecar({
      tlsDir: dir,
      upstreamPort: upstream.port,
      extra: ['--upstream-timeout', '500'],
    });
    try {
      expect((await httpsGet(down.ports[0]!, { ca: pki.ca.certPem })).status).toBe(502);
      expect((await httpsGet(slow.ports[0]!, { ca: pki.ca.certPem, path: '/slow' })).status).toBe(504);
    } finally {
      await down.stop(500);
      await slow.stop(500);
    }
  });

  it('streams large bodies both ways and server-sent events, and tunnels WebSocket upgrades', async () => {
    const opts = { tlsDir: await tlsDir(pki), upstreamPort: upstream.port, listen: 'flexible=0' };
    await withSidecar(opts, async (sidecar) => {
      const port = sidecar.ports[0]!;
      const big = await httpsGet(port, { ca: pki.ca.certPem, path: '/big' });
      expect(big.body?.length).toBe(64 * 64 * 1024);
      const upload = await httpsGet(port, { ca: pki.ca.certPem, method: 'POST', body: 'x'.repeat(3 * 1024 * 1024) });
      expect(JSON.parse(upload.body!).bodyBytes).toBe(3 * 1024 * 1024);
      const sse = await httpsGet(port, { ca: pki.ca.certPem, path: '/sse' });
      expect(sse.body).toBe('data: 1\n\ndata: 2\n\ndata: 3\n\n');

      const socket = await connectTls(port, { ca: pki.ca.certPem });
      const switched = nextData(socket);
      socket.write('GET /ws HTTP/1.1\r\nhost: localhost\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n');
      expect(await switched).toMatch(/^HTTP\/1\.1 101/);
      const echoed = nextData(socket);
      socket.write('ping');
      expect(await echoed).toBe('echo:ping');
      socket.destroy();
    });
  });

  it('cuts off a client that never finishes its headers, and refuses oversized headers', async () => {
    const opts = { tlsDir: await tlsDir(pki), upstreamPort: upstream.port };
    await withSidecar(
      { ...opts, extra: ['--headers-timeout', '1000', '--request-timeout', '1500'] },
      async (sidecar) => {
        const port = sidecar.ports[0]!;
        const slowloris = await connectTls(port, { ca: pki.ca.certPem });
        slowloris.write('GET / HTTP/1.1\r\nhost: localhost\r\nx-slow: 1');
        const started = Date.now();
        const response = await readUntilClose(slowloris);
        expect(Date.now() - started).toBeLessThan(10_000);
        expect(response).toMatch(/^HTTP\/1\.1 408|^$/);
        const huge = await httpsGet(port, { ca: pki.ca.certPem, headers: { 'x-huge': 'a'.repeat(40_000) } });
        expect(huge.status ?? 431).toBe(431);
      },
    );
  });

  it('runs from the command line, explains bad flags, and drains on SIGTERM', async () => {
    const dir = await tlsDir(pki);
    const bad = spawn(process.execPath, [
      CLI,
      'sidecar',
      '--listen',
      'paranoid=8443',
      '--upstream',
      '127.0.0.1:1',
      '--tls-dir',
      dir,
    ]);
    let badErr = '';
    bad.stderr.on('data', (d: Buffer) => (badErr += d.toString()));
    expect(await new Promise((resolve) => bad.on('exit', resolve))).toBe(2);
    expect(badErr).toContain('--listen paranoid=8443: mode must be standard, flexible or strict');

    const port = await freePort();
    const admin = await freePort();
    const child = spawn(process.execPath, [
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
    ]);
    let logs = '';
    child.stderr.on('data', (d: Buffer) => (logs += d.toString()));
    try {
      await waitFor('the sidecar to be ready', async () => (await fetch(`http://127.0.0.1:${admin}/readyz`)).ok);
      expect((await httpsGet(port, { ca: pki.ca.certPem, client: pki.client })).status).toBe(200);
      expect((await httpsGet(port, { ca: pki.ca.certPem, client: pki.unknownCa })).status).toBe(400);
      await waitFor('the refusal log line', async () => logs.includes('"reason":"unknown_ca"'));
      const line = JSON.parse(logs.split('\n').find((l) => l.includes('"reason":"unknown_ca"'))!) as Record<
        string,
        unknown
      >;
      expect(line).toMatchObject({
        message: 'refused',
        mode: 'strict',
        listener: port,
        reason: 'unknown_ca',
        subject: 'CN=billing',
      });
      expect(logs).not.toContain('PRIVATE KEY');
      child.kill('SIGTERM');
      expect(await new Promise((resolve) => child.on('exit', resolve))).toBe(0);
      expect(logs).toContain('sidecar stopped');
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('does not accept a connection on a plain TCP socket speaking HTTP', async () => {
    await withSidecar({ tlsDir: await tlsDir(pki), upstreamPort: upstream.port }, async (sidecar) => {
      const socket = netConnect(sidecar.ports[0]!, '127.0.0.1');
      socket.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
      const text = await readUntilClose(socket);
      expect(text).not.toContain('"method":"GET"');
      expect((await httpsGet(sidecar.ports[0]!, { ca: pki.ca.certPem })).status).toBe(200);
    });
  });
});
