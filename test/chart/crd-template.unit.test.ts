import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CRD_SOURCES, crdTemplate } from '../../charts/crd-template.ts';

const ROOT = new URL('../..', import.meta.url).pathname;

describe("the chart's CRD templates, made from the schemas in crds/", () => {
  it.each(CRD_SOURCES)('$template is $source with the release metadata (npm run manifests)', ({ source, template }) => {
    const expected = crdTemplate(readFileSync(join(ROOT, source), 'utf8'), source);
    expect(readFileSync(join(ROOT, template), 'utf8')).toBe(expected);
    // Everything from spec on is the schema, verbatim.
    const schema = readFileSync(join(ROOT, source), 'utf8');
    expect(expected).toContain(`${schema.slice(schema.indexOf('\nspec:\n')).trimEnd()}\n{{- end }}\n`);
  });

  const crd = (metadata: string) =>
    `# comment\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n${metadata}spec:\n  group: g\n`;

  it('keeps the name, drops the source labels for the chart labels, and puts the keep annotation under crds.keep', () => {
    const out = crdTemplate(crd('  name: a.g\n  labels:\n    x: y\n'), 'a.yaml');
    expect(out).toContain('{{- if .Values.crds.enabled }}\napiVersion: apiextensions.k8s.io/v1');
    expect(out).toContain('metadata:\n  name: a.g\n  labels: {{- include "mtls-operator.labels" . | nindent 4 }}\n');
    expect(out).toContain('  {{- if .Values.crds.keep }}\n  annotations:\n');
    expect(out).toContain('    helm.sh/resource-policy: keep\n  {{- end }}\nspec:\n  group: g\n{{- end }}\n');
    expect(out).not.toContain('x: y');
    expect(out).not.toContain('# comment');
  });

  it('refuses what would break the template or the release', () => {
    expect(() => crdTemplate(crd('  name: a.g\n').replace('group: g', 'group: "{{ x }}"'), 'a.yaml')).toThrow(
      /a\.yaml: "\{\{" would be read as a Helm template action/,
    );
    expect(() => crdTemplate(crd('  name: a.g\n  annotations:\n    a: b\n'), 'a.yaml')).toThrow(
      /metadata.annotations is the chart's to set/,
    );
    expect(() => crdTemplate('kind: Deployment\n', 'b.yaml')).toThrow(/b\.yaml: expected a CustomResourceDefinition/);
  });
});
