import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { cacheDir } from '../../local/controlplane/binaries.ts';

const run = promisify(execFile);

/**
 * A Go command-line tool the tests use as a real third-party client, built once with `go install` into
 * <cache>/<name>-<version>/ (as the control-plane build does for helm and kube-router), so CI gets it too.
 */
export async function ensureGoTool(name: string, module: string, version: string): Promise<string> {
  const dir = join(cacheDir(), `${name}-${version}`);
  const binary = join(dir, name);
  try {
    accessSync(binary, constants.X_OK);
    return binary;
  } catch {
    // not built yet
  }
  await run('go', ['install', '-trimpath', '-ldflags', '-s -w', `${module}@${version}`], {
    env: { ...process.env, GOBIN: dir, CGO_ENABLED: '0' },
    timeout: 600_000,
  });
  return binary;
}

/** grpc-health-probe: the gRPC project's health-check client (a Go gRPC client, not grpc-js). */
export const GRPC_HEALTH_PROBE = {
  name: 'grpc-health-probe',
  module: 'github.com/grpc-ecosystem/grpc-health-probe',
  version: 'v0.4.62',
} as const;
