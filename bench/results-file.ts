import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { operatorEnv } from '../operator/defaults.ts';

const FILE = new URL('./RESULTS.md', import.meta.url);
const TITLE =
  '# Benchmark results\n\nEach section is written by the command it names; rerun it to refresh that section.\n';

/** Replaces (or appends) the section `name` of bench/RESULTS.md, leaving the other benchmarks' sections. */
export function writeResultsSection(name: string, markdown: string): void {
  const start = `<!-- ${name} -->`;
  const end = `<!-- /${name} -->`;
  let text = existsSync(FILE) ? readFileSync(FILE, 'utf8') : TITLE;
  if (!text.startsWith('# Benchmark results')) text = TITLE;
  const block = `${start}\n${markdown.trim()}\n${end}`;
  const at = text.indexOf(start);
  const until = text.indexOf(end);
  text =
    at >= 0 && until > at
      ? text.slice(0, at) + block + text.slice(until + end.length)
      : `${text.trimEnd()}\n\n${block}\n`;
  writeFileSync(FILE, text.endsWith('\n') ? text : `${text}\n`);
}

/** The controller section, from what bench/controller-scale.ts measured (also bench/results/controller-scale.json). */
export function renderControllerSection(results: Record<string, unknown>, kubernetes: string, cores: number): string {
  const scale = results.scale as Record<string, number>[];
  const single = results.applyToReadyMs as Record<string, number>;
  const mass = results.massRotation as Record<string, number>;
  return [
    '## Controller at scale (`npm run bench:controller`)',
    '',
    `Against the local control plane (Kubernetes ${kubernetes}) on ${cores} cores, sharing them with it; the operator runs compiled, as its own process (a fresh one per row, scoped to that row's namespace), with 4 workers and the chart's memory settings (operator/defaults.ts operatorEnv: ${JSON.stringify(operatorEnv())}).`,
    '',
    `Create -> Ready, one endpoint at a time: median ${single.median} ms of 20 (min ${single.min}, max ${single.max}).`,
    '',
    '| endpoints (one client each) | all Ready after | API requests per endpoint at creation (writes, of which 409) | requests (writes) in two resyncs | operator peak RSS (MiB) |',
    '|---|---|---|---|---|',
    ...scale.map(
      (r) =>
        `| ${r.endpoints} | ${(r.allReadyMs! / 1000).toFixed(1)} s | ${r.requestsPerEndpointAtCreation} (${r.writesPerEndpointAtCreation}, ${r.conflictsPerEndpointAtCreation ?? 'not counted'}) | ${r.requestsInTwoResyncs} (${r.writesInTwoResyncs}) | ${r.rssMiB} |`,
    ),
    '',
    `One rotation of every leaf of ${mass.endpoints} endpoints (a spec change on all): ${(mass.reissueAllLeavesMs! / 1000).toFixed(1)} s, ${mass.requestsPerEndpoint} API requests (${mass.writesPerEndpoint} writes, ${mass.conflictsPerEndpoint ?? 'not counted'} of them refused with 409) per endpoint, peak RSS ${mass.rssMiB} MiB.`,
    '',
    'Requests count everything the operator sent (reads, watches, writes, Events); writes are creates, updates, patches and deletes of Secrets, Services and status.',
    '',
    'Targets: 1,000 endpoints Ready in <= 60 s, no writes in steady state, RSS <= 200 MiB.',
  ].join('\n');
}
