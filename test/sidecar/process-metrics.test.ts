import { SidecarMetrics } from '../../sidecar/metrics.ts';
import { parseMaxFds, parseProcStatus, type ProcessSample, sampleProcess } from '../../sidecar/process-metrics.ts';

const SAMPLE: ProcessSample = {
  cpuUserSeconds: 1.5,
  cpuSystemSeconds: 0.25,
  startTimeSeconds: 1_700_000_000.5,
  residentBytes: 60 * 1048576,
  virtualBytes: 900 * 1048576,
  heapBytes: 30 * 1048576,
  openFds: 21,
  maxFds: 1_048_576,
  v8HeapTotalBytes: 9_000_000,
  v8HeapUsedBytes: 7_000_000,
  externalBytes: 2_500_000,
};

/** A registry that renders only what it is given (no live sampling), with one sample set. */
function rendered(...samples: ProcessSample[]): string {
  const sum = new SidecarMetrics({ sampleProcess: false });
  for (const sample of samples) {
    const one = new SidecarMetrics({ sampleProcess: false });
    one.process.set(sample);
    sum.registry.merge(one.registry.snapshot());
  }
  return sum.registry.metricsText();
}

describe("sidecar: the process figures on /metrics (Prometheus clients' names)", () => {
  it('reads VmRSS, VmSize and VmData from /proc/self/status, and the open-files limit', () => {
    const status = 'Name:\tnode\nVmPeak:\t  999 kB\nVmSize:\t  921600 kB\nVmRSS:\t   61440 kB\nVmData:\t   30720 kB\n';
    expect(parseProcStatus(status)).toEqual({
      residentBytes: 61440 * 1024,
      virtualBytes: 921600 * 1024,
      heapBytes: 30720 * 1024,
    });
    expect(parseProcStatus('Name: node\n')).toEqual({});
    const limits =
      'Limit                     Soft Limit           Hard Limit           Units\n' +
      'Max open files            1024                 524288               files\n';
    expect(parseMaxFds(limits)).toBe(1024);
    expect(parseMaxFds('Max open files            unlimited            unlimited            files\n')).toBeUndefined();
  });

  it('renders each series with the HELP and TYPE the official clients use', () => {
    const text = rendered(SAMPLE);
    const expectLines = (name: string, type: string, help: string, value: string) =>
      expect(text).toContain(`# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name} ${value}\n`);
    expectLines('process_cpu_user_seconds_total', 'counter', 'Total user CPU time spent in seconds.', '1.5');
    expectLines('process_cpu_system_seconds_total', 'counter', 'Total system CPU time spent in seconds.', '0.25');
    expectLines('process_cpu_seconds_total', 'counter', 'Total user and system CPU time spent in seconds.', '1.75');
    expectLines(
      'process_start_time_seconds',
      'gauge',
      'Start time of the process since unix epoch in seconds.',
      '1700000000.5',
    );
    expectLines('process_resident_memory_bytes', 'gauge', 'Resident memory size in bytes.', '62914560');
    expectLines('process_virtual_memory_bytes', 'gauge', 'Virtual memory size in bytes.', '943718400');
    expectLines('process_heap_bytes', 'gauge', 'Process heap size in bytes.', '31457280');
    expectLines('process_open_fds', 'gauge', 'Number of open file descriptors.', '21');
    expectLines('process_max_fds', 'gauge', 'Maximum number of open file descriptors.', '1048576');
    expectLines('nodejs_heap_size_total_bytes', 'gauge', 'Process heap size from Node.js in bytes.', '9000000');
    expectLines('nodejs_heap_size_used_bytes', 'gauge', 'Process heap size used from Node.js in bytes.', '7000000');
    expectLines('nodejs_external_memory_bytes', 'gauge', 'Node.js external memory size in bytes.', '2500000');
  });

  it('leaves out what the system does not tell', () => {
    const text = rendered({ ...SAMPLE, residentBytes: undefined, openFds: undefined, maxFds: undefined });
    expect(text).not.toContain('process_resident_memory_bytes');
    expect(text).not.toContain('process_open_fds');
    expect(text).toContain('process_cpu_seconds_total 1.75');
  });

  it('sums a --workers group, with the earliest start time', () => {
    const text = rendered(SAMPLE, { ...SAMPLE, startTimeSeconds: 1_600_000_000, openFds: 9, cpuUserSeconds: 0.5 });
    expect(text).toMatch(/^process_open_fds 30$/m);
    expect(text).toMatch(/^process_cpu_user_seconds_total 2$/m);
    expect(text).toMatch(/^process_cpu_seconds_total 2.5$/m);
    expect(text).toMatch(/^process_resident_memory_bytes 125829120$/m);
    expect(text).toMatch(/^process_start_time_seconds 1600000000$/m);
  });

  it('reads this process: live figures, sampled at each scrape', () => {
    const sample = sampleProcess();
    expect(sample.startTimeSeconds).toBeLessThanOrEqual(Date.now() / 1000);
    expect(sample.v8HeapUsedBytes).toBeGreaterThan(0);
    if (process.platform === 'linux') {
      expect(sample.residentBytes).toBeGreaterThan(10 * 1048576);
      expect(sample.openFds).toBeGreaterThan(2);
      expect(sample.maxFds).toBeGreaterThan(0);
    }
    const live = new SidecarMetrics();
    const before = Number(/^process_cpu_seconds_total (\S+)$/m.exec(live.registry.metricsText())![1]);
    const after = Number(/^process_cpu_seconds_total (\S+)$/m.exec(live.registry.metricsText())![1]);
    expect(after).toBeGreaterThanOrEqual(before);
    expect(before).toBeGreaterThan(0);
  });
});
