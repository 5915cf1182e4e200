/**
 * What a V8 CPU profile (`node --cpu-prof`) says bounds a process: its busy time (everything but "(idle)") split
 * by where the self time was spent — one of the sidecar's own modules, a Node internal module (node:internal/...),
 * native code reached from them ("(program)"), or the garbage collector. Used by bench:sidecar's HTTP/2 and TCP
 * rows (MTLS_BENCH_PROFILE=1); also runnable on any profile: node bench/cpu-profile.ts FILE.cpuprofile
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** The bucket a frame's self time counts toward: the file for JavaScript, the V8 name for the rest. */
function bucketOf(frame: ProfileNode['callFrame']): string {
  if (!frame.url) return frame.functionName || '(anonymous native)';
  if (frame.url.startsWith('node:')) return frame.url;
  return basename(frame.url);
}

export interface ProfileShare {
  where: string;
  percent: number;
}

/** Busy time by bucket, largest first, in percent of the busy time (idle excluded). */
export function profileShares(file: string, top = 8): ProfileShare[] {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const bucketById = new Map(profile.nodes.map((n) => [n.id, bucketOf(n.callFrame)]));
  const micros = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    const bucket = bucketById.get(id) ?? '(unknown)';
    micros.set(bucket, (micros.get(bucket) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  micros.delete('(idle)');
  const busy = [...micros.values()].reduce((a, b) => a + b, 0) || 1;
  return [...micros]
    .map(([where, us]) => ({ where, percent: Math.round((us / busy) * 1000) / 10 }))
    .sort((a, b) => b.percent - a.percent)
    .slice(0, top);
}

/** One line for a results table: "program 41%, node:internal/http2/core 12%, ...". */
export const formatShares = (shares: ProfileShare[]) => shares.map((s) => `${s.where} ${s.percent}%`).join(', ');

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const share of profileShares(process.argv[2]!, 15)) console.log(`${share.percent}%\t${share.where}`);
}
