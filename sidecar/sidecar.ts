import { Agent, createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { errorMessage, logger } from '../operator/log.ts';
import type { ResolvedSidecarConfig } from './flags.ts';
import { SidecarMetrics } from './metrics.ts';
import { createListener } from './proxy.ts';
import { RefusalLog } from './refusal-log.ts';
import { loadTlsMaterial, type TlsMaterial, watchTlsDir } from './tls-material.ts';

export interface RunningSidecar {
  /** Bound port of each listener, in --listen order (useful with port 0 in tests). */
  ports: number[];
  adminPort: number;
  metrics: SidecarMetrics;
  /** Re-reads the TLS folder now; resolves true if a new certificate set went into service. */
  reload(): Promise<boolean>;
  /** Stops accepting, lets open requests finish (up to `drainMs`), then closes everything. */
  stop(drainMs?: number): Promise<void>;
}

/**
 * Starts the sidecar: one TLS listener per --listen, the admin listener, and a watch on the TLS folder.
 * A reload builds the new material once and swaps it into every listener with setSecureContext: open
 * connections keep the context they were made with; a broken update is refused and the old one stays.
 */
export async function startSidecar(config: ResolvedSidecarConfig): Promise<RunningSidecar> {
  const log = logger('sidecar');
  const metrics = new SidecarMetrics();
  const refusals = new RefusalLog(log);
  let material: TlsMaterial = await loadTlsMaterial(config.tlsDir);
  metrics.certificateExpiry.set(material.notAfter.getTime() / 1000);
  const agent = new Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 64, scheduling: 'lifo' });

  const servers: Server[] = config.listen.map((listener) =>
    createListener(listener, config, material, { log, refusals, metrics, agent }),
  );
  const ports: number[] = [];
  for (const [i, server] of servers.entries()) {
    ports.push(
      await new Promise<number>((resolve, reject) => {
        server.once('error', reject);
        server.listen(config.listen[i]!.port, '0.0.0.0', () => resolve((server.address() as AddressInfo).port));
      }),
    );
  }
  let ready = true;

  const reload = async (): Promise<boolean> => {
    let next: TlsMaterial;
    try {
      next = await loadTlsMaterial(config.tlsDir);
    } catch (err) {
      metrics.reloads.inc({ result: 'failure' });
      log.error('TLS files changed but cannot be used; still serving the previous certificate', {
        error: errorMessage(err),
      });
      return false;
    }
    if (next.digest === material.digest) return false;
    for (const [i, server] of servers.entries()) {
      server.setSecureContext({
        ...next.options,
        requestCert: config.listen[i]!.mode !== 'standard',
        rejectUnauthorized: false,
      } as never);
    }
    material = next;
    metrics.certificateExpiry.set(next.notAfter.getTime() / 1000);
    metrics.reloads.inc({ result: 'success' });
    log.info('reloaded certificate, key, CA bundle and CRL', {
      notAfter: next.notAfter.toISOString(),
      crl: next.hasCrl,
    });
    return true;
  };
  let reloading = Promise.resolve(false);
  const stopWatching = watchTlsDir(config.tlsDir, () => {
    reloading = reloading.then(reload, reload);
  });

  const [adminHost, adminPortText] = [
    config.admin.slice(0, config.admin.lastIndexOf(':')),
    config.admin.slice(config.admin.lastIndexOf(':') + 1),
  ];
  const admin: HttpServer = createHttpServer(async (req, res) => {
    if (req.url === '/healthz') return void res.end('ok\n');
    if (req.url === '/readyz') {
      res.statusCode = ready ? 200 : 503;
      return void res.end(ready ? 'ok\n' : 'draining\n');
    }
    if (req.url === '/metrics') {
      res.setHeader('content-type', metrics.registry.contentType);
      return void res.end(await metrics.registry.metrics());
    }
    res.statusCode = 404;
    res.end('not found\n');
  });
  const adminPort = await new Promise<number>((resolve, reject) => {
    admin.once('error', reject);
    admin.listen(Number(adminPortText), adminHost.replace(/^\[|\]$/g, ''), () =>
      resolve((admin.address() as AddressInfo).port),
    );
  });
  log.info('sidecar serving', {
    listeners: config.listen.map((l, i) => `${l.mode}=${ports[i]}`),
    upstream: config.upstream,
    admin: `${adminHost}:${adminPort}`,
    notAfter: material.notAfter.toISOString(),
  });

  return {
    ports,
    adminPort,
    metrics,
    reload: () => (reloading = reloading.then(reload, reload)),
    async stop(drainMs = 15_000) {
      ready = false;
      stopWatching();
      await Promise.all(
        servers.map(
          (server) =>
            new Promise<void>((resolve) => {
              const force = setTimeout(() => server.closeAllConnections(), drainMs);
              server.close(() => {
                clearTimeout(force);
                resolve();
              });
              server.closeIdleConnections();
            }),
        ),
      );
      agent.destroy();
      refusals.close();
      await new Promise<void>((resolve) => admin.close(() => resolve()));
      log.info('sidecar stopped');
    },
  };
}
