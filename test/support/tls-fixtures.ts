import { mkdtempSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { issueCRL } from '../../operator/pki/crl-issuer.ts';
import { issueCA, issueClient, issueServer, type PemPair } from '../../operator/pki/issue.ts';
import { certificateToPem, generateKeyPair, issueCertificate, privateKeyToPem } from '../../operator/pki/x509.ts';
import { writeSecretVolume } from '../../sidecar/secret-volume.ts';

const DAY = 86_400_000;
const base = { algorithm: 'ECDSA-P256' as const, validityMs: 30 * DAY };

export interface Pki {
  ca: PemPair;
  server: PemPair;
  client: PemPair;
  otherClient: PemPair;
  /** Signed by an unrelated CA. */
  unknownCa: PemPair;
  selfSigned: PemPair;
  expired: PemPair;
  notYetValid: PemPair;
  revoked: PemPair & { serial: string };
  /** serverAuth only: a valid chain, the wrong purpose for a client. */
  serverAuthOnly: PemPair;
  crl: string;
}

export async function makePki(): Promise<Pki> {
  const now = new Date();
  const ca = await issueCA({
    ...base,
    validityMs: 365 * DAY,
    endpoint: 'payments',
    namespace: 'team-a',
    now: new Date(now.getTime() - 10 * DAY),
  });
  const client = (name: string, at = now, validityMs = base.validityMs) =>
    issueClient({ ...base, validityMs, ca, endpoint: 'payments', namespace: 'team-a', client: name, now: at });
  const other = await issueCA({ ...base, endpoint: 'other', namespace: 'team-b', now });
  const selfKeys = await generateKeyPair('ECDSA-P256');
  const selfCert = await issueCertificate(
    {
      subject: 'CN=billing',
      publicKey: selfKeys.publicKey,
      notBefore: new Date(now.getTime() - DAY),
      notAfter: new Date(now.getTime() + DAY),
      clientAuth: true,
    },
    { selfSigned: selfKeys.privateKey },
  );
  const revoked = await client('revoked');
  return {
    ca,
    server: await issueServer({
      ...base,
      ca,
      dnsNames: ['localhost', 'payments-strict.team-a.svc'],
      ipAddresses: ['127.0.0.1'],
      now,
    }),
    client: await client('billing'),
    otherClient: await client('shipping'),
    unknownCa: await issueClient({
      ...base,
      ca: other,
      endpoint: 'other',
      namespace: 'team-b',
      client: 'billing',
      now,
    }),
    selfSigned: { certPem: certificateToPem(selfCert), keyPem: await privateKeyToPem(selfKeys.privateKey) },
    expired: await client('expired', new Date(now.getTime() - 5 * DAY), DAY),
    notYetValid: await client('future', new Date(now.getTime() + 2 * DAY), DAY),
    revoked,
    serverAuthOnly: await issueServer({ ...base, ca, dnsNames: ['billing'], now }),
    crl: await issueCRL({ ca, revoked: [{ serial: revoked.serial, revokedAt: now }], now, nextUpdateMs: 7 * DAY }),
  };
}

/** A Secret-volume folder (kubelet layout) with the server's files. */
export async function tlsDir(
  pki: Pki,
  overrides: Partial<Record<'tls.crt' | 'tls.key' | 'ca.crt' | 'ca.crl', string>> = {},
): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'mtls-tls-'));
  await writeSecretVolume(dir, {
    'tls.crt': pki.server.certPem,
    'tls.key': pki.server.keyPem,
    'ca.crt': pki.ca.certPem,
    'ca.crl': pki.crl,
    ...overrides,
  });
  return dir;
}

/** A mock upstream that echoes what it received; /slow waits, /big sends a large body, /sse streams. */
export async function startMockUpstream(
  port = 0,
): Promise<{ server: Server; port: number; requests: IncomingMessage[] }> {
  const requests: IncomingMessage[] = [];
  const server = createServer((req, res) => {
    requests.push(req);
    let body = 0;
    req.on('data', (chunk: Buffer) => (body += chunk.length));
    req.on('end', () => {
      if (req.url === '/slow') return void setTimeout(() => res.end('slow'), 3_000);
      if (req.url === '/big') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        const chunk = Buffer.alloc(64 * 1024, 7);
        for (let i = 0; i < 64; i++) res.write(chunk);
        return void res.end();
      }
      if (req.url === '/sse') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        let n = 0;
        const timer = setInterval(() => {
          res.write(`data: ${++n}\n\n`);
          if (n === 3) {
            clearInterval(timer);
            res.end();
          }
        }, 50);
        return;
      }
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, bodyBytes: body }));
    });
  });
  server.on('upgrade', (req, socket) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n');
    socket.on('data', (d: Buffer) => socket.write(Buffer.concat([Buffer.from('echo:'), d])));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return { server, port: (server.address() as AddressInfo).port, requests };
}

export interface HttpsResult {
  status?: number;
  headers?: Record<string, unknown>;
  body?: string;
  error?: string;
}

/** One HTTPS request over a fresh connection (no pooling), with an optional client certificate. */
export function httpsGet(
  port: number,
  opts: {
    ca: string;
    client?: PemPair;
    path?: string;
    headers?: Record<string, string>;
    method?: string;
    body?: string;
    maxVersion?: 'TLSv1.2' | 'TLSv1.3';
  },
): Promise<HttpsResult> {
  return new Promise((resolve) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path: opts.path ?? '/',
        method: opts.method ?? 'GET',
        ca: opts.ca,
        cert: opts.client?.certPem,
        key: opts.client?.keyPem,
        servername: 'localhost',
        headers: opts.headers,
        agent: false,
        maxVersion: opts.maxVersion,
        timeout: 10_000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
        res.on('error', (err) => resolve({ error: err.message }));
      },
    );
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end(opts.body);
  });
}
