import type { V1NetworkPolicy, V1Pod, V1Secret, V1Service } from '@kubernetes/client-node';
import { createHash } from 'node:crypto';
import {
  caSecretName,
  clientSecretName,
  ENDPOINT_LABEL,
  ENDPOINT_RESOURCE,
  INJECT_ANNOTATION,
  INJECTION_NAMESPACE_LABEL,
  modesSummary,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  type MtlsEndpoint,
  serverSecretName,
  serviceName,
} from '../api/types.ts';
import { RENEW_BEFORE_FLOOR } from '../api/defaults.ts';
import type { EventRecorder, EventType } from '../kube/events.ts';
import { isConflict, isNotFound } from '../kube/errors.ts';
import { selectorMatches } from '../kube/selectors.ts';
import { listenerPortName, SIDECAR_ADMIN_PORT, sidecarContainerOf } from '../api/injection.ts';
import { errorMessage, type Logger, logger } from '../log.ts';
import type { CertificateLabels, ConditionStatus, OperatorMetrics } from '../metrics.ts';
import { parseCertificates } from '../pki/x509.ts';
import {
  type CaState,
  caSecretContent,
  type PemPair,
  readCaSecret,
  type RevokedEntry,
  trustBundle,
  trustedCas,
} from './ca-state.ts';
import { issueCRL } from '../pki/crl-issuer.ts';
import { clientSpiffeId, issueCA, issueClient, issueServer } from '../pki/issue.ts';
import {
  bundleProblem,
  type CertInfo,
  certInfo,
  identityProblem,
  issuedBy,
  type LeafIdentity,
  pairProblem,
  parseCrls,
} from './certs.ts';
import { type Condition, setCondition } from './conditions.ts';
import { type KubeWriter, ownerReference } from './kube-writer.ts';
import { KEYSTORE_PASSWORD_RETRY_MS, type KeystoreContent, keystorePassword, pkcs12Content } from './keystores.ts';
import { desiredNetworkPolicy, sameNetworkPolicySpec } from './network-policy.ts';
import { renewBeforeTooShort, type ResolvedSpec, resolveSpec, SpecError } from './resolved-spec.ts';
import type { ReconcileResult } from './run-workers.ts';

export const CERTIFICATE_LABEL = 'mtls.operator.dev/certificate';
export const CLIENT_LABEL = 'mtls.operator.dev/client';
export const ISSUANCE_HASH_ANNOTATION = 'mtls.operator.dev/issuance-hash';
export const PREVIOUS_SERIALS_ANNOTATION = 'mtls.operator.dev/previous-serials';
const CRL_VALIDITY_MS = 7 * 24 * 3_600_000;

/** Read access to the informer caches. */
export interface ClusterView {
  endpoint(namespace: string, name: string): MtlsEndpoint | undefined;
  secret(namespace: string, name: string): V1Secret | undefined;
  secretsOf(namespace: string, endpoint: string): readonly V1Secret[];
  servicesOf(namespace: string, endpoint: string): readonly V1Service[];
  networkPoliciesOf(namespace: string, endpoint: string): readonly V1NetworkPolicy[];
  pods(namespace: string): readonly V1Pod[];
}

export interface ReconcilerDeps {
  view: ClusterView;
  writer: KubeWriter;
  events: EventRecorder;
  metrics: OperatorMetrics;
  now: () => Date;
  /** How long a new CA sits in every trust bundle before anything is signed by it, and how long the old CA
   * stays after the leaves moved on: time for kubelet to refresh Secret volumes and for clients to re-read. */
  caPropagationDelayMs: number;
  /** Longest wait before looking at an endpoint again when nothing happens. */
  resyncMs: number;
  /** The injected sidecar's admin port: no listener or upstream may use it. */
  sidecarAdminPort?: number;
  /** Reads a Secret the operator does not own (a keystore password) from the API server; undefined on 404. */
  readSecret: (namespace: string, name: string) => Promise<V1Secret | undefined>;
}

interface Note {
  type: EventType;
  reason: string;
  message: string;
}

/** What one reconcile found and did; status is computed from it at the end. */
interface Run {
  ep: MtlsEndpoint;
  namespace: string;
  name: string;
  spec: ResolvedSpec;
  now: Date;
  ca?: CertInfo;
  server?: CertInfo & { secretName: string };
  clients: (CertInfo & { name: string; secretName: string })[];
  wakeAt: number[];
  notes: Note[];
  /** Problems that leave the endpoint working but not fully: Degraded=True, an Event when they change. */
  degraded: { reason: string; message: string }[];
  /** Set when the leaves renew too close to expiry for kubelet to deliver them: RenewBeforeTooShort=True. */
  renewBeforeTooShort?: string;
  injectedPods: number;
  /** The NetworkPolicy in force for the endpoint's pods (its name), or None. */
  networkPolicy: string;
  leavesOnOldCa: number;
  /** Client certificates replaced at a renewal or re-issue but still valid: their holders may present them. */
  replacedClientCerts: Omit<RevokedEntry, 'client' | 'revokedAt'>[];
}

type SecretData = Record<string, string>;
const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (secret: V1Secret | undefined, key: string) => {
  const value = secret?.data?.[key];
  return value === undefined ? undefined : Buffer.from(value, 'base64').toString('utf8');
};

/**
 * Brings one MtlsEndpoint's Secrets, Services and status to what its spec asks for. Level-triggered: it
 * looks only at what is in the cluster now, so any number of runs, or a run after a crash at any point,
 * converges on the same state, and a run with nothing to do writes nothing.
 */
export class EndpointReconciler {
  private readonly log: Logger = logger('controller');
  private readonly deps: ReconcilerDeps;
  /** The RenewBeforeTooShort message last recorded as an Event, by namespace/name: the status in the cache
   * can lag the write that reported it, and the warning must not be repeated for that. */
  private readonly renewBeforeWarned = new Map<string, string>();

