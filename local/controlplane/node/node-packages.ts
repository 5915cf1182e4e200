import { existsSync } from 'node:fs';
import { runCommand } from './host-commands.ts';

/** What the node runs from Debian, and the package that brings each. */
const NODE_TOOLS: [path: string, debianPackage: string][] = [
  ['/usr/bin/containerd', 'containerd'],
  ['/usr/bin/ctr', 'containerd'],
  ['/usr/sbin/runc', 'runc'],
  ['/usr/lib/cni/bridge', 'containernetworking-plugins'],
  ['/usr/sbin/iptables', 'iptables'],
  ['/usr/sbin/ipset', 'ipset'],
  ['/usr/sbin/conntrack', 'conntrack'],
  ['/usr/bin/nsenter', 'util-linux'],
  ['/usr/bin/unshare', 'util-linux'],
  ['/usr/bin/setpriv', 'util-linux'],
  ['/usr/bin/buildah', 'buildah'],
  ['/usr/bin/gcc', 'gcc'],
  ['/usr/include/stdio.h', 'libc6-dev'],
];

export function missingNodePackages(): string[] {
  return [...new Set(NODE_TOOLS.filter(([path]) => !existsSync(path)).map(([, pkg]) => pkg))];
}

/** Installs the missing Debian packages (root only); returns what it installed. */
export async function ensureNodePackages(progress: (line: string) => void): Promise<string[]> {
  const missing = missingNodePackages();
  if (missing.length === 0) return [];
  if (process.getuid?.() !== 0) {
    throw new Error(`the local node needs these Debian packages: ${missing.join(' ')} (apt-get install them as root)`);
  }
  progress(`installing Debian packages: ${missing.join(' ')}`);
  await runCommand('apt-get', ['update', '-qq'], { timeoutMs: 600_000 });
  await runCommand('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
    timeoutMs: 900_000,
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  return missing;
}
