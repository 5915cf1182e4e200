import type { ChildProcess } from 'node:child_process';
import { untilSignal } from '../common/signals.ts';
import { errorMessage } from '../common/log-text.ts';
import { logger } from './log.ts';
import { renderSidecarArgs, type ResolvedSidecarConfig, SIDECAR_DEFAULTS } from './flags.ts';
import type { MetricSnapshot } from './prometheus.ts';
import { startSidecar } from './sidecar.ts';

/**
 * `--workers N`: one Node process serves about one core, so N processes share the listening ports with
 * SO_REUSEPORT (the kernel spreads connections over them). The first process also serves the admin port and
 * sums everyone's metrics there; it forks the others, restarts one that dies, and takes them down with it.
 * Every process watches the TLS folder and reloads by itself.
 */

/** Set in a forked worker: its number (1..N-1). */
const WORKER_ENV = 'MTLS_SIDECAR_WORKER';
const METRICS_TIMEOUT_MS = 1_000;
const RESTART_DELAY_MS = 1_000;
/** A slot whose worker died this many times within a minute is left empty (the others keep serving). */
const MAX_RESTARTS_PER_MINUTE = 5;

interface MetricsReply {
  type: 'metrics';
  id: number;
  snapshot: MetricSnapshot[];
}

export function isWorker(): boolean {
  return process.env[WORKER_ENV] !== undefined;
}

/** A forked worker: serve the listeners (no admin port), answer metrics requests, stop with the first process. */
export async function runWorker(config: ResolvedSidecarConfig): Promise<number> {
  const sidecar = await startSidecar(config, { reusePort: true, admin: false });
  process.on('message', (message: { type?: string; id?: number }) => {
    if (message?.type === 'metrics') {
      const reply: MetricsReply = { type: 'metrics', id: message.id!, snapshot: sidecar.metrics.registry.snapshot() };
      process.send?.(reply);
    }
  });
  // The first process going away (even by SIGKILL) disconnects the IPC channel: drain and follow it.
  await Promise.race([untilSignal(), new Promise((resolve) => process.once('disconnect', resolve))]);
  await sidecar.stop(SIDECAR_DEFAULTS.drainTimeoutMs);
  return 0;
}

/** The first process of a --workers group. */
export async function runWorkerGroup(config: ResolvedSidecarConfig, cliPath: string): Promise<number> {
  const log = logger('sidecar');
  const workers = new Map<number, ChildProcess>();
  let nextId = 0;
  const pending = new Map<number, (snapshot: MetricSnapshot[]) => void>();
  const siblingMetrics = async (): Promise<MetricSnapshot[][]> => {
    const replies = [...workers.values()].map(
      (child) =>
        new Promise<MetricSnapshot[] | undefined>((resolve) => {
          const id = ++nextId;
          const settle = (snapshot?: MetricSnapshot[]) => {
            clearTimeout(timer);
            pending.delete(id);
            resolve(snapshot);
          };
          const timer = setTimeout(settle, METRICS_TIMEOUT_MS);
          pending.set(id, settle);
          if (!child.connected || !child.send({ type: 'metrics', id })) settle();
        }),
    );
    return (await Promise.all(replies)).filter((s): s is MetricSnapshot[] => s !== undefined);
  };
  const sidecar = await startSidecar(config, { reusePort: true, siblingMetrics });
  // Workers bind the ports this process got (a --listen port of 0 means "any", which must be the same one).
  const args = renderSidecarArgs({
    ...config,
    listen: config.listen.map((l, i) => ({ ...l, port: sidecar.ports[i]! })),
    workers: 1,
  });

  // Loaded here, not imported: a single-process sidecar (the default) does not pay for child_process.
  const { fork } = process.getBuiltinModule('node:child_process');
  let stopping = false;
  const restarts = new Map<number, number[]>();
  const spawnWorker = (slot: number): void => {
    const child = fork(cliPath, ['sidecar', ...args], {
      env: { ...process.env, [WORKER_ENV]: String(slot) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    workers.set(slot, child);
    child.on('message', (message: MetricsReply) => {
      if (message?.type === 'metrics') pending.get(message.id)?.(message.snapshot);
    });
    child.once('exit', (code, signal) => {
      workers.delete(slot);
      if (stopping) return;
      const now = Date.now();
      const recent = (restarts.get(slot) ?? []).filter((t) => now - t < 60_000);
      recent.push(now);
      restarts.set(slot, recent);
      if (recent.length > MAX_RESTARTS_PER_MINUTE) {
        log.error('sidecar worker keeps dying; its slot stays empty, the other processes keep serving', {
          worker: slot,
          exitCode: code,
          signal,
        });
        return;
      }
      log.error('sidecar worker died; restarting it', { worker: slot, exitCode: code, signal });
      setTimeout(() => {
        if (!stopping) spawnWorker(slot);
      }, RESTART_DELAY_MS).unref();
    });
  };
  for (let slot = 1; slot < config.workers; slot++) spawnWorker(slot);
  log.info('sidecar workers started', { workers: config.workers });

  await untilSignal();
  stopping = true;
  const exited = [...workers.values()].map(
    (child) =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        const kill = setTimeout(() => child.kill('SIGKILL'), SIDECAR_DEFAULTS.drainTimeoutMs + 2_000);
        kill.unref();
        child.kill('SIGTERM');
      }),
  );
  await Promise.all([sidecar.stop(SIDECAR_DEFAULTS.drainTimeoutMs), ...exited]).catch((err: unknown) =>
    log.error('sidecar stop failed', { error: errorMessage(err) }),
  );
  return 0;
}
