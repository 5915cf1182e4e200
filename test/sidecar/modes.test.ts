import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { parseSidecarConfig } from '../../sidecar/flags.ts';
import { type RunningSidecar, startSidecar } from '../../sidecar/sidecar.ts';
import { pemFiles } from '../support/openssl.ts';
import { httpsGet, makePki, type Pki, startMockUpstream, tlsDir } from '../support/tls-fixtures.ts';

const run = promisify(execFile);

/** openssl s_client with stdin closed: it handshakes, prints, and exits. */
function sClient(args: string[]): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn('openssl', ['s_client', ...args], { stdio: ['pipe', 'pipe', 'pipe'], timeout: 10_000 });
    child.stdin.end('\n');
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('close', (code) => resolve(code === 0 ? out : `FAILED ${out}`));
  });
}

/**
 * What the docs/DESIGN.md table says each mode does with each kind of client; a refusal is answered 400 with its
 * reason (refusal-answer.ts).
 */
const TABLE = {
  none: { standard: 'accepted', flexible: 'accepted', strict: 'no_certificate' },
  valid: { standard: 'accepted', flexible: 'accepted', strict: 'accepted' },
  unknownCa: { standard: 'accepted', flexible: 'unknown_ca', strict: 'unknown_ca' },
  selfSigned: { standard: 'accepted', flexible: 'unknown_ca', strict: 'unknown_ca' },
  expired: { standard: 'accepted', flexible: 'expired', strict: 'expired' },
  notYetValid: { standard: 'accepted', flexible: 'bad_certificate', strict: 'bad_certificate' },
  revoked: { standard: 'accepted', flexible: 'revoked', strict: 'revoked' },
  serverAuthOnly: { standard: 'accepted', flexible: 'bad_certificate', strict: 'bad_certificate' },
} as const;
type Kind = keyof typeof TABLE;
const MODES = ['standard', 'flexible', 'strict'] as const;

