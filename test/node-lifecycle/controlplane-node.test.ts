import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { PAUSE_IMAGE } from '../../local/controlplane/images/local-images.ts';
import { runCommand } from '../../local/controlplane/node/host-commands.ts';
import { removeNodeLeftovers } from '../../local/controlplane/node/leftovers.ts';
import { runningNodeOwner } from '../../local/controlplane/node/local-node-cluster.ts';
import { NODE_CGROUP, NODE_PATHS, PRIVATE_MOUNT_POINTS } from '../../local/controlplane/node/node-configs.ts';
import { NODE_NETWORK } from '../../local/controlplane/node/node-network.ts';
import { waitFor } from '../support/cluster.ts';

/**
 * `mtls-operator controlplane --node` as a person runs it: started, a pod run on it, the whole process group
 * killed with SIGKILL (containers and their shims survive that), started again over the leftovers, stopped
 * with SIGTERM, and then nothing of it is left on the machine.
 */
const CLI = new URL('../../operator/cli.ts', import.meta.url).pathname;

interface Started {
  child: ChildProcess;
  kubeconfig: string;
  kubectl: string;
}

async function startNode(): Promise<Started> {
  const child = spawn(process.execPath, [CLI, 'controlplane', '--node'], {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const kubeconfig = await waitFor(
    'the node to come up',
    async () => {
      if (child.exitCode !== null) throw new Error(`controlplane --node exited with ${child.exitCode}: ${stderr}`);
      return /export KUBECONFIG=(\S+)/.exec(stdout)?.[1];
    },
    { timeoutMs: 180_000, intervalMs: 250 },
  ).catch((err: Error) => {
    throw new Error(`${err.message}\n${stderr}`);
  });
  const kubectl = /\n\s+(\S+kubectl) get nodes/.exec(stdout)![1]!;
  return { child, kubeconfig, kubectl };
}

/** Everything of the node that could outlive it on this machine; empty when nothing is left. */
async function leftovers(): Promise<string[]> {
  const found: string[] = [];
  for (const path of [NODE_PATHS.state, NODE_PATHS.data, `/run/netns/${NODE_NETWORK.netns}`])
    if (existsSync(path)) found.push(path);
  const links = (await runCommand('ip', ['-o', 'link', 'show'])).stdout;
  if (links.includes(NODE_NETWORK.hostVeth)) found.push(`link ${NODE_NETWORK.hostVeth}`);
  const routes = (await runCommand('ip', ['route', 'show'])).stdout;
  for (const line of routes.split('\n')) if (/^198\.1[89]\./.test(line)) found.push(`route ${line}`);
  const mounts = await readFile('/proc/self/mountinfo', 'utf8');
  for (const line of mounts.split('\n'))
    if (line.includes(NODE_PATHS.state) || line.includes(NODE_PATHS.data)) found.push(`mount ${line.split(' ')[4]}`);
  for (const hierarchy of await readdir('/sys/fs/cgroup'))
    if (existsSync(`/sys/fs/cgroup/${hierarchy}/${NODE_CGROUP}`)) found.push(`cgroup ${hierarchy}/${NODE_CGROUP}`);
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).replaceAll('\0', ' ');
    if (cmdline.includes(NODE_PATHS.state) || cmdline.includes(NODE_PATHS.data) || /^\/pause\b/.test(cmdline))
      found.push(`process ${entry} ${cmdline.slice(0, 80)}`);
  }
  return found;
}

/**
 * What the machine looks like where a node could leave a trace outside its own folders: top-level entries of
 * the folders it or its daemons write to, its private mount points, and the kernel settings kubelet changes.
 */
async function machineSnapshot(): Promise<Record<string, string>> {
  const snapshot: Record<string, string> = {};
  for (const dir of ['/run', '/var/lib', '/var/log', '/etc'])
    snapshot[dir] = (await readdir(dir).catch(() => []))
      .filter((name) => !name.startsWith('jest'))
      .sort()
      .join(' ');
  for (const dir of PRIVATE_MOUNT_POINTS)
    snapshot[dir] = existsSync(dir) ? (await readdir(dir)).sort().join(' ') : '(absent)';
  for (const name of ['vm/overcommit_memory', 'vm/panic_on_oom', 'kernel/panic', 'kernel/panic_on_oops'])
    snapshot[name] = (await readFile(`/proc/sys/${name}`, 'utf8')).trim();
  snapshot.iptables = (await runCommand('iptables-save', [])).stdout.replace(/^#.*$/gm, '');
  return snapshot;
}

describe('controlplane --node leaves nothing behind', () => {
  let before: Record<string, string> = {};
  const started: Started[] = [];

  beforeAll(async () => {
    const owner = await runningNodeOwner();
    if (owner) throw new Error(`a local node is running (pid ${owner}): stop it before running the node tests`);
    // Whatever an earlier run left (a machine handed over mid-run, say) is not this test's subject.
    await removeNodeLeftovers();
    before = await machineSnapshot();
  });

  afterAll(async () => {
    for (const { child } of started)
      if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid!, 'SIGKILL');
    await removeNodeLeftovers();
  });

  it('starts again after a kill -9 of its whole process group, and a SIGTERM then removes everything', async () => {
    const first = await startNode();
    started.push(first);
    await runCommand(first.kubectl, [
      '--kubeconfig',
      first.kubeconfig,
      'run',
      'survivor',
      `--image=${PAUSE_IMAGE}`,
      '--image-pull-policy=Never',
    ]);
    await waitFor(
      'the pod to run',
      async () =>
        (
          await runCommand(first.kubectl, [
            '--kubeconfig',
            first.kubeconfig,
            'get',
            'pod',
            'survivor',
            '-o',
            'jsonpath={.status.phase}',
          ])
        ).stdout === 'Running',
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    process.kill(-first.child.pid!, 'SIGKILL');
    await new Promise((resolve) => first.child.once('exit', resolve));
    const afterKill = await leftovers();
    // What a kill -9 cannot take down: the pod's process (its shim is detached), namespaces, routes, files.
    expect(afterKill.some((item) => item.startsWith('process') && item.includes('/pause'))).toBe(true);
    expect(afterKill).toContain(NODE_PATHS.state);

    const second = await startNode();
    started.push(second);
    const nodes = (await runCommand(second.kubectl, ['--kubeconfig', second.kubeconfig, 'get', 'nodes', '-o', 'name']))
      .stdout;
    expect(nodes.trim()).toBe('node/mtls-operator-node');
    process.kill(-second.child.pid!, 'SIGTERM');
    const code = await new Promise((resolve) => second.child.once('exit', resolve));
    expect(code).toBe(0);
    expect(await leftovers()).toEqual([]);
    expect(await machineSnapshot()).toEqual(before);
    process.stdout.write(
      `real-node: controlplane --node after kill -9: ${afterKill.length} leftovers, all removed by the next start; after SIGTERM: 0\n`,
    );
  }, 600_000);
});