  constructor(deps: ReconcilerDeps) {
    this.deps = deps;
  }

  async reconcile(key: string): Promise<ReconcileResult> {
    const [namespace, name] = key.split('/') as [string, string];
    const ep = this.deps.view.endpoint(namespace, name);
    if (!ep || ep.metadata?.deletionTimestamp) {
      // Its Secrets and Services carry ownerReferences: the garbage collector removes them.
      this.deps.metrics.forgetEndpoint(namespace, name);
      this.renewBeforeWarned.delete(key);
      return {};
    }
    // What the API server says now, until this reconcile writes its own (Unknown before the first).
    this.deps.metrics.setEndpointReady(namespace, name, readyStatus(ep.status?.conditions));
    const stopTimer = this.deps.metrics.reconcileDuration.startTimer();
    try {
      return await this.reconcileEndpoint(ep, namespace, name);
    } catch (err) {
      // 409 and 404 on a write mean the cache was behind: retry on fresh data, nothing to report.
      const stale = isConflict(err) || isNotFound(err);
      this.deps.metrics.reconciles.inc({ result: stale ? 'conflict' : 'error' });
      if (!stale) await this.reportFailure(ep, err);
      throw err;
    } finally {
      stopTimer();
    }
  }

  private async reconcileEndpoint(ep: MtlsEndpoint, namespace: string, name: string): Promise<ReconcileResult> {
    const now = this.deps.now();
    let spec: ResolvedSpec;
    try {
      spec = resolveSpec(ep, {
        caPropagationDelayMs: this.deps.caPropagationDelayMs,
        sidecarAdminPort: this.deps.sidecarAdminPort,
      });
    } catch (err) {
      if (!(err instanceof SpecError)) throw err;
      await this.writeStatus(ep, (conditions) =>
        setCondition(
          conditions,
          {
            type: 'Ready',
            status: 'False',
            reason: 'InvalidSpec',
            message: err.message,
            observedGeneration: ep.metadata?.generation,
          },
          now,
        ),
      );
      this.deps.metrics.reconciles.inc({ result: 'invalid' });
      return {};
    }
    const run: Run = {
      ep,
      namespace,
      name,
      spec,
      now,
      clients: [],
      wakeAt: [],
      notes: [],
      degraded: [],
      renewBeforeTooShort: renewBeforeTooShort(ep, spec),
      injectedPods: 0,
      networkPolicy: 'None',
      leavesOnOldCa: 0,
      replacedClientCerts: [],
    };
    const ca = await this.ensureCa(run);
    await this.revokeRemovedClients(run, ca);
    const crl = await this.ensureCrl(run, ca);
    await this.ensureLeaf(run, ca, { kind: 'server', crl });
    for (const client of spec.clients) await this.ensureLeaf(run, ca, { kind: 'client', client });
    await this.retireOldCa(run, ca);
    await this.ensureServices(run);
    await this.ensureNetworkPolicy(run);
    this.reportPods(run);
    for (const note of run.notes) {
      this.log[note.type === 'Warning' ? 'warn' : 'info'](note.message, {
        endpoint: `${namespace}/${name}`,
        reason: note.reason,
      });
    }
    // Recorded side by side (one round trip, not one per note), and before the status that reports them.
    await Promise.all(run.notes.map((note) => this.deps.events.record(ep, note.type, note.reason, note.message)));
    await this.writeRunStatus(run, ca);
    this.recordMetrics(run);
    this.deps.metrics.reconciles.inc({ result: 'success' });
    const nowMs = now.getTime();
    const wake = Math.min(...run.wakeAt, nowMs + this.deps.resyncMs);
    return { requeueAfterMs: Math.max(wake - nowMs, 500) };
  }

  // ---- CA and rollover -------------------------------------------------------------------------------

  private issueCa(run: Run): Promise<PemPair> {
    return issueCA({
      endpoint: run.name,
      namespace: run.namespace,
      algorithm: run.spec.keyAlgorithm,
      validityMs: run.spec.caValidityMs,
      now: run.now,
    });
  }

  private async ensureCa(run: Run): Promise<CaState> {
    const secretName = caSecretName(run.name);
    const existing = this.deps.view.secret(run.namespace, secretName);
    const read = existing ? readCaSecret(existing) : undefined;
    const usable = async (pair: PemPair | undefined) =>
      pair && !(await pairProblem(pair, run.now, { isCA: true })) ? pair : undefined;

    let state: CaState;
    const problem = read?.current
      ? await pairProblem(read.current, run.now, { isCA: true })
      : 'ca.crt or ca.key is missing';
    if (!existing || problem) {
      state = { current: await this.issueCa(run), revoked: read?.revoked ?? [] };
      this.deps.metrics.issued.inc({ certificate: 'ca' });
      if (!existing && !run.ep.status?.ca?.serialNumber) {
        run.notes.push({
          type: 'Normal',
          reason: 'CAIssued',
          message: `Issued the endpoint CA into Secret ${secretName}`,
        });
      } else {
        run.notes.push({
          type: 'Warning',
          reason: 'CARepaired',
          message: `Secret ${secretName}: ${existing ? problem : 'was deleted'}; issued a new CA, every certificate is re-issued under it`,
        });
      }
    } else {
      state = {
        current: read!.current!,
        next: await usable(read!.next),
        previous: await usable(read!.previous),
        phase: read!.phase,
        phaseSince: read!.phaseSince,
        revoked: read!.revoked,
      };
      if (read!.ledgerProblem) {
        run.notes.push({
          type: 'Warning',
          reason: 'CARepaired',
          message: `Secret ${secretName}: ${read!.ledgerProblem}; rebuilt it from the CRL`,
        });
        state.revoked = this.revokedFromCrl(run, state);
      }
      await this.advanceRollover(run, state);
    }
    // A phase whose CA is gone (a hand-edited Secret) falls back to no rollover.
    if ((state.phase === 'Propagating' && !state.next) || (state.phase === 'Retiring' && !state.previous))
      state.phase = undefined;
    if (!state.phase) Object.assign(state, { phaseSince: undefined, next: undefined, previous: undefined });

    await this.writeCaState(run, state, existing);
    run.ca = certInfo(state.current.certPem, this.caRenewBeforeMs(run.spec));
    run.wakeAt.push(run.ca.renewalTime.getTime());
    if (state.phaseSince) run.wakeAt.push(state.phaseSince.getTime() + this.deps.caPropagationDelayMs);
    return state;
  }

