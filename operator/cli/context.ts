import type { KubeConfig } from '@kubernetes/client-node';
import { UsageError } from '../../common/flags.ts';
import { loadKubeConfig } from '../kube/kubeconfig.ts';

/** The flags every user-facing command shares, as kubectl spells them. */
export const KUBE_FLAGS = {
  kubeconfig: { type: 'string', value: 'FILE', help: 'kubeconfig (default: KUBECONFIG or ~/.kube/config)' },
  context: { type: 'string', value: 'NAME', help: 'kubeconfig context (default: the current one)' },
  namespace: {
    type: 'string',
    short: 'n',
    value: 'NS',
    help: 'namespace (default: the kubeconfig context namespace, else default)',
  },
} as const;

export const OUTPUT_FLAG = {
  output: { type: 'string', short: 'o', value: 'FORMAT', help: 'table, json or yaml', default: 'table' },
} as const;

/**
 * The kubeconfig and namespace the usual way: --kubeconfig, else KUBECONFIG, else ~/.kube/config (in-cluster
 * when there is none); --context; -n, else the context's namespace, else `default`. kubectl runs a plugin with
 * its own environment, so `kubectl mtls` sees the same KUBECONFIG kubectl does.
 */
export function kubeContext(flags: { kubeconfig?: string; context?: string; namespace?: string }): {
  kc: KubeConfig;
  namespace: string;
} {
  const kc = loadKubeConfig(flags.kubeconfig);
  if (flags.context) {
    if (!kc.getContextObject(flags.context)) {
      const known = kc.getContexts().map((c) => c.name);
      throw new UsageError(
        `--context ${flags.context}: no such context in the kubeconfig (it has: ${known.join(', ') || 'none'})`,
      );
    }
    kc.setCurrentContext(flags.context);
  }
  const namespace = flags.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default';
  return { kc, namespace };
}
