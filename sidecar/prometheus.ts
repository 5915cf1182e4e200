/**
 * A small Prometheus text-format registry for the sidecar. Every request touches a counter and a histogram,
 * so a labelled series is a plain object found once (`labels()`) and bumped with a number add; prom-client
 * costs the sidecar ~8 MiB of resident memory and a label lookup per call, which a per-request hot path and
 * an 80 MiB budget cannot afford. Series can be exported and summed, so worker processes report through one
 * admin port.
 */

export type Labels = Record<string, string>;

/** One metric's series as plain data (what a worker sends to the primary). */
export interface MetricSnapshot {
  name: string;
  series: { labels: Labels; value: number; buckets?: number[]; sum?: number }[];
}

interface Metric {
  readonly name: string;
  render(out: string[]): void;
  snapshot(): MetricSnapshot;
  merge(snapshot: MetricSnapshot): void;
}

const escapeValue = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
const labelText = (labels: Labels, extra = ''): string => {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeValue(v)}"`);
  if (extra) parts.push(extra);
  return parts.length ? `{${parts.join(',')}}` : '';
};
const keyOf = (labels: Labels) => JSON.stringify(labels);
const number = (n: number) => (Number.isFinite(n) ? String(n) : n > 0 ? '+Inf' : n < 0 ? '-Inf' : 'NaN');

export class CounterSeries {
  value = 0;
  inc(by = 1): void {
    this.value += by;
  }
}

export class Counter<L extends string = string> implements Metric {
  readonly name: string;
  private readonly help: string;
  private readonly series = new Map<string, { labels: Labels; child: CounterSeries }>();

  constructor(registry: Registry, name: string, help: string) {
    this.name = name;
    this.help = help;
    registry.add(this);
  }

  labels(labels: Record<L, string>): CounterSeries {
    const key = keyOf(labels);
    let entry = this.series.get(key);
    if (!entry) this.series.set(key, (entry = { labels: { ...labels }, child: new CounterSeries() }));
    return entry.child;
  }

  inc(labels: Record<L, string>, by = 1): void {
    this.labels(labels).inc(by);
  }

  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`);
    for (const { labels, child } of this.series.values()) out.push(`${this.name}${labelText(labels)} ${child.value}`);
  }

  snapshot(): MetricSnapshot {
    return {
      name: this.name,
      series: [...this.series.values()].map(({ labels, child }) => ({ labels, value: child.value })),
    };
  }

  merge(snapshot: MetricSnapshot): void {
    for (const s of snapshot.series) this.labels(s.labels as Record<L, string>).inc(s.value);
  }
}

export class Gauge implements Metric {
  readonly name: string;
  private readonly help: string;
  private readonly combine: 'min' | 'sum';
  value = Number.NaN;

  /** `combine`: how the values of several processes add up (--workers): the smallest, or their sum. */
  constructor(registry: Registry, name: string, help: string, combine: 'min' | 'sum' = 'min') {
    this.name = name;
    this.help = help;
    this.combine = combine;
    registry.add(this);
  }

  set(value: number): void {
    this.value = value;
  }

  render(out: string[]): void {
    if (Number.isNaN(this.value)) return;
    out.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`, `${this.name} ${number(this.value)}`);
  }

  snapshot(): MetricSnapshot {
    return { name: this.name, series: [{ labels: {}, value: this.value }] };
  }

  merge(snapshot: MetricSnapshot): void {
    const value = snapshot.series[0]?.value ?? Number.NaN;
    if (Number.isNaN(value)) return;
    if (this.combine === 'sum') this.value = Number.isNaN(this.value) ? value : this.value + value;
    else if (!(value >= this.value)) this.value = value;
  }
}

/**
 * A gauge whose labels are the value (an "info" metric): one series at 1, replaced by `set`. Merged series from
 * several processes (--workers) are kept side by side, so processes that disagree show as two series.
 */
export class InfoGauge<L extends string = string> implements Metric {
  readonly name: string;
  private readonly help: string;
  private readonly series = new Map<string, Labels>();

  constructor(registry: Registry, name: string, help: string) {
    this.name = name;
    this.help = help;
    registry.add(this);
  }

