import * as k8s from '@kubernetes/client-node';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

// values.yaml and values.schema.json describe the same keys: a value the schema does not know is refused by
// helm lint --strict (additionalProperties: false), and one only the schema knows is a value nobody can find.

const CHART = new URL('../../charts/mtls-operator', import.meta.url).pathname;

interface Schema {
  properties?: Record<string, Schema>;
}

/** Dotted paths of every key the schema names and of every key values.yaml sets, down to where the schema stops. */
function paths(schema: Schema, values: unknown, prefix = ''): { schema: string[]; values: string[] } {
  const out = { schema: [] as string[], values: [] as string[] };
  const props = schema.properties ?? {};
  const object = typeof values === 'object' && values !== null && !Array.isArray(values) ? values : {};
  for (const key of Object.keys(props)) out.schema.push(prefix + key);
  for (const key of Object.keys(object)) out.values.push(prefix + key);
  for (const [key, sub] of Object.entries(props)) {
    if (!sub.properties || key === 'global') continue;
    const nested = paths(sub, (object as Record<string, unknown>)[key], `${prefix}${key}.`);
    out.schema.push(...nested.schema);
    out.values.push(...nested.values);
  }
  return out;
}

describe('values.yaml and values.schema.json', () => {
  it('name the same keys', () => {
    const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8')) as Schema;
    const values = k8s.loadYaml(readFileSync(join(CHART, 'values.yaml'), 'utf8'));
    const found = paths(schema, values);
    expect(found.values.sort()).toEqual(found.schema.sort());
  });
});
