import { execFile, spawn } from 'node:child_process';
import { connect as netConnect } from 'node:net';
import { promisify } from 'node:util';

/** The hostile suite's TLS scan: ClientHellos built by hand, weak cipher families, openssl s_client. */

export const u16 = (n: number) => Buffer.from([(n >> 8) & 0xff, n & 0xff]);
export const u24 = (n: number) => Buffer.from([(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);

/** A ClientHello for `version` (0x0300 SSLv3 ... 0x0303 TLS 1.2) offering exactly `suites`. */
export function clientHello(version: number, suites: readonly number[]): Buffer {
  const list16 = (values: number[]) => Buffer.concat([u16(values.length * 2), ...values.map(u16)]);
  const ext = (type: number, body: Buffer) => Buffer.concat([u16(type), u16(body.length), body]);
  const extensions =
    version >= 0x0301
      ? Buffer.concat([
          ext(0x000a, list16([0x001d, 0x0017, 0x0018])), // supported_groups
          ext(0x000b, Buffer.from([1, 0])), // ec_point_formats: uncompressed
          ext(0x000d, list16([0x0403, 0x0503, 0x0804, 0x0805, 0x0401, 0x0501, 0x0201, 0x0203])),
          ext(0xff01, Buffer.from([0])), // renegotiation_info
        ])
      : Buffer.alloc(0);
  const body = Buffer.concat([
    u16(version),
    Buffer.alloc(32, 0x5a),
    Buffer.from([0]), // no session id
    u16(suites.length * 2),
    ...suites.map(u16),
    Buffer.from([1, 0]), // compression: null
    ...(extensions.length ? [u16(extensions.length), extensions] : []),
  ]);
  const handshake = Buffer.concat([Buffer.from([1]), u24(body.length), body]);
  return Buffer.concat([Buffer.from([0x16]), u16(Math.min(version, 0x0301)), u16(handshake.length), handshake]);
}

export interface ProbeResult {
  accepted: boolean;
  /** ServerHello's version and suite, or the alert's description. */
  version?: number;
  suite?: number;
  alert?: number;
}

/** Sends a ClientHello and reads the first record back: a ServerHello (accepted) or an alert / a close. */
export function probe(port: number, hello: Buffer): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const socket = netConnect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const done = (result: ProbeResult) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done({ accepted: false }), 10_000);
    socket.on('error', () => done({ accepted: false }));
    socket.on('close', () => done({ accepted: false }));
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf[0] === 0x15 && buf.length >= 7) return done({ accepted: false, alert: buf[6] });
      if (buf[0] === 0x16 && buf.length >= 5 + 4 + 2 + 32 + 1) {
        if (buf[5] !== 2) return done({ accepted: false });
        const sessionId = buf[43]!;
        if (buf.length < 44 + sessionId + 2) return;
        return done({ accepted: true, version: buf.readUInt16BE(9), suite: buf.readUInt16BE(44 + sessionId) });
      }
      if (buf.length >= 7 && buf[0] !== 0x15 && buf[0] !== 0x16) done({ accepted: false });
    });
    socket.write(hello);
  });
}

/** Weak TLS 1.2 cipher families, by IANA id, with their OpenSSL names where the local openssl may offer them. */
export const WEAK: { family: string; suites: number[]; openssl: string }[] = [
  { family: 'RC4', suites: [0x0004, 0x0005, 0xc007, 0xc011], openssl: 'RC4' },
  { family: '3DES', suites: [0x000a, 0xc008, 0xc012, 0x0016], openssl: '3DES' },
  { family: 'DES', suites: [0x0009, 0x0015], openssl: 'DES' },
  { family: 'EXPORT', suites: [0x0003, 0x0006, 0x0008, 0x0014], openssl: 'EXP' },
  { family: 'NULL', suites: [0x0001, 0x0002, 0x003b, 0xc006, 0xc010], openssl: 'eNULL' },
  { family: 'aNULL', suites: [0x0034, 0x003a, 0x00a6, 0xc018, 0xc019, 0xc015], openssl: 'aNULL' },
  { family: 'CBC-SHA1', suites: [0xc009, 0xc00a, 0xc013, 0xc014, 0x002f, 0x0035], openssl: 'SHA1' },
  {
    family: 'CBC-SHA256/384',
    suites: [0xc023, 0xc024, 0xc027, 0xc028, 0x003c, 0x003d],
    openssl: 'SHA256:SHA384:!AESGCM:!CHACHA20:!AESCCM:!ARIAGCM',
  },
  { family: 'static RSA key exchange', suites: [0x009c, 0x009d, 0x002f, 0x0035], openssl: 'kRSA' },
  { family: 'MD5', suites: [0x0004, 0x0001], openssl: 'MD5' },
];

/** TLS 1.2 suites a server must accept (the probe's positive control): ECDHE-ECDSA / ECDHE-RSA with AES-GCM. */
export const STRONG_SUITES = [0xc02b, 0xc02f, 0xc02c, 0xc030];

export const STRONG_NAME = /^ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/;

export const run = promisify(execFile);

/** openssl s_client with stdin closed: it handshakes, prints, and exits. Resolves with its output. */
export function sClient(args: string[]): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    const child = spawn('openssl', ['s_client', ...args], { stdio: ['pipe', 'pipe', 'pipe'], timeout: 15_000 });
    child.stdin.on('error', () => undefined);
    child.stdin.end('\n');
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('close', (code) => resolve({ ok: code === 0 && /Cipher(suite)?( is|:) (?!\(NONE\))\S+/.test(out), out }));
  });
}

export const negotiated = (out: string) => /Ciphersuite: (\S+)|Cipher is (\S+)/.exec(out)?.slice(1).find(Boolean);
