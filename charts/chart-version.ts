import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * package.json's version is the product's one version (semver): the chart's `version` and `appVersion`, and so
 * the default image tag (image.tag empty means appVersion) and the operator's default sidecar image, follow it.
 * `npm version <new>` runs this (package.json's "version" script) and adds Chart.yaml to the version commit.
 */
export function chartWithVersion(chartYaml: string, version: string): string {
  for (const key of ['version', 'appVersion']) {
    if (!new RegExp(`^${key}:`, 'm').test(chartYaml)) throw new Error(`Chart.yaml has no top-level ${key}`);
  }
  return chartYaml
    .replace(/^version:.*$/m, `version: ${version}`)
    .replace(/^appVersion:.*$/m, `appVersion: '${version}'`);
}

export const CHART_YAML = 'charts/mtls-operator/Chart.yaml';

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
  writeFileSync(join(root, CHART_YAML), chartWithVersion(readFileSync(join(root, CHART_YAML), 'utf8'), version));
  console.log(`${CHART_YAML}: version and appVersion ${version}`);
}
