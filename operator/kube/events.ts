import {
  CoreV1Api,
  type KubeConfig,
  type KubernetesObject,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import { createHash, randomBytes } from 'node:crypto';
import { errorMessage, logger, redactPrivateKeys } from '../log.ts';

export type EventType = 'Normal' | 'Warning';

/**
 * Records core/v1 Events on an object (what `kubectl describe` shows). Identical events within a short
 * window are aggregated into one with a count, as kubelet's recorder does, so a retry loop cannot flood
 * etcd. Failures to record are logged, never thrown: an event is not worth failing a reconcile for.
 */
export class EventRecorder {
  private readonly api: CoreV1Api;
  private readonly log = logger('events');
  private readonly recent = new Map<string, { name: string; count: number; first: Date; at: number }>();

  private readonly component: string;

  constructor(kc: KubeConfig, component: string) {
    this.component = component;
    this.api = kc.makeApiClient(CoreV1Api);
  }

  async record(obj: KubernetesObject, type: EventType, reason: string, message: string): Promise<void> {
    const namespace = obj.metadata?.namespace ?? 'default';
    const safeMessage = redactPrivateKeys(message).slice(0, 1024);
    // A digest, not the text: up to 10,000 keys of up to a kilobyte each were megabytes of the operator's memory.
    const key = createHash('sha256')
      .update(`${namespace}/${obj.metadata?.name}/${obj.metadata?.uid}/${type}/${reason}/${safeMessage}`)
      .digest('base64');
    const now = new Date();
    const previous = this.recent.get(key);
    try {
      if (previous && Date.now() - previous.at < 10 * 60_000) {
        previous.count++;
        previous.at = Date.now();
        await this.api.patchNamespacedEvent(
          { name: previous.name, namespace, body: { count: previous.count, lastTimestamp: now } },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
        );
        return;
      }
      const name = `${obj.metadata?.name}.${randomBytes(8).toString('hex')}`;
      await this.api.createNamespacedEvent({
        namespace,
        body: {
          metadata: { name, namespace },
          involvedObject: {
            apiVersion: obj.apiVersion,
            kind: obj.kind,
            name: obj.metadata?.name,
            namespace,
            uid: obj.metadata?.uid,
            resourceVersion: obj.metadata?.resourceVersion,
          },
          type,
          reason,
          message: safeMessage,
          source: { component: this.component },
          reportingComponent: this.component,
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      });
      this.recent.set(key, { name, count: 1, first: now, at: Date.now() });
      if (this.recent.size > 10_000) this.recent.delete(this.recent.keys().next().value as string);
    } catch (err) {
      this.log.warn('could not record an event', {
        reason,
        object: `${namespace}/${obj.metadata?.name}`,
        error: errorMessage(err),
      });
    }
  }
}
