import { connect, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from './log.ts';
import { proxyV2Header } from './proxy-protocol.ts';
import { relay } from './relay.ts';
import type { ClientIdentity } from './verify.ts';
import { xfcc } from './verify.ts';

/**
 * A TCP listener's connection (`--listen MODE=PORT/tcp`): the sidecar terminates mTLS with the listener's mode
 * and relays the bytes both ways, unparsed, to the upstream (a database, a custom protocol). Half-closes pass
 * through; an error on either side closes both. With --proxy-protocol the upstream connection starts with a
 * PROXY v2 header carrying the client's address and identity (proxy-protocol.ts).
 */

/**
 * An idle relayed connection is closed after this (Envoy's tcp_proxy default: one hour). Connection pools of
 * databases keep connections open and quiet for minutes; the HTTP idle timeout would cut them.
 */
export const TCP_IDLE_TIMEOUT_MS = 3_600_000;

export interface TcpRelaySettings {
  upstreamHost: string;
  upstreamPort: number;
  upstream: string;
  proxyProtocol: boolean;
  listener: () => number;
  mode: string;
  log: Logger;
  idleTimeoutMs?: number;
}

export function relayTcp(client: TLSSocket, identity: ClientIdentity | undefined, s: TcpRelaySettings): void {
  const upstream: Socket = connect({ host: s.upstreamHost, port: s.upstreamPort, noDelay: true, allowHalfOpen: true });
  client.allowHalfOpen = true;
  if (s.proxyProtocol) {
    const local = client.address();
    upstream.write(
      proxyV2Header({
        sourceAddress: client.remoteAddress ?? '',
        sourcePort: client.remotePort ?? 0,
        destinationAddress: 'address' in local ? local.address : '',
        destinationPort: 'port' in local ? local.port : 0,
        tlsVersion: client.getProtocol() ?? undefined,
        cipher: client.getCipher()?.standardName,
        serverName: (client as TLSSocket & { servername?: string | false }).servername || undefined,
        client: identity ? { commonName: identity.commonName, xfcc: xfcc(identity) } : undefined,
      }),
    );
  }
  let connected = false;
  upstream.once('connect', () => (connected = true));
  upstream.on('error', (err: NodeJS.ErrnoException) => {
    if (!connected) {
      s.log.warn('upstream unavailable', {
        listener: s.listener(),
        mode: s.mode,
        protocol: 'tcp',
        peer: `${client.remoteAddress}:${client.remotePort}`,
        upstream: s.upstream,
        error: err.code ?? err.message,
      });
    }
    client.destroy();
  });
  client.on('error', () => upstream.destroy());
  client.on('close', () => upstream.destroy());
  upstream.on('close', () => client.destroy());
  relay(client, upstream, { batch: true });
  relay(upstream, client, { batch: true });
  const idle = s.idleTimeoutMs ?? TCP_IDLE_TIMEOUT_MS;
  client.setTimeout(idle, () => client.destroy());
}