  /** Writes the CA Secret for `state` (a no-op when it already holds exactly that). */
  private async writeCaState(run: Run, state: CaState, existing?: V1Secret): Promise<void> {
    const secretName = caSecretName(run.name);
    const content = caSecretContent(state);
    await this.applySecret(
      run,
      existing ?? this.deps.view.secret(run.namespace, secretName),
      secretName,
      'Opaque',
      content.data,
      { [CERTIFICATE_LABEL]: 'ca' },
      content.annotations,
    );
  }

  private caRenewBeforeMs(spec: ResolvedSpec): number {
    // The CA renews at two thirds of its life, and always early enough for one full leaf lifetime after it.
    return Math.max(
      spec.caValidityMs / 3,
      Math.min(spec.validityMs + 2 * this.deps.caPropagationDelayMs, spec.caValidityMs / 2),
    );
  }

  /** Starts a rollover at the CA's renewal time; promotes the new CA once it has propagated. */
  private async advanceRollover(run: Run, state: CaState): Promise<void> {
    const renewal = certInfo(state.current.certPem, this.caRenewBeforeMs(run.spec)).renewalTime;
    const propagated =
      state.phaseSince && run.now.getTime() >= state.phaseSince.getTime() + this.deps.caPropagationDelayMs;
    if (!state.phase && run.now >= renewal) {
      state.next = await this.issueCa(run);
      state.phase = 'Propagating';
      state.phaseSince = run.now;
      this.deps.metrics.issued.inc({ certificate: 'ca' });
      run.notes.push({
        type: 'Normal',
        reason: 'CARolloverStarted',
        message: `The CA is due for renewal: a new CA joins every trust bundle now and starts signing in ${this.deps.caPropagationDelayMs / 1000}s`,
      });
    } else if (state.phase === 'Propagating' && propagated && state.next) {
      state.previous = state.current;
      state.current = state.next;
      state.next = undefined;
      state.phase = 'Retiring';
      state.phaseSince = run.now;
      run.notes.push({
        type: 'Normal',
        reason: 'CARolledOver',
        message: 'The new CA now signs; every certificate is re-issued under it',
      });
    }
  }

  /**
   * Drops the old CA from the bundles once every leaf is signed by the new one and has had time to spread,
   * and once every client certificate the old CA signed has expired: a replaced client certificate that was
   * not revoked is still a valid credential of this endpoint (docs/DESIGN.md's mode table), and a client that has
   * not re-read its Secret yet presents it. (Leaves never outlive their CA, so this ends by the old CA's expiry.)
   */
  private async retireOldCa(run: Run, state: CaState): Promise<void> {
    if (state.phase !== 'Retiring' || !state.phaseSince) return;
    const propagated = run.now.getTime() >= state.phaseSince.getTime() + this.deps.caPropagationDelayMs;
    if (!propagated || run.leavesOnOldCa > 0) return;
    const oldCa = state.previous && certInfo(state.previous.certPem).serialNumber;
    const revoked = new Set(state.revoked.map((entry) => entry.serial));
    const lastHeld = Math.max(
      0,
      ...run.replacedClientCerts
        .filter((held) => held.caSerial === oldCa && !revoked.has(held.serial))
        .map((held) => Date.parse(held.notAfter)),
    );
    if (lastHeld > run.now.getTime()) {
      run.wakeAt.push(lastHeld);
      return;
    }
    const retired = { ...state, previous: undefined, phase: undefined, phaseSince: undefined };
    await this.writeCaState(run, retired);
    Object.assign(state, retired);
    run.notes.push({
      type: 'Normal',
      reason: 'CARolloverComplete',
      message: 'The old CA left every trust bundle; the rollover is complete',
    });
    // The bundles in the leaf Secrets drop it on the next run, which the CA Secret update triggers.
  }

  private revokedFromCrl(run: Run, state: CaState): RevokedEntry[] {
    const serverCrl = unb64(this.deps.view.secret(run.namespace, serverSecretName(run.name)), 'ca.crl') ?? '';
    const caSerial = certInfo(state.current.certPem).serialNumber;
    const entries: RevokedEntry[] = [];
    for (const crl of safeParseCrls(serverCrl)) {
      for (const serial of crl.serials) {
        entries.push({
          serial,
          client: '',
          caSerial,
          revokedAt: run.now.toISOString(),
          notAfter: new Date(run.now.getTime() + run.spec.validityMs).toISOString(),
        });
      }
    }
    return entries;
  }

  // ---- revocation and CRL ----------------------------------------------------------------------------

