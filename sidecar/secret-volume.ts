import { mkdir, readdir, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Writes Secret data into `dir` the way kubelet's atomic writer does: the files live in a timestamped
 * folder, `..data` is a symlink to it, and each key is a symlink `key -> ..data/key`. An update writes a new
 * folder and swaps `..data` with one rename, so a reader never sees half of an update.
 */
export async function writeSecretVolume(
  dir: string,
  data: Record<string, string | Buffer>,
  mode = 0o440,
): Promise<void> {
  await mkdir(dir, { recursive: true });
  const stamp = `..${new Date().toISOString().replace(/[-:.]/g, '_')}.${process.pid}.${Math.random().toString(36).slice(2, 8)}`;
  const payload = join(dir, stamp);
  await mkdir(payload, { mode: 0o750 });
  for (const [key, value] of Object.entries(data)) await writeFile(join(payload, key), value, { mode });
  const previous = await readlink(join(dir, '..data')).catch(() => undefined);
  const tmpLink = join(dir, '..data_tmp');
  await rm(tmpLink, { force: true });
  await symlink(stamp, tmpLink);
  await rename(tmpLink, join(dir, '..data'));
  for (const key of Object.keys(data)) {
    const link = join(dir, key);
    await symlink(join('..data', key), `${link}.tmp`).catch(() => undefined);
    await rename(`${link}.tmp`, link);
  }
  // Keys that left the Secret lose their link; the old payload folder goes.
  for (const entry of await readdir(dir)) {
    if (!entry.startsWith('..') && !(entry in data)) await rm(join(dir, entry), { force: true });
  }
  if (previous && previous !== stamp) await rm(join(dir, previous), { recursive: true, force: true });
}
