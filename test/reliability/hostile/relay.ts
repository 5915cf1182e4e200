import type { IncomingMessage } from 'node:http';
import {
  connect as netConnect,
  createServer as createNetServer,
  type Server as NetServer,
  type Socket,
} from 'node:net';

/** The hostile suite's upstream side: a byte-scanning relay in front of the mock, and what must never reach it. */

/** A TCP relay in front of the mock: it is the sidecar's upstream, and records every tag it relays. */
export class Relay {
  /** `MALFORMED-<n>` / `SMUGGLED-<n>` tags seen in bytes that reached the upstream. */
  readonly seen = new Set<string>();
  /** Every byte of the upstream connections whose first request targets /forwarded-*, by that path. */
  readonly recorded = new Map<string, string>();
  readonly open = new Set<Socket>();
  connections = 0;
  readonly server: NetServer;
  readonly port: number;
  private constructor(server: NetServer, port: number) {
    this.server = server;
    this.port = port;
  }

  static async start(target: number, port: number): Promise<Relay> {
    const server = createNetServer();
    const relay = new Relay(server, port);
    server.on('connection', (socket) => {
      relay.connections++;
      relay.open.add(socket);
      const upstream = netConnect(target, '127.0.0.1');
      let tail = '';
      let recording: string | null | undefined;
      socket.on('data', (chunk: Buffer) => {
        if (recording === undefined)
          recording = /^[A-Z]+ (\/forwarded-[^ ]+)/.exec(chunk.toString('latin1'))?.[1] ?? null;
        if (recording) relay.recorded.set(recording, (relay.recorded.get(recording) ?? '') + chunk.toString('latin1'));
        const text = tail + chunk.toString('latin1');
        for (const m of text.matchAll(/(?:MALFORMED|SMUGGLED)-\d+/g)) relay.seen.add(m[0]);
        tail = text.slice(-24);
        upstream.write(chunk);
      });
      upstream.pipe(socket);
      const done = () => {
        relay.open.delete(socket);
        socket.destroy();
        upstream.destroy();
      };
      socket.on('close', done);
      socket.on('error', done);
      upstream.on('close', done);
      upstream.on('error', done);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', resolve);
    });
    return relay;
  }
}

/**
 * What the upstream received that it must not have: a request without exactly one X-Client-Verify of the
 * sidecar's (SUCCESS | NONE), any header a client forged (the attacks tag forged values FORGED-<n>), any
 * identity header in its underscore spelling, or a request smuggled inside a refused one.
 */
export function upstreamViolations(requests: readonly IncomingMessage[]): string[] {
  const problems: string[] = [];
  for (const req of requests) {
    const verify: string[] = [];
    const raw = req.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase();
      const value = raw[i + 1]!;
      if (/FORGED/.test(name + value)) problems.push(`${req.url}: forged header reached the upstream: ${name}`);
      if (name.includes('_') && /^x.(client.verify|forwarded.client.cert|forwarded.proto)$/.test(name))
        problems.push(`${req.url}: underscore identity header reached the upstream: ${name}`);
      if (name === 'x-client-verify') verify.push(value);
    }
    if (verify.length !== 1 || !['SUCCESS', 'NONE'].includes(verify[0]!))
      problems.push(`${req.url}: x-client-verify ${JSON.stringify(verify)}`);
    if (/SMUGGLED|MALFORMED/.test(req.url ?? '')) problems.push(`${req.url}: a refused request reached the upstream`);
  }
  return problems;
}
