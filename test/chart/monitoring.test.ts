import { startTestSidecar } from '../support/sidecar.ts';
import * as k8s from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ADMIN_PORT_NAME, INJECTED_ANNOTATION } from '../../operator/api/injection.ts';
import type { MtlsEndpoint } from '../../operator/api/types.ts';
import { ensureBinaries } from '../../local/controlplane/binaries.ts';
import { decideInjection, sidecarContainer } from '../../operator/webhook/injector.ts';
import type { RunningSidecar } from '../../sidecar/sidecar.ts';
import { httpsGet, makePki, type Pki, startMockUpstream, tlsDir } from '../support/tls-fixtures.ts';

// The chart's PodMonitor must find the sidecars the webhook injects, and the shipped alert on refused
// handshakes must select series a real sidecar exports: checked against the injector and a running sidecar.

const run = promisify(execFile);
const CHART = new URL('../../charts/mtls-operator', import.meta.url).pathname;

async function render(values: string): Promise<k8s.KubernetesObject[]> {
  const { helm } = await ensureBinaries();
  const { stdout } = await run(helm, [
    'template',
    'mtls-operator',
    CHART,
    '--namespace',
    'mtls-system',
    '--set',
    values,
  ]);
  return k8s.loadAllYaml(stdout) as k8s.KubernetesObject[];
}

interface PodMonitor {
  spec: {
    namespaceSelector: { any?: boolean };
    selector: Record<string, unknown>;
    podMetricsEndpoints: {
      port: string;
      path: string;
      relabelings: { sourceLabels: string[]; regex: string; action: string }[];
    }[];
  };
}

interface Rule {
  alert: string;
  expr: string;
}

/** Prometheus's name for "this annotation is present" in pod discovery. */
const annotationPresentLabel = (annotation: string) =>
  `__meta_kubernetes_pod_annotationpresent_${annotation.replace(/[^a-zA-Z0-9_]/g, '_')}`;

/** Parses Prometheus text format into series: name and labels, value. */
function parseExposition(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  return text
    .split('\n')
    .filter((line) => line && !line.startsWith('#'))
    .map((line) => {
      const match = line.match(/^(\w+)(?:\{(.*)\})? (\S+)$/)!;
      const labels = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
      return { name: match[1]!, labels, value: Number(match[3]) };
    });
}

/** The first vector selector of a PromQL expression, as a predicate over series (=, !=, =~, !~ matchers). */
function vectorSelector(expr: string): { name: string; matches: (labels: Record<string, string>) => boolean } {
  const match = expr.match(/(mtls_\w+)\{([^}]*)\}/)!;
  const matchers = [...match[2]!.matchAll(/(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"/g)].map(([, label, op, value]) => ({
    label: label!,
    op: op!,
    value: value!,
  }));
  return {
    name: match[1]!,
    matches: (labels) =>
      matchers.every(({ label, op, value }) => {
        const actual = labels[label] ?? '';
        const re = new RegExp(`^(?:${value})$`);
        return op === '='
          ? actual === value
          : op === '!='
            ? actual !== value
            : op === '=~'
              ? re.test(actual)
              : !re.test(actual);
      }),
  };
}

describe('monitoring the injected sidecars', () => {
  let monitor: PodMonitor;
  let rules: Rule[];

  beforeAll(async () => {
    const objects = await render('metrics.podMonitor.enabled=true,metrics.prometheusRule.enabled=true');
    monitor = objects.find((o) => o.kind === 'PodMonitor') as unknown as PodMonitor;
    const rule = objects.find((o) => o.kind === 'PrometheusRule') as unknown as {
      spec: { groups: { rules: Rule[] }[] };
    };
    rules = rule.spec.groups.flatMap((g) => g.rules);
  });

  it('the PodMonitor is off by default', async () => {
    expect((await render('metrics.serviceMonitor.enabled=true')).some((o) => o.kind === 'PodMonitor')).toBe(false);
  });

  it('selects, in every namespace, the admin port of pods the webhook injected', () => {
    const ep: MtlsEndpoint = {
      metadata: { name: 'payments', namespace: 'team-a' },
      spec: { podSelector: { matchLabels: { app: 'p' } }, upstreamPort: 8080 },
    };
    const settings = { image: 'x' };
    const endpoint = monitor.spec.podMetricsEndpoints[0]!;
    expect(monitor.spec.namespaceSelector).toEqual({ any: true });
    // The port it names is the injected container's admin port, and the path the one the sidecar serves.
    expect(endpoint.port).toBe(ADMIN_PORT_NAME);
    expect(sidecarContainer(ep, settings).ports).toContainEqual(expect.objectContaining({ name: endpoint.port }));
    expect(endpoint.path).toBe('/metrics');
    // It keeps only pods with the annotation the webhook sets on every pod it injects.
    expect(endpoint.relabelings).toContainEqual({
      sourceLabels: [annotationPresentLabel(INJECTED_ANNOTATION)],
      regex: 'true',
      action: 'keep',
    });
    const decision = decideInjection(
      { metadata: { labels: { app: 'p' } }, spec: { containers: [{ name: 'app', image: 'x' }] } },
      [ep],
      settings,
    );
    expect(decision.action === 'inject' && decision.patch).toContainEqual(
      expect.objectContaining({
        path: '/metadata/annotations',
        value: expect.objectContaining({ [INJECTED_ANNOTATION]: 'payments' }),
      }),
    );
  });

  describe('MtlsRefusedHandshakesSpike against a real sidecar', () => {
    let pki: Pki;
    let upstream: Awaited<ReturnType<typeof startMockUpstream>>;
    let sidecar: RunningSidecar;

    beforeAll(async () => {
      pki = await makePki();
      upstream = await startMockUpstream();
      sidecar = await startTestSidecar({ listen: 'strict=0', upstreamPort: upstream.port, tlsDir: await tlsDir(pki) });
    });
    afterAll(async () => {
      await sidecar?.stop(1_000);
      upstream?.server.close();
    });

    it('selects exactly the refused handshakes, by listener mode', async () => {
      const alert = rules.find((r) => r.alert === 'MtlsRefusedHandshakesSpike')!;
      const selector = vectorSelector(alert.expr);
      // One accepted and one refused handshake on the strict listener.
      const accepted = await httpsGet(sidecar.ports[0]!, { ca: pki.ca.certPem, client: pki.client });
      expect(accepted.status).toBe(200);
      const refused = await httpsGet(sidecar.ports[0]!, { ca: pki.ca.certPem });
      // Refused after the handshake with a readable answer (no certificate on a strict listener).
      expect(refused.status).toBe(400);

      const text = await (await fetch(`http://127.0.0.1:${sidecar.adminPort}/metrics`)).text();
      const series = parseExposition(text).filter((s) => s.name === selector.name);
      expect(series.length).toBeGreaterThan(0); // the metric the alert reads exists under that name
      const selected = series.filter((s) => selector.matches(s.labels));
      expect(selected.reduce((sum, s) => sum + s.value, 0)).toBe(1);
      // It groups by mode (a label of the sidecar's) and by the namespace and pod the PodMonitor's targets carry.
      const by = alert.expr
        .match(/by \(([^)]*)\)/)![1]!
        .split(',')
        .map((l) => l.trim());
      expect(by).toEqual(expect.arrayContaining(['namespace', 'pod', 'mode']));
      expect(selected[0]!.labels.mode).toBe('strict');
    });
  });
});
