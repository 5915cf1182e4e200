import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ensureBinaries } from '../../local/controlplane/binaries.ts';
import { ensureGoTool, GO_TOOL_BUILD_TIMEOUT_MS } from '../support/go-tools.ts';

// An outside linter's view of the rendered chart. What kube-score flags is fixed in the chart, except these,
// each deliberate:
const IGNORED: Record<string, string> = {
  'container-image-pull-policy':
    'IfNotPresent with versioned, immutable tags (or image.digest): Always would make every operator restart ' +
    'depend on the registry; image.pullPolicy=Always is there for those who want it',
  'container-security-context-user-group-id':
    "no fixed UID or GID: runAsNonRoot with the image's numeric USER 65532, or the user the platform assigns " +
    "(OpenShift's restricted policy refuses a fixed one); containerSecurityContext.runAsUser pins one",
};
/** A CPU limit throttles the process that answers admission reviews within webhook.timeoutSeconds. */
const NO_CPU_LIMIT = '--ignore-container-cpu-limit';

const run = promisify(execFile);
const CHART = new URL('../../charts/mtls-operator', import.meta.url).pathname;

async function render(values: string[]): Promise<string> {
  const { helm } = await ensureBinaries();
  const { stdout } = await run(helm, ['template', 'mtls-operator', CHART, '-n', 'mtls-system', ...values], {
    maxBuffer: 16 << 20,
  });
  return stdout;
}

/** kube-score's findings that are not OK, one line each ("[CRITICAL] object: message"). */
async function score(manifest: string, ignored: string[]): Promise<string[]> {
  const kubeScore = await ensureGoTool('kube-score');
  const args = ['score', '-o', 'ci', '--kubernetes-version', 'v1.35', NO_CPU_LIMIT, '-'];
  for (const test of ignored) args.splice(1, 0, '--ignore-test', test);
  const child = execFile(kubeScore, args, { maxBuffer: 16 << 20 });
  let stdout = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stdin!.end(manifest);
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  const findings = stdout.split('\n').filter((line) => /^\[(CRITICAL|WARNING)\]/.test(line));
  // kube-score exits 1 on a critical finding: the two must agree, or the output was not read right.
  expect([code === 1, findings.some((f) => f.startsWith('[CRITICAL]'))]).toEqual([
    findings.some((f) => f.startsWith('[CRITICAL]')),
    code === 1,
  ]);
  return findings;
}

describe('kube-score on the rendered chart', () => {
  // The first run builds kube-score from its Go module: outside the tests' own timeouts.
  beforeAll(() => ensureGoTool('kube-score'), GO_TOOL_BUILD_TIMEOUT_MS);

  it('finds nothing with the NetworkPolicy on (networkPolicy.enabled=true), apart from the reasoned ignores', async () => {
    const findings = await score(await render(['--set', 'networkPolicy.enabled=true']), Object.keys(IGNORED));
    expect(findings).toEqual([]);
  });

  it('with defaults, only the NetworkPolicy is missing: off by default, as it needs a CNI that enforces it', async () => {
    const findings = await score(await render([]), Object.keys(IGNORED));
    expect(findings).toEqual([
      expect.stringMatching(/^\[CRITICAL\] .*Deployment: The pod does not have a matching NetworkPolicy$/),
    ]);
  });

  it('each ignore is still needed (kube-score flags it without the ignore)', async () => {
    const findings = await score(await render(['--set', 'networkPolicy.enabled=true']), []);
    expect(findings).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/ImagePullPolicy is not set to Always/),
        expect.stringMatching(/user|group|UID|GID/i),
      ]),
    );
  });
});
