import { CoreV1Api, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SIDECAR_CONTAINER, sidecarContainerOf } from '../../operator/api/injection.ts';
import { errorMessage, logger } from '../../operator/log.ts';
import { writeSecretVolume } from '../../sidecar/secret-volume.ts';

const CLI = fileURLToPath(new URL('../../operator/cli.ts', import.meta.url));

export interface SimulatedPod {
  /** The sidecar's argv as injected (before the one substitution of mount paths). */
  injectedArgs: string[];
  /** What was actually run: the injected args with each Secret mount path replaced by its local folder (and
   * each port of `portMap` by its host port). */
  args: string[];
  volumes: Record<string, string>;
  child: ChildProcess;
  output: string[];
  /** Re-reads the mounted Secrets now and rewrites the folders that changed (as kubelet's sync would). */
  syncVolumes(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * Runs an injected Pod's sidecar the way kubelet would, without a container runtime: every Secret volume
 * the sidecar mounts is materialised under `workDir` in kubelet's layout (`..data` symlink swap) and kept in
 * sync with the Secret, and the sidecar starts with exactly the injected args, the image's entrypoint being
 * this package's `mtls-operator`. The one substitution is each mount path -> its local folder.
 *
 * A real pod has a network namespace of its own, so two pods may both listen on, say, the sidecar's fixed
 * admin port (15201 by default); simulated pods share the host's. `portMap` ({containerPort: hostPort}) stands in for
 * that: a `HOST:PORT` or `MODE=PORT` argument whose port is in the map is given the host port instead.
 */
export async function runInjectedPod(
  kc: KubeConfig,
  pod: V1Pod,
  workDir: string,
  options: { syncEveryMs?: number; env?: NodeJS.ProcessEnv; portMap?: Record<number, number> } = {},
): Promise<SimulatedPod> {
  const log = logger('pod-simulation');
  const core = kc.makeApiClient(CoreV1Api);
  const namespace = pod.metadata!.namespace!;
  const container = sidecarContainerOf(pod);
  if (!container)
    throw new Error(
      `pod ${namespace}/${pod.metadata?.name} has no ${SIDECAR_CONTAINER} container: it was not injected`,
    );
  const injectedArgs = [...(container.command ?? []), ...(container.args ?? [])];
  const volumes: Record<string, string> = {};
  const secretOf: Record<string, { secretName: string; mode: number }> = {};
  const digests: Record<string, string> = {};
  let args = [...injectedArgs];
  for (const mount of container.volumeMounts ?? []) {
    const volume = pod.spec?.volumes?.find((v) => v.name === mount.name);
    if (!volume?.secret?.secretName) continue;
    const dir = join(workDir, mount.name);
    mkdirSync(dir, { recursive: true });
    volumes[mount.name] = dir;
    secretOf[mount.name] = { secretName: volume.secret.secretName, mode: volume.secret.defaultMode ?? 0o644 };
    args = args.map((arg) => (arg === mount.mountPath ? dir : arg.replace(`${mount.mountPath}/`, `${dir}/`)));
  }
  const portMap = options.portMap ?? {};
  args = args.map((arg) =>
    arg.replace(/^(.*[:=])(\d+)$/, (whole, prefix: string, port: string) =>
      portMap[Number(port)] === undefined ? whole : `${prefix}${portMap[Number(port)]}`,
    ),
  );
  const syncVolumes = async (): Promise<number> => {
    let changed = 0;
    for (const [name, { secretName, mode }] of Object.entries(secretOf)) {
      const secret = await core.readNamespacedSecret({ namespace, name: secretName });
      const data = Object.fromEntries(Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')]));
      const digest = JSON.stringify(secret.data ?? {});
      if (digests[name] === digest) continue;
      await writeSecretVolume(volumes[name]!, data, mode);
      digests[name] = digest;
      changed++;
    }
    return changed;
  };
  await syncVolumes();

  const output: string[] = [];
  // The container's own env, as kubelet sets it (values only: no valueFrom here).
  const containerEnv = Object.fromEntries((container.env ?? []).map((e) => [e.name, e.value ?? '']));
  const child = spawn(process.execPath, [CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...(options.env ?? process.env), ...containerEnv },
  });
  child.stdout!.on('data', (d: Buffer) => output.push(d.toString()));
  child.stderr!.on('data', (d: Buffer) => output.push(d.toString()));
  const timer = setInterval(() => {
    syncVolumes().catch((err: unknown) => log.warn('could not sync a Secret volume', { error: errorMessage(err) }));
  }, options.syncEveryMs ?? 2_000);
  timer.unref();
  log.info('started the injected sidecar', { pod: `${namespace}/${pod.metadata?.name}`, args });
  return {
    injectedArgs,
    args,
    volumes,
    child,
    output,
    syncVolumes,
    async stop() {
      clearInterval(timer);
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await new Promise((resolve) => child.once('exit', resolve));
      clearTimeout(killer);
    },
  };
}
