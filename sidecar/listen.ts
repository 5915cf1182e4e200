import type { AddressInfo } from 'node:net';
import type { Server } from 'node:tls';

/**
 * Binds each server to its port on 0.0.0.0 (the pod's address; 0 picks a free one), in order, and returns the
 * ports bound. A port that cannot be bound rejects with the listen error.
 */
export async function listenAll(servers: readonly Server[], ports: readonly number[], reusePort?: boolean) {
  const bound: number[] = [];
  for (const [i, server] of servers.entries()) {
    bound.push(
      await new Promise<number>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ port: ports[i], host: '0.0.0.0', reusePort }, () =>
          resolve((server.address() as AddressInfo).port),
        );
      }),
    );
  }
  return bound;
}
