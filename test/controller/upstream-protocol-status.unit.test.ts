import type { V1Pod } from '@kubernetes/client-node';
import { SIDECAR_CONTAINER } from '../../operator/api/injection.ts';
import { trimPod } from '../../operator/controller/manager.ts';
import {
  observeUpstreamProtocol,
  planUpstreamProtocolStatus,
  upstreamProtocolFromAnswer,
} from '../../operator/controller/upstream-protocol-status.ts';

const selector = { matchLabels: { app: 'grpc-mock' } };

function pod(name: string, opts: { ready?: boolean; injected?: boolean; ip?: string; app?: string } = {}): V1Pod {
  const { ready = true, injected = true, ip = `10.0.0.${name.length}`, app = 'grpc-mock' } = opts;
  return {
    metadata: { name, labels: { app } },
    spec: {
      containers: [{ name: 'mock' }],
      initContainers: injected ? [{ name: SIDECAR_CONTAINER }] : [],
    },
    status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
  };
}

describe('status.upstreamProtocol (pure)', () => {
  it('is absent unless the spec asks for auto', () => {
    for (const requested of ['http1', 'h2c'] as const)
      expect(planUpstreamProtocolStatus({ requested, previous: undefined, pods: [pod('a')], selector })).toEqual({
        action: 'set',
        status: undefined,
        retry: false,
      });
  });

  it('asks the first ready, injected, selected pod (by name); says so when there is none', () => {
    const pods = [pod('c'), pod('b', { ready: false }), pod('a', { injected: false }), pod('d', { app: 'other' })];
    expect(planUpstreamProtocolStatus({ requested: 'auto', previous: undefined, pods, selector })).toEqual({
      action: 'ask',
      pod: 'c',
      ip: '10.0.0.1',
    });
    expect(
      planUpstreamProtocolStatus({ requested: 'auto', previous: undefined, pods: pods.slice(1), selector }),
    ).toMatchObject({ action: 'set', status: { detected: 'unknown', reason: 'no ready pod runs the sidecar yet' } });
  });

  it('keeps a finding while its pod is ready; asks again once that pod is gone or if nothing was known', () => {
    const previous = { requested: 'auto' as const, detected: 'h2c' as const, pod: 'a' };
    expect(planUpstreamProtocolStatus({ requested: 'auto', previous, pods: [pod('a'), pod('b')], selector })).toEqual({
      action: 'set',
      status: previous,
      retry: false,
    });
    expect(planUpstreamProtocolStatus({ requested: 'auto', previous, pods: [pod('b')], selector })).toMatchObject({
      action: 'ask',
      pod: 'b',
    });
    const unknown = { ...previous, detected: 'unknown' as const };
    expect(
      planUpstreamProtocolStatus({ requested: 'auto', previous: unknown, pods: [pod('a')], selector }),
    ).toMatchObject({ action: 'ask', pod: 'a' });
  });

  it("copies only known values from a sidecar's answer, and retries while it is unknown or unreadable", () => {
    const found = upstreamProtocolFromAnswer('a', {
      body: {
        ready: true,
        upstreamProtocol: {
          requested: 'auto',
          detected: 'h2c',
          reason: 'SETTINGS',
          probedAt: '2026-12-02T10:00:00.123Z',
          extra: 'x',
        },
      },
    });
    expect(found).toEqual({
      status: { requested: 'auto', detected: 'h2c', reason: 'SETTINGS', pod: 'a', probedAt: '2026-12-02T10:00:00Z' },
      retry: false,
    });
    expect(
      upstreamProtocolFromAnswer('a', { body: { upstreamProtocol: { requested: 'auto', detected: 'unknown' } } }).retry,
    ).toBe(true);
    const odd = upstreamProtocolFromAnswer('a', { body: { upstreamProtocol: { requested: 'auto', detected: 'h3' } } });
    expect(odd).toMatchObject({
      status: { detected: 'unknown', reason: expect.stringContaining('"h3"') },
      retry: true,
    });
    const old = upstreamProtocolFromAnswer('a', {
      body: { upstreamProtocol: { requested: 'http1', detected: 'http1' } },
    });
    expect(old.status).toMatchObject({
      detected: 'unknown',
      reason: expect.stringMatching(/^pod a's sidecar was started with --upstream-protocol http1: .* restart the pods/),
    });
    const older = upstreamProtocolFromAnswer('a', { body: { ready: true } });
    expect(older.status.reason).toContain('does not report upstreamProtocol (an older sidecar)');
    const down = upstreamProtocolFromAnswer('a', { error: '10.0.0.1:15201: ECONNREFUSED' });
    expect(down).toEqual({
      status: {
        requested: 'auto',
        detected: 'unknown',
        pod: 'a',
        reason: "the sidecar's /status could not be read: 10.0.0.1:15201: ECONNREFUSED",
      },
      retry: true,
    });
    const long = upstreamProtocolFromAnswer('a', {
      body: { upstreamProtocol: { requested: 'auto', detected: 'http1', reason: 'x'.repeat(5000) } },
    });
    expect(long.status.reason).toHaveLength(512);
  });

  it('reads the chosen pod on the admin port, once', async () => {
    const asked: string[] = [];
    const result = await observeUpstreamProtocol(
      { requested: 'auto', previous: undefined, pods: [pod('a', { ip: '10.1.2.3' })], selector },
      15201,
      async (ip, port) => {
        asked.push(`${ip}:${port}`);
        return { body: { upstreamProtocol: { requested: 'auto', detected: 'http1' } } };
      },
    );
    expect(asked).toEqual(['10.1.2.3:15201']);
    expect(result).toEqual({ status: { requested: 'auto', detected: 'http1', pod: 'a' }, retry: false });
  });
});

describe('the pod cache keeps what choosing a ready pod needs, and little more', () => {
  it('keeps phase, pod IP and the Ready condition (status only), drops the rest of the status', () => {
    const full: V1Pod = {
      metadata: { name: 'a', labels: { app: 'grpc-mock' }, annotations: { big: 'x'.repeat(1000) } },
      spec: { containers: [{ name: 'mock', image: 'mock', env: [{ name: 'A', value: 'b' }] }] },
      status: {
        phase: 'Running',
        podIP: '10.0.0.7',
        podIPs: [{ ip: '10.0.0.7' }],
        hostIP: '192.168.0.2',
        conditions: [
          { type: 'PodScheduled', status: 'True' },
          { type: 'Ready', status: 'True', lastTransitionTime: new Date(0), message: 'm' },
        ],
        containerStatuses: [],
      },
    };
    trimPod(full);
    expect(full.status).toEqual({
      phase: 'Running',
      podIP: '10.0.0.7',
      conditions: [{ type: 'Ready', status: 'True' }],
    });
    expect(full.spec).toEqual({ containers: [{ name: 'mock' }], initContainers: undefined });
  });
});
