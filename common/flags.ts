// Not `import { parseArgs } from 'node:util'`: an ESM import of node:util evaluates all its exports, which loads
// worker_threads and more: ~1 MiB of resident memory in every sidecar for one function.
const { parseArgs } = process.getBuiltinModule('node:util');

/**
 * Flag definitions used both to parse a command line and to print its help (and, for the sidecar, to render
 * the injected args), so a flag's name, type and meaning are written down once.
 */
export interface FlagSpec {
  type: 'string' | 'boolean';
  help: string;
  /** Shown in help as the value's placeholder, e.g. MODE=PORT. */
  value?: string;
  multiple?: boolean;
  short?: string;
  default?: string | boolean;
}

export type FlagSpecs = Record<string, FlagSpec>;

export type ParsedFlags<S extends FlagSpecs> = {
  [K in keyof S]: S[K]['multiple'] extends true
    ? string[]
    : S[K]['type'] extends 'boolean'
      ? boolean
      : S[K]['default'] extends string
        ? string
        : string | undefined;
};

export class UsageError extends Error {}

/** How the running executable is typed: `kubectl mtls` when it is the plugin's bin (operator/kubectl-mtls.ts). */
const programName = () => (/kubectl-mtls(\.[jt]s)?$/.test(process.argv[1] ?? '') ? 'kubectl mtls' : 'mtls-operator');

export function helpText(command: string, synopsis: string, specs: FlagSpecs): string {
  const rows = Object.entries(specs).map(([name, spec]) => {
    const left = `  ${spec.short ? `-${spec.short}, ` : ''}--${name}${spec.type === 'string' ? ` ${spec.value ?? 'VALUE'}` : ''}`;
    const extra = [
      spec.multiple ? 'repeatable' : '',
      spec.default !== undefined ? `default ${String(spec.default)}` : '',
    ]
      .filter(Boolean)
      .join('; ');
    return `${left.padEnd(34)} ${spec.help}${extra ? ` (${extra})` : ''}`;
  });
  rows.push(`${'  -h, --help'.padEnd(34)} this help`);
  return `Usage: ${programName()} ${command} ${synopsis}\n\nFlags:\n${rows.join('\n')}\n`;
}

/** Parses flags and positionals; throws UsageError with a message that names the bad flag. */
export function parseFlags<S extends FlagSpecs>(
  specs: S,
  argv: string[],
): { flags: ParsedFlags<S>; positionals: string[]; help: boolean } {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = {
    help: { type: 'boolean', short: 'h' },
  };
  for (const [name, spec] of Object.entries(specs)) {
    options[name] = {
      type: spec.type,
      ...(spec.multiple ? { multiple: true } : {}),
      ...(spec.short ? { short: spec.short } : {}),
    };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/^TypeError \[[A-Z_]+\]: /, ''));
  }
  const values = parsed.values as Record<string, unknown>;
  const flags: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(specs)) {
    const value = values[name];
    if (spec.multiple) flags[name] = (value as string[] | undefined) ?? [];
    else if (spec.type === 'boolean') flags[name] = (value as boolean | undefined) ?? spec.default ?? false;
    else flags[name] = (value as string | undefined) ?? spec.default;
  }
  return { flags: flags as ParsedFlags<S>, positionals: parsed.positionals, help: values.help === true };
}