  /** A client removed from the spec: record its certificates in the ledger first, then delete its Secret. */
  private async revokeRemovedClients(run: Run, state: CaState): Promise<void> {
    const wanted = new Set(run.spec.clients);
    const stale = this.deps.view
      .secretsOf(run.namespace, run.name)
      .filter(
        (s) =>
          s.metadata?.labels?.[CERTIFICATE_LABEL] === 'client' && !wanted.has(s.metadata?.labels?.[CLIENT_LABEL] ?? ''),
      );
    if (stale.length === 0) return;
    const known = new Set(state.revoked.map((entry) => entry.serial));
    const added: RevokedEntry[] = [];
    for (const secret of stale) {
      const client = secret.metadata!.labels![CLIENT_LABEL]!;
      for (const held of await this.heldCertificates(secret, state)) {
        if (known.has(held.serial) || new Date(held.notAfter) <= run.now) continue;
        added.push({ ...held, client, revokedAt: run.now.toISOString() });
      }
    }
    if (added.length > 0) {
      state.revoked = [...state.revoked, ...added];
      await this.writeCaState(run, state);
    }
    for (const secret of stale) {
      await this.deps.writer.deleteSecret(run.namespace, secret.metadata!.name!, secret.metadata!.uid);
      const client = secret.metadata!.labels![CLIENT_LABEL]!;
      const serials = added.filter((entry) => entry.client === client).map((entry) => entry.serial);
      run.notes.push({
        type: 'Normal',
        reason: 'ClientRevoked',
        message: `Client ${client} was removed from spec.clients: deleted Secret ${secret.metadata!.name} and revoked ${serials.length ? serials.join(', ') : 'nothing still valid'}`,
      });
    }
  }

  /** The current certificate of a client Secret and the still-valid ones it replaced at renewals. */
  private async heldCertificates(
    secret: V1Secret,
    state: CaState,
  ): Promise<Omit<RevokedEntry, 'client' | 'revokedAt'>[]> {
    const held: Omit<RevokedEntry, 'client' | 'revokedAt'>[] = [];
    const certPem = unb64(secret, 'tls.crt');
    if (certPem) {
      try {
        const info = certInfo(certPem);
        const ca = await this.signerOf(certPem, state);
        if (ca) held.push({ serial: info.serialNumber, caSerial: ca, notAfter: info.notAfter.toISOString() });
      } catch {
        // garbage in a Secret about to be deleted: nothing to revoke
      }
    }
    for (const previous of parsePreviousSerials(secret.metadata?.annotations?.[PREVIOUS_SERIALS_ANNOTATION]))
      held.push(previous);
    return held;
  }

  private async signerOf(certPem: string, state: CaState): Promise<string | undefined> {
    for (const ca of trustedCas(state)) {
      if (await issuedBy(certPem, ca.certPem)) return certInfo(ca.certPem).serialNumber;
    }
    return undefined;
  }

  /** One CRL per trusted CA, re-signed only when its list changes or a third of its validity is left. */
  private async ensureCrl(run: Run, state: CaState): Promise<string> {
    const live = state.revoked.filter((entry) => new Date(entry.notAfter) > run.now);
    const server = this.deps.view.secret(run.namespace, serverSecretName(run.name));
    const published = unb64(server, 'ca.crl');
    const existing = safeParseCrls(published ?? '');
    if (server && run.ep.status?.server && existing.length === 0) {
      run.notes.push({
        type: 'Warning',
        reason: 'Repaired',
        message: `Secret ${server.metadata?.name}: ${published ? 'ca.crl held no readable CRL' : 'ca.crl was missing'}; signed the CRL again`,
      });
    }
    const parts: string[] = [];
    for (const ca of trustedCas(state)) {
      const caCert = certInfo(ca.certPem);
      const subject = subjectOf(ca.certPem);
      const want = new Set(live.filter((entry) => entry.caSerial === caCert.serialNumber).map((entry) => entry.serial));
      const have = existing.find((crl) => crl.issuer === subject);
      const fresh = have?.nextUpdate && have.nextUpdate.getTime() - run.now.getTime() > CRL_VALIDITY_MS / 3;
      if (have && fresh && sameSet(have.serials, want)) {
        parts.push(have.pem.trim() + '\n');
        run.wakeAt.push(have.nextUpdate!.getTime() - CRL_VALIDITY_MS / 3);
        continue;
      }
      const entries = live
        .filter((e) => e.caSerial === caCert.serialNumber)
        .map((e) => ({ serial: e.serial, revokedAt: new Date(e.revokedAt) }));
      parts.push(await issueCRL({ ca, revoked: entries, now: run.now, nextUpdateMs: CRL_VALIDITY_MS }));
      run.wakeAt.push(run.now.getTime() + (CRL_VALIDITY_MS * 2) / 3);
    }
    return parts.join('');
  }

  // ---- leaves ----------------------------------------------------------------------------------------

  private serverDnsNames(run: Run): string[] {
    const names = new Set<string>();
    for (const listener of run.spec.listeners) {
      const svc = serviceName(run.name, listener.mode);
      for (const name of [
        svc,
        `${svc}.${run.namespace}`,
        `${svc}.${run.namespace}.svc`,
        `${svc}.${run.namespace}.svc.cluster.local`,
      ])
        names.add(name);
    }
    for (const name of run.spec.dnsNames) names.add(name);
    return [...names];
  }

