import { CoreV1Api, type KubeConfig, type V1OwnerReference, type V1Secret } from '@kubernetes/client-node';
import { isConflict, isNotFound } from '../kube/errors.ts';
import { withOwners } from '../kube/owner.ts';
import { encodeSecretData, secretText } from '../kube/secret-data.ts';
import { errorMessage, logger } from '../log.ts';
import type { PemPair } from '../pki/issue.ts';
import { certInfo, pairProblem, subjectAltNames } from '../pki/certs.ts';
import { issueCA, issueServer } from '../pki/issue.ts';

/** The webhook's serving certificate and the CA that API servers must trust to call it. */
export interface WebhookTls extends PemPair {
  caPem: string;
  notAfter: Date;
  renewalTime: Date;
}

export interface ServingCertOptions {
  namespace: string;
  secretName: string;
  /** DNS names and IPs the API server uses to reach the webhook. */
  dnsNames: string[];
  ipAddresses?: string[];
  caValidityMs?: number;
  validityMs?: number;
  /** Set on the Secret (the operator's Deployment), so it goes when its owner is deleted. */
  ownerReferences?: V1OwnerReference[];
}

const DAY = 24 * 3_600_000;

/**
 * Keeps the webhook's own small PKI in one Secret (type kubernetes.io/tls, with ca.crt and ca.key beside
 * the leaf): every replica reads the same certificate, the first to start creates it, and whoever finds it
 * near its renewal time (one third of its life left) re-issues it. Writes carry the resourceVersion, so two
 * replicas cannot both rotate it: create-or-read, and a replica that loses a race uses what the winner wrote.
 */
export class WebhookServingCert {
  private readonly core: CoreV1Api;
  private readonly log = logger('webhook-cert');
  private readonly options: ServingCertOptions;

  constructor(kc: KubeConfig, options: ServingCertOptions) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.options = options;
  }

  /** Returns a valid certificate, creating or renewing it as needed. */
  async ensure(now = new Date(), attempt = 1): Promise<WebhookTls> {
    const { namespace, secretName } = this.options;
    let existing: V1Secret | undefined;
    try {
      existing = await this.core.readNamespacedSecret({ namespace, name: secretName });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    const current = existing && (await this.usable(existing, now));
    if (current) {
      await this.adopt(existing!);
      return current;
    }

    const caValidityMs = this.options.caValidityMs ?? 10 * 365 * DAY;
    const validityMs = this.options.validityMs ?? 365 * DAY;
    const oldCa = existing ? this.pair(existing, 'ca.crt', 'ca.key') : undefined;
    const ca =
      oldCa &&
      !(await pairProblem(oldCa, now, { isCA: true })) &&
      certInfo(oldCa.certPem).notAfter.getTime() - now.getTime() > 2 * validityMs
        ? oldCa
        : await issueCA({ endpoint: 'webhook', namespace, algorithm: 'ECDSA-P256', validityMs: caValidityMs, now });
    const leaf = await issueServer({
      ca,
      dnsNames: this.options.dnsNames,
      ipAddresses: this.options.ipAddresses,
      algorithm: 'ECDSA-P256',
      validityMs,
      now,
    });
    const body: V1Secret = {
      metadata: {
        ...(existing?.metadata ?? {}),
        name: secretName,
        namespace,
        ownerReferences: withOwners(existing?.metadata?.ownerReferences, this.options.ownerReferences),
        labels: {
          ...(existing?.metadata?.labels ?? {}),
          'app.kubernetes.io/managed-by': 'mtls-operator',
          'app.kubernetes.io/component': 'webhook',
        },
      },
      type: 'kubernetes.io/tls',
      data: encodeSecretData({
        'tls.crt': leaf.certPem,
        'tls.key': leaf.keyPem,
        'ca.crt': ca.certPem,
        'ca.key': ca.keyPem,
      }),
    };
    try {
      if (existing) await this.core.replaceNamespacedSecret({ namespace, name: secretName, body });
      else await this.core.createNamespacedSecret({ namespace, body });
      this.log.info(existing ? 'renewed the webhook serving certificate' : 'issued the webhook serving certificate', {
        secret: `${namespace}/${secretName}`,
      });
    } catch (err) {
      // Another replica won the race: use what it wrote.
      if (!isConflict(err) || attempt >= 5) throw err;
      this.log.debug('another replica wrote the webhook certificate first', { error: errorMessage(err) });
      return this.ensure(now, attempt + 1);
    }
    return this.tlsOf(leaf, ca.certPem);
  }

  /** Adds the owner to a Secret written without it (by an older version); a lost race is left to the next check. */
  private async adopt(secret: V1Secret): Promise<void> {
    const owners = withOwners(secret.metadata?.ownerReferences, this.options.ownerReferences);
    if (owners === secret.metadata?.ownerReferences) return;
    const { namespace, secretName } = this.options;
    try {
      await this.core.replaceNamespacedSecret({
        namespace,
        name: secretName,
        body: { ...secret, metadata: { ...secret.metadata, ownerReferences: owners } },
      });
      this.log.info('set the owner of the webhook serving Secret', { secret: `${namespace}/${secretName}` });
    } catch (err) {
      if (!isConflict(err)) throw err;
    }
  }

  private pair(secret: V1Secret, certKey: string, keyKey: string): PemPair | undefined {
    const certPem = secretText(secret, certKey);
    const keyPem = secretText(secret, keyKey);
    return certPem && keyPem ? { certPem, keyPem } : undefined;
  }

  private async usable(secret: V1Secret, now: Date): Promise<WebhookTls | undefined> {
    const leaf = this.pair(secret, 'tls.crt', 'tls.key');
    const caPem = secretText(secret, 'ca.crt');
    if (!leaf || !caPem || (await pairProblem(leaf, now, { isCA: false }))) return undefined;
    const tls = this.tlsOf(leaf, caPem);
    if (now >= tls.renewalTime) return undefined;
    const sans = new Set(await subjectAltNames(leaf.certPem));
    if (![...this.options.dnsNames, ...(this.options.ipAddresses ?? [])].every((name) => sans.has(name)))
      return undefined;
    return tls;
  }

  private tlsOf(leaf: PemPair, caPem: string): WebhookTls {
    const info = certInfo(leaf.certPem);
    return { ...leaf, caPem, notAfter: info.notAfter, renewalTime: info.renewalTime };
  }
}
