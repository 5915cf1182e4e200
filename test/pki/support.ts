import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';

/** A scratch directory for PEM files that the openssl CLI reads. */
export class Scratch {
  readonly dir = mkdtempSync(join(tmpdir(), 'mtls-pki-'));
  write(name: string, content: string): string {
    const path = join(this.dir, name);
    writeFileSync(path, content);
    return path;
  }
  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface OpensslResult {
  code: number;
  out: string;
}

/** Runs the real openssl CLI; never rejects, so a test can assert on failures too. stdout and stderr are joined. */
export function openssl(args: string[]): Promise<OpensslResult> {
  return new Promise((resolve) => {
    execFile('openssl', args, { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, out: `${stdout}${stderr}` });
    });
  });
}

/** `openssl x509 -text` of a PEM certificate. */
export async function x509Text(scratch: Scratch, pem: string): Promise<string> {
  const result = await openssl(['x509', '-noout', '-text', '-in', scratch.write(`cert-${Math.random()}.pem`, pem)]);
  if (result.code !== 0) throw new Error(`openssl x509 failed: ${result.out}`);
  return result.out;
}

export interface HandshakeOutcome {
  /** The server accepted the connection (a verified client certificate when it asked for one). */
  accepted: boolean;
  /** Why the server refused the handshake, when it did. */
  serverError?: string;
  /** The CN of the client certificate the server saw. */
  peerCN?: string;
  /** What the client read: the server sends `hello <CN>` once it accepted. */
  clientData: string;
  clientError?: string;
}

/**
 * One real TLS handshake on loopback: a Node TLS server that asks for a client certificate and verifies it
 * against `server.ca` (and `server.crl`), and a Node client that verifies the server against `client.ca` and
 * its name. The server accepts only an authorized peer — as a strict listener does — and says why not
 * otherwise (OpenSSL's code, e.g. CERT_REVOKED). The server decides itself rather than through
 * rejectUnauthorized, which would only report "socket hang up".
 */
export async function handshake(
  server: { key: string; cert: string; ca: string; crl?: string },
  client: { key?: string; cert?: string; ca: string; servername: string },
): Promise<HandshakeOutcome> {
  let serverOutcome: { accepted: boolean; serverError?: string; peerCN?: string } | undefined;
  const srv = tls.createServer({ ...server, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' });
  const serverDone = new Promise<void>((resolve) => {
    srv.on('secureConnection', (socket) => {
      const cn = socket.getPeerCertificate().subject?.CN;
      const peerCN = Array.isArray(cn) ? cn[0] : cn;
      if (socket.authorized) {
        serverOutcome = { accepted: true, peerCN };
        socket.end(`hello ${peerCN}`);
      } else {
        serverOutcome = { accepted: false, peerCN, serverError: String(socket.authorizationError) };
        socket.destroy();
      }
      resolve();
    });
    srv.on('tlsClientError', (err) => {
      serverOutcome = { accepted: false, serverError: err.message };
      resolve();
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as AddressInfo;
  try {
    const clientSide = new Promise<{ clientData: string; clientError?: string }>((resolve) => {
      let data = '';
      const socket = tls.connect({ host: '127.0.0.1', port, ...client });
      socket.setEncoding('utf8');
      socket.on('data', (chunk) => (data += chunk));
      socket.on('close', () => resolve({ clientData: data }));
      socket.on('error', (err) => resolve({ clientData: data, clientError: err.message }));
    });
    const [clientResult] = await Promise.all([clientSide, serverDone]);
    return { ...serverOutcome!, ...clientResult };
  } finally {
    srv.close();
  }
}
