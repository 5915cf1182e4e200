import { type RunningAdmin, startAdmin } from './admin.ts';
import { errorMessage } from '../common/log-text.ts';
import { logger } from './log.ts';
import type { ResolvedSidecarConfig } from './flags.ts';
import { SidecarMetrics } from './metrics.ts';
import { startSweeper } from './forward.ts';
import { listenAll } from './listen.ts';
import type { MetricSnapshot } from './prometheus.ts';
import { contextOptions, createListener } from './proxy.ts';
import { RefusalLog } from './refusal-log.ts';
import {
  UpstreamProtocolChoice,
  type UpstreamProtocolFinding,
  type UpstreamProtocolOptions,
} from './upstream-protocol.ts';
import { startTestListeners } from './test-listeners.ts';
import { buildTlsMaterial, loadTlsMaterial, readTlsFiles, type TlsMaterial, watchTlsDir } from './tls-material.ts';

export interface SidecarOptions {
  /** Share the listening ports with sibling processes (SO_REUSEPORT; --workers). */
  reusePort?: boolean;
  /** Serve the admin port (default true; the other processes of a --workers group do not). */
  admin?: boolean;
  /** The metrics of sibling processes, summed into /metrics with this process's own. */
  siblingMetrics?: () => Promise<MetricSnapshot[][]>;
  /** `--upstream-protocol auto`'s probe timeout and backoff (tests shorten them). */
  probe?: Pick<UpstreamProtocolOptions, 'timeoutMs' | 'backoff'>;
}

export interface RunningSidecar {
  /** Bound port of each listener, in --listen order (useful with port 0 in tests). */
  ports: number[];
  /** Bound port of each --test-listen, in order. */
  testPorts: number[];
  /** 0 when this process serves no admin port. */
  adminPort: number;
  metrics: SidecarMetrics;
  /** What the sidecar knows of its upstream's protocol (`--upstream-protocol auto` probes it). */
  upstreamProtocol(): UpstreamProtocolFinding;
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
export async function startSidecar(
  config: ResolvedSidecarConfig,
  options: SidecarOptions = {},
): Promise<RunningSidecar> {
  const log = logger('sidecar');
  const metrics = new SidecarMetrics();
  const refusals = new RefusalLog(log);
  let material: TlsMaterial = await loadTlsMaterial(config.tlsDir);
  for (const warning of material.warnings) log.warn(warning);
  metrics.certificateExpiry.set(material.notAfter.getTime() / 1000);

  const protocolChoice = new UpstreamProtocolChoice({
    requested: config.upstreamProtocol,
    host: config.upstreamHost,
    port: config.upstreamPort,
    log,
    metrics,
    ...options.probe,
  });
  const listeners = config.listen.map((listener) =>
    createListener(listener, config, material, { log, refusals, metrics, protocolChoice }),
  );
  const servers = listeners.map((l) => l.server);
  const contexts = listeners.map((l) => l.forward);
  // Deadlines (header, request, idle, upstream) are checked by one sweep, fine enough for the smallest one.
  const smallest = Math.min(
    config.headersTimeoutMs,
    config.requestTimeoutMs,
    config.idleTimeoutMs,
    config.upstreamTimeoutMs,
  );
  const stopSweeper = startSweeper(contexts, Math.max(10, Math.min(1_000, Math.floor(smallest / 4))));
  const ports = await listenAll(
    servers,
    config.listen.map((l) => l.port),
    options.reusePort,
  );
  const testListeners = await startTestListeners(config, material, log, { reusePort: options.reusePort });
  let ready = true;

  /** Digest of the files last looked at, good or not: a broken update is reported once, not every poll. */
  let seen = material.digest;
  const reload = async (): Promise<boolean> => {
    let next: TlsMaterial;
    try {
      const files = await readTlsFiles(config.tlsDir);
      if (files.digest === seen) return false;
      seen = files.digest;
      next = await buildTlsMaterial(files);
    } catch (err) {
      metrics.reloads.inc({ result: 'failure' });
      log.error('TLS files changed but cannot be used; still serving the previous certificate', {
        error: errorMessage(err),
      });
      return false;
    }
    for (const [i, server] of servers.entries()) server.setSecureContext(contextOptions(next, config.listen[i]!));
    testListeners.reload(next);
    for (const warning of next.warnings) log.warn(warning);
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
  const metricsText = async (): Promise<string> => {
    if (!options.siblingMetrics) return metrics.registry.metricsText();
    const sum = new SidecarMetrics({ sampleProcess: false });
    sum.registry.merge(metrics.registry.snapshot());
    for (const snapshot of await options.siblingMetrics()) sum.registry.merge(snapshot);
    return sum.registry.metricsText();
  };
  const admin: RunningAdmin | undefined =
    options.admin === false
      ? undefined
      : await startAdmin(adminHost.replace(/^\[|\]$/g, ''), Number(adminPortText), {
          ready: () => ready,
          status: () => ({ ready, upstreamProtocol: protocolChoice.finding() }),
          metrics: metricsText,
          metricsContentType: metrics.registry.contentType,
        });
  const adminPort = admin?.port ?? 0;
  // After the listeners: a probe that finds the upstream at once must not race a stream that came first.
  protocolChoice.start();
  log.info('sidecar serving', {
    listeners: config.listen.map((l, i) => `${l.mode}=${ports[i]}`),
    upstream: config.upstream,
    upstreamProtocol: config.upstreamProtocol,
    admin: admin ? `${adminHost}:${adminPort}` : 'none (served by the first worker)',
    notAfter: material.notAfter.toISOString(),
  });

  return {
    ports,
    testPorts: testListeners.ports,
    adminPort,
    metrics,
    upstreamProtocol: () => protocolChoice.finding(),
    reload: () => (reloading = reloading.then(reload, reload)),
    async stop(drainMs = 15_000) {
      ready = false;
      stopWatching();
      protocolChoice.stop();
      await testListeners.stop();
      // No new connections; idle keep-alive connections close now, busy ones after their response.
      const closed = servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
      for (const ctx of contexts) for (const conn of ctx.connections) conn.drain();
      for (const l of listeners) l.h2.drain();
      const force = setTimeout(() => {
        for (const l of listeners) for (const socket of l.sockets) socket.destroy();
      }, drainMs);
      await Promise.all(closed);
      clearTimeout(force);
      for (const l of listeners) l.h2.close();
      stopSweeper();
      refusals.close();
      await admin?.close();
      log.info('sidecar stopped');
    },
  };
}
