import {
  CustomObjectsApi,
  type KubeConfig,
  type V1LabelSelector,
  type V1OwnerReference,
} from '@kubernetes/client-node';
import { isIP } from 'node:net';
import { checkServerIdentity, connect } from 'node:tls';
import { ENDPOINT_RESOURCE, type MtlsEndpoint } from '../api/types.ts';
import { customObjectList, ResilientInformer } from '../kube/informer.ts';
import { errorMessage, logger } from '../log.ts';
import type { InjectorSettings } from './injector.ts';
import { WebhookServer } from './server.ts';
import { WebhookServingCert } from './serving-cert.ts';
import { syncWebhookConfiguration, WEBHOOK_PATH, webhookCaBundles } from './webhook-configuration.ts';

export interface WebhookOptions {
  kubeConfig: KubeConfig;
  port: number;
  host?: string;
  /** Outside a cluster: the URL the API server calls (e.g. https://127.0.0.1:9443/mutate-pods). */
  url?: string;
  configurationName: string;
  /** With `url`: which namespaces the configuration selects (default: the injection label). */
  namespaceSelector?: V1LabelSelector;
  /** Where the serving certificate lives, and the Service name it must be valid for in a cluster. */
  namespace: string;
  secretName: string;
  serviceName: string;
  settings: InjectorSettings;
  /** Set on the serving Secret (the operator's Deployment), so it goes when its owner is deleted. */
  ownerReferences?: V1OwnerReference[];
  /** How often the serving certificate is checked for renewal (default 10 minutes). */
  checkEveryMs?: number;
  /** How often a ready replica checks that the caBundle still verifies what it serves (default 30 s). */
  verifyEveryMs?: number;
  /** How often a replica that is not ready tries again (default 2 s). */
  retryMs?: number;
}

/**
 * The admission webhook of one replica: its serving certificate, its endpoints cache and its server.
 *
 * Every replica, leader or not, makes the webhook usable by itself: it creates or reads the shared serving
 * Secret, writes the Secret's CA into the configuration's caBundle when it differs (idempotent, so replicas
 * agree), and is `ready` only once a TLS handshake with its own listener, verified against the caBundle the
 * API server currently holds and under the name the API server dials, succeeds. A fresh install so injects
 * from its first Ready pod, without waiting for a leader. A ready replica re-checks every `verifyEveryMs`
 * and repairs a caBundle that no longer verifies it (edited by hand, reset by a re-install).
 */
export class Webhook {
  private readonly options: WebhookOptions;
  private readonly log = logger('webhook');
  private readonly endpoints: ResilientInformer<MtlsEndpoint>;
  private readonly cert: WebhookServingCert;
  /** The name the API server checks the certificate against: the URL's host, or the Service's DNS name. */
  private readonly serverName: string;
  private server: WebhookServer | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private caPem = '';
  private nextRenewalCheck = 0;
  private problem: string | undefined = 'starting';
  port = 0;

