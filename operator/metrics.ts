import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { WorkQueueMetrics } from './controller/workqueue.ts';

/** A metav1.Condition status: the `condition` label of mtls_endpoint_ready_status. */
export type ConditionStatus = 'True' | 'False' | 'Unknown';
const CONDITION_STATUSES: readonly ConditionStatus[] = ['True', 'False', 'Unknown'];

/** Seconds from 1 ms to 10 min: a key waits from nothing (idle queue) to minutes (a backlog after a restart). */
const QUEUE_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600];

/** The operator's Prometheus metrics (names are public: docs/DESIGN.md contract 5), on a registry of its own. */
export class OperatorMetrics {
  readonly registry = new Registry();
  readonly expiration = new Gauge({
    name: 'mtls_certificate_expiration_timestamp_seconds',
    help: 'Unix time at which each managed certificate expires',
    labelNames: ['namespace', 'endpoint', 'certificate', 'client'] as const,
    registers: [this.registry],
  });
  readonly renewal = new Gauge({
    name: 'mtls_certificate_renewal_timestamp_seconds',
    help: 'Unix time at which each managed certificate is due to be renewed',
    labelNames: ['namespace', 'endpoint', 'certificate', 'client'] as const,
    registers: [this.registry],
  });
  readonly reconciles = new Counter({
    name: 'mtls_reconcile_total',
    help: 'Reconciles of MtlsEndpoints by result (success, error, invalid)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly reconcileDuration = new Histogram({
    name: 'mtls_reconcile_duration_seconds',
    help: 'Time taken by one reconcile of an MtlsEndpoint',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly issued = new Counter({
    name: 'mtls_certificates_issued_total',
    help: 'Certificates issued, by kind (ca, server, client)',
    labelNames: ['certificate'] as const,
    registers: [this.registry],
  });

  // cert-manager's certmanager_certificate_ready_status: one series per status, 1 on the current one.
  readonly endpointReady = new Gauge({
    name: 'mtls_endpoint_ready_status',
    help: 'The Ready condition of each MtlsEndpoint: 1 on the series of its status (True, False or Unknown), 0 on the others',
    labelNames: ['namespace', 'endpoint', 'condition'] as const,
    registers: [this.registry],
  });
  // client-go's workqueue metrics (workqueue_*), under this operator's prefix; `name` is the queue's.
  readonly queueDepth = new Gauge({
    name: 'mtls_workqueue_depth',
    help: 'Keys (namespace/name of MtlsEndpoints) waiting in the work queue',
    labelNames: ['name'] as const,
    registers: [this.registry],
  });
  readonly queueAdds = new Counter({
    name: 'mtls_workqueue_adds_total',
    help: 'Keys added to the work queue (not counting keys already waiting)',
    labelNames: ['name'] as const,
    registers: [this.registry],
  });
  readonly queueDuration = new Histogram({
    name: 'mtls_workqueue_queue_duration_seconds',
    help: 'How long a key waits in the work queue before a worker takes it',
    labelNames: ['name'] as const,
    buckets: QUEUE_BUCKETS,
    registers: [this.registry],
  });
  readonly workDuration = new Histogram({
    name: 'mtls_workqueue_work_duration_seconds',
    help: 'How long a worker takes over one key, from taking it to done',
    labelNames: ['name'] as const,
    buckets: QUEUE_BUCKETS,
    registers: [this.registry],
  });
  readonly queueRetries = new Counter({
    name: 'mtls_workqueue_retries_total',
    help: 'Keys re-added with backoff after a failed reconcile',
    labelNames: ['name'] as const,
    registers: [this.registry],
  });
  // controller-runtime's leader_election_master_status.
  readonly leader = new Gauge({
    name: 'mtls_leader_election_master_status',
    help: 'Whether this replica leads (1) or stands by (0) on the leader-election Lease `name`',
    labelNames: ['name'] as const,
    registers: [this.registry],
  });

  /** Also the process's own (process_*, nodejs_*: memory, CPU, event-loop lag, GC), which a user expects. */
  constructor({ processMetrics = false } = {}) {
    if (processMetrics) collectDefaultMetrics({ register: this.registry });
  }

  /** The hooks a WorkQueue reports to, for the queue called `name`. */
  workQueueMetrics(name: string): WorkQueueMetrics {
    const labels = { name };
    this.queueAdds.inc(labels, 0);
    this.queueRetries.inc(labels, 0);
    return {
      added: () => this.queueAdds.inc(labels),
      depth: (keys) => this.queueDepth.set(labels, keys),
      waited: (seconds) => this.queueDuration.observe(labels, seconds),
      worked: (seconds) => this.workDuration.observe(labels, seconds),
      retried: () => this.queueRetries.inc(labels),
    };
  }

  /** Sets an endpoint's Ready series: 1 for `status`, 0 for the other two. */
  setEndpointReady(namespace: string, endpoint: string, status: ConditionStatus): void {
    for (const condition of CONDITION_STATUSES)
      this.endpointReady.set({ namespace, endpoint, condition }, condition === status ? 1 : 0);
  }

  /** Drops every series of an endpoint that is gone. */
  forgetEndpoint(namespace: string, endpoint: string): void {
    this.pruneEndpoint(namespace, endpoint);
    for (const condition of CONDITION_STATUSES) this.endpointReady.remove({ namespace, endpoint, condition });
  }

  private readonly seriesByEndpoint = new Map<string, Map<string, CertificateLabels>>();

  /** Sets a certificate's expiry and renewal gauges, remembering the series so it can be dropped later. */
  setCertificateTimes(labels: CertificateLabels, notAfter: Date, renewalTime: Date): void {
    this.expiration.set(labels, notAfter.getTime() / 1000);
    this.renewal.set(labels, renewalTime.getTime() / 1000);
    const key = `${labels.namespace}/${labels.endpoint}`;
    const series = this.seriesByEndpoint.get(key) ?? new Map<string, CertificateLabels>();
    series.set(`${labels.certificate}/${labels.client}`, labels);
    this.seriesByEndpoint.set(key, series);
  }

  /** Drops an endpoint's series except those in `keep` (all of them when the endpoint is gone). */
  pruneEndpoint(namespace: string, endpoint: string, keep: CertificateLabels[] = []): void {
    const key = `${namespace}/${endpoint}`;
    const series = this.seriesByEndpoint.get(key);
    if (!series) return;
    const kept = new Set(keep.map((labels) => `${labels.certificate}/${labels.client}`));
    for (const [id, labels] of series) {
      if (kept.has(id)) continue;
      this.expiration.remove(labels);
      this.renewal.remove(labels);
      series.delete(id);
    }
    if (series.size === 0) this.seriesByEndpoint.delete(key);
  }
}

export interface CertificateLabels {
  namespace: string;
  endpoint: string;
  /** ca, server or client */
  certificate: string;
  /** the client's name; empty for the CA and the server */
  client: string;
}
