import { RENEW_BEFORE_FLOOR } from '../api/defaults.ts';
import {
  type CaRolloverStatus,
  type CertificateStatus,
  type Condition,
  type ConditionType,
  type Listener,
  modesSummary,
  type MtlsEndpointStatus,
  type UpstreamProtocolStatus,
} from '../api/types.ts';
import type { CertInfo } from '../pki/certs.ts';
import type { RolloverPhase } from './ca-state.ts';

export type DesiredCondition = Omit<Condition, 'lastTransitionTime'> & { type: ConditionType };

/** Everything a pass learned that the status reports. */
export interface StatusInput {
  generation?: number;
  ca: CertInfo;
  server?: CertInfo & { secretName: string };
  clients: (CertInfo & { name: string; secretName: string })[];
  wantedClients: number;
  rollover?: { phase: RolloverPhase; since: Date; newCaSerial: string };
  degraded: readonly { reason: string; message: string }[];
  renewBeforeTooShort?: string;
  revokedSerials: string[];
  injectedPods: number;
  networkPolicy: string;
  listeners: readonly Listener[];
  /** spec.upstreamProtocol auto: what a sidecar found (upstream-protocol-status.ts); undefined otherwise. */
  upstreamProtocol?: UpstreamProtocolStatus;
}

export interface EndpointConditions {
  issued: DesiredCondition;
  caRollover: DesiredCondition;
  degraded: DesiredCondition;
  ready: DesiredCondition;
  renewBeforeTooShort: DesiredCondition;
}

const iso = (d: Date) => d.toISOString().replace(/\.\d+Z$/, 'Z');

export function endpointConditions(input: StatusInput): EndpointConditions {
  const condition = (type: ConditionType, status: Condition['status'], reason: string, message: string) => ({
    type,
    status,
    reason,
    message,
    observedGeneration: input.generation,
  });
  const issued = input.clients.length === input.wantedClients && !!input.server;
  return {
    issued: issued
      ? condition(
          'Issued',
          'True',
          'Issued',
          `CA, server and ${input.clients.length} client certificate(s) are issued and valid`,
        )
      : condition('Issued', 'False', 'Issuing', 'Certificates are being issued'),
    caRollover: rolloverCondition(input, condition),
    degraded: input.degraded[0]
      ? condition('Degraded', 'True', input.degraded[0].reason, input.degraded.map((d) => d.message).join(' '))
      : condition('Degraded', 'False', 'AsExpected', 'Nothing is degraded'),
    ready: issued
      ? condition('Ready', 'True', 'Ready', 'Certificates are issued and the Services are in place')
      : condition('Ready', 'False', 'Issuing', 'Certificates are being issued'),
    // A warning, not a refusal: the endpoint works, but a renewal may reach the pods after expiry.
    renewBeforeTooShort: input.renewBeforeTooShort
      ? condition('RenewBeforeTooShort', 'True', 'BelowKubeletSecretDelay', input.renewBeforeTooShort)
      : condition(
          'RenewBeforeTooShort',
          'False',
          'AsExpected',
          `Certificates renew at least ${RENEW_BEFORE_FLOOR} before they expire, time for kubelet to deliver them`,
        ),
  };
}

function rolloverCondition(
  input: StatusInput,
  condition: (type: ConditionType, status: Condition['status'], reason: string, message: string) => DesiredCondition,
): DesiredCondition {
  switch (input.rollover?.phase) {
    case 'Propagating':
      return condition(
        'CARollover',
        'True',
        'NewCAPropagating',
        'A new CA is in every trust bundle; certificates move to it once it has propagated',
      );
    case 'Retiring':
      return condition(
        'CARollover',
        'True',
        'OldCARetiring',
        'Certificates are signed by the new CA; the old CA stays trusted until they have propagated and the client certificates it signed have expired',
      );
    default:
      return condition('CARollover', 'False', 'NoRollover', `The CA renews at ${iso(input.ca.renewalTime)}`);
  }
}

/** The order conditions are listed in when first written (later writes keep the stored order). */
export const conditionList = (c: EndpointConditions): DesiredCondition[] => [
  c.issued,
  c.caRollover,
  c.degraded,
  c.ready,
  c.renewBeforeTooShort,
];

/** The status fields besides conditions; `undefined` means "remove the field". */
export function endpointStatusFields(
  input: StatusInput,
): Omit<MtlsEndpointStatus, 'conditions' | 'observedGeneration'> {
  const certificate = (c: CertInfo & { secretName?: string }): CertificateStatus => ({
    ...(c.secretName ? { secretName: c.secretName } : {}),
    serialNumber: c.serialNumber,
    notAfter: iso(c.notAfter),
    renewalTime: iso(c.renewalTime),
  });
  const caRollover: CaRolloverStatus | undefined = input.rollover && {
    phase: input.rollover.phase,
    newCASerialNumber: input.rollover.newCaSerial,
    startedAt: iso(input.rollover.since),
  };
  return {
    ca: { ...certificate(input.ca), notBefore: iso(input.ca.notBefore) },
    server: input.server && certificate(input.server),
    clients: input.clients.map((c) => ({ name: c.name, ...certificate(c) })),
    revokedSerials: input.revokedSerials,
    injectedPods: input.injectedPods,
    networkPolicy: input.networkPolicy,
    modes: modesSummary(input.listeners),
    caRollover,
    upstreamProtocol: input.upstreamProtocol,
  };
}
