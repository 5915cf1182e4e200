import type { V1Container, V1Pod, V1Volume } from '@kubernetes/client-node';
import { SIDECAR_TEST_TLS_DIR, TEST_SERVERS_VOLUME } from '../../operator/api/injection.ts';
import type { MtlsEndpoint } from '../../operator/api/types.ts';
import { decideInjection } from '../../operator/webhook/injector.ts';
import { parseSidecarArgs, parseSidecarConfig, renderSidecarArgs, TEST_LISTENER_KINDS } from '../../sidecar/flags.ts';
import { UsageError } from '../../common/flags.ts';
import { testListenerAnswer, testListenerOptions, TEST_SERVER_FILES } from '../../sidecar/test-listeners.ts';

// spec.testListeners through the injector and the sidecar's command line: rendered once, parsed back the same.

const endpoint = (testListeners?: MtlsEndpoint['spec']['testListeners']): MtlsEndpoint => ({
  apiVersion: 'mtls.operator.dev/v1alpha1',
  kind: 'MtlsEndpoint',
  metadata: { name: 'payments', namespace: 'team-a' },
  spec: { podSelector: { matchLabels: { app: 'payments' } }, upstreamPort: 8080, testListeners },
});

const pod = (ports: number[] = [8080]): V1Pod => ({
  metadata: { name: 'p', namespace: 'team-a', labels: { app: 'payments' } },
  spec: { containers: [{ name: 'mock', image: 'x', ports: ports.map((containerPort) => ({ containerPort })) }] },
});

const settings = { image: 'registry.invalid/mtls-operator:test' };

function inject(ep: MtlsEndpoint) {
  const decision = decideInjection(pod(), [ep], settings);
  if (decision.action !== 'inject') throw new Error(`expected inject, got ${JSON.stringify(decision)}`);
  const value = (path: string) => decision.patch.find((op) => op.path === path)!.value;
  return {
    sidecar: (value('/spec/initContainers') as V1Container[])[0]!,
    volumes: value('/spec/volumes') as V1Volume[],
  };
}

describe('injecting test listeners', () => {
  it('renders --test-listen and --test-tls-dir, names and exposes the ports, and mounts the test-servers Secret', () => {
    const { sidecar, volumes } = inject(
      endpoint([
        { kind: 'ExpiredCertificate', port: 9441 },
        { kind: 'ClientCAMismatch', port: 9446 },
      ]),
    );
    const config = parseSidecarConfig(sidecar.args!.slice(1));
    expect(config.testListen).toEqual([
      { kind: 'ExpiredCertificate', port: 9441 },
      { kind: 'ClientCAMismatch', port: 9446 },
    ]);
    expect(config.testTlsDir).toBe(SIDECAR_TEST_TLS_DIR);
    expect(sidecar.ports).toEqual(
      expect.arrayContaining([
        { name: 'bad-expired', containerPort: 9441, protocol: 'TCP' },
        { name: 'bad-clientca', containerPort: 9446, protocol: 'TCP' },
      ]),
    );
    expect(sidecar.volumeMounts).toContainEqual({
      name: TEST_SERVERS_VOLUME,
      mountPath: SIDECAR_TEST_TLS_DIR,
      readOnly: true,
    });
    expect(volumes.find((v) => v.name === TEST_SERVERS_VOLUME)?.secret?.secretName).toBe('payments-test-servers');
  });

  it('without test listeners: no flag, no port, no volume', () => {
    const { sidecar, volumes } = inject(endpoint());
    expect(sidecar.args!.join(' ')).not.toContain('test-');
    expect(sidecar.ports!.map((p) => p.name)).toEqual(['mtls-strict', 'mtls-admin']);
    expect(volumes.map((v) => v.name)).not.toContain(TEST_SERVERS_VOLUME);
  });

  it('every port name is a valid container port name (at most 15 characters)', () => {
    const { sidecar } = inject(endpoint(TEST_LISTENER_KINDS.map((kind, i) => ({ kind, port: 9441 + i }))));
    for (const port of sidecar.ports!) expect(port.name).toMatch(/^(?=.{1,15}$)[a-z0-9]+(-[a-z0-9]+)*$/);
  });

  it("refuses a pod whose app already uses a test listener's port", () => {
    const decision = decideInjection(pod([8080, 9441]), [endpoint([{ kind: 'WrongHost', port: 9441 }])], settings);
    expect(decision).toMatchObject({ action: 'deny' });
    expect(decision.action === 'deny' && decision.message).toContain('port 9441 is already used');
  });
});

