import { CustomObjectsApi, type KubeConfig, type V1LabelSelector } from '@kubernetes/client-node';
import { ENDPOINT_RESOURCE, type MtlsEndpoint } from '../api/types.ts';
import { ResilientInformer } from '../kube/informer.ts';
import { errorMessage, logger } from '../log.ts';
import type { InjectorSettings } from './injector.ts';
import { WebhookServer } from './server.ts';
import { WebhookServingCert } from './serving-cert.ts';
import { syncWebhookConfiguration, WEBHOOK_PATH } from './webhook-configuration.ts';

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
  /** Only the leader writes the MutatingWebhookConfiguration; every replica serves. */
  isLeader: () => boolean;
  checkEveryMs?: number;
}

/** The admission webhook of one replica: its serving certificate, its endpoints cache and its server. */
export class Webhook {
  private readonly options: WebhookOptions;
  private readonly log = logger('webhook');
  private readonly endpoints: ResilientInformer<MtlsEndpoint>;
  private readonly cert: WebhookServingCert;
  private server: WebhookServer | undefined;
  private timer: NodeJS.Timeout | undefined;
  private caPem = '';
  port = 0;

  constructor(options: WebhookOptions) {
    this.options = options;
    const custom = options.kubeConfig.makeApiClient(CustomObjectsApi);
    const { group, version, plural } = ENDPOINT_RESOURCE;
    this.endpoints = new ResilientInformer<MtlsEndpoint>(
      options.kubeConfig,
      `/apis/${group}/${version}/${plural}`,
      () => custom.listClusterCustomObject({ group, version, plural }) as never,
      { name: 'mtlsendpoints (webhook)' },
    );
    const url = options.url ? new URL(options.url) : undefined;
    const isIp = !!url && /^[\d.]+$|^\[/.test(url.hostname);
    const svc = `${options.serviceName}.${options.namespace}`;
    this.cert = new WebhookServingCert(options.kubeConfig, {
      namespace: options.namespace,
      secretName: options.secretName,
      dnsNames: url && !isIp ? [url.hostname] : [options.serviceName, svc, `${svc}.svc`, `${svc}.svc.cluster.local`],
      ipAddresses: url && isIp ? [url.hostname.replace(/^\[|\]$/g, '')] : undefined,
    });
  }

  async start(): Promise<void> {
    await this.endpoints.start();
    await this.endpoints.hasSynced();
    const tls = await this.cert.ensure();
    this.caPem = tls.caPem;
    this.server = new WebhookServer(tls, (ns) => this.endpoints.list(ns), this.options.settings);
    this.port = await this.server.listen(this.options.port, this.options.host);
    this.log.info('admission webhook serving', { port: this.port, path: WEBHOOK_PATH });
    await this.syncConfiguration();
    this.timer = setInterval(() => void this.refresh(), this.options.checkEveryMs ?? 10 * 60_000);
    this.timer.unref();
  }

  /** Renews the certificate when due (any replica), swaps it in, and has the leader publish the CA. */
  async refresh(): Promise<void> {
    try {
      const tls = await this.cert.ensure();
      this.server?.setTls(tls);
      this.caPem = tls.caPem;
      await this.syncConfiguration();
    } catch (err) {
      this.log.warn('webhook certificate check failed; will retry', { error: errorMessage(err) });
    }
  }

  async syncConfiguration(): Promise<void> {
    if (!this.options.isLeader()) return;
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

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.endpoints.stop();
    await this.server?.close();
  }
}
