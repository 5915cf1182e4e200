import type { V1NetworkPolicy, V1Pod, V1Secret, V1Service } from '@kubernetes/client-node';
import {
  caSecretName,
  CERTIFICATE_LABEL,
  CLIENT_LABEL,
  clientSecretName,
  ENDPOINT_RESOURCE,
  ISSUANCE_HASH_ANNOTATION,
  managedLabels,
  type MtlsEndpoint,
  PREVIOUS_SERIALS_ANNOTATION,
  RENEW_REQUESTED_ANNOTATION,
  SECRET_KEYS,
  serverSecretName,
  serviceDnsNames,
  testServersSecretName,
  testServiceDnsNames,
} from '../api/types.ts';
import type { EventRecorder } from '../kube/events.ts';
import { isConflict, isNotFound } from '../kube/errors.ts';
import { encodeSecretData, secretText } from '../kube/secret-data.ts';
import { errorMessage, type Logger, logger } from '../log.ts';
import type { CertificateLabels, ConditionStatus, OperatorMetrics } from '../metrics.ts';
import { bundleProblem, type CertInfo, certInfo, type LeafIdentity, type ParsedCrl } from '../pki/certs.ts';
import { issueCRL } from '../pki/crl-issuer.ts';
import { clientSpiffeId, issueCA, issueClient, issueServer } from '../pki/issue.ts';
import { parseCertificates } from '../pki/inspect.ts';
import { caRenewBeforeMs, type CaPlan, decideCa, decideRetirement, type HeldCertificate } from './ca-policy.ts';
import { caSecretContent, type CaState, type RevokedEntry, trustBundle, trustedCas } from './ca-state.ts';
import { heldCertificates, inspectCa, inspectLeaf, type InspectedLeaf, publishedCrls } from './certificate-facts.ts';
import { type Condition, setCondition } from './conditions.ts';
import { planCrls, CRL_VALIDITY_MS } from './crl-policy.ts';
import { conditionList, endpointConditions, endpointStatusFields, type StatusInput } from './endpoint-status.ts';
import { podReport } from './injected-pods.ts';
import { KEYSTORE_PASSWORD_RETRY_MS, type KeystoreContent, keystorePassword, pkcs12Content } from './keystores.ts';
import {
  issuanceHash,
  leafIssuanceReason,
  parsePreviousSerials,
  renewRequestWake,
  withReplaced,
} from './leaf-policy.ts';
import { desiredNetworkPolicy } from './network-policy.ts';
import {
  type DesiredSecret,
  endpointOwnerReference,
  networkPolicyWrites,
  secretWrites,
  serviceWrites,
  type Write,
} from './owned-objects.ts';
import type { Note } from './plan.ts';
import { renewBeforeTooShort, type ResolvedSpec, resolveSpec, SpecError } from './resolved-spec.ts';
import { removedClients } from './removed-clients.ts';
import { observeUpstreamProtocol, UNKNOWN_RETRY_MS } from './upstream-protocol-status.ts';
import type { ReconcileResult } from './run-workers.ts';
import { testServersPlan } from './test-servers.ts';

/** Read access to the informer caches. */
export interface ClusterView {
  endpoint(namespace: string, name: string): MtlsEndpoint | undefined;
  secret(namespace: string, name: string): V1Secret | undefined;
  secretsOf(namespace: string, endpoint: string): readonly V1Secret[];
  servicesOf(namespace: string, endpoint: string): readonly V1Service[];
  networkPoliciesOf(namespace: string, endpoint: string): readonly V1NetworkPolicy[];
  pods(namespace: string): readonly V1Pod[];
}

/** The writes the reconciler makes (KubeWriter against the API server; a recording fake in unit tests). */
export interface ObjectWriter {
  perform(namespace: string, write: Write): Promise<void>;
  patchStatus(
    resource: { group: string; version: string; plural: string },
    namespace: string,
    name: string,
    resourceVersion: string | undefined,
    status: unknown,
  ): Promise<void>;
}

