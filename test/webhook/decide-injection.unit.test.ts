import type { V1Pod } from '@kubernetes/client-node';
import { SIDECAR_ADMIN_PORT } from '../../operator/api/injection.ts';
import type { MtlsEndpoint } from '../../operator/api/types.ts';
import { resolveSpec, SpecError } from '../../operator/controller/resolved-spec.ts';
import { decideInjection, type InjectionDecision, type JsonPatchOp } from '../../operator/webhook/injector.ts';
import { parseSidecarConfig, SIDECAR_DEFAULTS } from '../../sidecar/flags.ts';

// The injector's decision is a pure function of the pod, the endpoints and the settings: tested without a server.

const endpoint = (spec: Partial<MtlsEndpoint['spec']> = {}): MtlsEndpoint => ({
  apiVersion: 'mtls.operator.dev/v1alpha1',
  kind: 'MtlsEndpoint',
  metadata: { name: 'payments', namespace: 'team-a' },
  spec: { podSelector: { matchLabels: { app: 'payments' } }, upstreamPort: 8080, ...spec },
});

const pod = (annotations?: Record<string, string>, ports: number[] = [8080]): V1Pod => ({
  metadata: { name: 'p', namespace: 'team-a', labels: { app: 'payments' }, annotations },
  spec: { containers: [{ name: 'mock', image: 'x', ports: ports.map((containerPort) => ({ containerPort })) }] },
});

const settings = { image: 'registry.invalid/mtls-operator:test' };

function injected(decision: InjectionDecision): JsonPatchOp[] {
  if (decision.action !== 'inject') throw new Error(`expected inject, got ${JSON.stringify(decision)}`);
  return decision.patch;
}

/** The pod's annotations after the patch is applied. */
function annotationsAfter(before: V1Pod, patch: JsonPatchOp[]): Record<string, string> {
  const result = { ...(before.metadata?.annotations ?? {}) };
  for (const op of patch) {
    if (op.path === '/metadata/annotations') Object.assign(result, op.value as Record<string, string>);
    else if (op.path.startsWith('/metadata/annotations/')) {
      const key = op.path.slice('/metadata/annotations/'.length).replace(/~1/g, '/').replace(/~0/g, '~');
      result[key] = op.value as string;
    }
  }
  return result;
}

const sidecarOf = (patch: JsonPatchOp[]) =>
  (patch.find((op) => op.path === '/spec/initContainers')!.value as unknown[])[0] as {
    args: string[];
    ports: { name: string; containerPort: number }[];
    readinessProbe: { httpGet: { port: string } };
  };

