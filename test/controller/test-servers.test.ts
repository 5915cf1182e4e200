import type * as k8s from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request as httpsRequest } from 'node:https';
import { connect as tlsConnect, type SecureVersion } from 'node:tls';
import { testListenerPortName } from '../../operator/api/injection.ts';
import type { EndpointController } from '../../operator/controller/manager.ts';
import { type TestListenerKind, TEST_LISTENER_KINDS } from '../../operator/api/types.ts';
import { parseSidecarConfig } from '../../sidecar/flags.ts';
import { setLogLevel as setSidecarLogLevel } from '../../sidecar/log.ts';
import { writeSecretVolume } from '../../sidecar/secret-volume.ts';
import { type RunningSidecar, startSidecar } from '../../sidecar/sidecar.ts';
import { createTestNamespace, deleteTestNamespace, kubectl, waitFor } from '../support/cluster.ts';
import { core, createEndpoint, installCrd, readSecret, waitReady } from '../support/endpoints.ts';
import { startController } from '../support/operator.ts';
import { startMockUpstream } from '../support/tls-fixtures.ts';

// spec.testListeners end to end against a real API server: the controller issues <endpoint>-test-servers, a
// real sidecar serves the bad listeners from it (and from the normal server Secret) beside the normal ones,
// and curl, openssl s_client and a Node TLS client each refuse every bad listener with the error that names
// what is wrong, while they reach the normal listeners with the same trust settings.

const run = (cmd: string, args: string[]) =>
  new Promise<{ code: number; out: string }>((resolve) => {
    const child = execFile(cmd, args, { timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? -1) : 0, out: `${stdout}${stderr}` }),
    );
    child.stdin?.end(); // openssl s_client reads stdin until EOF
  });