  private async ensureLeaf(
    run: Run,
    state: CaState,
    what: { kind: 'server'; crl: string } | { kind: 'client'; client: string },
  ) {
    const { spec } = run;
    const secretName = what.kind === 'server' ? serverSecretName(run.name) : clientSecretName(run.name, what.client);
    const existing = this.deps.view.secret(run.namespace, secretName);
    const dnsNames = what.kind === 'server' ? this.serverDnsNames(run) : [];
    const spiffeId =
      what.kind === 'client' ? clientSpiffeId(spec.trustDomain, run.namespace, run.name, what.client) : '';
    const hash = issuanceHash([
      what.kind,
      spec.keyAlgorithm,
      spec.validityMs,
      spec.renewBeforeMs ?? '',
      ...dnsNames,
      spiffeId,
    ]);

    let certPem = unb64(existing, 'tls.crt');
    let keyPem = unb64(existing, 'tls.key');
    const issuedBefore =
      what.kind === 'server' ? !!run.ep.status?.server : !!run.ep.status?.clients?.some((c) => c.name === what.client);
    const identity: LeafIdentity =
      what.kind === 'server' ? { kind: 'server' } : { kind: 'client', client: what.client, spiffeId };
    const why = await this.leafProblem(run, state, existing, hash, { secretName, issuedBefore, identity });
    let previousSerials = existing?.metadata?.annotations?.[PREVIOUS_SERIALS_ANNOTATION];
    if (why) {
      const pair =
        what.kind === 'server'
          ? await issueServer({
              ca: state.current,
              dnsNames,
              algorithm: spec.keyAlgorithm,
              validityMs: spec.validityMs,
              now: run.now,
            })
          : await issueClient({
              ca: state.current,
              endpoint: run.name,
              namespace: run.namespace,
              client: what.client,
              trustDomain: spec.trustDomain,
              algorithm: spec.keyAlgorithm,
              validityMs: spec.validityMs,
              now: run.now,
            });
      if (what.kind === 'client' && certPem && why.keepOld) {
        previousSerials = await this.rememberPrevious(previousSerials, certPem, state, run.now);
      }
      certPem = pair.certPem;
      keyPem = pair.keyPem;
      this.deps.metrics.issued.inc({ certificate: what.kind });
      const subject = what.kind === 'server' ? 'the server certificate' : `client ${what.client}'s certificate`;
      run.notes.push({
        type: why.type,
        reason: why.reason,
        message: `${why.message}: issued ${subject} into Secret ${secretName}`,
      });
    } else {
      if (!(await issuedBy(certPem!, state.current.certPem))) run.leavesOnOldCa++;
      // A re-issue rewrites the bundle anyway; otherwise a bundle without the signing CA was edited by hand.
      const bundle = bundleProblem(unb64(existing, 'ca.crt'), state.current.certPem);
      if (bundle) {
        run.notes.push({
          type: 'Warning',
          reason: 'Repaired',
          message: `Secret ${secretName}: ${bundle}; restored the trust bundle`,
        });
      }
    }
    const data: SecretData = { 'tls.crt': b64(certPem!), 'tls.key': b64(keyPem!), 'ca.crt': b64(trustBundle(state)) };
    if (what.kind === 'server') data['ca.crl'] = b64(what.crl);
    const labels: Record<string, string> =
      what.kind === 'server'
        ? { [CERTIFICATE_LABEL]: 'server' }
        : { [CERTIFICATE_LABEL]: 'client', [CLIENT_LABEL]: what.client };
    const annotations: Record<string, string> = { [ISSUANCE_HASH_ANNOTATION]: hash };
    if (previousSerials) annotations[PREVIOUS_SERIALS_ANNOTATION] = previousSerials;
    if (what.kind === 'client') {
      run.replacedClientCerts.push(
        ...parsePreviousSerials(previousSerials).filter((entry) => new Date(entry.notAfter) > run.now),
      );
    }
    if (what.kind === 'client' && spec.pkcs12[what.client]) {
      const stores = await this.pkcs12For(run, what.client, existing, certPem!, keyPem!, trustBundle(state));
      Object.assign(data, stores.data);
      Object.assign(annotations, stores.annotations);
    }
    await this.applySecret(run, existing, secretName, 'kubernetes.io/tls', data, labels, annotations);

    const info = certInfo(certPem!, spec.renewBeforeMs);
    run.wakeAt.push(info.renewalTime.getTime());
    if (what.kind === 'server') run.server = { ...info, secretName };
    else run.clients.push({ ...info, name: what.client, secretName });
  }

  /** keystore.p12 and truststore.p12 of a client that asked for them (./keystores.ts decides). */
  private async pkcs12For(
    run: Run,
    client: string,
    existing: V1Secret | undefined,
    certPem: string,
    keyPem: string,
    caPem: string,
  ): Promise<KeystoreContent> {
    const request = run.spec.pkcs12[client]!;
    const secret = await this.deps.readSecret(run.namespace, request.passwordSecret);
    const password = keystorePassword(secret, request, { namespace: run.namespace, client });
    if ('problem' in password) {
      run.degraded.push({ reason: 'KeystorePasswordMissing', message: password.problem });
      run.wakeAt.push(run.now.getTime() + KEYSTORE_PASSWORD_RETRY_MS);
    }
    return pkcs12Content({ request, password, existing, alias: client, certPem, keyPem, caPem });
  }

  /** Why a leaf Secret needs a new certificate, or undefined if it does not. */
  private async leafProblem(
    run: Run,
    state: CaState,
    secret: V1Secret | undefined,
    hash: string,
    what: { secretName: string; issuedBefore: boolean; identity: LeafIdentity },
  ): Promise<(Note & { keepOld: boolean }) | undefined> {
    const repair = (message: string) => ({ type: 'Warning' as const, reason: 'Repaired', message, keepOld: false });
    if (!secret && what.issuedBefore) return repair(`Secret ${what.secretName} was deleted`);
    if (!secret) return { type: 'Normal', reason: 'Issued', message: 'New certificate', keepOld: false };
    const name = secret.metadata?.name;
    const certPem = unb64(secret, 'tls.crt');
    const keyPem = unb64(secret, 'tls.key');
    if (!certPem || !keyPem) return repair(`Secret ${name} had no ${certPem ? 'tls.key' : 'tls.crt'}`);
    const problem = await pairProblem({ certPem, keyPem }, run.now, { isCA: false });
    if (problem) return repair(`Secret ${name}: ${problem}`);
    if (!(await this.signerOf(certPem, state)))
      return repair(`Secret ${name} held a certificate not signed by this endpoint's CA`);
    const stranger = await identityProblem(certPem, what.identity);
    if (stranger) return repair(`Secret ${name}: ${stranger}`);
    if (!(await issuedBy(certPem, state.current.certPem)) && state.phase !== 'Propagating') {
      return { type: 'Normal', reason: 'Reissued', message: 'CA rollover', keepOld: true };
    }
    if (secret.metadata?.annotations?.[ISSUANCE_HASH_ANNOTATION] !== hash) {
      return {
        type: 'Normal',
        reason: 'Reissued',
        message: 'The spec changed (names, key algorithm or lifetime)',
        keepOld: true,
      };
    }
    const info = certInfo(certPem, run.spec.renewBeforeMs);
    if (run.now >= info.renewalTime)
      return {
        type: 'Normal',
        reason: 'Renewed',
        message: `Renewal time ${info.renewalTime.toISOString()} reached`,
        keepOld: true,
      };
    return undefined;
  }

