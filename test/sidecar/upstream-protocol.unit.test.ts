import type { MtlsEndpoint } from '../../operator/api/types.ts';
import { sidecarContainer } from '../../operator/webhook/injector.ts';
import { parseSidecarConfig, renderSidecarArgs } from '../../sidecar/flags.ts';
import { SidecarMetrics } from '../../sidecar/metrics.ts';
import {
  decideUpstreamProtocol,
  MAX_SILENT_PROBES,
  PROBE_BACKOFF_MS,
  probeDelayMs,
} from '../../sidecar/upstream-protocol.ts';

describe('--upstream-protocol auto: the decision on one probe (pure)', () => {
  it('SETTINGS in answer to the h2c preface: h2c', () => {
    expect(decideUpstreamProtocol({ connected: true, answer: 'settings' }, 0).detected).toBe('h2c');
  });

  it('an HTTP/1.1 answer (a protocol error to nghttp2) or a close: http1, with what was seen', () => {
    const error = decideUpstreamProtocol({ connected: true, answer: 'protocol-error', detail: 'ERR_HTTP2_ERROR' }, 0);
    expect(error).toEqual({ detected: 'http1', reason: expect.stringContaining('ERR_HTTP2_ERROR') });
    expect(decideUpstreamProtocol({ connected: true, answer: 'closed' }, 0).detected).toBe('http1');
  });

  it('not reachable: not known yet, however often (the app may start long after its sidecar)', () => {
    const verdict = decideUpstreamProtocol({ connected: false, error: 'ECONNREFUSED' }, MAX_SILENT_PROBES);
    expect(verdict).toEqual({ detected: 'unknown', reason: 'upstream not reachable (ECONNREFUSED)' });
  });

  it('connected but silent: not known yet until the last allowed silent probe, then http1 (as Envoy falls back)', () => {
    const silent = { connected: true, answer: 'silent' } as const;
    for (let before = 0; before < MAX_SILENT_PROBES - 1; before++)
      expect(decideUpstreamProtocol(silent, before).detected).toBe('unknown');
    expect(decideUpstreamProtocol(silent, MAX_SILENT_PROBES - 1).detected).toBe('http1');
  });

  it('backs off by doubling from the first delay up to the cap', () => {
    const delays = [1, 2, 3, 4, 20].map((failed) => probeDelayMs(failed, { first: 100, max: 500 }));
    expect(delays).toEqual([100, 200, 400, 500, 500]);
    expect(probeDelayMs(1)).toBe(PROBE_BACKOFF_MS.first);
    expect(probeDelayMs(100)).toBe(PROBE_BACKOFF_MS.max);
  });
});

describe('--upstream-protocol flag', () => {
  const base = ['--listen', 'strict=8443', '--upstream', '127.0.0.1:8080', '--tls-dir', '/tls'];

  it('accepts auto and renders it back; refuses anything else with the choices', () => {
    const config = parseSidecarConfig([...base, '--upstream-protocol', 'auto']);
    expect(config.upstreamProtocol).toBe('auto');
    expect(renderSidecarArgs(config)).toEqual(expect.arrayContaining(['--upstream-protocol', 'auto']));
    expect(() => parseSidecarConfig([...base, '--upstream-protocol', 'h3'])).toThrow(/http1, h2c, auto/);
  });
});

describe('the injector and upstreamProtocol auto', () => {
  it('renders --upstream-protocol auto into the container args, which the sidecar parses back', () => {
    const ep: MtlsEndpoint = {
      metadata: { name: 'grpc', namespace: 'team' },
      spec: { upstreamPort: 9090, upstreamProtocol: 'auto', podSelector: { matchLabels: { app: 'grpc' } } },
    };
    const args = sidecarContainer(ep, { image: 'mtls-operator:test' }).args!;
    expect(args.slice(args.indexOf('--upstream-protocol'), args.indexOf('--upstream-protocol') + 2)).toEqual([
      '--upstream-protocol',
      'auto',
    ]);
    expect(parseSidecarConfig(args.slice(1)).upstreamProtocol).toBe('auto');
  });
});

describe('mtls_sidecar_upstream_protocol', () => {
  const series = (text: string) =>
    text.split('\n').filter((line) => line.startsWith('mtls_sidecar_upstream_protocol{'));

  it('holds one series at 1, replaced when the finding changes; absent until set', () => {
    const metrics = new SidecarMetrics({ sampleProcess: false });
    expect(series(metrics.registry.metricsText())).toEqual([]);
    metrics.upstreamProtocol.set({ requested: 'auto', detected: 'unknown' });
    metrics.upstreamProtocol.set({ requested: 'auto', detected: 'h2c' });
    expect(series(metrics.registry.metricsText())).toEqual([
      'mtls_sidecar_upstream_protocol{requested="auto",detected="h2c"} 1',
    ]);
  });

  it('summed over --workers: processes that agree make one series, processes that disagree one each', () => {
    const worker = (detected: string) => {
      const metrics = new SidecarMetrics({ sampleProcess: false });
      metrics.upstreamProtocol.set({ requested: 'auto', detected });
      return metrics.registry.snapshot();
    };
    const sum = new SidecarMetrics({ sampleProcess: false });
    for (const snapshot of [worker('h2c'), worker('h2c'), worker('unknown')]) sum.registry.merge(snapshot);
    expect(series(sum.registry.metricsText())).toEqual([
      'mtls_sidecar_upstream_protocol{requested="auto",detected="h2c"} 1',
      'mtls_sidecar_upstream_protocol{requested="auto",detected="unknown"} 1',
    ]);
  });
});