  constructor(options: WebhookOptions) {
    this.options = options;
    const custom = options.kubeConfig.makeApiClient(CustomObjectsApi);
    const { group, version, plural } = ENDPOINT_RESOURCE;
    this.endpoints = new ResilientInformer<MtlsEndpoint>(
      options.kubeConfig,
      `/apis/${group}/${version}/${plural}`,
      () => customObjectList<MtlsEndpoint>(custom.listClusterCustomObject({ group, version, plural })),
      { name: 'mtlsendpoints (webhook)' },
    );
    const url = options.url ? new URL(options.url) : undefined;
    const isIp = !!url && /^[\d.]+$|^\[/.test(url.hostname);
    const svc = `${options.serviceName}.${options.namespace}`;
    this.serverName = url ? url.hostname.replace(/^\[|\]$/g, '') : `${svc}.svc`;
    this.cert = new WebhookServingCert(options.kubeConfig, {
      namespace: options.namespace,
      secretName: options.secretName,
      dnsNames: url && !isIp ? [url.hostname] : [options.serviceName, svc, `${svc}.svc`, `${svc}.svc.cluster.local`],
      ipAddresses: url && isIp ? [url.hostname.replace(/^\[|\]$/g, '')] : undefined,
      ownerReferences: options.ownerReferences,
    });
  }

  /** True once the API server's caBundle verifies the certificate this replica serves (see the class). */
  get ready(): boolean {
    return this.problem === undefined;
  }

  /** Why the webhook is not ready, for /readyz. */
  get notReadyReason(): string | undefined {
    return this.problem;
  }

  /** Serves, and makes one attempt to become ready; later attempts run in the background. */
  async start(): Promise<void> {
    await this.endpoints.start();
    await this.endpoints.hasSynced();
    const tls = await this.cert.ensure();
    this.caPem = tls.caPem;
    this.nextRenewalCheck = Date.now() + (this.options.checkEveryMs ?? 10 * 60_000);
    this.server = new WebhookServer(tls, (ns) => this.endpoints.list(ns), this.options.settings);
    this.port = await this.server.listen(this.options.port, this.options.host);
    this.log.info('admission webhook serving', { port: this.port, path: WEBHOOK_PATH });
    await this.converge(false);
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    const delay = this.ready ? (this.options.verifyEveryMs ?? 30_000) : (this.options.retryMs ?? 2_000);
    this.timer = setTimeout(() => void this.tick(), delay);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    const renewalDue = Date.now() >= this.nextRenewalCheck;
    await this.converge(renewalDue);
    this.schedule();
  }

  /**
   * A ready replica verifies (one GET and a local handshake); a replica that is not ready, finds the caBundle
   * no longer verifies it, or is due for a renewal check re-reads the serving Secret (renewing it when due),
   * brings the caBundle in step, and verifies again.
   */
  private async converge(renewalDue: boolean): Promise<void> {
    let problem: string | undefined;
    try {
      if (this.ready && !renewalDue) problem = await this.verify();
      if (!this.ready || renewalDue || problem) {
        await this.refresh();
        problem = await this.verify();
      }
    } catch (err) {
      if (this.ready && problem === undefined) {
        // The API server could not be asked (unreachable, throttled): what it trusted a moment ago still holds,
        // and a replica that turned unready on every failed GET would empty the webhook's Service for nothing.
        this.log.warn('webhook check failed; staying ready on the last verdict', { error: errorMessage(err) });
        return;
      }
      problem = `could not check the webhook configuration: ${errorMessage(err)}`;
    }
    if (this.stopped) return;
    if (problem === undefined && this.problem !== undefined) {
      this.log.info('webhook ready: the caBundle of the webhook configuration verifies the certificate it serves', {
        configuration: this.options.configurationName,
      });
    } else if (problem !== undefined && problem !== this.problem) {
      this.log.warn('webhook not ready: pods are not injected through this replica', { reason: problem });
    }
    this.problem = problem;
  }

  /** Re-reads the serving certificate (renewing it when due), swaps it in, and writes the CA into caBundle. */
  async refresh(): Promise<void> {
    const tls = await this.cert.ensure();
    this.server?.setTls(tls);
    this.caPem = tls.caPem;
    this.nextRenewalCheck = Date.now() + (this.options.checkEveryMs ?? 10 * 60_000);
    await this.syncConfiguration();
  }

  async syncConfiguration(): Promise<void> {
    await syncWebhookConfiguration(
      this.options.kubeConfig,
      {
        name: this.options.configurationName,
        url: this.options.url,
        namespaceSelector: this.options.namespaceSelector,
      },
      this.caPem,
    );
  }

  /** Undefined if every webhook's caBundle verifies what this replica serves, else what is wrong. */
  private async verify(): Promise<string | undefined> {
    const name = this.options.configurationName;
    const bundles = await webhookCaBundles(this.options.kubeConfig, name);
    if (!bundles) {
      return `MutatingWebhookConfiguration ${name} not found: install the chart (it creates it), or pass --webhook-url`;
    }
    if (bundles.length === 0) return `MutatingWebhookConfiguration ${name} has no webhooks`;
    for (const bundle of new Set(bundles)) {
      if (!bundle) return `MutatingWebhookConfiguration ${name} has no caBundle yet`;
      try {
        await this.handshake(bundle);
      } catch (err) {
        return `the caBundle of MutatingWebhookConfiguration ${name} does not verify the certificate this replica serves (${errorMessage(err)})`;
      }
    }
    return undefined;
  }

  /** A TLS handshake with our own listener, as the API server makes it: trusting `caPem` alone. */
  private handshake(caPem: string): Promise<void> {
    const host =
      !this.options.host || this.options.host === '0.0.0.0'
        ? '127.0.0.1'
        : this.options.host === '::'
          ? '::1'
          : this.options.host;
    return new Promise((resolve, reject) => {
      const socket = connect(
        {
          host,
          port: this.port,
          ca: caPem,
          ...(isIP(this.serverName) ? {} : { servername: this.serverName }),
          checkServerIdentity: (_host, cert) => checkServerIdentity(this.serverName, cert),
        },
        () => {
          socket.end();
          resolve();
        },
      );
      socket.setTimeout(5_000, () => socket.destroy(new Error('TLS handshake timed out')));
      socket.on('error', reject);
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.problem = 'stopping';
    clearTimeout(this.timer);
    await this.endpoints.stop();
    await this.server?.close();
  }
}
