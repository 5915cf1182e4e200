import { CoreV1Api } from '@kubernetes/client-node';
import { KIND } from '../api/types.ts';
import { kubeContext, KUBE_FLAGS, OUTPUT_FLAG } from '../cli/context.ts';
import { readEndpoint } from '../cli/endpoint.ts';
import { outputFormat, render } from '../cli/output.ts';
import { statusReport, statusTable } from '../cli/status-view.ts';
import { helpText, parseFlags, UsageError } from '../../common/flags.ts';
import { errorMessage } from '../log.ts';

const FLAGS = { ...KUBE_FLAGS, ...OUTPUT_FLAG } as const;

export async function run(argv: string[]): Promise<number> {
  const { flags, positionals, help } = parseFlags(FLAGS, argv);
  if (help) {
    process.stdout.write(helpText('status', 'ENDPOINT [-n NS] [-o table|json|yaml]', FLAGS));
    return 0;
  }
  const format = outputFormat(flags.output);
  if (positionals.length !== 1) throw new UsageError('expected one argument: the MtlsEndpoint name');
  const name = positionals[0]!;
  const { kc, namespace } = kubeContext(flags);
  const core = kc.makeApiClient(CoreV1Api);
  const endpoint = await readEndpoint(kc, namespace, name);
  // A client team may read its endpoint but not list pods or Events: the report says so instead of failing.
  const unreadable: string[] = [];
  const listed = <T>(what: string, list: Promise<{ items: T[] }>) =>
    list.then(
      (result) => result.items,
      (err: unknown) => {
        unreadable.push(`${what}: ${errorMessage(err)}`);
        return [] as T[];
      },
    );
  const [pods, events] = await Promise.all([
    listed('pods', core.listNamespacedPod({ namespace })),
    listed(
      'events',
      core.listNamespacedEvent({ namespace, fieldSelector: `involvedObject.kind=${KIND},involvedObject.name=${name}` }),
    ),
  ]);
  const report = statusReport({ endpoint, pods, events, unreadable });
  process.stdout.write(render(format, report, (r) => statusTable(r, new Date())));
  return 0;
}
