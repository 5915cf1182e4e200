import { createHash } from 'node:crypto';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { parseSidecarArgs, parseSidecarConfig, renderSidecarArgs } from '../../sidecar/flags.ts';
import { PP2_SIGNATURE, proxyV2Header } from '../../sidecar/proxy-protocol.ts';
import { type RunningSidecar, startSidecar } from '../../sidecar/sidecar.ts';
import type { PemPair } from '../../operator/pki/issue.ts';
import { makePki, type Pki, tlsDir } from '../support/tls-fixtures.ts';

/**
 * A PROXY v2 reader written from HAProxy's proxy-protocol.txt (section 2.2), independent of the sidecar's writer:
 * the 12-byte signature, version/command, family, length, addresses, then type-length-value fields.
 */
interface ParsedProxy {
  command: number;
  family: number;
  source?: string;
  sourcePort?: number;
  destination?: string;
  destinationPort?: number;
  tlvs: Map<number, Buffer>;
  ssl?: { client: number; verify: number; sub: Map<number, string> };
  length: number;
}

function parseProxyV2(buf: Buffer): ParsedProxy | null {
  if (buf.length < 16) return null;
  if (!buf.subarray(0, 12).equals(Buffer.from('\r\n\r\n\0\r\nQUIT\n', 'latin1')))
    throw new Error('no PROXY v2 signature');
  if (buf[12]! >> 4 !== 2) throw new Error('not version 2');
  const length = buf.readUInt16BE(14);
  if (buf.length < 16 + length) return null;
  const body = buf.subarray(16, 16 + length);
  const out: ParsedProxy = { command: buf[12]! & 0x0f, family: buf[13]!, tlvs: new Map(), length: 16 + length };
  let at = 0;
  if (out.family === 0x11) {
    out.source = [...body.subarray(0, 4)].join('.');
    out.destination = [...body.subarray(4, 8)].join('.');
    out.sourcePort = body.readUInt16BE(8);
    out.destinationPort = body.readUInt16BE(10);
    at = 12;
  } else if (out.family === 0x21) at = 36;
  const readTlvs = (from: Buffer, into: Map<number, Buffer>) => {
    let i = 0;
    while (i < from.length) {
      const len = from.readUInt16BE(i + 1);
      if (i + 3 + len > from.length) throw new Error('TLV runs past the header');
      into.set(from[i]!, from.subarray(i + 3, i + 3 + len));
      i += 3 + len;
    }
  };
  readTlvs(body.subarray(at), out.tlvs);
  const ssl = out.tlvs.get(0x20);
  if (ssl) {
    const sub = new Map<number, Buffer>();
    readTlvs(ssl.subarray(5), sub);
    out.ssl = {
      client: ssl[0]!,
      verify: ssl.readUInt32BE(1),
      sub: new Map([...sub].map(([k, v]) => [k, v.toString()])),
    };
  }
  return out;
}

/** A TCP server that reads a PROXY v2 header (when told to), then echoes every byte back. */
async function startProxyEcho(expectHeader: boolean) {
  const headers: ParsedProxy[] = [];
  const raw: Buffer[] = [];
  let connections = 0;
  const server: Server = createServer({ allowHalfOpen: true }, (socket: Socket) => {
    connections++;
    let pending: Buffer | null = expectHeader ? Buffer.alloc(0) : null;
    socket.on('data', (chunk: Buffer) => {
      if (pending) {
        pending = Buffer.concat([pending, chunk]);
        const parsed = parseProxyV2(pending);
        if (!parsed) return;
        headers.push(parsed);
        chunk = pending.subarray(parsed.length);
        pending = null;
        if (!chunk.length) return;
      }
      raw.push(chunk);
      socket.write(chunk);
    });
    socket.on('end', () => socket.end());
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port, headers, raw, connections: () => connections };
}

function tlsClient(port: number, ca: string, client?: PemPair): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      ca,
      cert: client?.certPem,
      key: client?.keyPem,
      ALPNProtocols: ['h2', 'http/1.1'],
    });
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Sends `data`, half-closes, and collects everything until the sidecar closes. */
function exchange(socket: TLSSocket, data: Buffer): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(Buffer.concat(chunks)));
    socket.end(data);
  });
}

describe('PROXY v2 header (pure)', () => {
  it('lays out addresses and the SSL TLV as HAProxy documents them', () => {
    const header = proxyV2Header({
      sourceAddress: '::ffff:10.1.2.3',
      sourcePort: 40000,
      destinationAddress: '10.9.8.7',
      destinationPort: 8443,
      tlsVersion: 'TLSv1.3',
      cipher: 'TLS_AES_128_GCM_SHA256',
      serverName: 'db.team-a.svc',
      client: { commonName: 'billing', xfcc: 'Hash=ab;Subject="CN=billing"' },
    });
    expect(header.subarray(0, 12).equals(PP2_SIGNATURE)).toBe(true);
    const parsed = parseProxyV2(header)!;
    expect(parsed).toMatchObject({
      command: 1,
      family: 0x11,
      source: '10.1.2.3',
      sourcePort: 40000,
      destination: '10.9.8.7',
      destinationPort: 8443,
      length: header.length,
    });
    expect(parsed.tlvs.get(0x02)?.toString()).toBe('db.team-a.svc');
    expect(parsed.ssl).toEqual({
      client: 0x07,
      verify: 0,
      sub: new Map([
        [0x21, 'TLSv1.3'],
        [0x22, 'billing'],
        [0x23, 'TLS_AES_128_GCM_SHA256'],
      ]),
    });
    expect(parsed.tlvs.get(0xe0)?.toString()).toBe('Hash=ab;Subject="CN=billing"');
  });

  it('a client without a certificate: SSL but no certificate, verify not 0, no CN', () => {
    const parsed = parseProxyV2(
      proxyV2Header({ sourceAddress: '127.0.0.1', sourcePort: 1, destinationAddress: '127.0.0.1', destinationPort: 2 }),
    )!;
    expect(parsed.ssl).toEqual({ client: 0x01, verify: 1, sub: new Map() });
    expect(parsed.tlvs.has(0xe0)).toBe(false);
  });

  it('IPv6 addresses take the 36-byte block', () => {
    const parsed = parseProxyV2(
      proxyV2Header({ sourceAddress: 'fd00::1', sourcePort: 1, destinationAddress: 'fd00::2', destinationPort: 2 }),
    )!;
    expect(parsed.family).toBe(0x21);
  });
});