export interface ReconcilerDeps {
  view: ClusterView;
  writer: ObjectWriter;
  events: Pick<EventRecorder, 'record'>;
  metrics: OperatorMetrics;
  now: () => Date;
  /** How long a new CA sits in every trust bundle before anything is signed by it, and how long the old CA
   * stays after the leaves moved on: time for kubelet to refresh Secret volumes and for clients to re-read. */
  caPropagationDelayMs: number;
  /** Longest wait before looking at an endpoint again when nothing happens. */
  resyncMs: number;
  /** The injected sidecar's admin port: no listener or upstream may use it (resolveSpec's default otherwise). */
  sidecarAdminPort?: number;
  /**
   * Reads a Secret the operator does not own (a keystore password) from the API server; undefined on 404. The
   * controller's informer holds only its own Secrets; without this the view is asked (a fake cluster's is whole).
   */
  readSecret?: (namespace: string, name: string) => Promise<V1Secret | undefined>;
  /** Reads a sidecar's admin /status (spec.upstreamProtocol auto); upstream-protocol-status.ts's fetch by default. */
  readSidecarStatus?: (ip: string, port: number) => Promise<{ body: unknown } | { error: string }>;
}

/** One endpoint's objects as the informers hold them, read once at the start of a pass. */
interface Snapshot {
  ep: MtlsEndpoint;
  namespace: string;
  name: string;
  secret: (name: string) => V1Secret | undefined;
  ownedSecrets: readonly V1Secret[];
  services: readonly V1Service[];
  networkPolicies: readonly V1NetworkPolicy[];
  pods: readonly V1Pod[];
  /** The CRLs the server Secret publishes now, parsed once: the CA decision and the CRL step both read them. */
  publishedCrls: readonly ParsedCrl[];
}

/** A leaf after the issue step: the pair its Secret will hold, and what the status and the rollover need. */
interface Leaf {
  secretName: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  pair: { certPem: string; keyPem: string };
  info: CertInfo;
  client?: string;
  keptOnOldCa: boolean;
  replaced: HeldCertificate[];
}

/** What a pass tells afterwards: Events and logs, certificates issued (metrics), when to look again. */
interface Tally {
  notes: Note[];
  wakeAt: number[];
  issued: { ca: number; server: number; client: number };
}

/** Everything one pass decided: the objects to write, in apply order, and what to report. */
interface Plan extends Tally {
  caSecret: DesiredSecret;
  leafSecrets: DesiredSecret[];
  deletions: Write[];
  otherWrites: Write[];
  status: StatusInput;
}

