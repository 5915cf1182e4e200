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

/**
 * The preStop wait the injector gives each app container that has no preStop hook of its own. When a pod is
 * deleted, kubelet signals its containers at once while the endpoints controller and kube-proxy take a moment
 * to stop sending it new connections; the wait keeps the app (and so the sidecar, a native sidecar that stops
 * only after the app) serving through that moment. At most half the pod's termination grace period.
 */
export const APP_PRESTOP_SLEEP_SECONDS = 5;

/** The operator's V8 heap cap by default (chart value controller.heapMiB): ample for ~2,000 endpoints. */
export const OPERATOR_HEAP_MIB = 128;

/**
 * How the operator process runs (the chart sets these; bench:controller runs it the same way). Without a cap
 * V8 sizes its heap from the machine, not the container, and lets garbage pile up: 437 MiB RSS at 1,000
 * endpoints against ~205 MiB with it. A 1 MiB young generation and one malloc arena trim another ~35 MiB (no slower at 1,000 endpoints).
 */
export function operatorEnv(heapMiB = OPERATOR_HEAP_MIB): Record<string, string> {
  return { NODE_OPTIONS: `--max-old-space-size=${heapMiB} --max-semi-space-size=1`, MALLOC_ARENA_MAX: '1' };
}