describe('sidecar flags: tcp listeners', () => {
  it('reads and renders MODE=PORT/tcp and --proxy-protocol', () => {
    const args = ['--listen', 'strict=5432/tcp', '--listen', 'flexible=8443', '--upstream', '127.0.0.1:5433'];
    const config = parseSidecarConfig([...args, '--tls-dir', '/tls', '--proxy-protocol']);
    expect(config.listen).toEqual([
      { mode: 'strict', port: 5432, protocol: 'tcp' },
      { mode: 'flexible', port: 8443 },
    ]);
    expect(config.proxyProtocol).toBe(true);
    expect(renderSidecarArgs(config)).toEqual([...args, '--tls-dir', '/tls', '--proxy-protocol']);
    expect(() =>
      parseSidecarArgs(['--listen', 'strict=5432/udp', '--upstream', '127.0.0.1:1', '--tls-dir', '/t']),
    ).toThrow(/MODE=PORT\/tcp/);
  });
});

describe('sidecar: tcp listeners relay bytes after mTLS', () => {
  let pki: Pki;
  let withHeader: Awaited<ReturnType<typeof startProxyEcho>>;
  let plain: Awaited<ReturnType<typeof startProxyEcho>>;
  let sidecar: RunningSidecar;
  let plainSidecar: RunningSidecar;

  beforeAll(async () => {
    pki = await makePki();
    withHeader = await startProxyEcho(true);
    plain = await startProxyEcho(false);
    const dir = await tlsDir(pki);
    const args = (port: number) => [
      '--listen',
      'strict=0/tcp',
      '--listen',
      'flexible=0/tcp',
      '--upstream',
      `127.0.0.1:${port}`,
      '--tls-dir',
      dir,
      '--admin',
      '127.0.0.1:0',
    ];
    sidecar = await startSidecar(parseSidecarConfig([...args(withHeader.port), '--proxy-protocol']));
    plainSidecar = await startSidecar(parseSidecarConfig(args(plain.port)));
  });
  afterAll(async () => {
    await sidecar?.stop(500);
    await plainSidecar?.stop(500);
    withHeader?.server.close();
    plain?.server.close();
  });

  it('strict: the issued client is relayed, and the upstream reads its identity from the PROXY v2 header', async () => {
    const socket = await tlsClient(sidecar.ports[0]!, pki.ca.certPem, pki.client);
    expect(socket.alpnProtocol).toBe(false);
    const localPort = socket.localPort;
    const echoed = await exchange(socket, Buffer.from('SELECT 1;\n'));
    expect(echoed.toString()).toBe('SELECT 1;\n');
    const header = withHeader.headers.at(-1)!;
    expect(header).toMatchObject({
      command: 1,
      family: 0x11,
      source: '127.0.0.1',
      sourcePort: localPort,
      destinationPort: sidecar.ports[0],
    });
    expect(header.ssl?.client).toBe(0x07);
    expect(header.ssl?.verify).toBe(0);
    expect(header.ssl?.sub.get(0x22)).toBe('billing');
    expect(header.ssl?.sub.get(0x21)).toMatch(/^TLSv1\.[23]$/);
    expect(header.tlvs.get(0x02)?.toString()).toBe('localhost');
    expect(header.tlvs.get(0xe0)?.toString()).toMatch(/^Hash=[0-9a-f]{64};Subject="CN=billing";URI=spiffe:/);
  });

  it('strict: no certificate -> closed before any byte reaches the upstream', async () => {
    const before = withHeader.connections();
    const socket = await tlsClient(sidecar.ports[0]!, pki.ca.certPem);
    const answer = await exchange(socket, Buffer.from('must not arrive'));
    expect(answer.length).toBe(0);
    expect(withHeader.connections()).toBe(before);
    expect(withHeader.raw.map(String)).not.toContain('must not arrive');
  });

  it('flexible: no certificate is relayed; the header says SSL without a client certificate', async () => {
    const socket = await tlsClient(sidecar.ports[1]!, pki.ca.certPem);
    expect((await exchange(socket, Buffer.from('anonymous'))).toString()).toBe('anonymous');
    const header = withHeader.headers.at(-1)!;
    expect(header.ssl?.client).toBe(0x01);
    expect(header.ssl?.sub.has(0x22)).toBe(false);
    const unknown = await tlsClient(sidecar.ports[1]!, pki.ca.certPem, pki.unknownCa);
    expect((await exchange(unknown, Buffer.from('must not arrive either'))).length).toBe(0);
  });

  it("without --proxy-protocol the upstream gets the client's bytes only, 4 MiB intact both ways", async () => {
    const data = Buffer.alloc(4 * 2 ** 20);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(i, i);
    const socket = await tlsClient(plainSidecar.ports[0]!, pki.ca.certPem, pki.client);
    const echoed = await exchange(socket, data);
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    expect({ length: echoed.length, sha: sha(echoed) }).toEqual({ length: data.length, sha: sha(data) });
    expect(sha(Buffer.concat(plain.raw))).toBe(sha(data));
  });
});
