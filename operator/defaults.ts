import { readFileSync } from 'node:fs';

/** The package version, read from package.json (one level up from source, two from dist/). */
export function packageVersion(): string {
  for (const path of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(path, import.meta.url), 'utf8')) as {
        name?: string;
        version: string;
      };
      if (pkg.name === 'mtls-operator') return pkg.version;
    } catch {
      // try the next location
    }
  }
  return 'unknown';
}

/** One image runs the operator and the sidecar; the chart overrides it. */
export const DEFAULT_SIDECAR_IMAGE = `ghcr.io/mtls-operator/mtls-operator:${packageVersion()}`;
