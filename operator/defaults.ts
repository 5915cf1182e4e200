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

/**
 * The injected sidecar's resources unless the chart says otherwise (charts/mtls-operator/values.yaml holds
 * the same values; a test keeps them equal). Measured (bench/RESULTS.md, test/reliability): ~65 MiB idle,
 * ~80 MiB under keep-alive load, up to ~160 MiB during a handshake flood.
 */
export const DEFAULT_SIDECAR_RESOURCES = {
  requests: { cpu: '50m', memory: '96Mi' },
  limits: { memory: '256Mi' },
};
