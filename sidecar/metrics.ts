import { ProcessMetrics, sampleProcess } from './process-metrics.ts';
import { Counter, Gauge, Histogram, InfoGauge, Registry } from './prometheus.ts';

/**
 * The sidecar's Prometheus metrics (names are public: docs/DESIGN.md), on a registry of its own, and the process
 * figures every Prometheus client exports (process-metrics.ts).
 */
export class SidecarMetrics {
  readonly registry = new Registry();
  readonly handshakes = new Counter<'mode' | 'result'>(
    this.registry,
    'mtls_sidecar_handshakes_total',
    'TLS connections by listener mode and result (success, or the refusal reason)',
  );
  readonly requests = new Counter<'mode' | 'code'>(
    this.registry,
    'mtls_sidecar_requests_total',
    'Requests by listener mode and response status code',
  );
  readonly duration = new Histogram<'mode'>(
    this.registry,
    'mtls_sidecar_request_duration_seconds',
    'Time from request to the end of the response, by listener mode',
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  );
  // Workers serve the same files: the earliest expiry any of them holds is the one that matters.
  readonly certificateExpiry = new Gauge(
    this.registry,
    'mtls_sidecar_certificate_expiration_timestamp_seconds',
    'Unix time at which the serving certificate expires',
    'min',
  );
  readonly reloads = new Counter<'result'>(
    this.registry,
    'mtls_sidecar_reloads_total',
    'Reloads of certificate, key, CA bundle and CRL by result (success, failure)',
  );
  readonly upstreamProtocol = new InfoGauge<'requested' | 'detected'>(
    this.registry,
    'mtls_sidecar_upstream_protocol',
    "How HTTP/2 clients' streams reach the upstream: requested (--upstream-protocol) and detected (http1, h2c, unknown)",
  );
  readonly process = new ProcessMetrics(this.registry);

  /**
   * `sampleProcess: false` for a registry that only sums other processes' snapshots (--workers): its
   * process figures are theirs, not read from the process that renders them.
   */
  constructor(options: { sampleProcess?: boolean } = {}) {
    if (options.sampleProcess !== false) this.registry.onCollect(() => this.process.set(sampleProcess()));
  }
}