describe('admin port', () => {
  it("defaults to 15201, clear of Istio's 15021, and the operator's default is the sidecar's own", () => {
    expect(SIDECAR_ADMIN_PORT).toBe(15201);
    expect(SIDECAR_DEFAULTS.admin).toBe('127.0.0.1:15201');
  });

  it('a configured admin port reaches the args, the named port the probes use, and the sidecar that parses them', () => {
    const sidecar = sidecarOf(injected(decideInjection(pod(), [endpoint()], { ...settings, adminPort: 17001 })));
    const config = parseSidecarConfig(sidecar.args.slice(1));
    expect(config.admin).toBe('0.0.0.0:17001');
    expect(sidecar.ports).toContainEqual(expect.objectContaining({ name: 'mtls-admin', containerPort: 17001 }));
    expect(sidecar.readinessProbe.httpGet.port).toBe('mtls-admin');
    // By default, the default.
    const plain = sidecarOf(injected(decideInjection(pod(), [endpoint()], settings)));
    expect(parseSidecarConfig(plain.args.slice(1)).admin).toBe(`0.0.0.0:${SIDECAR_ADMIN_PORT}`);
  });

  it('refuses a pod whose container already uses the configured admin port, saying how to fix it', () => {
    const decision = decideInjection(pod(undefined, [8080, 17001]), [endpoint()], { ...settings, adminPort: 17001 });
    expect(decision).toEqual({
      action: 'deny',
      message: expect.stringMatching(/port 17001 is the mTLS sidecar's admin port .*sidecar\.adminPort/),
    });
    // The same pod is fine with the default admin port.
    expect(decideInjection(pod(undefined, [8080, 17001]), [endpoint()], settings).action).toBe('inject');
  });

  it('the controller refuses a listener or upstream on the configured admin port, and only that one', () => {
    const onPort = endpoint({ listeners: [{ mode: 'strict', port: 17001 }] });
    expect(() => resolveSpec(onPort, { sidecarAdminPort: 17001 })).toThrow(
      new SpecError(
        "spec.listeners[0].port: 17001 is the sidecar's admin port (health and metrics; the operator's --sidecar-admin-port, chart value sidecar.adminPort); choose another port",
      ),
    );
    expect(() => resolveSpec(onPort)).not.toThrow();
    expect(() => resolveSpec(endpoint({ upstreamPort: 15201 }))).toThrow(/spec\.upstreamPort: 15201 is the sidecar's/);
  });
});

describe('prometheus.io annotations', () => {
  const scrape = {
    'prometheus.io/scrape': 'true',
    'prometheus.io/port': String(SIDECAR_ADMIN_PORT),
    'prometheus.io/path': '/metrics',
  };

  it("point Prometheus's pod discovery at the sidecar's admin port, with or without annotations on the pod", () => {
    for (const before of [pod(), pod({ team: 'a' })]) {
      expect(annotationsAfter(before, injected(decideInjection(before, [endpoint()], settings)))).toEqual({
        ...before.metadata?.annotations,
        'mtls.operator.dev/injected-by': 'payments',
        'kubectl.kubernetes.io/default-container': 'mock',
        ...scrape,
      });
    }
    const custom = pod();
    expect(
      annotationsAfter(custom, injected(decideInjection(custom, [endpoint()], { ...settings, adminPort: 17001 }))),
    ).toMatchObject({ 'prometheus.io/port': '17001' });
  });

  it('leave a pod that names its own scrape target as it is', () => {
    const own = pod({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': '9090' });
    expect(annotationsAfter(own, injected(decideInjection(own, [endpoint()], settings)))).toEqual({
      'prometheus.io/scrape': 'true',
      'prometheus.io/port': '9090',
      'mtls.operator.dev/injected-by': 'payments',
      'kubectl.kubernetes.io/default-container': 'mock',
    });
    const off = pod({ 'prometheus.io/scrape': 'false' });
    expect(annotationsAfter(off, injected(decideInjection(off, [endpoint()], settings)))).toEqual({
      'prometheus.io/scrape': 'false',
      'mtls.operator.dev/injected-by': 'payments',
      'kubectl.kubernetes.io/default-container': 'mock',
    });
  });
});

describe('protocols', () => {
  it('renders upstreamProtocol, tcp listeners and proxyProtocol into args the sidecar parses back', () => {
    const ep = endpoint({
      upstreamProtocol: 'h2c',
      proxyProtocol: true,
      listeners: [
        { mode: 'strict', port: 8443 },
        { mode: 'flexible', port: 5432, protocol: 'tcp' },
      ],
    });
    const config = parseSidecarConfig(sidecarOf(injected(decideInjection(pod(), [ep], settings))).args.slice(1));
    expect(config.upstreamProtocol).toBe('h2c');
    expect(config.proxyProtocol).toBe(true);
    expect(config.listen).toEqual([
      { mode: 'strict', port: 8443 },
      { mode: 'flexible', port: 5432, protocol: 'tcp' },
    ]);
    expect(resolveSpec(ep)).toMatchObject({ upstreamProtocol: 'h2c', proxyProtocol: true });
  });

  it('by default: HTTP/2 clients go upstream as HTTP/1.1 and no flag is rendered for it', () => {
    const args = sidecarOf(injected(decideInjection(pod(), [endpoint()], settings))).args;
    expect(args).not.toContain('--upstream-protocol');
    expect(args).not.toContain('--proxy-protocol');
    expect(parseSidecarConfig(args.slice(1)).upstreamProtocol).toBe('http1');
  });
});