describe('sidecar: the mode table with real TLS clients', () => {
  let pki: Pki;
  let upstream: Awaited<ReturnType<typeof startMockUpstream>>;
  let sidecar: RunningSidecar;
  const port = (mode: (typeof MODES)[number]) => sidecar.ports[MODES.indexOf(mode)]!;

  beforeAll(async () => {
    pki = await makePki();
    upstream = await startMockUpstream();
    const dir = await tlsDir(pki);
    const config = parseSidecarConfig([
      '--listen',
      'standard=0',
      '--listen',
      'flexible=0',
      '--listen',
      'strict=0',
      '--upstream',
      `127.0.0.1:${upstream.port}`,
      '--tls-dir',
      dir,
      '--admin',
      '127.0.0.1:0',
      '--upstream-timeout',
      '1000',
    ]);
    // Port 0 three times is allowed for tests; the parser only refuses a real port used twice.
    sidecar = await startSidecar(config);
  });
  afterAll(async () => {
    await sidecar?.stop(1_000);
    upstream?.server.close();
  });

  const clientFor = (kind: Kind) => (kind === 'none' ? undefined : kind === 'valid' ? pki.client : pki[kind]);

  for (const kind of Object.keys(TABLE) as Kind[]) {
    for (const mode of MODES) {
      const expected = TABLE[kind][mode];
      it(`${mode}: ${kind} certificate -> ${expected === 'accepted' ? expected : `400 (${expected})`}`, async () => {
        const path = expected === 'accepted' ? '/' : `/must-not-arrive/${mode}/${kind}`;
        const result = await httpsGet(port(mode), { ca: pki.ca.certPem, client: clientFor(kind), path });
        if (expected === 'accepted') {
          expect(result.error).toBeUndefined();
          expect(result.status).toBe(200);
          const seen = JSON.parse(result.body!) as { headers: Record<string, string> };
          const verified = kind === 'valid' && mode !== 'standard';
          expect(seen.headers['x-client-verify']).toBe(verified ? 'SUCCESS' : 'NONE');
          if (verified) {
            expect(seen.headers['x-forwarded-client-cert']).toMatch(
              /^Hash=[0-9a-f]{64};Subject="CN=billing";URI=spiffe:\/\/cluster\.local\/ns\/team-a\/mtlsendpoint\/payments\/client\/billing$/,
            );
          } else {
            expect(seen.headers['x-forwarded-client-cert']).toBeUndefined();
          }
        } else {
          // An answer the client can read, not a closed connection.
          expect({ status: result.status, error: result.error, connection: result.headers?.connection }).toEqual({
            status: 400,
            error: undefined,
            connection: 'close',
          });
          expect(result.body).toMatch(
            new RegExp(`^(No required SSL certificate was sent|The SSL certificate error) \\(${expected}\\): `),
          );
        }
      });
    }
  }

  it('answers a refused client that is still sending a large body with its 400, not a reset', async () => {
    const result = await httpsGet(port('strict'), {
      ca: pki.ca.certPem,
      method: 'POST',
      path: '/must-not-arrive/big-body',
      body: 'x'.repeat(4 << 20),
    });
    expect({ status: result.status, error: result.error }).toEqual({ status: 400, error: undefined });
  });

  it('closes a refused connection that does not speak HTTP with close_notify and no HTTP answer', async () => {
    // openssl s_client tells a TLS close (close_notify: "closed", exit 0) from a bare one ("unexpected eof").
    const child = spawn(
      'openssl',
      [
        's_client',
        '-connect',
        `127.0.0.1:${port('strict')}`,
        '-CAfile',
        pemFiles({ 'ca.pem': pki.ca.certPem })['ca.pem']!,
      ],
      { stdio: ['pipe', 'pipe', 'pipe'], timeout: 10_000 },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    // stdin stays open: s_client must leave because the sidecar closed, not because its input ended.
    child.stdin.write('\x00\x01 not http\r\n\r\n');
    const code = await new Promise((resolve) => child.on('close', resolve));
    child.stdin.destroy();
    expect({ code, unexpectedEof: /unexpected eof/i.test(out), http: out.includes('HTTP/1.1') }).toEqual({
      code: 0,
      unexpectedEof: false,
      http: false,
    });
    expect(out).toMatch(/^closed$/m);
  });

  it('never forwards a request of a refused client to the upstream', () => {
    expect(upstream.requests.length).toBeGreaterThan(0);
    expect(upstream.requests.map((r) => r.url).filter((url) => url?.startsWith('/must-not-arrive'))).toEqual([]);
  });

  it('removes identity headers a client sends itself, and sets X-Forwarded-For/Proto', async () => {
    const spoof = {
      'x-forwarded-client-cert': 'Hash=0;Subject="CN=admin"',
      'x-client-verify': 'SUCCESS',
      'x-forwarded-for': '10.9.9.9',
    };
    const plain = await httpsGet(port('flexible'), { ca: pki.ca.certPem, headers: spoof });
    const seen = JSON.parse(plain.body!) as { headers: Record<string, string> };
    expect(seen.headers['x-forwarded-client-cert']).toBeUndefined();
    expect(seen.headers['x-client-verify']).toBe('NONE');
    expect(seen.headers['x-forwarded-proto']).toBe('https');
    expect(seen.headers['x-forwarded-for']).toBe('10.9.9.9, 127.0.0.1');
    // The sidecar's own headers come first, so an upstream that reads only so many headers still has them:
    // identity, then the connection line it states for its own hop (the client's Connection is hop-by-hop).
    const names = (upstream.requests.at(-1)!.rawHeaders.filter((_, i) => i % 2 === 0) as string[]).map((n) =>
      n.toLowerCase(),
    );
    expect(names.slice(0, 5)).toEqual([
      'x-client-verify',
      'x-forwarded-proto',
      'x-forwarded-for',
      'connection',
      'host',
    ]);
    expect(names.filter((n) => n === 'connection')).toHaveLength(1);
    const withCert = await httpsGet(port('strict'), { ca: pki.ca.certPem, client: pki.client, headers: spoof });
    expect(
      (JSON.parse(withCert.body!) as { headers: Record<string, string> }).headers['x-forwarded-client-cert'],
    ).toContain('CN=billing');
  });

  it('curl: strict refuses no certificate and accepts the issued one', async () => {
    const files = pemFiles({ 'ca.pem': pki.ca.certPem, 'c.pem': pki.client.certPem, 'k.pem': pki.client.keyPem });
    const base = [
      '-sS',
      '--max-time',
      '10',
      '--cacert',
      files['ca.pem']!,
      '--resolve',
      `localhost:${port('strict')}:127.0.0.1`,
      `https://localhost:${port('strict')}/hello`,
    ];
    const ok = await run('curl', ['--cert', files['c.pem']!, '--key', files['k.pem']!, ...base]);
    expect(JSON.parse(ok.stdout).url).toBe('/hello');
    // What a person sees: the reason, not "Empty reply from server" (-f: curl's exit status says 4xx).
    const refused = await run('curl', ['-w', '%{http_code}', ...base]);
    expect(refused.stdout).toMatch(/^No required SSL certificate was sent \(no_certificate\): .*\n400$/);
    await expect(run('curl', ['-f', ...base])).rejects.toThrow(/returned error: 400/);
  });

  it('openssl s_client: TLS 1.1 is refused on every listener, TLS 1.2 and 1.3 work', async () => {
    const files = pemFiles({ 'ca.pem': pki.ca.certPem, 'c.pem': pki.client.certPem, 'k.pem': pki.client.keyPem });
    for (const mode of MODES) {
      const attempt = (version: string) =>
        sClient([
          '-connect',
          `127.0.0.1:${port(mode)}`,
          version,
          '-CAfile',
          files['ca.pem']!,
          '-cert',
          files['c.pem']!,
          '-key',
          files['k.pem']!,
          '-brief',
        ]);
      // OpenSSL's own alert for the version (Node sends it before the sidecar closes the connection).
      expect(await attempt('-tls1_1')).toMatch(/FAILED.*(alert protocol version|no protocols available)/is);
      expect(await attempt('-tls1_2')).toMatch(/Protocol version: TLSv1\.2/);
      expect(await attempt('-tls1_3')).toMatch(/Protocol version: TLSv1\.3/);
    }
  });

  it('counts handshakes and requests in /metrics with the docs/DESIGN.md names', async () => {
    const text = await (await fetch(`http://127.0.0.1:${sidecar.adminPort}/metrics`)).text();
    expect(text).toMatch(/mtls_sidecar_handshakes_total\{mode="strict",result="no_certificate"\} [1-9]/);
    expect(text).toMatch(/mtls_sidecar_handshakes_total\{mode="flexible",result="revoked"\} [1-9]/);
    expect(text).toMatch(/mtls_sidecar_handshakes_total\{mode="strict",result="unknown_ca"\} [1-9]/);
    expect(text).toMatch(/mtls_sidecar_handshakes_total\{mode="strict",result="expired"\} [1-9]/);
    expect(text).toMatch(/mtls_sidecar_requests_total\{mode="standard",code="200"\} [1-9]/);
    expect(text).toContain('mtls_sidecar_request_duration_seconds_bucket');
    expect(text).toMatch(/mtls_sidecar_certificate_expiration_timestamp_seconds \d+/);
    // What Prometheus users expect of any process (process-metrics.ts), read at scrape time.
    expect(text).toMatch(/^# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes \d+$/m);
    expect(text).toMatch(/^process_cpu_seconds_total [\d.e-]+$/m);
    expect(text).toMatch(/^process_open_fds \d+$/m);
    expect(text).toMatch(/^process_start_time_seconds [\d.]+$/m);
    expect((await fetch(`http://127.0.0.1:${sidecar.adminPort}/readyz`)).status).toBe(200);
  });
});
