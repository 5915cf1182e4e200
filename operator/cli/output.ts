import { dumpYaml } from '@kubernetes/client-node';
import { UsageError } from '../../common/flags.ts';

/** `-o`: a table for people by default, JSON or YAML of the same report for scripts. */
export const OUTPUT_FORMATS = ['table', 'json', 'yaml'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

export function outputFormat(value: string | undefined): OutputFormat {
  const format = value ?? 'table';
  if (!(OUTPUT_FORMATS as readonly string[]).includes(format)) {
    throw new UsageError(`-o ${format}: expected one of ${OUTPUT_FORMATS.join(', ')}`);
  }
  return format as OutputFormat;
}

/** The report in the chosen format; `table` renders it for a terminal. */
export function render<T>(format: OutputFormat, report: T, table: (report: T) => string): string {
  if (format === 'json') return JSON.stringify(report, null, 2) + '\n';
  if (format === 'yaml') return dumpYaml(report);
  return table(report);
}

/** Columns padded to their widest cell, like kubectl's tables; the last column is not padded. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[], indent = ''): string {
  const widths = headers.map((header, i) => Math.max(header.length, ...rows.map((row) => (row[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    indent +
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]!)))
      .join('   ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

/** "in 3d4h", "5m ago": how far a time is from now, in the two largest units. */
export function relative(at: Date | string | undefined, now: Date): string {
  if (at === undefined) return '-';
  const ms = new Date(at).getTime() - now.getTime();
  if (Number.isNaN(ms)) return '-';
  let rest = Math.floor(Math.abs(ms) / 1000);
  const units: [string, number][] = [
    ['d', 86_400],
    ['h', 3_600],
    ['m', 60],
    ['s', 1],
  ];
  const parts: string[] = [];
  for (const [unit, size] of units) {
    if (parts.length === 2) break;
    const n = Math.floor(rest / size);
    if (n > 0 || (parts.length === 0 && unit === 's')) parts.push(`${n}${unit}`);
    if (n > 0) rest -= n * size;
    else if (parts.length > 0) break;
  }
  return ms >= 0 ? `in ${parts.join('')}` : `${parts.join('')} ago`;
}
