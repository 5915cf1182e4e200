import { execFile } from 'node:child_process';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (no shell). Rejects on a non-zero exit unless `allowFailure`. */
export function runCommand(
  file: string,
  args: string[],
  options: { allowFailure?: boolean; input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { timeout: options.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024, env: options.env ?? process.env },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        const result = { code, stdout: String(stdout), stderr: String(stderr) };
        if (code !== 0 && !options.allowFailure) {
          reject(
            new Error(`${file} ${args.join(' ')} failed (exit ${code}): ${result.stderr.trim() || error?.message}`),
          );
        } else resolve(result);
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/** Runs a command inside a named network namespace, entered with nsenter (not `ip netns exec`, which remounts /sys). */
export function inNetns(netnsPath: string, file: string, args: string[], options: { allowFailure?: boolean } = {}) {
  return runCommand('nsenter', [`--net=${netnsPath}`, '--', file, ...args], options);
}
