import type { V1Pod } from '@kubernetes/client-node';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { MtlsEndpoint } from '../api/types.ts';
import { errorMessage, logger } from '../log.ts';
import { decideInjection, type InjectorSettings } from './injector.ts';
import type { WebhookTls } from './serving-cert.ts';
import { WEBHOOK_PATH } from './webhook-configuration.ts';

interface AdmissionReview {
  apiVersion: string;
  kind: string;
  request?: { uid: string; namespace?: string; operation?: string; object?: V1Pod; dryRun?: boolean };
}

const MAX_BODY_BYTES = 3 * 1024 * 1024;

/**
 * The HTTPS admission endpoint. It answers from the endpoints cache only (no API calls on the admission
 * path), and its certificate can be swapped in place (`setTls`) without dropping connections.
 */
export class WebhookServer {
  private readonly server: Server;
  private readonly log = logger('webhook');
  private readonly endpointsIn: (namespace: string) => readonly MtlsEndpoint[];
  private readonly settings: InjectorSettings;
  admissions = 0;

  constructor(
    tls: WebhookTls,
    endpointsIn: (namespace: string) => readonly MtlsEndpoint[],
    settings: InjectorSettings,
  ) {
    this.endpointsIn = endpointsIn;
    this.settings = settings;
    this.server = createServer({ cert: tls.certPem, key: tls.keyPem, minVersion: 'TLSv1.2' }, (req, res) => {
      if (req.method === 'GET' && req.url === '/healthz') return void res.end('ok');
      if (req.method !== 'POST' || req.url?.split('?')[0] !== WEBHOOK_PATH) {
        res.statusCode = 404;
        return void res.end('not found');
      }
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BODY_BYTES) req.destroy();
        else chunks.push(chunk);
      });
      req.on('end', () => {
        const reply = this.review(Buffer.concat(chunks).toString('utf8'));
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify(reply));
      });
    });
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 15_000;
  }

  setTls(tls: WebhookTls): void {
    this.server.setSecureContext({ cert: tls.certPem, key: tls.keyPem, minVersion: 'TLSv1.2' });
  }

  listen(port: number, host = '0.0.0.0'): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => resolve((this.server.address() as AddressInfo).port));
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private review(body: string): AdmissionReview & { response: unknown } {
    let review: AdmissionReview;
    try {
      review = JSON.parse(body) as AdmissionReview;
    } catch (err) {
      this.log.warn('admission request is not JSON', { error: errorMessage(err) });
      return { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid: '', allowed: true } };
    }
    const request = review.request;
    const respond = (response: Record<string, unknown>) => ({
      apiVersion: review.apiVersion ?? 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      response: { uid: request?.uid ?? '', ...response },
    });
    if (!request?.object || request.operation !== 'CREATE') return respond({ allowed: true });
    this.admissions++;
    const pod = request.object;
    const namespace = request.namespace ?? pod.metadata?.namespace ?? '';
    const podName = pod.metadata?.name ?? `${pod.metadata?.generateName ?? ''}<generated>`;
    try {
      const decision = decideInjection(pod, this.endpointsIn(namespace), this.settings);
      if (decision.action === 'deny') {
        this.log.warn('refused a pod', { pod: `${namespace}/${podName}`, reason: decision.message });
        return respond({ allowed: false, status: { code: 403, reason: 'Forbidden', message: decision.message } });
      }
      if (decision.action === 'skip') {
        this.log.debug('pod not injected', { pod: `${namespace}/${podName}`, reason: decision.reason });
        return respond({ allowed: true });
      }
      this.log.info('injected the mTLS sidecar', {
        pod: `${namespace}/${podName}`,
        endpoint: decision.endpoint,
        dryRun: !!request.dryRun,
      });
      return respond({
        allowed: true,
        patchType: 'JSONPatch',
        patch: Buffer.from(JSON.stringify(decision.patch)).toString('base64'),
      });
    } catch (err) {
      // Never block a pod because of a bug here; the controller reports uninjected pods.
      this.log.error('injection failed; admitting the pod unchanged', {
        pod: `${namespace}/${podName}`,
        error: errorMessage(err),
      });
      return respond({ allowed: true, warnings: [`mtls-operator could not inject the sidecar: ${errorMessage(err)}`] });
    }
  }
}
