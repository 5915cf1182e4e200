import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** The sidecar's Prometheus metrics (names are public: DESIGN.md), on a registry of its own. */
export class SidecarMetrics {
  readonly registry = new Registry();
  readonly handshakes = new Counter({
    name: 'mtls_sidecar_handshakes_total',
    help: 'TLS connections by listener mode and result (success, or the refusal reason)',
    labelNames: ['mode', 'result'] as const,
    registers: [this.registry],
  });
  readonly requests = new Counter({
    name: 'mtls_sidecar_requests_total',
    help: 'Requests by listener mode and response status code',
    labelNames: ['mode', 'code'] as const,
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: 'mtls_sidecar_request_duration_seconds',
    help: 'Time from request to the end of the response, by listener mode',
    labelNames: ['mode'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly certificateExpiry = new Gauge({
    name: 'mtls_sidecar_certificate_expiration_timestamp_seconds',
    help: 'Unix time at which the serving certificate expires',
    registers: [this.registry],
  });
  readonly reloads = new Counter({
    name: 'mtls_sidecar_reloads_total',
    help: 'Reloads of certificate, key, CA bundle and CRL by result (success, failure)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
}
