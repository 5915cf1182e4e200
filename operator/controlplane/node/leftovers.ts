import { existsSync } from 'node:fs';
import { readdir, readFile, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { runCommand } from './host-commands.ts';
import { NODE_PATHS } from './node-configs.ts';
import { removeNodeNetwork } from './node-network.ts';

const CGROUP_ROOT = '/sys/fs/cgroup';
/** kubelet's pod cgroups (cgroupfs driver, default cgroupRoot) in every v1 hierarchy. */
const POD_CGROUP = 'kubepods';

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Processes whose command line names one of the node's folders: containerd, its shims, kubelet, kube-proxy... */
async function nodeProcesses(): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(NODE_PATHS.state) || cmdline.includes(NODE_PATHS.data)) pids.push(pid);
  }
  return pids;
}

/** Every cgroup folder under kubepods, deepest first, in every hierarchy. */
async function podCgroups(): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) if (entry.isDirectory()) await walk(join(dir, entry.name));
    found.push(dir);
  };
  for (const hierarchy of await readdir(CGROUP_ROOT).catch(() => [])) {
    const top = join(CGROUP_ROOT, hierarchy, POD_CGROUP);
    if (existsSync(top)) await walk(top);
  }
  return found;
}

async function pidsIn(cgroups: string[]): Promise<number[]> {
  const pids = new Set<number>();
  for (const cgroup of cgroups) {
    const text = await readFile(join(cgroup, 'cgroup.procs'), 'utf8').catch(() => '');
    for (const line of text.split('\n')) if (line.trim()) pids.add(Number(line));
  }
  return [...pids];
}

function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** Kills the pods' processes (and the node's, if any survive), then removes the pod cgroups. */
export async function killNodeProcesses(): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const cgroups = await podCgroups();
    const pids = [...(await nodeProcesses()), ...(await pidsIn(cgroups))];
    if (pids.length === 0) {
      for (const cgroup of cgroups) await rmdir(cgroup).catch(() => undefined);
      if ((await podCgroups()).length === 0) return;
    }
    killAll(pids);
    await sleep(100);
  }
  throw new Error(`processes or cgroups of the local node survived 5 s of SIGKILL: ${(await podCgroups()).join(', ')}`);
}

/** Mounts under the node's folders that reached the machine's mount namespace (none should). */
async function unmountNodeFolders(): Promise<void> {
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  const mountPoints = mountinfo
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((point): point is string => !!point)
    .filter((point) => point.startsWith(NODE_PATHS.state) || point.startsWith(NODE_PATHS.data))
    .sort((a, b) => b.length - a.length);
  for (const point of mountPoints) await runCommand('umount', ['-l', point], { allowFailure: true });
}

/**
 * Removes everything a local node leaves when it is killed: its processes and pods, pod cgroups, the
 * network namespace with its veth, routes and firewall rules, and its folders under /run and /var.
 * Also the last step of a normal stop, so both paths leave the same nothing behind.
 */
export async function removeNodeLeftovers(): Promise<void> {
  await killNodeProcesses();
  await unmountNodeFolders();
  await removeNodeNetwork();
  await rm(NODE_PATHS.state, { recursive: true, force: true });
  await rm(NODE_PATHS.data, { recursive: true, force: true });
}
