import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';

/**
 * Kernel settings kubelet sets for the whole machine at start (`protectKernelDefaults: false`; `true` would
 * refuse to start unless they already had its values). They are not per network namespace, so the node
 * saves them first and puts them back when it goes.
 */
const KUBELET_SYSCTLS = [
  'vm/overcommit_memory',
  'vm/panic_on_oom',
  'kernel/panic',
  'kernel/panic_on_oops',
  'kernel/keys/root_maxkeys',
  'kernel/keys/root_maxbytes',
].filter((name) => existsSync(`/proc/sys/${name}`));

/** Saves the current values, unless an earlier (killed) node already saved the originals. */
export async function saveKernelSettings(file: string): Promise<void> {
  if (existsSync(file)) return;
  const values: Record<string, string> = {};
  for (const name of KUBELET_SYSCTLS) values[name] = (await readFile(`/proc/sys/${name}`, 'utf8')).trim();
  await writeFile(file, JSON.stringify(values));
}

export async function restoreKernelSettings(file: string): Promise<void> {
  if (!existsSync(file)) return;
  const values = JSON.parse(await readFile(file, 'utf8')) as Record<string, string>;
  for (const [name, value] of Object.entries(values)) await writeFile(`/proc/sys/${name}`, value);
}