/**
 * Brings one MtlsEndpoint's Secrets, Services, NetworkPolicy and status to what its spec asks for, in three
 * steps: gather (the snapshot from the informers, once, and the facts its certificates hold), decide (pure
 * policies in ca-policy, leaf-policy, crl-policy, owned-objects and endpoint-status; issuing keys and signing
 * is the only work done between deciding and writing), apply (each object written at most once, in the
 * order `apply` states). Level-triggered: any number of runs, or a run after a crash at any point, converges
 * on the same state, and a run with nothing to do writes nothing.
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
      return await this.reconcileEndpoint(this.gather(ep, namespace, name));
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

  /** Reads everything a pass decides from, once: a write later in the pass is judged against these copies. */
  private gather(ep: MtlsEndpoint, namespace: string, name: string): Snapshot {
    const { view } = this.deps;
    const names = [
      caSecretName(name),
      serverSecretName(name),
      testServersSecretName(name),
      ...(ep.spec.clients ?? []).map((client) => clientSecretName(name, client.name)),
    ];
    const secrets = new Map(names.map((secretName) => [secretName, view.secret(namespace, secretName)]));
    return {
      ep,
      namespace,
      name,
      secret: (secretName) => secrets.get(secretName),
      ownedSecrets: view.secretsOf(namespace, name),
      services: view.servicesOf(namespace, name),
      networkPolicies: view.networkPoliciesOf(namespace, name),
      pods: view.pods(namespace),
      publishedCrls: publishedCrls(secrets.get(serverSecretName(name))),
    };
  }

  private async reconcileEndpoint(snap: Snapshot): Promise<ReconcileResult> {
    const now = this.deps.now();
    let spec: ResolvedSpec;
    try {
      spec = resolveSpec(snap.ep, {
        caPropagationDelayMs: this.deps.caPropagationDelayMs,
        sidecarAdminPort: this.deps.sidecarAdminPort,
      });
    } catch (err) {
      if (!(err instanceof SpecError)) throw err;
      await this.reportInvalidSpec(snap.ep, err, now);
      return {};
    }
    const plan = await this.decide(snap, spec, now);
    await this.apply(snap, plan, now);
    const nowMs = now.getTime();
    const wake = Math.min(...plan.wakeAt, nowMs + this.deps.resyncMs);
    return { requeueAfterMs: Math.max(wake - nowMs, 500) };
  }

  // ---- decide ----------------------------------------------------------------------------------------

  private async decide(snap: Snapshot, spec: ResolvedSpec, now: Date): Promise<Plan> {
    const tally: Tally = { notes: [], wakeAt: [], issued: { ca: 0, server: 0, client: 0 } };
    const ca = await this.decideCa(snap, spec, now, tally);
    const removal = removedClients(await this.inspectRemovedClients(snap, spec, ca.state), ca.state.revoked, now);
    tally.notes.push(...removal.notes);
    let state: CaState = { ...ca.state, revoked: [...ca.state.revoked, ...removal.revoked] };
    const leaves: Leaf[] = [];
    for (const client of [undefined, ...spec.clients])
      leaves.push(await this.leaf(snap, spec, state, client, now, tally));
    state = this.retireOldCa(state, leaves, now, tally);
    const crl = await this.crl(snap, state, now, tally);
    const keystores = await this.keystores(snap, spec, leaves, trustBundle(state), now, tally);
    const others = this.otherWrites(snap, spec);
    const protocol = await observeUpstreamProtocol(
      {
        requested: spec.upstreamProtocol,
        previous: snap.ep.status?.upstreamProtocol,
        pods: snap.pods,
        selector: spec.podSelector,
      },
      spec.sidecarAdminPort,
      this.deps.readSidecarStatus,
    );
    if (protocol.retry) tally.wakeAt.push(now.getTime() + UNKNOWN_RETRY_MS);
    const existing = snap.secret(testServersSecretName(snap.name));
    const bad = await testServersPlan({
      ep: snap.ep,
      spec,
      existing,
      ca: state.current,
      dnsNames: serverDnsNames(snap, spec),
      now,
    });
    tally.notes.push(...bad.notes);
    tally.wakeAt.push(...bad.wakeAt);
    const secrets = this.desiredSecrets(snap, state, leaves, crl, keystores.content);
    return {
      caSecret: secrets.caSecret,
      leafSecrets: [...secrets.leafSecrets, ...bad.secrets],
      deletions: [...removal.deletions, ...bad.deletions],
      otherWrites: others.writes,
      ...tally,
      status: {
        generation: snap.ep.metadata?.generation,
        ca: ca.info,
        server: { ...leaves[0]!.info, secretName: leaves[0]!.secretName },
        clients: leaves.slice(1).map((leaf) => ({ ...leaf.info, name: leaf.client!, secretName: leaf.secretName })),
        wantedClients: spec.clients.length,
        rollover: rolloverStatus(state),
        degraded: [...others.degraded, ...keystores.degraded],
        renewBeforeTooShort: renewBeforeTooShort(snap.ep, spec),
        revokedSerials: state.revoked.filter((entry) => new Date(entry.notAfter) > now).map((entry) => entry.serial),
        injectedPods: others.injectedPods,
        networkPolicy: others.networkPolicy,
        listeners: spec.listeners,
        upstreamProtocol: protocol.status,
      },
    };
  }

  /** The CA state this pass moves to (see ca-policy.ts), with the CA it needs generated. */
  private async decideCa(snap: Snapshot, spec: ResolvedSpec, now: Date, tally: Tally) {
    const delay = this.deps.caPropagationDelayMs;
    const renewBeforeMs = caRenewBeforeMs(spec, delay);
    const secretName = caSecretName(snap.name);
    const input = await inspectCa(
      snap.secret(secretName),
      {
        secretName,
        everIssued: !!snap.ep.status?.ca?.serialNumber,
        publishedCrls: snap.publishedCrls,
        validityMs: spec.validityMs,
        propagationDelayMs: delay,
        now,
      },
      renewBeforeMs,
    );
    const plan = decideCa(input);
    tally.notes.push(...plan.notes);
    const state = await this.issueCa(plan, snap, spec, now);
    if (plan.issue) tally.issued.ca++;
    const info = certInfo(state.current.certPem, renewBeforeMs);
    tally.wakeAt.push(info.renewalTime.getTime());
    if (state.phaseSince) tally.wakeAt.push(state.phaseSince.getTime() + delay);
    return { state, info };
  }

  private retireOldCa(state: CaState, leaves: readonly Leaf[], now: Date, tally: Tally): CaState {
    const retirement = decideRetirement({
      phase: state.phase,
      phaseSince: state.phaseSince,
      previousSerial: state.previous && certInfo(state.previous.certPem).serialNumber,
      revoked: state.revoked,
      replacedClientCerts: leaves.flatMap((leaf) => leaf.replaced),
      leavesOnOldCa: leaves.filter((leaf) => leaf.keptOnOldCa).length,
      propagationDelayMs: this.deps.caPropagationDelayMs,
      now,
    });
    if (retirement.wakeAt) tally.wakeAt.push(retirement.wakeAt);
    if (retirement.note) tally.notes.push(retirement.note);
    return retirement.retire ? { ...state, previous: undefined, phase: undefined, phaseSince: undefined } : state;
  }

  /** The CA Secret and the leaf Secrets as they must be after this pass: one trust bundle, one CRL bundle. */
  private desiredSecrets(
    snap: Snapshot,
    state: CaState,
    leaves: readonly Leaf[],
    crl: string,
    keystores: ReadonlyMap<string, KeystoreContent>,
  ) {
    const owner = endpointOwnerReference(snap.ep);
    const base = { namespace: snap.namespace, owner };
    const labels = (extra: Record<string, string>) => ({ ...managedLabels(snap.name), ...extra });
    const ca = caSecretContent(state);
    const bundle = trustBundle(state);
    const caSecret: DesiredSecret = {
      ...base,
      name: caSecretName(snap.name),
      type: 'Opaque',
      data: ca.data,
      labels: labels({ [CERTIFICATE_LABEL]: 'ca' }),
      annotations: ca.annotations,
    };
    const leafSecrets = leaves.map((leaf): DesiredSecret => ({
      ...base,
      name: leaf.secretName,
      type: 'kubernetes.io/tls',
      data: {
        ...encodeSecretData({
          [SECRET_KEYS.tlsCert]: leaf.pair.certPem,
          [SECRET_KEYS.tlsKey]: leaf.pair.keyPem,
          [SECRET_KEYS.caCert]: bundle,
          ...(leaf.client === undefined ? { [SECRET_KEYS.crl]: crl } : {}),
        }),
        ...keystores.get(leaf.secretName)?.data,
      },
      labels: labels(leaf.labels),
      annotations: { ...leaf.annotations, ...keystores.get(leaf.secretName)?.annotations },
    }));
    return { caSecret, leafSecrets };
  }

  /**
   * keystore.p12 and truststore.p12 of the clients that asked for them, by Secret name (./keystores.ts
   * decides; the password Secret, which the informers do not watch, is read here), and what keeps them from
   * being written.
   */
  private async keystores(
    snap: Snapshot,
    spec: ResolvedSpec,
    leaves: readonly Leaf[],
    bundle: string,
    now: Date,
    tally: Tally,
  ) {
    const content = new Map<string, KeystoreContent>();
    const degraded: { reason: string; message: string }[] = [];
    for (const leaf of leaves) {
      const request = leaf.client === undefined ? undefined : spec.pkcs12[leaf.client];
      if (!request) continue;
      const secret = this.deps.readSecret
        ? await this.deps.readSecret(snap.namespace, request.passwordSecret)
        : this.deps.view.secret(snap.namespace, request.passwordSecret);
      const password = keystorePassword(secret, request, { namespace: snap.namespace, client: leaf.client! });
      if ('problem' in password) {
        degraded.push({ reason: 'KeystorePasswordMissing', message: password.problem });
        tally.wakeAt.push(now.getTime() + KEYSTORE_PASSWORD_RETRY_MS);
      }
      const existing = snap.secret(leaf.secretName);
      const { certPem, keyPem } = leaf.pair;
      const stores = await pkcs12Content({
        request,
        password,
        existing,
        alias: leaf.client!,
        certPem,
        keyPem,
        caPem: bundle,
      });
      content.set(leaf.secretName, stores);
    }
    return { content, degraded };
  }

  /** Generates the CA the plan asks for (the first, a repair, or the next one of a rollover). */
  private async issueCa(plan: CaPlan, snap: Snapshot, spec: ResolvedSpec, now: Date): Promise<CaState> {
    const issue = () =>
      issueCA({
        endpoint: snap.name,
        namespace: snap.namespace,
        algorithm: spec.keyAlgorithm,
        validityMs: spec.caValidityMs,
        now,
      });
    if (plan.issue === 'current') return { ...plan.state, current: await issue() };
    if (plan.issue === 'next') return { ...plan.state, current: plan.state.current!, next: await issue() };
    return { ...plan.state, current: plan.state.current! };
  }

  private async inspectRemovedClients(snap: Snapshot, spec: ResolvedSpec, state: CaState) {
    const wanted = new Set(spec.clients);
    const stale = snap.ownedSecrets.filter(
      (s) =>
        s.metadata?.labels?.[CERTIFICATE_LABEL] === 'client' && !wanted.has(s.metadata?.labels?.[CLIENT_LABEL] ?? ''),
    );
    return Promise.all(
      stale.map(async (secret) => ({
        client: secret.metadata!.labels![CLIENT_LABEL]!,
        secretName: secret.metadata!.name!,
        uid: secret.metadata!.uid,
        held: await heldCertificates(secret, state),
      })),
    );
  }

  /** The server leaf (`client` undefined) or one client's: kept, or issued now with the reason as a note. */
  private async leaf(
    snap: Snapshot,
    spec: ResolvedSpec,
    state: CaState,
    client: string | undefined,
    now: Date,
    tally: Tally,
  ): Promise<Leaf> {
    const target = leafTarget(snap, spec, client);
    const existing = snap.secret(target.secretName);
    const facts = await inspectLeaf(existing, { ...target, renewBeforeMs: spec.renewBeforeMs }, state, now);
    const renewRequests = snap.ep.metadata?.annotations?.[RENEW_REQUESTED_ANNOTATION];
    const context = { wantedHash: target.hash, phase: state.phase, now, identity: target.identity, renewRequests };
    const reason = leafIssuanceReason(facts, context);
    let pair = facts.certPem && facts.keyPem ? { certPem: facts.certPem, keyPem: facts.keyPem } : undefined;
    let previousSerials = facts.previousSerials;
    if (reason) {
      pair = await this.issueLeaf(snap, spec, state, target, now);
      tally.issued[client === undefined ? 'server' : 'client']++;
      if (client !== undefined && reason.keepOld)
        previousSerials = withReplaced(previousSerials, replacedOf(facts), now);
      const subject = client === undefined ? 'the server certificate' : `client ${client}'s certificate`;
      const message = `${reason.message}: issued ${subject} into Secret ${target.secretName}`;
      tally.notes.push({ type: reason.type, reason: reason.reason, message });
    } else {
      // A re-issue rewrites the bundle anyway; otherwise a bundle without the signing CA was edited by hand.
      const bundle = bundleProblem(secretText(existing, SECRET_KEYS.caCert), state.current.certPem);
      const message = `Secret ${target.secretName}: ${bundle}; restored the trust bundle`;
      if (bundle) tally.notes.push({ type: 'Warning', reason: 'Repaired', message });
      const renewAt = renewRequestWake(facts, context);
      if (renewAt) tally.wakeAt.push(renewAt);
    }
    const info = certInfo(pair!.certPem, spec.renewBeforeMs);
    tally.wakeAt.push(info.renewalTime.getTime());
    return {
      secretName: target.secretName,
      labels: target.labels,
      annotations: {
        [ISSUANCE_HASH_ANNOTATION]: target.hash,
        ...(previousSerials ? { [PREVIOUS_SERIALS_ANNOTATION]: previousSerials } : {}),
      },
      pair: pair!,
      info,
      client,
      keptOnOldCa: !reason && !facts.onCurrentCa,
      replaced:
        client === undefined ? [] : parsePreviousSerials(previousSerials).filter((e) => new Date(e.notAfter) > now),
    };
  }

  private issueLeaf(snap: Snapshot, spec: ResolvedSpec, state: CaState, target: LeafTarget, now: Date) {
    const common = { ca: state.current, algorithm: spec.keyAlgorithm, validityMs: spec.validityMs, now };
    if (target.identity.kind === 'server') return issueServer({ ...common, dnsNames: target.dnsNames });
    const { client } = target.identity;
    return issueClient({
      ...common,
      endpoint: snap.name,
      namespace: snap.namespace,
      client,
      trustDomain: spec.trustDomain,
    });
  }

  /** The CRL bundle for the server Secret: one CRL per trusted CA, kept or signed again. */
  private async crl(snap: Snapshot, state: CaState, now: Date, tally: Tally): Promise<string> {
    const server = snap.secret(serverSecretName(snap.name));
    const published = snap.publishedCrls;
    if (server && snap.ep.status?.server && published.length === 0) {
      tally.notes.push({
        type: 'Warning',
        reason: 'Repaired',
        message: `Secret ${server.metadata?.name}: ${secretText(server, SECRET_KEYS.crl) ? 'ca.crl held no readable CRL' : 'ca.crl was missing'}; signed the CRL again`,
      });
    }
    const cas = trustedCas(state).map((pair) => ({
      pair,
      serial: certInfo(pair.certPem).serialNumber,
      subject: parseCertificates(pair.certPem)[0]!.subject,
    }));
    const plan = planCrls(cas, state.revoked, published, now);
    tally.wakeAt.push(...plan.wakeAt);
    const parts = await Promise.all(
      plan.parts.map((part) =>
        'keep' in part ? part.keep : issueCRL({ ...part.sign, now, nextUpdateMs: CRL_VALIDITY_MS }),
      ),
    );
    return parts.join('');
  }

  /** Services, NetworkPolicy and the pods report: what does not depend on the certificates. */
  private otherWrites(snap: Snapshot, spec: ResolvedSpec) {
    const services = serviceWrites(snap.ep, spec, snap.services);
    const desiredPolicy = desiredNetworkPolicy(snap, spec, spec.sidecarAdminPort);
    const pods = podReport(snap.pods, snap.ep.spec.podSelector, snap.namespace);
    return {
      writes: [...services.writes, ...networkPolicyWrites(snap.ep, desiredPolicy, snap.networkPolicies)],
      degraded: [services.skipped, pods.degraded].filter((d) => !!d),
      injectedPods: pods.injected,
      networkPolicy: desiredPolicy?.metadata?.name ?? 'None',
    };
  }

  // ---- apply -----------------------------------------------------------------------------------------

  /**
   * The apply rule: the CA Secret first (it holds the keys and the revocation ledger everything else is derived
   * from, so a crash never leaves a leaf signed by, or a client deleted without a ledger entry in, a CA Secret
   * that does not record it); then the leaf Secrets, server before clients; then the Secrets of removed clients;
   * then Services and the NetworkPolicy; then Events, and the status last, so it reports only what was written.
   */
  private async apply(snap: Snapshot, plan: Plan, now: Date): Promise<void> {
    const { writer } = this.deps;
    // Issued means signed, whether or not the write that stores it then wins (a 409 discards it): counted first.
    for (const kind of ['ca', 'server', 'client'] as const)
      if (plan.issued[kind]) this.deps.metrics.issued.inc({ certificate: kind }, plan.issued[kind]);
    const secrets = [plan.caSecret, ...plan.leafSecrets].map((desired) =>
      secretWrites(snap.secret(desired.name), desired),
    );
    for (const write of [...secrets.flatMap((s) => s.writes), ...plan.deletions, ...plan.otherWrites])
      await writer.perform(snap.namespace, write);
    const notes = [...plan.notes, ...secrets.flatMap((s) => s.notes)];
    for (const note of notes) {
      this.log[note.type === 'Warning' ? 'warn' : 'info'](note.message, {
        endpoint: `${snap.namespace}/${snap.name}`,
        reason: note.reason,
      });
    }
    // Recorded side by side (one round trip, not one per note), and before the status that reports them.
    await Promise.all(notes.map((note) => this.deps.events.record(snap.ep, note.type, note.reason, note.message)));
    await this.applyStatus(snap.ep, plan.status, now);
    this.recordCertificateMetrics(snap, plan.status);
    this.deps.metrics.reconciles.inc({ result: 'success' });
  }

  private async applyStatus(ep: MtlsEndpoint, input: StatusInput, now: Date): Promise<void> {
    const conditions = endpointConditions(input);
    const previous = (type: string) => ep.status?.conditions?.find((c) => c.type === type);
    const degraded = input.degraded[0];
    if (degraded && previous('Degraded')?.message !== conditions.degraded.message) {
      await this.deps.events.record(ep, 'Warning', degraded.reason, conditions.degraded.message);
    }
    await this.warnRenewBeforeOnce(ep, input.renewBeforeTooShort, previous('RenewBeforeTooShort')?.message);
    await this.writeStatus(
      ep,
      (current) => conditionList(conditions).reduce((list, next) => setCondition(list, next, now), current),
      endpointStatusFields(input),
    );
  }

  private async warnRenewBeforeOnce(ep: MtlsEndpoint, warning: string | undefined, reported: string | undefined) {
    const key = `${ep.metadata!.namespace}/${ep.metadata!.name}`;
    if (!warning) {
      this.renewBeforeWarned.delete(key);
    } else if (reported !== warning && this.renewBeforeWarned.get(key) !== warning) {
      await this.deps.events.record(ep, 'Warning', 'RenewBeforeTooShort', warning);
      this.renewBeforeWarned.set(key, warning);
    }
  }

  /** Writes status only if it differs from what is stored, so a no-op reconcile makes no write. */
  private async writeStatus(
    ep: MtlsEndpoint,
    conditions: (current: Condition[]) => Condition[],
    fields: object = {},
  ): Promise<void> {
    const current: Record<string, unknown> = { ...ep.status };
    const desired: Record<string, unknown> = {
      ...current,
      ...fields,
      observedGeneration: ep.metadata?.generation,
      conditions: conditions(ep.status?.conditions ?? []),
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

  private async reportInvalidSpec(ep: MtlsEndpoint, err: SpecError, now: Date): Promise<void> {
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

  private recordCertificateMetrics(snap: Snapshot, status: StatusInput): void {
    const base = { namespace: snap.namespace, endpoint: snap.name };
    const series: CertificateLabels[] = [];
    const set = (labels: CertificateLabels, info: CertInfo) => {
      this.deps.metrics.setCertificateTimes(labels, info.notAfter, info.renewalTime);
      series.push(labels);
    };
    set({ ...base, certificate: 'ca', client: '' }, status.ca);
    if (status.server) set({ ...base, certificate: 'server', client: '' }, status.server);
    for (const client of status.clients) set({ ...base, certificate: 'client', client: client.name }, client);
    this.deps.metrics.pruneEndpoint(snap.namespace, snap.name, series);
  }
}

/** What a leaf Secret must hold, from the spec: its name, labels, identity and issuance hash. */
interface LeafTarget {
  secretName: string;
  labels: Record<string, string>;
  identity: LeafIdentity;
  dnsNames: string[];
  hash: string;
  issuedBefore: boolean;
}

function leafTarget(snap: Snapshot, spec: ResolvedSpec, client: string | undefined): LeafTarget {
  const { name, namespace, ep } = snap;
  if (client === undefined) {
    const dnsNames = serverDnsNames(snap, spec);
    return {
      secretName: serverSecretName(name),
      labels: { [CERTIFICATE_LABEL]: 'server' },
      identity: { kind: 'server' },
      dnsNames,
      hash: issuanceHash(['server', spec.keyAlgorithm, spec.validityMs, spec.renewBeforeMs ?? '', ...dnsNames, '']),
      issuedBefore: !!ep.status?.server,
    };
  }
  const spiffeId = clientSpiffeId(spec.trustDomain, namespace, name, client);
  return {
    secretName: clientSecretName(name, client),
    labels: { [CERTIFICATE_LABEL]: 'client', [CLIENT_LABEL]: client },
    identity: { kind: 'client', client, spiffeId },
    dnsNames: [],
    hash: issuanceHash(['client', spec.keyAlgorithm, spec.validityMs, spec.renewBeforeMs ?? '', spiffeId]),
    issuedBefore: !!ep.status?.clients?.some((c) => c.name === client),
  };
}

/** The Service names (the test listeners' too), then spec.dnsNames: the server certificate's SANs. */
function serverDnsNames(snap: Snapshot, spec: ResolvedSpec): string[] {
  const modes = spec.listeners.map((listener) => listener.mode);
  const testService = spec.testListeners.length ? testServiceDnsNames(snap.name, snap.namespace) : [];
  return [...new Set([...serviceDnsNames(snap.name, snap.namespace, modes), ...testService, ...spec.dnsNames])];
}

function replacedOf(facts: InspectedLeaf): HeldCertificate | undefined {
  if (!facts.certPem || !facts.signerSerial) return undefined;
  const info = certInfo(facts.certPem);
  return { serial: info.serialNumber, caSerial: facts.signerSerial, notAfter: info.notAfter.toISOString() };
}

function rolloverStatus(state: CaState): StatusInput['rollover'] {
  if (!state.phase || !state.phaseSince) return undefined;
  const newCa = state.phase === 'Propagating' ? state.next! : state.current;
  return { phase: state.phase, since: state.phaseSince, newCaSerial: certInfo(newCa.certPem).serialNumber };
}

/** The status of the Ready condition, Unknown when there is none yet. */
function readyStatus(conditions: readonly Condition[] | undefined): ConditionStatus {
  return conditions?.find((c) => c.type === 'Ready')?.status ?? 'Unknown';
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

export type { RevokedEntry };
