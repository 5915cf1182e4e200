import { readdir, readFile, rm, rmdir } from 'node:fs/promises';
import { basename } from 'node:path';
import { runCommand } from './host-commands.ts';
import { restoreKernelSettings } from './kernel-settings.ts';
import { NODE_PATHS, nodeFiles } from './node-configs.ts';
import { nodeCgroups, pidsInCgroups, removeCgroups } from './node-cgroups.ts';
import { removeNodeNetwork } from './node-network.ts';

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The programs the node runs; one of them is the node's when its arguments name the node's folders. */
const NODE_PROGRAMS = new Set([
  'containerd',
  'containerd-shim-runc-v2',
  'kubelet',
  'kube-proxy',
  'kube-router',
  'kube-scheduler',
  'kube-controller-manager',
  'kube-apiserver',
  'etcd',
]);

/** The node's daemons and containerd's shims (those outlive a kill -9 of the node's process group). */
async function nodeProcesses(): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (!NODE_PROGRAMS.has(basename(argv[0] ?? ''))) continue;
    if (argv.some((arg) => arg.includes(`${NODE_PATHS.state}/`) || arg.includes(`${NODE_PATHS.data}/`))) pids.push(pid);
  }
  return pids;
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
    const cgroups = await nodeCgroups();
    const pids = [...(await nodeProcesses()), ...(await pidsInCgroups(cgroups))];
    if (pids.length === 0) {
      await removeCgroups(cgroups);
      if ((await nodeCgroups()).length === 0) return;
    }
    killAll(pids);
    await sleep(100);
  }
  throw new Error(
    `processes or cgroups of the local node survived 5 s of SIGKILL: ${(await nodeCgroups()).join(', ')}`,
  );
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
  // -n: util-linux's umount would otherwise make /run/mount for its utab, and leave it.
  for (const point of mountPoints) await runCommand('umount', ['-n', '-l', point], { allowFailure: true });
}

/** Mount points made for the node's private mounts (they did not exist before it): empty, so rmdir does. */
async function removeCreatedMountPoints(): Promise<void> {
  const list = await readFile(nodeFiles().createdMountPoints, 'utf8').catch(() => '');
  for (const dir of list.split('\n').filter(Boolean).reverse()) await rmdir(dir).catch(() => undefined);
}

/**
 * Removes everything a local node leaves when it is killed: its processes and pods, its cgroups, the
 * network namespace with its veth, routes and firewall rules, the mount points it made, the kernel settings
 * kubelet changed, and its folders under /run and /var. Also the last step of a normal stop, so both paths
 * leave the same nothing behind. Every step runs even when one fails; the failures are reported together.
 */
export async function removeNodeLeftovers(): Promise<void> {
  const failures: string[] = [];
  const steps: [string, () => Promise<void>][] = [
    ["kill the node's processes", killNodeProcesses],
    ["unmount the node's folders", unmountNodeFolders],
    ["remove the node's network", removeNodeNetwork],
    ['restore the kernel settings kubelet changed', () => restoreKernelSettings(nodeFiles().savedSysctls)],
    ['remove the mount points made for the node', removeCreatedMountPoints],
    [`remove ${NODE_PATHS.state}`, () => rm(NODE_PATHS.state, { recursive: true, force: true })],
    [`remove ${NODE_PATHS.data}`, () => rm(NODE_PATHS.data, { recursive: true, force: true })],
  ];
  for (const [what, step] of steps) {
    try {
      await step();
    } catch (err) {
      failures.push(`${what}: ${(err as Error).message}`);
    }
  }
  if (failures.length > 0)
    throw new Error(`the local node's cleanup left something behind:\n  ${failures.join('\n  ')}`);
}
