import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { requiredNodeRange, unmetMinimum } from '../../operator/node-version.ts';

const run = promisify(execFile);
const ROOT = new URL('../..', import.meta.url).pathname;
/** The machine's own Node, older than the pinned one (the pinned one is node_modules/.bin/node). */
const SYSTEM_NODE = '/usr/bin/node';
const ENGINES = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } }).engines
  .node;

describe('the entry on an older Node', () => {
  it('compares versions as numbers against the engines range', () => {
    expect(requiredNodeRange()).toBe(ENGINES);
    expect(unmetMinimum('20.20.2', '>=24.9')).toBe('24.9.0');
    expect(unmetMinimum('24.8.9', '>=24.9')).toBe('24.9.0');
    expect(unmetMinimum('24.9.0', '>=24.9')).toBeUndefined();
    expect(unmetMinimum('24.10.0', '>=24.9')).toBeUndefined(); // not a string comparison
    expect(unmetMinimum('25.0.0', '>=24.9')).toBeUndefined();
    expect(unmetMinimum('20.0.0', '^24 || ^26')).toBeUndefined(); // a range it does not read: no false refusal
  });

  const systemNode = existsSync(SYSTEM_NODE) ? it : it.skip;
  let build: string;
  beforeAll(async () => {
    // The executable as installed (package.json bin, the image): the build, beside package.json and node_modules.
    build = mkdtempSync(join(tmpdir(), 'mtls-entry-'));
    await run(join(ROOT, 'node_modules/.bin/tsc'), [
      '-p',
      join(ROOT, 'tsconfig.build.json'),
      '--outDir',
      join(build, 'dist'),
    ]);
    copyFileSync(join(ROOT, 'package.json'), join(build, 'package.json'));
    symlinkSync(join(ROOT, 'node_modules'), join(build, 'node_modules'));
  }, 120_000);
  afterAll(() => rmSync(build, { recursive: true, force: true }));

  systemNode('prints one line naming the required version and exits 1, for the operator and the sidecar', async () => {
    const { stdout: version } = await run(SYSTEM_NODE, ['--version']);
    expect(unmetMinimum(version.trim(), ENGINES)).toBeDefined(); // the premise: this Node is too old
    for (const args of [['controller', '--help'], ['sidecar', '--help'], ['--version']]) {
      const failure = await run(SYSTEM_NODE, [join(build, 'dist/operator/cli.js'), ...args]).then(
        () => undefined,
        (err: { code: number; stdout: string; stderr: string }) => err,
      );
      expect(failure).toMatchObject({ code: 1, stdout: '' });
      expect(failure!.stderr).toBe(
        `mtls-operator: needs Node.js ${unmetMinimum(version.trim(), ENGINES)} or newer; this is Node.js ${version.trim().replace(/^v/, '')} (${SYSTEM_NODE})\n`,
      );
    }
  });

  it('runs the CLI on the pinned Node', async () => {
    const node = join(ROOT, 'node_modules/.bin/node');
    expect((await run(node, [join(build, 'dist/operator/cli.js'), '--version'])).stdout).toMatch(
      /^mtls-operator \d+\.\d+\.\d+\n$/,
    );
    expect((await run(node, [join(build, 'dist/operator/cli.js'), 'sidecar', '--help'])).stdout).toMatch(
      /--admin HOST:PORT/,
    );
  });
});