  /** Appends a replaced client certificate to the list that a later revocation must also cover. */
  private async rememberPrevious(
    list: string | undefined,
    certPem: string,
    state: CaState,
    now: Date,
  ): Promise<string | undefined> {
    const info = certInfo(certPem);
    const caSerial = await this.signerOf(certPem, state);
    const entries = parsePreviousSerials(list).filter((entry) => new Date(entry.notAfter) > now);
    if (caSerial) entries.push({ serial: info.serialNumber, caSerial, notAfter: info.notAfter.toISOString() });
    return entries.length
      ? entries
          .slice(-20)
          .map((e) => `${e.serial}:${e.caSerial}:${e.notAfter}`)
          .join(',')
      : undefined;
  }

  // ---- Pods ------------------------------------------------------------------------------------------

  /** Counts the selected pods that run the sidecar and reports those that do not, with the fix. */
  private reportPods(run: Run): void {
    const selected = this.deps.view
      .pods(run.namespace)
      .filter(
        (pod) =>
          !pod.metadata?.deletionTimestamp &&
          pod.status?.phase !== 'Succeeded' &&
          pod.status?.phase !== 'Failed' &&
          selectorMatches(run.ep.spec.podSelector, pod.metadata?.labels ?? {}) &&
          pod.metadata?.annotations?.[INJECT_ANNOTATION] !== 'false',
      );
    const missing = selected.filter((pod) => !sidecarContainerOf(pod));
    run.injectedPods = selected.length - missing.length;
    if (missing.length === 0) return;
    const names = missing.map((pod) => pod.metadata!.name!).sort();
    const shown = names.slice(0, 5).join(', ') + (names.length > 5 ? ` and ${names.length - 5} more` : '');
    run.degraded.push({
      reason: 'PodsNotInjected',
      message:
        `${missing.length} selected pod(s) run without the mTLS sidecar: ${shown}. They were created while the webhook was ` +
        `unavailable or before namespace ${run.namespace} had the label ${INJECTION_NAMESPACE_LABEL}=enabled. Fix: ` +
        `kubectl label namespace ${run.namespace} ${INJECTION_NAMESPACE_LABEL}=enabled --overwrite; then recreate them, ` +
        `e.g. kubectl -n ${run.namespace} rollout restart deployment/<name>, or kubectl -n ${run.namespace} delete pod ${names[0]}.`,
    });
  }

  // ---- Services --------------------------------------------------------------------------------------

  private async ensureServices(run: Run): Promise<void> {
    const selector = run.spec.podSelectorLabels;
    const wanted = new Map(run.spec.listeners.map((listener) => [serviceName(run.name, listener.mode), listener]));
    for (const svc of this.deps.view.servicesOf(run.namespace, run.name)) {
      if (!wanted.has(svc.metadata!.name!))
        await this.deps.writer.deleteService(run.namespace, svc.metadata!.name!, svc.metadata!.uid);
    }
    if (!selector) {
      run.degraded.push({
        reason: 'ServicesSkipped',
        message:
          'spec.podSelector uses matchExpressions, which a Service selector cannot express: no Services are managed; select pods with matchLabels.',
      });
      return;
    }
    for (const [name, listener] of wanted) {
      const existing = this.deps.view.servicesOf(run.namespace, run.name).find((svc) => svc.metadata?.name === name);
      const ports = [{ name: 'https', port: 443, targetPort: listenerPortName(listener.mode), protocol: 'TCP' }];
      const desiredSpec = { selector, ports };
      const labels = this.ownedLabels(run);
      if (!existing) {
        await this.deps.writer.createService(run.namespace, {
          metadata: { name, namespace: run.namespace, labels, ownerReferences: [ownerReference(run.ep as never)] },
          spec: desiredSpec as never,
        });
        continue;
      }
      const current = existing.spec ?? {};
      const same =
        JSON.stringify(current.selector ?? {}) === JSON.stringify(selector) &&
        current.ports?.length === 1 &&
        current.ports[0]?.port === 443 &&
        String(current.ports[0]?.targetPort) === listenerPortName(listener.mode);
      if (!same) {
        await this.deps.writer.replaceService(run.namespace, {
          ...existing,
          spec: { ...current, selector, ports: ports as never },
        });
      }
    }
  }

  // ---- NetworkPolicy ---------------------------------------------------------------------------------

  /** Keeps the one policy `desiredNetworkPolicy` asks for, and deletes any other this endpoint owns. */
  private async ensureNetworkPolicy(run: Run): Promise<void> {
    const desired = desiredNetworkPolicy(run, run.spec, this.deps.sidecarAdminPort ?? SIDECAR_ADMIN_PORT);
    const owned = this.deps.view.networkPoliciesOf(run.namespace, run.name);
    for (const policy of owned) {
      if (policy.metadata?.name !== desired?.metadata?.name)
        await this.deps.writer.deleteNetworkPolicy(run.namespace, policy.metadata!.name!, policy.metadata!.uid);
    }
    if (!desired) return;
    run.networkPolicy = desired.metadata!.name!;
    const existing = owned.find((policy) => policy.metadata?.name === desired.metadata!.name);
    const metadata = { ...desired.metadata, ownerReferences: [ownerReference(run.ep as never)] };
    if (!existing) {
      await this.deps.writer.createNetworkPolicy(run.namespace, { ...desired, metadata });
    } else if (!sameNetworkPolicySpec(existing.spec, desired.spec!)) {
      await this.deps.writer.replaceNetworkPolicy(run.namespace, {
        ...desired,
        metadata: { ...existing.metadata, labels: metadata.labels },
      });
    }
  }

