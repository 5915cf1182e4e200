import { execFile } from 'node:child_process';
import { accessSync, constants, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { cacheDir } from '../../local/controlplane/binaries.ts';

const run = promisify(execFile);

/**
 * Go tools the tests run, built from their Go modules into the project's cache once per version (as the control
 * plane's binaries are), so a developer's machine and CI get the same ones with nothing but `go`: the linters the
 * chart's tests run, and grpc-health-probe, the gRPC project's health-check client (a Go gRPC client, not
 * grpc-js), as a real third-party client of the sidecar.
 */
export const GO_TOOLS = {
  actionlint: { module: 'github.com/rhysd/actionlint/cmd/actionlint', version: 'v1.7.12' },
  'kube-score': { module: 'github.com/zegl/kube-score/cmd/kube-score', version: 'v1.20.0' },
  'grpc-health-probe': { module: 'github.com/grpc-ecosystem/grpc-health-probe', version: 'v0.4.62' },
} as const;

export type GoTool = keyof typeof GO_TOOLS;

/** Where a tool's binary lives in the cache: one folder per name and version. */
export function goToolPath(tool: GoTool): string {
  return join(cacheDir(), `${tool}-${GO_TOOLS[tool].version}`, tool);
}

/**
 * How long a test may wait for its tool's first build: a few minutes on 2 cores with a cold Go module cache, more
 * while other suites share the cores (CI builds them before the tests: `node test/support/go-tools.ts`).
 */
export const GO_TOOL_BUILD_TIMEOUT_MS = 15 * 60_000;

/** The tool's binary, built with `go install` the first time. */
export async function ensureGoTool(tool: GoTool): Promise<string> {
  const path = goToolPath(tool);
  try {
    accessSync(path, constants.X_OK);
    return path;
  } catch {
    // not built yet
  }
  const { module, version } = GO_TOOLS[tool];
  const dir = join(cacheDir(), `${tool}-${version}`);
  mkdirSync(dir, { recursive: true });
  process.stderr.write(`[go-tools] building ${tool} ${version} into ${dir}\n`);
  try {
    await run('go', ['install', '-trimpath', '-ldflags', '-s -w', `${module}@${version}`], {
      env: { ...process.env, GOBIN: dir, CGO_ENABLED: '0' },
      maxBuffer: 16 << 20,
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`go install ${module}@${version} failed (is Go 1.24+ on PATH?): ${e.stderr ?? e.message}`);
  }
  return path;
}

// `node test/support/go-tools.ts` builds every tool, so that CI pays for the builds outside any test's timeout.
if (import.meta.url === `file://${process.argv[1]}`) {
  for (const tool of Object.keys(GO_TOOLS) as GoTool[]) process.stdout.write(`${await ensureGoTool(tool)}\n`);
}
