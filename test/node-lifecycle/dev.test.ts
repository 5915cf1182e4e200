import { type ChildProcess, spawn } from 'node:child_process';
import { removeNodeLeftovers } from '../../local/controlplane/node/leftovers.ts';

/** The README's first command on a machine that can run a node: the table from real pods through Services. */
describe('mtls-operator dev on a real node', () => {
  let child: ChildProcess | undefined;

  afterAll(async () => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    await removeNodeLeftovers();
  });

  it('installs the chart on a local node and prints the mode table from requests through the Services', async () => {
    child = spawn(process.execPath, [new URL('../../operator/cli.ts', import.meta.url).pathname, 'dev', '--once'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const running = child;
    let stdout = '';
    let stderr = '';
    running.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    running.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise((resolve) => running.on('exit', resolve));
    expect({ code, stderr: code === 0 ? '' : stderr }).toEqual({ code: 0, stderr: '' });
    expect(stderr).toContain('helm install mtls-operator charts/mtls-operator');
    expect(stdout).toMatch(/Real requests through the Services of pod payments-mock-/);
    expect(stdout).toMatch(/standard :8443\s+accepted\s+accepted\s+accepted/);
    expect(stdout).toMatch(/flexible :9443\s+accepted\s+accepted \(mTLS\)\s+refused \(400\)/);
    expect(stdout).toMatch(/strict :10443\s+refused \(400\)\s+accepted \(mTLS\)\s+refused \(400\)/);
    expect(stdout).toMatch(
      /--resolve payments-strict\.demo\.svc:443:198\.19\.0\.\d+ https:\/\/payments-strict\.demo\.svc:443\/hello/,
    );
  }, 600_000);
});
