import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureNodeBinaries } from '../binaries.ts';
import { LocalControlPlane } from '../local-control-plane.ts';
import { removeNodeLeftovers } from './leftovers.ts';
import { LocalNode } from './local-node.ts';
import { NODE_PATHS } from './node-configs.ts';
import { createNodeNetwork, NODE_NETWORK } from './node-network.ts';
import { ensureNodePackages } from './node-packages.ts';

const OWNER_FILE = join(NODE_PATHS.state, 'owner');

/** A process's start time (clock ticks since boot): with its pid, names it even after the pid is reused. */
async function startTime(pid: number): Promise<string | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return stat?.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

/** The pid of the process running the local node, if one still runs. */
export async function runningNodeOwner(): Promise<number | undefined> {
  const [pid, started] = (await readFile(OWNER_FILE, 'utf8').catch(() => '')).trim().split(' ');
  const owner = Number(pid);
  if (!owner || owner === process.pid) return undefined;
  return (await startTime(owner)) === started ? owner : undefined;
}

/**
 * A single-node cluster on this machine: the local control plane plus a real node (containerd, kubelet,
 * kube-proxy, kube-scheduler, kube-router's NetworkPolicy firewall). Linux and root only; one at a time.
 */
export class LocalNodeCluster {
  readonly plane: LocalControlPlane;
  readonly node: LocalNode;

  private constructor(plane: LocalControlPlane, node: LocalNode) {
    this.plane = plane;
    this.node = node;
  }

  get kubeconfigPath(): string {
    return this.plane.kubeconfigPath;
  }

  static async start(options: { progress?: (line: string) => void } = {}): Promise<LocalNodeCluster> {
    const progress = options.progress ?? (() => undefined);
    if (process.platform !== 'linux' || process.getuid?.() !== 0) {
      throw new Error('a local node needs Linux and root (network namespaces, containerd, iptables)');
    }
    const owner = await runningNodeOwner();
    if (owner)
      throw new Error(`a local node is already running (pid ${owner}); stop it first (Ctrl-C, or kill ${owner})`);
    progress('removing what an earlier node left behind, if anything');
    await removeNodeLeftovers();
    await mkdir(NODE_PATHS.state, { recursive: true, mode: 0o700 });
    await writeFile(OWNER_FILE, `${process.pid} ${await startTime(process.pid)}\n`);
    await ensureNodePackages(progress);
    const binaries = await ensureNodeBinaries();

    let plane: LocalControlPlane | undefined;
    let node: LocalNode | undefined;
    try {
      progress(
        `creating network namespace ${NODE_NETWORK.netns} (node ${NODE_NETWORK.nodeAddress}, pods ${NODE_NETWORK.podCidr}, Services ${NODE_NETWORK.serviceCidr})`,
      );
      await createNodeNetwork();
      plane = await LocalControlPlane.start({
        dir: join(NODE_PATHS.state, 'control-plane'),
        node: {
          kubeScheduler: binaries.kubeScheduler,
          network: {
            apiServerAddress: NODE_NETWORK.hostAddress,
            serviceCidr: NODE_NETWORK.serviceCidr,
            apiServiceIp: NODE_NETWORK.apiServiceIp,
            podCidr: NODE_NETWORK.podCidr,
          },
        },
        progress,
      });
      node = new LocalNode(binaries, plane, progress);
      await node.start();
      return new LocalNodeCluster(plane, node);
    } catch (err) {
      const logs = (await node?.tailLogs()) ?? '';
      await node?.stop().catch(() => undefined);
      await plane?.stop({ keep: true }).catch(() => undefined);
      await removeNodeLeftovers().catch(() => undefined);
      throw new Error(`the local node failed to start: ${(err as Error).message}${logs ? `\n${logs}` : ''}`);
    }
  }

  /** Stops everything and removes all it made: processes, pods, namespaces, routes, rules, files. */
  async stop(): Promise<void> {
    try {
      await this.node.stop();
      await this.plane.stop({ keep: true });
    } finally {
      await removeNodeLeftovers();
    }
  }
}