  set(labels: Record<L, string>): void {
    this.series.clear();
    this.series.set(keyOf(labels), { ...labels });
  }

  render(out: string[]): void {
    if (this.series.size === 0) return;
    out.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`);
    for (const labels of this.series.values()) out.push(`${this.name}${labelText(labels)} 1`);
  }

  snapshot(): MetricSnapshot {
    return { name: this.name, series: [...this.series.values()].map((labels) => ({ labels, value: 1 })) };
  }

  merge(snapshot: MetricSnapshot): void {
    for (const s of snapshot.series) this.series.set(keyOf(s.labels), { ...s.labels });
  }
}

export class HistogramSeries {
  readonly counts: number[];
  sum = 0;
  count = 0;
  private readonly bounds: readonly number[];

  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = new Array<number>(bounds.length).fill(0);
  }

  observe(value: number): void {
    this.sum += value;
    this.count++;
    const bounds = this.bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (value <= bounds[i]!) {
        this.counts[i]!++;
        return;
      }
    }
  }
}

export class Histogram<L extends string = string> implements Metric {
  readonly name: string;
  private readonly help: string;
  private readonly bounds: readonly number[];
  private readonly series = new Map<string, { labels: Labels; child: HistogramSeries }>();

  constructor(registry: Registry, name: string, help: string, bounds: readonly number[]) {
    this.name = name;
    this.help = help;
    this.bounds = [...bounds].sort((a, b) => a - b);
    registry.add(this);
  }

  labels(labels: Record<L, string>): HistogramSeries {
    const key = keyOf(labels);
    let entry = this.series.get(key);
    if (!entry) this.series.set(key, (entry = { labels: { ...labels }, child: new HistogramSeries(this.bounds) }));
    return entry.child;
  }

  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`);
    for (const { labels, child } of this.series.values()) {
      let cumulative = 0;
      for (const [i, bound] of this.bounds.entries()) {
        cumulative += child.counts[i]!;
        out.push(`${this.name}_bucket${labelText(labels, `le="${bound}"`)} ${cumulative}`);
      }
      out.push(
        `${this.name}_bucket${labelText(labels, 'le="+Inf"')} ${child.count}`,
        `${this.name}_sum${labelText(labels)} ${child.sum}`,
        `${this.name}_count${labelText(labels)} ${child.count}`,
      );
    }
  }

  snapshot(): MetricSnapshot {
    return {
      name: this.name,
      series: [...this.series.values()].map(({ labels, child }) => ({
        labels,
        value: child.count,
        buckets: [...child.counts],
        sum: child.sum,
      })),
    };
  }

  merge(snapshot: MetricSnapshot): void {
    for (const s of snapshot.series) {
      const child = this.labels(s.labels as Record<L, string>);
      child.count += s.value;
      child.sum += s.sum ?? 0;
      for (const [i, n] of (s.buckets ?? []).entries()) if (i < child.counts.length) child.counts[i]! += n;
    }
  }
}

export class Registry {
  readonly contentType = 'text/plain; version=0.0.4; charset=utf-8';
  private readonly metrics: Metric[] = [];
  private readonly collectors: (() => void)[] = [];

  add(metric: Metric): void {
    this.metrics.push(metric);
  }

  /** `collect` sets metrics that are read at scrape time (process figures); it runs before each scrape. */
  onCollect(collect: () => void): void {
    this.collectors.push(collect);
  }

  metricsText(): string {
    for (const collect of this.collectors) collect();
    const out: string[] = [];
    for (const metric of this.metrics) metric.render(out);
    return out.join('\n') + '\n';
  }

  snapshot(): MetricSnapshot[] {
    for (const collect of this.collectors) collect();
    return this.metrics.map((m) => m.snapshot());
  }

  /** Adds other registries' series (same metric names) into this one. */
  merge(snapshots: readonly MetricSnapshot[]): void {
    const byName = new Map(this.metrics.map((m) => [m.name, m]));
    for (const snapshot of snapshots) byName.get(snapshot.name)?.merge(snapshot);
  }
}
