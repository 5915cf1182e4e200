import { readFileSync } from 'node:fs';

/* Node built-ins only: operator/cli.ts runs this before anything else is loaded, on any Node. */

/** package.json's engines.node: from source one folder up, from dist/ two. */
export function requiredNodeRange(): string | undefined {
  for (const path of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(path, import.meta.url), 'utf8')) as {
        name?: string;
        engines?: { node?: string };
      };
      if (pkg.name === 'mtls-operator') return pkg.engines?.node;
    } catch {
      // try the next location
    }
  }
  return undefined;
}

/** The minimum of a `>=X.Y.Z` range, when `version` is below it; undefined when it is met (or not of that form). */
export function unmetMinimum(version: string, range: string | undefined): string | undefined {
  const minimum = range?.match(/^>=\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?$/);
  if (!minimum) return undefined;
  const want = [minimum[1], minimum[2], minimum[3]].map((n) => Number(n ?? 0));
  const have = version.replace(/^v/, '').split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    if ((have[i] ?? 0) !== want[i]) return (have[i] ?? 0) < want[i]! ? want.join('.') : undefined;
  }
  return undefined;
}

/**
 * For an executable's entry (operator/cli.ts, operator/kubectl-mtls.ts): on a Node older than package.json's
 * engines.node, one line naming the Node it needs on stderr and exit code 1, and true; false on a Node that
 * will do.
 */
export function refuseOldNode(program: string): boolean {
  const minimum = unmetMinimum(process.versions.node, requiredNodeRange());
  if (!minimum) return false;
  process.stderr.write(
    `${program}: needs Node.js ${minimum} or newer; this is Node.js ${process.versions.node} (${process.execPath})\n`,
  );
  process.exitCode = 1;
  return true;
}
