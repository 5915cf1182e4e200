import type { V1LabelSelector, V1Pod } from '@kubernetes/client-node';
import { sidecarContainerOf } from '../api/injection.ts';
import type { UpstreamProtocolStatus } from '../api/types.ts';
import type { UpstreamProtocol } from '../../sidecar/flags.ts';
import { selectedPods } from './injected-pods.ts';

/**
 * status.upstreamProtocol for `spec.upstreamProtocol: auto`. Each sidecar probes its own upstream
 * (sidecar/upstream-protocol.ts) and serves what it found on its admin port's /status; the operator reads that
 * from one ready injected pod and copies it here. Why this way (docs/DESIGN.md, D19): the admin port is
 * already open to the pod network (kubelet's probes, Prometheus; the endpoint's NetworkPolicy admits it), so no
 * new RBAC and no API token in the sidecar; the operator cannot probe the upstream itself (the NetworkPolicy
 * closes that port, by design); pods/proxy would need a permission that reaches every port of every pod.
 * A finding is kept while the pod it came from is ready; then another pod is asked (a new rollout may run an
 * upstream that speaks otherwise).
 */

/** How long the operator waits for a sidecar's /status, and how much of it it reads. */
export const SIDECAR_STATUS_TIMEOUT_MS = 2_000;
export const SIDECAR_STATUS_MAX_BYTES = 4 * 1024;
/** While nothing is known (no pod ready, the probe not answered yet, /status unreachable), ask again after this. */
export const UNKNOWN_RETRY_MS = 30_000;
const MAX_REASON = 512;

/** What the reconciler does about status.upstreamProtocol this pass (pure). */
export type UpstreamProtocolPlan =
  | { action: 'set'; status: UpstreamProtocolStatus | undefined; retry: boolean }
  | { action: 'ask'; pod: string; ip: string };

const isReady = (pod: V1Pod) =>
  !!pod.status?.podIP &&
  pod.status.phase === 'Running' &&
  !!pod.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');

export function planUpstreamProtocolStatus(input: {
  requested: UpstreamProtocol;
  previous: UpstreamProtocolStatus | undefined;
  pods: readonly V1Pod[];
  selector: V1LabelSelector | undefined;
}): UpstreamProtocolPlan {
  if (input.requested !== 'auto') return { action: 'set', status: undefined, retry: false };
  const ready = selectedPods(input.pods, input.selector)
    .filter((pod) => isReady(pod) && !!sidecarContainerOf(pod))
    .sort((a, b) => a.metadata!.name!.localeCompare(b.metadata!.name!));
  const { previous } = input;
  if (previous && previous.detected !== 'unknown' && ready.some((pod) => pod.metadata!.name === previous.pod))
    return { action: 'set', status: previous, retry: false };
  const pod = ready[0];
  if (!pod) {
    const status: UpstreamProtocolStatus = {
      requested: 'auto',
      detected: 'unknown',
      reason: 'no ready pod runs the sidecar yet',
    };
    // A pod becoming ready is a pod update: the controller looks again then, no timer needed.
    return { action: 'set', status, retry: false };
  }
  return { action: 'ask', pod: pod.metadata!.name!, ip: pod.status!.podIP! };
}

/**
 * The status from what a sidecar's /status answered (pure): its finding, checked field by field (the answer comes
 * from a pod, not from the operator: only the known values and a bounded reason are copied), or why it could not
 * be read.
 */
export function upstreamProtocolFromAnswer(
  pod: string,
  answer: { body: unknown } | { error: string },
): { status: UpstreamProtocolStatus; retry: boolean } {
  const unknown = (reason: string) => ({
    status: { requested: 'auto' as const, detected: 'unknown' as const, reason: reason.slice(0, MAX_REASON), pod },
    retry: true,
  });
  if ('error' in answer) return unknown(`the sidecar's /status could not be read: ${answer.error}`);
  const finding = (answer.body as { upstreamProtocol?: Record<string, unknown> } | null)?.upstreamProtocol;
  if (!finding || finding.requested !== 'auto') {
    const started =
      typeof finding?.requested === 'string'
        ? `was started with --upstream-protocol ${finding.requested.slice(0, 16)}`
        : 'does not report upstreamProtocol (an older sidecar)';
    return unknown(
      `pod ${pod}'s sidecar ${started}: it was injected before spec.upstreamProtocol became auto; restart the pods (e.g. kubectl rollout restart deployment/<name>)`,
    );
  }
  const detected = finding.detected;
  if (detected !== 'http1' && detected !== 'h2c' && detected !== 'unknown')
    return unknown(`the sidecar reported an unexpected protocol ${JSON.stringify(detected).slice(0, 40)}`);
  const probedAt =
    typeof finding.probedAt === 'string' && !Number.isNaN(Date.parse(finding.probedAt))
      ? new Date(finding.probedAt).toISOString().replace(/\.\d+Z$/, 'Z')
      : undefined;
  const reason = typeof finding.reason === 'string' ? finding.reason.slice(0, MAX_REASON) : undefined;
  return {
    status: { requested: 'auto', detected, pod, ...(reason ? { reason } : {}), ...(probedAt ? { probedAt } : {}) },
    retry: detected === 'unknown',
  };
}

/** Reads http://ip:port/status from a sidecar, bounded in time and size; never rejects. */
export async function readSidecarStatus(ip: string, port: number): Promise<{ body: unknown } | { error: string }> {
  const host = ip.includes(':') ? `[${ip}]` : ip;
  try {
    const res = await fetch(`http://${host}:${port}/status`, {
      signal: AbortSignal.timeout(SIDECAR_STATUS_TIMEOUT_MS),
      redirect: 'error',
    });
    if (res.status !== 200 || !res.body) {
      await res.body?.cancel();
      return { error: `HTTP ${res.status} from ${host}:${port}` };
    }
    // Read up to the limit and no further: the answer comes from a pod.
    const chunks: Uint8Array[] = [];
    let size = 0;
    const reader = res.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > SIDECAR_STATUS_MAX_BYTES) {
        await reader.cancel().catch(() => undefined);
        return { error: `answer larger than ${SIDECAR_STATUS_MAX_BYTES} bytes from ${host}:${port}` };
      }
      chunks.push(value);
    }
    return { body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown };
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code;
    return { error: `${host}:${port}: ${cause ?? (err as Error).message}` };
  }
}

/** The pass's status.upstreamProtocol and when to look again: the plan, with the one read it may need. */
export async function observeUpstreamProtocol(
  input: Parameters<typeof planUpstreamProtocolStatus>[0],
  adminPort: number,
  read: (ip: string, port: number) => Promise<{ body: unknown } | { error: string }> = readSidecarStatus,
): Promise<{ status: UpstreamProtocolStatus | undefined; retry: boolean }> {
  const plan = planUpstreamProtocolStatus(input);
  if (plan.action === 'set') return plan;
  return upstreamProtocolFromAnswer(plan.pod, await read(plan.ip, adminPort));
}
