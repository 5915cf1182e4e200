import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureNodeBinaries } from '../binaries.ts';
import { LocalControlPlane } from '../local-control-plane.ts';
import { removeNodeLeftovers } from './leftovers.ts';
import { LocalNode } from './local-node.ts';
import { NODE_PATHS } from './node-configs.ts';
import { createNodeNetwork, NODE_NETWORK } from './node-network.ts';
import { ensureNodePackages } from './node-packages.ts';

const OWNER_FILE = join(NODE_PATHS.state, 'owner.pid');

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
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
    const owner = Number(await readFile(OWNER_FILE, 'utf8').catch(() => '0'));
    if (owner && owner !== process.pid && isAlive(owner)) {
      throw new Error(`a local node is already running (pid ${owner}); stop it first (Ctrl-C, or kill ${owner})`);
    }
    await ensureNodePackages(progress);
    const binaries = await ensureNodeBinaries();
    progress('removing what an earlier node left behind, if anything');
    await removeNodeLeftovers();
    await mkdir(NODE_PATHS.state, { recursive: true, mode: 0o700 });
    await writeFile(OWNER_FILE, `${process.pid}\n`);

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
    await this.node.stop();
    await this.plane.stop({ keep: true });
    await removeNodeLeftovers();
  }
}
