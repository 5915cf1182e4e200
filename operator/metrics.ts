import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** The operator's Prometheus metrics (names are public: DESIGN.md), on a registry of its own. */
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

  /** Also the process's own (process_*, nodejs_*: memory, CPU, event-loop lag, GC), which a user expects. */
  constructor({ processMetrics = false } = {}) {
    if (processMetrics) collectDefaultMetrics({ register: this.registry });
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
