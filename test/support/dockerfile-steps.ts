import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Performs a Dockerfile's steps without a Docker engine: each stage is a clean folder, COPY copies from the
 * build context (or an earlier stage), RUN runs in the stage's WORKDIR with the ENV set, and the last stage's
 * ENTRYPOINT is returned with its paths mapped into that folder. FROM's base image is this machine, with
 * the project's pinned Node first on PATH. Not a Docker emulator: enough to prove the steps work.
 */
export function performDockerfile(
  context: string,
  nodeBin: string,
): { root: string; entrypoint: string[]; log: string[] } {
  const lines = readFileSync(join(context, 'Dockerfile'), 'utf8')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const stages = new Map<string, string>();
  const log: string[] = [];
  let root = '';
  let workdir = '/';
  let env: Record<string, string> = {};
  let entrypoint: string[] = [];
  const inStage = (path: string) => join(root, path.startsWith('/') ? path : join(workdir, path));
  for (const line of lines) {
    const [instruction, ...rest] = line.split(/\s+/);
    const args = rest.join(' ');
    switch (instruction) {
      case 'ARG':
        break;
      case 'FROM': {
        root = mkdtempSync(join(tmpdir(), 'mtls-image-'));
        workdir = '/';
        env = {};
        const alias = args.match(/\bAS\s+(\S+)/i)?.[1];
        if (alias) stages.set(alias, root);
        break;
      }
      case 'WORKDIR':
        workdir = args;
        mkdirSync(inStage('.'), { recursive: true });
        break;
      case 'ENV': {
        const [k, v] = args.split('=');
        env[k!] = v ?? '';
        break;
      }
      case 'COPY': {
        const parts = rest;
        const from = parts[0]?.startsWith('--from=') ? stages.get(parts.shift()!.slice(7)) : undefined;
        const dest = parts.pop()!;
        for (const src of parts) {
          const source = from ? join(from, src) : join(context, src);
          const target = dest.endsWith('/') ? join(inStage(dest), src.split('/').pop()!) : inStage(dest);
          cpSync(source, target, { recursive: true });
        }
        break;
      }
      case 'RUN':
        log.push(`RUN ${args}`);
        execFileSync('bash', ['-c', args], {
          cwd: inStage('.'),
          env: { ...process.env, ...env, PATH: `${nodeBin}:${process.env.PATH}` },
          stdio: 'pipe',
          maxBuffer: 64 << 20,
        });
        break;
      case 'ENTRYPOINT':
        entrypoint = (JSON.parse(args) as string[]).map((a) => (a.startsWith('/app/') ? join(root, a) : a));
        break;
      default:
        break;
    }
  }
  return { root, entrypoint, log };
}