  // ---- Secrets ---------------------------------------------------------------------------------------

  private ownedLabels(run: Run): Record<string, string> {
    return { [MANAGED_BY_LABEL]: MANAGED_BY_VALUE, [ENDPOINT_LABEL]: run.name };
  }

  /**
   * Creates the Secret, or replaces it when data, type, labels, annotations or owner differ. A replace
   * carries the cached resourceVersion: a decision made on stale data fails with 409 and is retried.
   * `type` is immutable, so a Secret of the wrong type is deleted and created again.
   */
  private async applySecret(
    run: Run,
    existing: V1Secret | undefined,
    name: string,
    type: string,
    data: SecretData,
    extraLabels: Record<string, string>,
    annotations: Record<string, string>,
  ): Promise<void> {
    const labels = { ...this.ownedLabels(run), ...extraLabels };
    const owner = ownerReference(run.ep as never);
    if (existing && existing.type !== type) {
      run.notes.push({
        type: 'Warning',
        reason: 'Repaired',
        message: `Secret ${name} had type ${existing.type ?? '(none)'} instead of ${type}; created it again`,
      });
      await this.deps.writer.deleteSecret(
        run.namespace,
        name,
        existing.metadata?.uid,
        existing.metadata?.resourceVersion,
      );
      existing = undefined;
    }
    if (!existing) {
      await this.deps.writer.createSecret(run.namespace, {
        metadata: { name, namespace: run.namespace, labels, annotations, ownerReferences: [owner] },
        type,
        data,
      });
      return;
    }
    const meta = existing.metadata ?? {};
    const ownAnnotations = Object.fromEntries(
      Object.entries(meta.annotations ?? {}).filter(([k]) => k.startsWith('mtls.operator.dev/')),
    );
    const same =
      sameRecord(existing.data ?? {}, data) &&
      Object.entries(labels).every(([k, v]) => meta.labels?.[k] === v) &&
      sameRecord(ownAnnotations, annotations) &&
      (meta.ownerReferences ?? []).some((ref) => ref.uid === owner.uid && ref.controller);
    if (same) return;
    const otherAnnotations = Object.fromEntries(
      Object.entries(meta.annotations ?? {}).filter(([k]) => !k.startsWith('mtls.operator.dev/')),
    );
    await this.deps.writer.replaceSecret(run.namespace, {
      ...existing,
      metadata: {
        ...meta,
        labels: { ...meta.labels, ...labels },
        annotations: { ...otherAnnotations, ...annotations },
        ownerReferences: [...(meta.ownerReferences ?? []).filter((ref) => !ref.controller), owner],
      },
      type,
      data,
    });
  }

  // ---- status ----------------------------------------------------------------------------------------

  private async writeRunStatus(run: Run, state: CaState): Promise<void> {
    const generation = run.ep.metadata?.generation;
    const condition = (type: string, status: Condition['status'], reason: string, message: string) => ({
      type,
      status,
      reason,
      message,
      observedGeneration: generation,
    });
    const iso = (d: Date) => d.toISOString().replace(/\.\d+Z$/, 'Z');
    const issued = run.clients.length === run.spec.clients.length && !!run.server;
    const degraded = run.degraded[0];
    const conditions = [
      issued
        ? condition(
            'Issued',
            'True',
            'Issued',
            `CA, server and ${run.clients.length} client certificate(s) are issued and valid`,
          )
        : condition('Issued', 'False', 'Issuing', 'Certificates are being issued'),
      state.phase === 'Propagating'
        ? condition(
            'CARollover',
            'True',
            'NewCAPropagating',
            'A new CA is in every trust bundle; certificates move to it once it has propagated',
          )
        : state.phase === 'Retiring'
          ? condition(
              'CARollover',
              'True',
              'OldCARetiring',
              'Certificates are signed by the new CA; the old CA stays trusted until they have propagated and the client certificates it signed have expired',
            )
          : condition('CARollover', 'False', 'NoRollover', `The CA renews at ${iso(run.ca!.renewalTime)}`),
      degraded
        ? condition('Degraded', 'True', degraded.reason, run.degraded.map((d) => d.message).join(' '))
        : condition('Degraded', 'False', 'AsExpected', 'Nothing is degraded'),
      issued
        ? condition('Ready', 'True', 'Ready', 'Certificates are issued and the Services are in place')
        : condition('Ready', 'False', 'Issuing', 'Certificates are being issued'),
      // A warning, not a refusal: the endpoint works, but a renewal may reach the pods after expiry.
      run.renewBeforeTooShort
        ? condition('RenewBeforeTooShort', 'True', 'BelowKubeletSecretDelay', run.renewBeforeTooShort)
        : condition(
            'RenewBeforeTooShort',
            'False',
            'AsExpected',
            `Certificates renew at least ${RENEW_BEFORE_FLOOR} before they expire, time for kubelet to deliver them`,
          ),
    ];
    const previous = (type: string) => run.ep.status?.conditions?.find((c) => c.type === type);
    if (degraded && previous('Degraded')?.message !== conditions[2]!.message) {
      await this.deps.events.record(run.ep, 'Warning', degraded.reason, conditions[2]!.message);
    }
    const key = `${run.namespace}/${run.name}`;
    if (!run.renewBeforeTooShort) {
      this.renewBeforeWarned.delete(key);
    } else if (
      previous('RenewBeforeTooShort')?.message !== run.renewBeforeTooShort &&
      this.renewBeforeWarned.get(key) !== run.renewBeforeTooShort
    ) {
      await this.deps.events.record(run.ep, 'Warning', 'RenewBeforeTooShort', run.renewBeforeTooShort);
      this.renewBeforeWarned.set(key, run.renewBeforeTooShort);
    }
    const cert = (c: CertInfo & { secretName?: string }) => ({
      ...(c.secretName ? { secretName: c.secretName } : {}),
      serialNumber: c.serialNumber,
      notAfter: iso(c.notAfter),
      renewalTime: iso(c.renewalTime),
    });
    await this.writeStatus(
      run.ep,
      (current) => conditions.reduce((list, next) => setCondition(list, next, run.now), current),
      {
        ca: { ...cert(run.ca!), notBefore: iso(run.ca!.notBefore) },
        server: run.server && cert(run.server),
        clients: run.clients.map((c) => ({ name: c.name, ...cert(c) })),
        revokedSerials: state.revoked
          .filter((entry) => new Date(entry.notAfter) > run.now)
          .map((entry) => entry.serial),
        injectedPods: run.injectedPods,
        networkPolicy: run.networkPolicy,
        modes: modesSummary(run.spec.listeners),
        caRollover:
          state.phase && state.phaseSince
            ? {
                phase: state.phase,
                newCASerialNumber: certInfo(state.phase === 'Propagating' ? state.next!.certPem : state.current.certPem)
                  .serialNumber,
                startedAt: iso(state.phaseSince),
              }
            : undefined,
      },
    );
  }

