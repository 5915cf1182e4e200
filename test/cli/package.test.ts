import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import type { StatusReport } from '../../operator/cli/status-view.ts';
import type { EndpointController } from '../../operator/controller/manager.ts';
import { unmetMinimum } from '../../operator/node-version.ts';
import { createTestNamespace, deleteTestNamespace, kubeconfigPath } from '../support/cluster.ts';
import { createEndpoint, installCrd, waitReady } from '../support/endpoints.ts';
import { startController } from '../support/operator.ts';

// Installable without a checkout: `npm pack` from a fresh clone ships dist/ (prepack builds it), the package
// installs with npm, each bin runs on the pinned Node and names the Node it needs on an older one, and kubectl
// finds kubectl-mtls on PATH and runs it as `kubectl mtls`.

const run = promisify(execFile);
const ROOT = new URL('../..', import.meta.url).pathname;
const SYSTEM_NODE = '/usr/bin/node';
const PINNED_NODE_DIR = dirname(process.execPath);
const ENGINES = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } }).engines
  .node;
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const KUBECTL = (JSON.parse(readFileSync(process.env.MTLS_TEST_CONTROL_PLANE_STATE!, 'utf8')) as { kubectl: string })
  .kubectl;

describe('the packed package', () => {
  let work: string;
  let tarball: string;
  let bin: string;
  /** PATH with the pinned Node first, then the installed bins, then the system's. */
  let path: string;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'mtls-pack-'));
    const clone = join(work, 'clone');
    // A fresh clone has no dist/ and no node_modules: the dependencies of the checkout stand in for `npm ci`.
    await run('git', ['clone', '--quiet', ROOT, clone]);
    expect(existsSync(join(clone, 'dist'))).toBe(false);
    symlinkSync(join(ROOT, 'node_modules'), join(clone, 'node_modules'));
    path = `${PINNED_NODE_DIR}:${process.env.PATH}`;
    const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', work], {
      cwd: clone,
      env: { ...process.env, PATH: path },
      maxBuffer: 64 * 1024 * 1024,
    });
    tarball = join(work, (JSON.parse(stdout) as { filename: string }[])[0]!.filename);
    const prefix = join(work, 'prefix');
    mkdirSync(prefix);
    await run(
      'npm',
      ['install', '--global', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', tarball],
      {
        env: { ...process.env, PATH: path },
      },
    );
    bin = join(prefix, 'bin');
    path = `${PINNED_NODE_DIR}:${bin}:${process.env.PATH}`;
  }, 600_000);
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('holds dist/ with both bins, built by prepack', async () => {
    const { stdout } = await run('tar', ['-tzf', tarball], { maxBuffer: 64 * 1024 * 1024 });
    const files = stdout.split('\n');
    expect(files).toEqual(
      expect.arrayContaining([
        'package/dist/operator/cli.js',
        'package/dist/operator/kubectl-mtls.js',
        'package/dist/operator/commands/status.js',
        'package/crds/mtls.operator.dev_mtlsendpoints.yaml',
      ]),
    );
    expect(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
  });

  it('runs each installed bin on the pinned Node', async () => {
    const env = { ...process.env, PATH: path };
    const plugin = await run(join(bin, 'kubectl-mtls'), ['--help'], { env });
    expect(plugin.stdout).toMatch(/^Usage: kubectl mtls <command> \[flags\]\n\nCommands:\n {2}status /);
    expect(plugin.stdout).not.toContain('controller');
    expect((await run(join(bin, 'kubectl-mtls'), ['renew', '--help'], { env })).stdout).toMatch(
      /^Usage: kubectl mtls renew ENDPOINT /,
    );
    expect((await run(join(bin, 'kubectl-mtls'), ['--version'], { env })).stdout).toBe(`kubectl-mtls ${VERSION}\n`);
    expect((await run(join(bin, 'mtls-operator'), ['--version'], { env })).stdout).toBe(`mtls-operator ${VERSION}\n`);
    // npx from the tarball alone, as the README says (a path starting with ./: npx runs an absolute path as a command).
    const npx = await run('npx', ['--yes', '--prefer-offline', `./${basename(tarball)}`, 'check', '--help'], {
      env,
      cwd: work,
    });
    expect(npx.stdout).toMatch(/^Usage: mtls-operator check /);
  });

  const systemNode = existsSync(SYSTEM_NODE) ? it : it.skip;
  systemNode('on the system Node prints one line naming the Node it needs, for every bin', async () => {
    const { stdout: version } = await run(SYSTEM_NODE, ['--version']);
    const minimum = unmetMinimum(version.trim(), ENGINES);
    expect(minimum).toBeDefined(); // the premise: this Node is too old
    const env = { ...process.env, PATH: `${dirname(SYSTEM_NODE)}:${bin}:${process.env.PATH}` };
    for (const program of ['kubectl-mtls', 'mtls-operator']) {
      const failure = await run(join(bin, program), ['status', 'x'], { env }).then(
        () => undefined,
        (err: { code: number; stdout: string; stderr: string }) => err,
      );
      expect(failure).toMatchObject({ code: 1, stdout: '' });
      expect(failure!.stderr).toBe(
        `${program}: needs Node.js ${minimum} or newer; this is Node.js ${version.trim().replace(/^v/, '')} (${SYSTEM_NODE})\n`,
      );
    }
  });

  describe('as a kubectl plugin', () => {
    let namespace: string;
    let controller: EndpointController;
    beforeAll(async () => {
      await installCrd();
      namespace = await createTestNamespace('cli-plugin');
      controller = await startController(namespace);
      await createEndpoint(namespace, 'orders', { upstreamPort: 8080, clients: [{ name: 'shop' }] });
      await waitReady(namespace, 'orders');
    });
    afterAll(async () => {
      await controller?.stop();
      await deleteTestNamespace(namespace);
    });

    it('is discovered by kubectl plugin list and runs as kubectl mtls', async () => {
      const env = { ...process.env, PATH: path, KUBECONFIG: kubeconfigPath() };
      const list = await run(KUBECTL, ['plugin', 'list', '--name-only'], { env });
      expect(list.stdout.split('\n')).toContain('kubectl-mtls');
      const { stdout } = await run(KUBECTL, ['mtls', 'status', 'orders', '-n', namespace, '-o', 'json'], { env });
      const report = JSON.parse(stdout) as StatusReport;
      expect(report).toMatchObject({ namespace, name: 'orders', ready: 'True' });
      expect(report.certificates.map((c) => c.certificate)).toEqual(['ca', 'server', 'client']);
    });
  });
});
