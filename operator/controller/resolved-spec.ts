import { SIDECAR_ADMIN_PORT } from '../api/injection.ts';
import type { V1LabelSelector } from '@kubernetes/client-node';
import type { Listener, MtlsEndpoint, NetworkPolicyMode, TestListener, UpstreamProtocol } from '../api/types.ts';
import {
  applyDefaults,
  DEFAULT_PASSWORD_SECRET_KEY,
  DEFAULT_PKCS12_PROFILE,
  DEFAULT_TRUST_DOMAIN,
  RENEW_BEFORE_FLOOR,
  renewBeforeMs,
} from '../api/defaults.ts';
import { formatDuration, parseDuration } from '../api/duration.ts';
import type { KeyAlgorithm } from '../api/types.ts';
import type { Pkcs12Request } from './keystores.ts';

/** A spec with every default applied and every duration in milliseconds: what reconcile works from. */
export interface ResolvedSpec {
  listeners: Listener[];
  upstreamPort: number;
  upstreamProtocol: UpstreamProtocol;
  proxyProtocol: boolean;
  dnsNames: string[];
  clients: string[];
  validityMs: number;
  renewBeforeMs?: number;
  caValidityMs: number;
  keyAlgorithm: KeyAlgorithm;
  trustDomain: string;
  /** Absent: no pod is injected. */
  podSelector?: V1LabelSelector;
  /** The selector as a Service can say it: matchLabels only, absent when it uses matchExpressions. */
  podSelectorLabels?: Record<string, string>;
  networkPolicy: NetworkPolicyMode;
  /** The injected sidecar's admin port, which the NetworkPolicy admits (health probes, metrics). */
  sidecarAdminPort: number;
  /** The PKCS#12 keystores each client asked for (create: true), by client name. */
  pkcs12: Record<string, Pkcs12Request>;
  /** spec.testListeners: the bad listeners (empty: none, and no test-servers Secret). */
  testListeners: TestListener[];
}

/** A spec the API server accepted but the controller cannot act on; the message says what to change. */
export class SpecError extends Error {}

const MIN_VALIDITY_MS = 10_000;

/**
 * How much longer than the propagation delay a CA must live: a rollover starts when `caRenewBefore` is left
 * (at most half the CA's life), the new CA propagates for one delay, then the old one must stay trusted for
 * another while the re-issued leaves spread. Two delays within half the life: four delays in all.
 */
export const MIN_CA_VALIDITY_PROPAGATION_DELAYS = 4;

export interface ResolveOptions {
  /** The operator's --ca-propagation-delay; when given, a CA too short-lived for a rollover is refused. */
  caPropagationDelayMs?: number;
  /** The injected sidecar's admin port (--sidecar-admin-port); SIDECAR_ADMIN_PORT when not given. */
  sidecarAdminPort?: number;
}

