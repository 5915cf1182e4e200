import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CHART_YAML, chartWithVersion } from '../../charts/chart-version.ts';
import { DEFAULT_SIDECAR_IMAGE } from '../../operator/defaults.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');
const pkg = JSON.parse(read('package.json')) as { version: string; scripts: Record<string, string> };

describe('one version: package.json', () => {
  it('is a semantic version', () => {
    expect(pkg.version).toMatch(/^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$/);
  });

  it("is the chart's version and appVersion, and so the default image tag and the sidecar's image", () => {
    const chart = read(CHART_YAML);
    expect(chart).toBe(chartWithVersion(chart, pkg.version));
    expect(chart).toMatch(new RegExp(`^version: ${pkg.version.replace(/\./g, '\\.')}$`, 'm'));
    expect(chart).toContain(`\nappVersion: '${pkg.version}'\n`);
    expect(read('charts/mtls-operator/values.yaml')).toMatch(/^ {2}tag: ''$/m);
    expect(DEFAULT_SIDECAR_IMAGE.endsWith(`:${pkg.version}`)).toBe(true);
  });

  it('npm version rewrites the chart in the same commit, and the release refuses a tag that differs', () => {
    expect(pkg.scripts.version).toBe(`node charts/chart-version.ts && git add ${CHART_YAML}`);
    expect(read('.github/workflows/release.yml')).toContain('"v$(node -p "require(\'./package.json\').version")"');
  });

  it('rewrites only the two version lines', () => {
    const before = "apiVersion: v2\nname: x\nversion: 0.1.0\nappVersion: '0.1.0'\nkeywords: [a]\n";
    expect(chartWithVersion(before, '1.2.3-rc.1')).toBe(
      "apiVersion: v2\nname: x\nversion: 1.2.3-rc.1\nappVersion: '1.2.3-rc.1'\nkeywords: [a]\n",
    );
    expect(() => chartWithVersion('name: x\n', '1.0.0')).toThrow(/no top-level version/);
  });
});