describe('controller + sidecar: bad listeners that correct clients refuse', () => {
  let namespace: string;
  let host: string;
  let controller: EndpointController;
  let upstream: Awaited<ReturnType<typeof startMockUpstream>>;
  let sidecar: RunningSidecar;
  const scratch = mkdtempSync(join(tmpdir(), 'mtls-test-servers-'));
  const files = {
    ca: join(scratch, 'ca.crt'),
    cert: join(scratch, 'client.crt'),
    key: join(scratch, 'client.key'),
  };
  const pem: { ca: string; cert: string; key: string } = { ca: '', cert: '', key: '' };
  const port: Partial<Record<TestListenerKind | 'strict' | 'standard', number>> = {};
  let testServers: k8s.V1Secret;

  const decode = (secret: k8s.V1Secret | undefined) =>
    Object.fromEntries(Object.entries(secret!.data!).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));

  beforeAll(async () => {
    await installCrd();
    namespace = await createTestNamespace('ctrl-badservers');
    // The bad listeners' Service: its names are in every certificate but WrongHost's, as the strict one's are.
    host = `payments-bad.${namespace}.svc`;
    upstream = await startMockUpstream();
    controller = await startController(namespace);
    await createEndpoint(namespace, 'payments', {
      podSelector: { matchLabels: { app: 'payments' } },
      upstreamPort: 8080,
      listeners: [
        { mode: 'strict', port: 8443 },
        { mode: 'standard', port: 8444 },
      ],
      clients: [{ name: 'checkout' }],
      testListeners: TEST_LISTENER_KINDS.map((kind, i) => ({ kind, port: 9441 + i })),
    });
    await waitReady(namespace, 'payments');
    testServers = await waitFor('Secret payments-test-servers', () => readSecret(namespace, 'payments-test-servers'));
    const client = decode(await readSecret(namespace, 'payments-client-checkout'));
    pem.ca = client['ca.crt']!;
    pem.cert = client['tls.crt']!;
    pem.key = client['tls.key']!;
    writeFileSync(files.ca, pem.ca);
    writeFileSync(files.cert, pem.cert);
    writeFileSync(files.key, pem.key);
    await writeSecretVolume(join(scratch, 'server'), decode(await readSecret(namespace, 'payments-server')));
    await writeSecretVolume(join(scratch, 'bad'), decode(testServers));
    // The sidecar as the injector renders it, on ephemeral loopback ports instead of the spec's.
    sidecar = await startSidecar(
      parseSidecarConfig([
        ...['--listen', 'strict=0', '--listen', 'standard=0'],
        ...TEST_LISTENER_KINDS.flatMap((kind) => ['--test-listen', `${kind}=0`]),
        ...['--upstream', `127.0.0.1:${upstream.port}`, '--tls-dir', join(scratch, 'server')],
        ...['--test-tls-dir', join(scratch, 'bad'), '--admin', '127.0.0.1:0'],
      ]),
    );
    [port.strict, port.standard] = sidecar.ports;
    TEST_LISTENER_KINDS.forEach((kind, i) => (port[kind] = sidecar.testPorts[i]));
  }, 120_000);

  afterAll(async () => {
    await sidecar?.stop(500);
    upstream?.server.close();
    await controller?.stop();
    await deleteTestNamespace(namespace);
    rmSync(scratch, { recursive: true, force: true });
  });

  /** curl as a client team would run it: the endpoint's CA, the Service's name resolved to the listener. */
  const curl = (target: number, extra: string[] = []) =>
    run('curl', [
      '-sS',
      '--max-time',
      '10',
      '--cacert',
      files.ca,
      '--resolve',
      `${host}:${target}:127.0.0.1`,
      ...extra,
      `https://${host}:${target}/hello`,
    ]);
  const withCert = ['--cert', files.cert, '--key', files.key];

  /** A Node TLS client: the handshake, then one request; the error code if either fails. */
  const node = (
    target: number,
    opts: { cert?: boolean; minVersion?: SecureVersion; maxVersion?: SecureVersion } = {},
  ): Promise<{ error?: string; response?: string }> =>
    new Promise((resolve) => {
      let response = '';
      const socket = tlsConnect({
        host: '127.0.0.1',
        port: target,
        servername: host,
        ca: pem.ca,
        ...(opts.cert ? { cert: pem.cert, key: pem.key } : {}),
        minVersion: opts.minVersion,
        maxVersion: opts.maxVersion,
      });
      socket.setTimeout(10_000, () => socket.destroy(new Error('timeout')));
      socket.on('secureConnect', () =>
        socket.write(`GET /hello HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`),
      );
      socket.on('data', (d: Buffer) => (response += d.toString()));
      socket.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
      socket.on('close', () => resolve({ response }));
    });

  /** An HTTPS request as an application makes it (node:https): the status, or the error code. */
  const https = (target: number, cert = false): Promise<string> =>
    new Promise((resolve) => {
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port: target,
          path: '/hello',
          servername: host,
          ca: pem.ca,
          ...(cert ? { cert: pem.cert, key: pem.key } : {}),
          agent: false,
          timeout: 10_000,
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve(`http ${res.statusCode}`));
        },
      );
      req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.end();
    });

  const openssl = (target: number, extra: string[] = []) =>
    run('openssl', [
      's_client',
      '-connect',
      `127.0.0.1:${target}`,
      '-servername',
      host,
      '-verify_hostname',
      host,
      '-CAfile',
      files.ca,
      '-verify_return_error',
      ...extra,
    ]);

  it('the normal listeners accept each client with the same trust settings', async () => {
    const strict = await curl(port.strict!, withCert);
    expect(strict).toMatchObject({ code: 0 });
    expect(JSON.parse(strict.out)).toMatchObject({ url: '/hello' });
    expect(await curl(port.standard!)).toMatchObject({ code: 0 });
    expect((await node(port.strict!, { cert: true })).response).toMatch(/^HTTP\/1\.1 200 /);
    expect((await node(port.standard!, { minVersion: 'TLSv1.3' })).response).toMatch(/^HTTP\/1\.1 200 /);
    expect((await node(port.standard!, { maxVersion: 'TLSv1.2' })).response).toMatch(/^HTTP\/1\.1 200 /);
    const s = await openssl(port.standard!);
    expect(s.out).toContain('Verify return code: 0 (ok)');
  });

  it('the Service payments-bad has a port per bad listener, to its named container port', async () => {
    const service = await core().readNamespacedService({ namespace, name: 'payments-bad' });
    expect(service.spec!.ports!.map((p) => `${p.name}:${p.port}->${p.targetPort}`)).toEqual(
      TEST_LISTENER_KINDS.map((kind, i) => `${testListenerPortName(kind)}:${9441 + i}->${testListenerPortName(kind)}`),
    );
  });

  it('ExpiredCertificate: refused as expired', async () => {
    const c = await curl(port.ExpiredCertificate!);
    expect(c.code).toBe(60);
    expect(c.out).toContain('certificate has expired');
    expect(await node(port.ExpiredCertificate!)).toEqual({ error: 'CERT_HAS_EXPIRED' });
    expect((await openssl(port.ExpiredCertificate!)).out).toContain('verify error:num=10:certificate has expired');
  });

  it('UntrustedCA: refused as an unknown issuer', async () => {
    const c = await curl(port.UntrustedCA!);
    expect(c.code).toBe(60);
    expect(c.out).toContain('unable to get local issuer certificate');
    // Node's name for OpenSSL's error 21: the only certificate sent has no issuer among the trusted CAs.
    expect(await node(port.UntrustedCA!)).toEqual({ error: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
    expect((await openssl(port.UntrustedCA!)).out).toContain(
      'verify error:num=20:unable to get local issuer certificate',
    );
  });

  it('WrongHost: refused as a host-name mismatch', async () => {
    const c = await curl(port.WrongHost!);
    expect(c.code).toBe(60);
    expect(c.out).toContain(`no alternative certificate subject name matches target host name '${host}'`);
    expect(await node(port.WrongHost!)).toEqual({ error: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    expect((await openssl(port.WrongHost!)).out).toContain('verify error:num=62:hostname mismatch');
  });

  it('TLS12Only: a client that requires TLS 1.3 refuses it; one that allows 1.2 is told what it accepted', async () => {
    const c = await curl(port.TLS12Only!, ['--tlsv1.3']);
    expect(c.code).toBe(35);
    expect(c.out).toContain('tlsv1 alert protocol version');
    expect(await node(port.TLS12Only!, { minVersion: 'TLSv1.3' })).toEqual({
      error: 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION',
    });
    const lenient = await curl(port.TLS12Only!, ['-i']);
    expect(lenient.code).toBe(0);
    expect(lenient.out).toMatch(/^HTTP\/1\.1 421 /);
    expect(lenient.out).toContain('mtls-operator test listener TLS12Only');
    expect(lenient.out).not.toContain('"url"'); // never forwarded to the upstream
  });

  it('TLS13Only: a client limited to TLS 1.2 fails the handshake', async () => {
    const c = await curl(port.TLS13Only!, ['--tls-max', '1.2']);
    expect(c.code).toBe(35);
    expect(c.out).toContain('tlsv1 alert protocol version');
    expect(await node(port.TLS13Only!, { maxVersion: 'TLSv1.2' })).toEqual({
      error: 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION',
    });
  });

  it('ClientCAMismatch: asks for a foreign CA and closes unanswered, with or without the endpoint client certificate', async () => {
    // The CertificateRequest names the CA it wants: not the endpoint's.
    const s = await openssl(port.ClientCAMismatch!, ['-cert', files.cert, '-key', files.key]);
    expect(s.out).toMatch(/Acceptable client certificate CA names\n.*CN = mtls-operator foreign client CA/);
    expect(s.out).not.toMatch(/Acceptable client certificate CA names\n.*CN = mtls-operator CA /);
    for (const extra of [withCert, []]) {
      const c = await curl(port.ClientCAMismatch!, extra);
      expect(c).toEqual({ code: 52, out: 'curl: (52) Empty reply from server\n' });
    }
    for (const cert of [true, false]) expect(await node(port.ClientCAMismatch!, { cert })).toEqual({ response: '' });
    // What an application sees through node:https: "socket hang up".
    expect(await https(port.ClientCAMismatch!, true)).toBe('ECONNRESET');
    expect(await https(port.strict!, true)).toBe('http 200');
    expect(await https(port.TLS12Only!)).toBe('http 421');
  });

  it('logs each failed handshake (info) and each completed one (warning) as JSON, and forwards nothing', async () => {
    const lines: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array) => {
      lines.push(String(chunk));
      return true;
    }) as typeof process.stderr.write;
    const forwarded = upstream.requests.length;
    setSidecarLogLevel('info'); // the tests run at warn (test/support/quiet-logs.ts)
    try {
      await curl(port.ExpiredCertificate!);
      await curl(port.TLS12Only!);
      await curl(port.ClientCAMismatch!, withCert);
      await waitFor(
        'three test listener log lines',
        async () => (lines.filter((l) => l.includes('"testListener"')).length >= 3 ? true : undefined),
        { timeoutMs: 5_000 },
      );
    } finally {
      process.stderr.write = write;
      setSidecarLogLevel(process.env.MTLS_TEST_LOG_LEVEL ?? 'warn');
    }
    const events = lines
      .flatMap((l) => l.split('\n'))
      .filter((l) => l.includes('"testListener"'))
      .map((l) => JSON.parse(l) as Record<string, string>);
    expect(events).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          component: 'sidecar',
          level: 'info',
          testListener: 'ExpiredCertificate',
          error: expect.stringMatching(/CERTIFICATE_EXPIRED/),
        }),
        expect.objectContaining({ level: 'warn', testListener: 'TLS12Only', protocol: 'TLSv1.2' }),
        expect.objectContaining({
          level: 'info',
          testListener: 'ClientCAMismatch',
          // OpenSSL's verdict on the endpoint's certificate against the foreign CA
          error: expect.stringMatching(/^[A-Z_]+$/),
        }),
      ]),
    );
    expect(upstream.requests.length).toBe(forwarded);
  });

  it('the Secret is not rewritten by later passes, and is deleted when the list becomes empty', async () => {
    const first = testServers.metadata!.resourceVersion;
    // The controller resyncs every 2 s: a few passes go by.
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    expect((await readSecret(namespace, 'payments-test-servers'))?.metadata?.resourceVersion).toBe(first);
    await kubectl([
      ...['patch', 'mtlsendpoint', 'payments', '-n', namespace, '--type=merge'],
      ...['-p', JSON.stringify({ spec: { testListeners: [] } })],
    ]);
    await waitFor('Secret payments-test-servers to be deleted', async () =>
      (await readSecret(namespace, 'payments-test-servers')) ? undefined : true,
    );
    await waitFor('Service payments-bad to be deleted', () =>
      core()
        .readNamespacedService({ namespace, name: 'payments-bad' })
        .then(
          () => undefined,
          () => true,
        ),
    );
  });

  it('the API server refuses a test listener on a port the endpoint already uses, and a kind twice', async () => {
    const attempt = (testListeners: unknown[]) =>
      createEndpoint(namespace, `bad-${Math.random().toString(36).slice(2, 7)}`, {
        upstreamPort: 8080,
        testListeners,
      }).then(
        () => 'accepted',
        (err: unknown) => String((err as { body?: unknown }).body ?? err),
      );
    expect(await attempt([{ kind: 'WrongHost', port: 8443 }])).toContain(
      'every testListeners port must differ from upstreamPort and from every listeners port',
    );
    expect(await attempt([{ kind: 'WrongHost', port: 8080 }])).toContain('every testListeners port must differ');
    expect(
      await attempt([
        { kind: 'WrongHost', port: 9441 },
        { kind: 'WrongHost', port: 9442 },
      ]),
    ).toContain('each kind may appear once in testListeners');
    expect(await attempt([{ kind: 'Expired', port: 9441 }])).toContain('spec.testListeners[0].kind: Unsupported value');
  });
});
