/**
 * The floor for any Node.js sidecar: a TLS server (client certificate required, as the strict listener)
 * that relays bytes to the upstream and back with no HTTP parsing, no headers, no metrics and no logs.
 * Benchmarked beside the sidecar to show how much of the gap to nginx is Node's TLS and socket machinery
 * rather than the sidecar's own work. Not part of the product.
 *   node bench/node-tls-relay.ts PORT UPSTREAM_PORT CERT KEY CA
 */
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { createServer } from 'node:tls';

const [port, upstreamPort, cert, key, ca] = process.argv.slice(2);
const server = createServer(
  {
    cert: readFileSync(cert!),
    key: readFileSync(key!),
    ca: readFileSync(ca!),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
  },
  (client) => {
    client.setNoDelay(true);
    const upstream = connect({
      host: '127.0.0.1',
      port: Number(upstreamPort),
      noDelay: true,
      onread: {
        buffer: Buffer.allocUnsafe(64 * 1024),
        callback: (n, buf) => {
          client.write(Buffer.from(buf.subarray(0, n)));
          return true;
        },
      },
    });
    client.on('data', (chunk: Buffer) => upstream.write(chunk));
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.on('error', () => undefined);
    upstream.on('error', () => undefined);
  },
);
server.listen(Number(port), '127.0.0.1');