describe('--test-listen', () => {
  const base = ['--listen', 'strict=8443', '--upstream', '127.0.0.1:8080', '--tls-dir', '/tls'];
  const usage = (args: string[]) => {
    try {
      parseSidecarArgs(args);
    } catch (err) {
      if (err instanceof UsageError) return err.message;
      throw err;
    }
    throw new Error('expected a usage error');
  };

  it('round-trips through render and parse', () => {
    const config = parseSidecarConfig([
      ...base,
      ...['--test-listen', 'TLS12Only=9444', '--test-listen', 'UntrustedCA=9442', '--test-tls-dir', '/bad'],
    ]);
    expect(parseSidecarConfig(renderSidecarArgs(config))).toEqual(config);
  });

  it('names what is wrong', () => {
    expect(usage([...base, '--test-listen', 'Expired=9441', '--test-tls-dir', '/bad'])).toMatch(
      /kind must be one of ExpiredCertificate, UntrustedCA/,
    );
    expect(usage([...base, '--test-listen', 'WrongHost=9441'])).toContain('needs --test-tls-dir');
    expect(usage([...base, '--test-listen', 'WrongHost=8443', '--test-tls-dir', '/bad'])).toContain(
      'port 8443 is used twice',
    );
    expect(usage([...base, '--test-listen', 'WrongHost=8080', '--test-tls-dir', '/bad'])).toContain(
      'the sidecar itself listens on that port',
    );
    // A missing port is refused, not read as 0 (which would bind a random one).
    expect(usage([...base, '--test-listen', 'WrongHost', '--test-tls-dir', '/bad'])).toContain(
      '--test-listen WrongHost: port must be 1-65535',
    );
    expect(usage(['--listen', 'strict', '--upstream', '127.0.0.1:1', '--tls-dir', '/t'])).toContain(
      '--listen strict: port must be 1-65535',
    );
  });
});

describe('what each test listener serves', () => {
  const normal = { cert: 'NORMAL-CERT', key: 'NORMAL-KEY', ciphers: 'X', ecdhCurve: 'P-256' };
  const files = Object.fromEntries(Object.values(TEST_SERVER_FILES).map((f) => [f, `FILE ${f}`]));

  it('pins the TLS version, swaps the certificate, or asks for a foreign client CA', () => {
    expect(testListenerOptions('TLS12Only', normal, files)).toMatchObject({
      cert: 'NORMAL-CERT',
      maxVersion: 'TLSv1.2',
    });
    expect(testListenerOptions('TLS13Only', normal, files)).toMatchObject({
      cert: 'NORMAL-CERT',
      minVersion: 'TLSv1.3',
    });
    expect(testListenerOptions('ExpiredCertificate', normal, files)).toMatchObject({ cert: 'FILE expired.crt' });
    expect(testListenerOptions('ClientCAMismatch', normal, files)).toMatchObject({
      cert: 'NORMAL-CERT',
      ca: 'FILE foreign-ca.crt',
      requestCert: true,
      // checked by the listener after the handshake, so that it can close cleanly (test-listeners.ts)
      rejectUnauthorized: false,
    });
  });

  it('names the missing file', () => {
    expect(() => testListenerOptions('WrongHost', normal, {})).toThrow('wrong-host.crt is missing');
  });

  it('answers a client that got through with what it should have refused', () => {
    const answer = testListenerAnswer('WrongHost');
    expect(answer).toMatch(/^HTTP\/1\.1 421 /);
    expect(answer).toContain('wrong-host.invalid');
    expect(answer).toContain('would not have got this far');
    const [head, body] = answer.split('\r\n\r\n');
    expect(head).toContain(`Content-Length: ${Buffer.byteLength(body!)}`);
  });
});
