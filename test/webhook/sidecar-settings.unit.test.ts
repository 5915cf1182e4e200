import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { SIDECAR_LOG_LEVEL_ANNOTATION } from '../../operator/api/injection.ts';
import type { MtlsEndpoint } from '../../operator/api/types.ts';
import {
  decideInjection,
  type InjectionDecision,
  SIDECAR_SECURITY_CONTEXT,
  sidecarContainer,
} from '../../operator/webhook/injector.ts';
import { parseSidecarArgs, parseSidecarConfig, renderSidecarArgs } from '../../sidecar/flags.ts';

// The chart's sidecar.* values reach the injected container through the operator's --sidecar-* flags.

const endpoint: MtlsEndpoint = {
  apiVersion: 'mtls.operator.dev/v1alpha1',
  kind: 'MtlsEndpoint',
  metadata: { name: 'payments', namespace: 'team-a' },
  spec: { podSelector: { matchLabels: { app: 'payments' } }, upstreamPort: 8080 },
};

describe('the injected sidecar under the operator settings', () => {
  it('runs non-root as the image says, without a fixed user a restricted platform would refuse', () => {
    const container = sidecarContainer(endpoint, { image: 'i' });
    expect(container.securityContext).toEqual(SIDECAR_SECURITY_CONTEXT);
    expect(container.securityContext).toMatchObject({
      runAsNonRoot: true,
      runAsGroup: 0,
      readOnlyRootFilesystem: true,
    });
    expect(container.securityContext).not.toHaveProperty('runAsUser');
    expect(container.args).not.toContain('--log-format');
    expect(container.args).not.toContain('--log-level');
  });

  it('merges a security context over its own, and passes pull policy, log level and format', () => {
    const container = sidecarContainer(endpoint, {
      image: 'registry.example/sidecar@sha256:0',
      imagePullPolicy: 'Always',
      logLevel: 'debug',
      logFormat: 'text',
      securityContext: { runAsUser: 65532, readOnlyRootFilesystem: true },
    });
    expect(container.image).toBe('registry.example/sidecar@sha256:0');
    expect(container.imagePullPolicy).toBe('Always');
    expect(container.securityContext).toEqual({ ...SIDECAR_SECURITY_CONTEXT, runAsUser: 65532 });
    // As the sidecar's own flags, rendered from sidecar/flags.ts and read back by it.
    const config = parseSidecarConfig(container.args!.slice(1));
    expect([config.logLevel, config.logFormat]).toEqual(['debug', 'text']);
  });
});

describe('a pod sets its own sidecar log level', () => {
  const pod = (annotations: Record<string, string>): V1Pod => ({
    metadata: { name: 'p', namespace: 'team-a', labels: { app: 'payments' }, annotations },
    spec: { containers: [{ name: 'mock', image: 'x' }] },
  });
  const sidecarLogLevel = (decision: InjectionDecision) => {
    if (decision.action !== 'inject') throw new Error(`expected inject, got ${JSON.stringify(decision)}`);
    const op = decision.patch.find((p) => p.path === '/spec/initContainers')!;
    return parseSidecarConfig((op.value as V1Container[])[0]!.args!.slice(1)).logLevel;
  };

  it('over the operator setting, with mtls.operator.dev/sidecar-log-level', () => {
    const settings = { image: 'i', logLevel: 'info' };
    const annotated = pod({ [SIDECAR_LOG_LEVEL_ANNOTATION]: 'debug' });
    expect(sidecarLogLevel(decideInjection(annotated, [endpoint], settings))).toBe('debug');
    expect(sidecarLogLevel(decideInjection(pod({}), [endpoint], settings))).toBe('info');
  });

  it('is refused at admission, saying which levels exist, when it is not one', () => {
    expect(decideInjection(pod({ [SIDECAR_LOG_LEVEL_ANNOTATION]: 'loud' }), [endpoint], { image: 'i' })).toEqual({
      action: 'deny',
      message:
        'annotation mtls.operator.dev/sidecar-log-level: "loud" is not a sidecar log level; use one of error, warn, info, debug',
    });
  });
});

describe("the sidecar's --log-level and --log-format", () => {
  const base = { listen: [{ mode: 'strict' as const, port: 8443 }], upstream: '127.0.0.1:8080', tlsDir: '/tls' };

  it('round-trip through the flags the injector renders', () => {
    const args = renderSidecarArgs({ ...base, logLevel: 'warn', logFormat: 'text' });
    expect(args).toEqual(expect.arrayContaining(['--log-level', 'warn', '--log-format', 'text']));
    expect(parseSidecarArgs(args).config).toMatchObject({ logLevel: 'warn', logFormat: 'text' });
    expect(parseSidecarArgs(renderSidecarArgs(base)).config).toMatchObject({
      logLevel: undefined,
      logFormat: undefined,
    });
  });

  it('are refused, naming the valid values, when unknown', () => {
    expect(() => parseSidecarArgs([...renderSidecarArgs(base), '--log-level', 'loud'])).toThrow(
      '--log-level: "loud" is not one of error, warn, info, debug',
    );
    expect(() => parseSidecarArgs([...renderSidecarArgs(base), '--log-format', 'yaml'])).toThrow(
      '--log-format: "yaml" is not one of json, text',
    );
  });
});
