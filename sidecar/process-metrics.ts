import { readdirSync, readFileSync } from 'node:fs';
import { Counter, Gauge, type Registry } from './prometheus.ts';

/**
 * The process figures every Prometheus client library exports (names, types and help text as in the
 * official clients and prom-client), read when /metrics is scraped: CPU from process.cpuUsage(), memory
 * and file descriptors from /proc/self (Linux; elsewhere those series are left out), V8's heap from
 * process.memoryUsage(). A --workers group reports the sum over its processes (start time: the earliest).
 */

/** What one scrape reads; undefined where the system does not tell. */
export interface ProcessSample {
  cpuUserSeconds: number;
  cpuSystemSeconds: number;
  startTimeSeconds: number;
  residentBytes?: number;
  virtualBytes?: number;
  heapBytes?: number;
  openFds?: number;
  maxFds?: number;
  v8HeapTotalBytes: number;
  v8HeapUsedBytes: number;
  externalBytes: number;
}

/** VmRSS, VmSize and VmData (kB) of /proc/self/status, in bytes. */
export function parseProcStatus(text: string): { residentBytes?: number; virtualBytes?: number; heapBytes?: number } {
  const kb = (field: string) => {
    const match = new RegExp(`^${field}:\\s*(\\d+) kB`, 'm').exec(text);
    return match ? Number(match[1]) * 1024 : undefined;
  };
  return { residentBytes: kb('VmRSS'), virtualBytes: kb('VmSize'), heapBytes: kb('VmData') };
}

/** The soft limit of "Max open files" in /proc/self/limits; undefined if unlimited or absent. */
export function parseMaxFds(text: string): number | undefined {
  const match = /^Max open files\s+(\d+)/m.exec(text);
  return match ? Number(match[1]) : undefined;
}

const readOr = <T>(read: () => T): T | undefined => {
  try {
    return read();
  } catch {
    return undefined;
  }
};

/** Process start, as the official clients give it: now minus uptime, fixed once. */
const START_TIME_SECONDS = Date.now() / 1000 - process.uptime();
let maxFds: number | undefined | null = null;

/** Reads this process's figures now (a few microseconds: two small /proc files and one folder listing). */
export function sampleProcess(): ProcessSample {
  const cpu = process.cpuUsage();
  const memory = process.memoryUsage();
  const status = readOr(() => parseProcStatus(readFileSync('/proc/self/status', 'latin1'))) ?? {};
  // The limit is fixed for the process's life (setrlimit is not exposed to JavaScript): read it once.
  if (maxFds === null) maxFds = readOr(() => parseMaxFds(readFileSync('/proc/self/limits', 'latin1')));
  return {
    cpuUserSeconds: cpu.user / 1e6,
    cpuSystemSeconds: cpu.system / 1e6,
    startTimeSeconds: START_TIME_SECONDS,
    ...status,
    // The listing's own descriptor is in it.
    openFds: readOr(() => readdirSync('/proc/self/fd').length - 1),
    maxFds,
    v8HeapTotalBytes: memory.heapTotal,
    v8HeapUsedBytes: memory.heapUsed,
    externalBytes: memory.external,
  };
}

/** The process_* and nodejs_* series, on the sidecar's registry. */
export class ProcessMetrics {
  private readonly cpuUser: Counter<never>;
  private readonly cpuSystem: Counter<never>;
  private readonly cpuTotal: Counter<never>;
  private readonly gauges: [Gauge, (s: ProcessSample) => number | undefined][];

  constructor(registry: Registry) {
    this.cpuUser = new Counter(registry, 'process_cpu_user_seconds_total', 'Total user CPU time spent in seconds.');
    this.cpuSystem = new Counter(
      registry,
      'process_cpu_system_seconds_total',
      'Total system CPU time spent in seconds.',
    );
    this.cpuTotal = new Counter(
      registry,
      'process_cpu_seconds_total',
      'Total user and system CPU time spent in seconds.',
    );
    const gauge = (name: string, help: string, read: (s: ProcessSample) => number | undefined, combine = 'sum') =>
      [new Gauge(registry, name, help, combine as 'sum' | 'min'), read] as [Gauge, typeof read];
    this.gauges = [
      gauge(
        'process_start_time_seconds',
        'Start time of the process since unix epoch in seconds.',
        (s) => s.startTimeSeconds,
        'min',
      ),
      gauge('process_resident_memory_bytes', 'Resident memory size in bytes.', (s) => s.residentBytes),
      gauge('process_virtual_memory_bytes', 'Virtual memory size in bytes.', (s) => s.virtualBytes),
      gauge('process_heap_bytes', 'Process heap size in bytes.', (s) => s.heapBytes),
      gauge('process_open_fds', 'Number of open file descriptors.', (s) => s.openFds),
      gauge('process_max_fds', 'Maximum number of open file descriptors.', (s) => s.maxFds),
      gauge('nodejs_heap_size_total_bytes', 'Process heap size from Node.js in bytes.', (s) => s.v8HeapTotalBytes),
      gauge('nodejs_heap_size_used_bytes', 'Process heap size used from Node.js in bytes.', (s) => s.v8HeapUsedBytes),
      gauge('nodejs_external_memory_bytes', 'Node.js external memory size in bytes.', (s) => s.externalBytes),
    ];
  }

  /** Sets every series from one sample (the registry calls this before each scrape). */
  set(sample: ProcessSample): void {
    this.cpuUser.labels({}).value = sample.cpuUserSeconds;
    this.cpuSystem.labels({}).value = sample.cpuSystemSeconds;
    this.cpuTotal.labels({}).value = sample.cpuUserSeconds + sample.cpuSystemSeconds;
    for (const [gauge, read] of this.gauges) gauge.set(read(sample) ?? Number.NaN);
  }
}
