import { KubeConfig, type RequestContext } from '@kubernetes/client-node';
import { statSync } from 'node:fs';

type Dispatcher = NonNullable<ReturnType<RequestContext['getDispatcher']>>;

/**
 * A KubeConfig whose API requests share their connections. client-node 2.0 builds a new undici Agent for
 * every request, so every call, watch or write opened its own TLS connection to the API server: one full
 * handshake per request on both sides, which at 1,000 endpoints was most of the controller's CPU and a good
 * part of its memory. Here the first dispatcher built for a set of credentials is kept and handed to every
 * later request (keep-alive, a pool per API server); a change of credentials (a rotated client certificate
 * or CA file, another context) starts a new one. Tokens travel in headers and are still read per request.
 */
export class SharedConnectionsKubeConfig extends KubeConfig {
  private shared: { key: string; dispatcher: Dispatcher } | undefined;

  override async applySecurityAuthentication(context: RequestContext): Promise<void> {
    await super.applySecurityAuthentication(context);
    if (!context.getDispatcher()) return; // plain HTTP without TLS options: fetch's global pool already
    const key = this.credentialsKey();
    // The agent built above for this request alone is dropped unused (it holds no connection yet).
    if (this.shared?.key !== key) this.shared = { key, dispatcher: context.getDispatcher()! };
    context.setDispatcher(this.shared.dispatcher);
  }

  /** What the TLS connection depends on; files count by modification time, so a rotated file is noticed. */
  private credentialsKey(): string {
    const cluster = this.getCurrentCluster();
    const user = this.getCurrentUser();
    const stamp = (file: string | undefined) => {
      if (!file) return '';
      try {
        return String(statSync(file).mtimeMs);
      } catch {
        return 'missing';
      }
    };
    return JSON.stringify([
      cluster?.server,
      cluster?.proxyUrl,
      cluster?.skipTLSVerify,
      cluster?.tlsServerName,
      cluster?.caData,
      stamp(cluster?.caFile),
      user?.name,
      user?.certData,
      stamp(user?.certFile),
      user?.keyData,
      stamp(user?.keyFile),
    ]);
  }
}

/** The operator's KubeConfig: a file, or KUBECONFIG / ~/.kube/config / in-cluster like kubectl. */
export function loadKubeConfig(file?: string): KubeConfig {
  const kc = new SharedConnectionsKubeConfig();
  if (file) kc.loadFromFile(file);
  else kc.loadFromDefault();
  return kc;
}