  /** Writes status only if it differs from what is stored, so a no-op reconcile makes no write. */
  private async writeStatus(
    ep: MtlsEndpoint,
    conditions: (current: Condition[]) => Condition[],
    fields: Record<string, unknown> = {},
  ): Promise<void> {
    const current = (ep.status ?? {}) as Record<string, unknown>;
    const desired: Record<string, unknown> = {
      ...current,
      ...fields,
      observedGeneration: ep.metadata?.generation,
      conditions: conditions((current.conditions as Condition[] | undefined) ?? []),
    };
    for (const [key, value] of Object.entries(desired)) if (value === undefined) desired[key] = null;
    if (canonicalJson(desired) !== canonicalJson(current)) {
      await this.deps.writer.patchStatus(
        ENDPOINT_RESOURCE,
        ep.metadata!.namespace!,
        ep.metadata!.name!,
        ep.metadata?.resourceVersion,
        desired,
      );
    }
    const ready = readyStatus(desired.conditions as Condition[]);
    this.deps.metrics.setEndpointReady(ep.metadata!.namespace!, ep.metadata!.name!, ready);
  }

  /**
   * A failed reconcile: an Event and Ready=False with the API server's own words (e.g. "failed to allocate
   * a serviceIP: range is full"). Issued is left as it was: the failure may have nothing to do with the
   * certificates, which the next successful pass reports again.
   */
  private async reportFailure(ep: MtlsEndpoint, err: unknown): Promise<void> {
    const message = errorMessage(err);
    await this.deps.events.record(ep, 'Warning', 'ReconcileFailed', message);
    const now = this.deps.now();
    const generation = ep.metadata?.generation;
    await this.writeStatus(ep, (conditions) =>
      setCondition(
        conditions,
        { type: 'Ready', status: 'False', reason: 'ReconcileFailed', message, observedGeneration: generation },
        now,
      ),
    ).catch(() => undefined);
  }

  private recordMetrics(run: Run): void {
    const base = { namespace: run.namespace, endpoint: run.name };
    const series: CertificateLabels[] = [];
    const set = (labels: CertificateLabels, info: CertInfo) => {
      this.deps.metrics.setCertificateTimes(labels, info.notAfter, info.renewalTime);
      series.push(labels);
    };
    if (run.ca) set({ ...base, certificate: 'ca', client: '' }, run.ca);
    if (run.server) set({ ...base, certificate: 'server', client: '' }, run.server);
    for (const client of run.clients) set({ ...base, certificate: 'client', client: client.name }, client);
    this.deps.metrics.pruneEndpoint(run.namespace, run.name, series);
  }
}

/** The status of the Ready condition, Unknown when there is none yet. */
function readyStatus(conditions: readonly Condition[] | undefined): ConditionStatus {
  return conditions?.find((c) => c.type === 'Ready')?.status ?? 'Unknown';
}

function issuanceHash(parts: (string | number)[]): string {
  return createHash('sha256').update(parts.join('\n')).digest('hex').slice(0, 16);
}

function parsePreviousSerials(list: string | undefined): Omit<RevokedEntry, 'client' | 'revokedAt'>[] {
  return (list ?? '')
    .split(',')
    .filter(Boolean)
    .map((item) => {
      const [serial, caSerial, ...rest] = item.split(':');
      return { serial: serial ?? '', caSerial: caSerial ?? '', notAfter: rest.join(':') };
    })
    .filter((entry) => entry.serial && entry.caSerial && !Number.isNaN(Date.parse(entry.notAfter)));
}

function safeParseCrls(pem: string) {
  try {
    return parseCrls(pem);
  } catch {
    return [];
  }
}

function subjectOf(certPem: string): string {
  return parseCertificates(certPem)[0]!.subject;
}

function sameSet(a: Set<string>, b: Set<string>): boolean {
  return a.size === b.size && [...a].every((x) => b.has(x));
}

function sameRecord(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => a[k] === b[k]);
}

/** JSON with keys sorted at every level and null/undefined dropped, to compare objects by content. */
function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>)
            .filter(([, x]) => x !== null && x !== undefined)
            .sort(([a], [b]) => a.localeCompare(b)),
        )
      : v,
  );
}
