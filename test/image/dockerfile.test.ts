import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../local/controlplane/local-control-plane.ts';
import { waitFor } from '../support/cluster.ts';
import { performDockerfile } from '../support/dockerfile-steps.ts';
import { httpsGet, makePki, startMockUpstream, tlsDir } from '../support/tls-fixtures.ts';

const run = promisify(execFile);
const ROOT = new URL('../..', import.meta.url).pathname;

describe('container image: the Dockerfile steps in a clean folder', () => {
  it('installs production dependencies only, and the one entrypoint runs the CLI and a working sidecar', async () => {
    const image = performDockerfile(ROOT, join(ROOT, 'node_modules/.bin'));
    expect(image.log.length).toBeGreaterThanOrEqual(3);
    const app = join(image.root, 'app');
    expect(existsSync(join(app, 'dist/operator/cli.js'))).toBe(true);
    expect(existsSync(join(app, 'node_modules/@kubernetes/client-node'))).toBe(true);
    for (const dev of ['jest', 'typescript', 'eslint', 'node'])
      expect(existsSync(join(app, 'node_modules', dev))).toBe(false);

    const node = join(ROOT, 'node_modules/.bin/node');
    const [, cli] = image.entrypoint;
    const help = await run(node, [cli!, '--help']);
    expect(help.stdout).toMatch(/Usage: mtls-operator <command>/);
    expect((await run(node, [cli!, '--version'])).stdout).toMatch(/^mtls-operator \d+\.\d+\.\d+/);

    const pki = await makePki();
    const upstream = await startMockUpstream();
    const port = await freePort();
    const admin = await freePort();
    const sidecar = spawn(
      node,
      [
        cli!,
        'sidecar',
        '--listen',
        `strict=${port}`,
        '--upstream',
        `127.0.0.1:${upstream.port}`,
        '--tls-dir',
        await tlsDir(pki),
        '--admin',
        `127.0.0.1:${admin}`,
      ],
      { stdio: 'ignore' },
    );
    try {
      await waitFor(
        'the sidecar from the image to be ready',
        async () => (await fetch(`http://127.0.0.1:${admin}/readyz`).catch(() => undefined))?.ok,
      );
      expect((await httpsGet(port, { ca: pki.ca.certPem, client: pki.client })).status).toBe(200);
      expect((await httpsGet(port, { ca: pki.ca.certPem })).status).toBe(400);
    } finally {
      sidecar.kill('SIGTERM');
      upstream.server.close();
    }
  }, 300_000);
});
