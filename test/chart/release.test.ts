import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ensureGoTool, GO_TOOL_BUILD_TIMEOUT_MS } from '../support/go-tools.ts';

// The release workflow runs only on GitHub; here actionlint (with shellcheck for its scripts) checks it.

const run = promisify(execFile);
const ROOT = new URL('../..', import.meta.url).pathname;
const WORKFLOW = join(ROOT, '.github/workflows/release.yml');

describe('the release workflow', () => {
  // The first run builds actionlint from its Go module: outside the tests' own timeouts.
  beforeAll(() => ensureGoTool('actionlint'), GO_TOOL_BUILD_TIMEOUT_MS);

  it('passes actionlint, its shell scripts checked by shellcheck', async () => {
    const actionlint = await ensureGoTool('actionlint');
    // actionlint skips the scripts silently without shellcheck: require it (.ci/run installs it).
    const { stdout: shellcheck } = await run('sh', ['-c', 'command -v shellcheck || true']);
    if (!shellcheck.trim()) throw new Error('shellcheck is not on PATH: apt-get install shellcheck');
    const result = await run(actionlint, ['-shellcheck', shellcheck.trim(), '-no-color', WORKFLOW]).then(
      ({ stdout }) => ({ code: 0, stdout }),
      (err: { code?: number; stdout?: string }) => ({ code: err.code, stdout: err.stdout ?? '' }),
    );
    expect(result).toEqual({ code: 0, stdout: '' });
  });

  it('actionlint would catch a broken workflow (the check can fail)', async () => {
    const actionlint = await ensureGoTool('actionlint');
    const broken = readFileSync(WORKFLOW, 'utf8').replace('runs-on: ubuntu-latest', 'runs-on: [ubuntu-latest');
    const child = execFile(actionlint, ['-no-color', '-']);
    child.stdin!.end(broken);
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(1);
  });

  it('publishes a multi-arch image, the chart as OCI, and the rendered manifest with the release', () => {
    const workflow = readFileSync(WORKFLOW, 'utf8');
    expect(workflow).toContain('platforms: linux/amd64,linux/arm64');
    expect(workflow).toMatch(/helm push "release\/mtls-operator-\$VERSION\.tgz" "oci:\/\//);
    expect(workflow).toMatch(/gh release create .*\n.*release\/mtls-operator\.yaml/);
  });
});