export function resolveSpec(ep: MtlsEndpoint, options: ResolveOptions = {}): ResolvedSpec {
  const spec = applyDefaults(ep.spec);
  const duration = (field: string, value: string): number => {
    try {
      return parseDuration(value);
    } catch {
      throw new SpecError(`spec.certificates.${field}: "${value}" is not a duration such as 8760h or 90m`);
    }
  };
  const validityMs = duration('validity', spec.certificates.validity);
  const caValidityMs = duration('caValidity', spec.certificates.caValidity);
  const renewBeforeMs = spec.certificates.renewBefore
    ? duration('renewBefore', spec.certificates.renewBefore)
    : undefined;
  if (validityMs < MIN_VALIDITY_MS) {
    throw new SpecError(`spec.certificates.validity: ${spec.certificates.validity} is too short; use at least 10s`);
  }
  if (renewBeforeMs !== undefined && renewBeforeMs >= validityMs) {
    throw new SpecError(
      `spec.certificates.renewBefore (${spec.certificates.renewBefore}) must be shorter than spec.certificates.validity (${spec.certificates.validity})`,
    );
  }
  if (caValidityMs <= validityMs) {
    throw new SpecError(
      `spec.certificates.caValidity (${spec.certificates.caValidity}) must be longer than spec.certificates.validity (${spec.certificates.validity}), or leaves would be cut short by their CA`,
    );
  }
  const delay = options.caPropagationDelayMs;
  if (delay !== undefined && delay > 0 && caValidityMs < MIN_CA_VALIDITY_PROPAGATION_DELAYS * delay) {
    // Issuing anyway would replace the CA abruptly when it expires (every client's ca.crt stops working), over
    // and over: the rollover that keeps clients working cannot fit in its life.
    throw new SpecError(
      `spec.certificates.caValidity (${spec.certificates.caValidity}) is too short for a CA rollover: the operator ` +
        `trusts a new CA for ${formatDuration(delay)} (--ca-propagation-delay) before it signs, and the old one as long ` +
        `after, so a CA must live at least ${formatDuration(MIN_CA_VALIDITY_PROPAGATION_DELAYS * delay)}; ` +
        `set a longer caValidity (or run the operator with a shorter --ca-propagation-delay)`,
    );
  }
  const adminPort = options.sidecarAdminPort ?? SIDECAR_ADMIN_PORT;
  for (const [field, port] of [
    ...spec.listeners.map((l, i) => [`spec.listeners[${i}].port`, l.port] as const),
    ['spec.upstreamPort', spec.upstreamPort] as const,
    ...(spec.testListeners ?? []).map((l, i) => [`spec.testListeners[${i}].port`, l.port] as const),
  ]) {
    if (port === adminPort) {
      throw new SpecError(
        `${field}: ${port} is the sidecar's admin port (health and metrics; the operator's --sidecar-admin-port, chart value sidecar.adminPort); choose another port`,
      );
    }
  }
  const selector = spec.podSelector ?? {};
  return {
    listeners: spec.listeners,
    upstreamPort: spec.upstreamPort,
    upstreamProtocol: spec.upstreamProtocol,
    proxyProtocol: spec.proxyProtocol,
    dnsNames: spec.dnsNames ?? [],
    clients: (spec.clients ?? []).map((client) => client.name),
    validityMs,
    renewBeforeMs,
    caValidityMs,
    keyAlgorithm: spec.certificates.keyAlgorithm as KeyAlgorithm,
    trustDomain: DEFAULT_TRUST_DOMAIN,
    podSelector: spec.podSelector,
    podSelectorLabels: selector.matchExpressions?.length ? undefined : (selector.matchLabels ?? {}),
    networkPolicy: spec.networkPolicy,
    sidecarAdminPort: adminPort,
    testListeners: spec.testListeners ?? [],
    pkcs12: Object.fromEntries(
      spec.clients.flatMap(({ name, keystores }) =>
        keystores?.pkcs12?.create
          ? [
              [
                name,
                {
                  passwordSecret: keystores.pkcs12.passwordSecretRef.name,
                  passwordKey: keystores.pkcs12.passwordSecretRef.key ?? DEFAULT_PASSWORD_SECRET_KEY,
                  profile: keystores.pkcs12.profile ?? DEFAULT_PKCS12_PROFILE,
                },
              ],
            ]
          : [],
      ),
    ),
  };
}

/**
 * Why the renewBefore that server and client certificates get is below `RENEW_BEFORE_FLOOR`, naming the
 * field that sets it, or undefined. (A leaf cut short by its CA's expiry renews a third of its shorter life
 * before; the CA rollover keeps that case rare and brief, so only the spec is judged.)
 */
export function renewBeforeTooShort(ep: MtlsEndpoint, spec: ResolvedSpec): string | undefined {
  const floorMs = parseDuration(RENEW_BEFORE_FLOOR);
  const effectiveMs = renewBeforeMs(spec.validityMs, spec.renewBeforeMs);
  if (effectiveMs >= floorMs) return undefined;
  const certificates = applyDefaults(ep.spec).certificates;
  const setBy =
    spec.renewBeforeMs !== undefined
      ? `spec.certificates.renewBefore (${certificates.renewBefore})`
      : `spec.certificates.validity (${certificates.validity}) with an empty renewBefore (a third of it, ${formatDuration(effectiveMs)})`;
  return (
    `${setBy} renews the server and client certificates less than ${RENEW_BEFORE_FLOOR} before they expire. ` +
    `kubelet delivers a renewed Secret into a pod's volume up to 60-90s after the change (its syncFrequency, 1m ` +
    `by default, plus its Secret cache), so the sidecar may serve, and clients hold, a certificate that expires ` +
    `before its successor arrives. Set spec.certificates.renewBefore to at least ${RENEW_BEFORE_FLOOR}` +
    (spec.validityMs <= floorMs ? `, with a validity longer than that.` : '.')
  );
}
