import { existsSync, lstatSync } from 'node:fs';
import { mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NODE_CGROUP } from './node-configs.ts';

const CGROUP_ROOT = '/sys/fs/cgroup';

/** The v1 hierarchies (real folders; `cpu,cpuacct`-style links point at one of them). */
async function hierarchies(): Promise<string[]> {
  const names = await readdir(CGROUP_ROOT).catch(() => [] as string[]);
  return names.map((name) => join(CGROUP_ROOT, name)).filter((dir) => !lstatSync(dir).isSymbolicLink());
}

/** kubelet checks that its cgroupRoot exists in every hierarchy; a new cpuset needs its CPUs and memory nodes. */
export async function createNodeCgroups(): Promise<void> {
  for (const hierarchy of await hierarchies()) {
    const dir = join(hierarchy, NODE_CGROUP);
    if (!existsSync(dir)) await mkdir(dir);
    for (const file of ['cpuset.cpus', 'cpuset.mems']) {
      if (existsSync(join(hierarchy, file)))
        await writeFile(join(dir, file), await readFile(join(hierarchy, file), 'utf8'));
    }
  }
}

/** Every cgroup folder of the node, deepest first. */
export async function nodeCgroups(): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) if (entry.isDirectory()) await walk(join(dir, entry.name));
    found.push(dir);
  };
  for (const hierarchy of await hierarchies()) {
    const top = join(hierarchy, NODE_CGROUP);
    if (existsSync(top)) await walk(top);
  }
  return found;
}

export async function pidsInCgroups(cgroups: string[]): Promise<number[]> {
  const pids = new Set<number>();
  for (const cgroup of cgroups) {
    const text = await readFile(join(cgroup, 'cgroup.procs'), 'utf8').catch(() => '');
    for (const line of text.split('\n')) if (line.trim()) pids.add(Number(line));
  }
  return [...pids];
}

export async function removeCgroups(cgroups: string[]): Promise<void> {
  for (const cgroup of cgroups) await rmdir(cgroup).catch(() => undefined);
}
