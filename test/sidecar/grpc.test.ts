import { startTestSidecar } from '../support/sidecar.ts';
import { status } from '@grpc/grpc-js';
import type { RunningSidecar } from '../../sidecar/sidecar.ts';
import {
  echoClient,
  type EchoClient,
  type EchoReply,
  type EchoServer,
  startEchoServer,
  unary,
} from '../support/grpc/echo.ts';
import { makePki, type Pki, tlsDir } from '../support/tls-fixtures.ts';

const MODES = ['standard', 'flexible', 'strict'] as const;
type Mode = (typeof MODES)[number];

/** gRPC end to end: @grpc/grpc-js client with the issued credentials -> sidecar (h2) -> grpc-js mock (h2c). */
describe('sidecar: gRPC through each mode', () => {
  let pki: Pki;
  let mock: EchoServer;
  let sidecar: RunningSidecar;
  const clients: EchoClient[] = [];
  const port = (mode: Mode) => sidecar.ports[MODES.indexOf(mode)]!;
  const client = (mode: Mode, cert?: Pki['client']) => {
    const c = echoClient(port(mode), pki.ca.certPem, cert);
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    pki = await makePki();
    mock = await startEchoServer();
    sidecar = await startTestSidecar({
      listen: MODES.map((mode) => `${mode}=0`),
      upstreamPort: mock.port,
      tlsDir: await tlsDir(pki),
      extra: ['--upstream-protocol', 'h2c'],
    });
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await sidecar?.stop(1_000);
    await mock?.stop();
  });

  it("strict: the issued client certificate is accepted and its identity reaches the mock's metadata", async () => {
    const result = await unary(client('strict', pki.client), { text: 'hello' });
    expect(result.code).toBeUndefined();
    expect(result.reply!.text).toBe('hello');
    expect(result.reply!.clientVerify).toBe('SUCCESS');
    expect(result.reply!.xfcc).toMatch(/^Hash=[0-9a-f]{64};Subject="CN=billing";URI=spiffe:\/\//);
    expect(result.reply!.forwardedFor).toBe('127.0.0.1');
  });

  it('strict: no certificate -> UNAUTHENTICATED with the reason, and nothing reaches the mock', async () => {
    const result = await unary(client('strict'), { text: 'must-not-arrive-strict' });
    expect(result.code).toBe(status.UNAUTHENTICATED);
    expect(result.details).toMatch(/no_certificate/);
    expect(mock.seen).not.toContain('must-not-arrive-strict');
  });

  it('flexible: no certificate is accepted (x-client-verify NONE); a certificate of an unknown CA is refused', async () => {
    const none = await unary(client('flexible'), { text: 'anonymous' });
    expect(none.reply?.clientVerify).toBe('NONE');
    expect(none.reply?.xfcc).toBe('');
    const unknown = await unary(client('flexible', pki.unknownCa), { text: 'must-not-arrive-flexible' });
    expect(unknown.code).toBe(status.UNAUTHENTICATED);
    expect(unknown.details).toMatch(/unknown_ca/);
    expect(mock.seen).not.toContain('must-not-arrive-flexible');
  });

  it('standard: any client, no identity', async () => {
    const result = await unary(client('standard', pki.client), { text: 'plain' });
    expect(result.reply?.clientVerify).toBe('NONE');
  });

  it('status codes and their details pass through unchanged', async () => {
    const c = client('strict', pki.client);
    for (const code of [status.NOT_FOUND, status.PERMISSION_DENIED, status.RESOURCE_EXHAUSTED, status.INTERNAL]) {
      const result = await unary(c, { text: 'fail', failCode: code });
      expect({ code: result.code, details: result.details }).toEqual({ code, details: `failing as asked: ${code}` });
    }
  });

  it('a deadline passes through: the client gets DEADLINE_EXCEEDED and the mock sees the call cancelled', async () => {
    const result = await unary(client('strict', pki.client), { text: 'slow-call', delayMs: 2_000 }, 300);
    expect(result.code).toBe(status.DEADLINE_EXCEEDED);
    for (let i = 0; i < 250 && !mock.cancelled.includes('slow-call'); i++) await new Promise((r) => setTimeout(r, 20));
    expect(mock.cancelled).toContain('slow-call');
  });

  it('server streaming, client streaming and bidirectional streaming', async () => {
    const c = client('strict', pki.client);
    const streamed: EchoReply[] = [];
    await new Promise<void>((resolve, reject) => {
      const call = c.ServerStream({ text: 'tick', count: 5 });
      call.on('data', (r: EchoReply) => streamed.push(r));
      call.on('end', resolve);
      call.on('error', reject);
    });
    expect(streamed.map((r) => r.text)).toEqual(['tick-0', 'tick-1', 'tick-2', 'tick-3', 'tick-4']);
    expect(streamed.every((r) => r.clientVerify === 'SUCCESS')).toBe(true);

    const joined = await new Promise<EchoReply>((resolve, reject) => {
      const call = c.ClientStream((err, res) => (err ? reject(err) : resolve(res!)));
      for (const text of ['a', 'b', 'c']) call.write({ text });
      call.end();
    });
    expect(joined.text).toBe('a,b,c');

    const bidi = c.Bidi();
    const answers: string[] = [];
    for (const text of ['x', 'y', 'z']) {
      const next = new Promise<EchoReply>((resolve) => bidi.once('data', resolve));
      bidi.write({ text });
      answers.push((await next).text);
    }
    bidi.end();
    await new Promise((resolve) => bidi.on('status', resolve));
    expect(answers).toEqual(['X', 'Y', 'Z']);
  });

  it('a client cancelling a server stream cancels it at the mock (RST_STREAM passed on)', async () => {
    const call = client('strict', pki.client).ServerStream({ text: 'cancel-me', count: 1_000, delayMs: 20 });
    call.on('error', () => undefined);
    await new Promise((resolve) => call.once('data', resolve));
    call.cancel();
    for (let i = 0; i < 250 && !mock.cancelled.includes('cancel-me'); i++) await new Promise((r) => setTimeout(r, 20));
    expect(mock.cancelled).toContain('cancel-me');
  });
});

describe('sidecar: drain with in-flight gRPC streams', () => {
  it('GOAWAY on stop: a server stream in flight completes; the sidecar then closes', async () => {
    const pki = await makePki();
    const mock = await startEchoServer();
    const sidecar = await startTestSidecar({
      listen: 'strict=0',
      upstreamPort: mock.port,
      tlsDir: await tlsDir(pki),
      extra: ['--upstream-protocol', 'h2c'],
    });
    const c = echoClient(sidecar.ports[0]!, pki.ca.certPem, pki.client);
    try {
      const texts: string[] = [];
      const call = c.ServerStream({ text: 'drain', count: 10, delayMs: 50 });
      const done = new Promise<{ code: number }>((resolve) => call.on('status', resolve));
      call.on('data', (r: EchoReply) => texts.push(r.text));
      call.on('error', () => undefined);
      await new Promise((resolve) => call.once('data', resolve));
      const stopped = sidecar.stop(5_000);
      expect((await done).code).toBe(status.OK);
      expect(texts).toHaveLength(10);
      await stopped;
    } finally {
      c.close();
      await mock.stop();
    }
  });
});
