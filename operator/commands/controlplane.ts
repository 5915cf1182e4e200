import { ensureBinaries, ETCD_VERSION, KUBERNETES_VERSION } from '../controlplane/binaries.ts';
import { LocalControlPlane } from '../controlplane/local-control-plane.ts';
import { helpText, parseFlags } from '../flags.ts';
import { untilSignal } from './run-until-signal.ts';

const FLAGS = {
  'build-only': { type: 'boolean', help: 'build or find the binaries, print where they are, and exit' },
} as const;

export async function run(argv: string[]): Promise<number> {
  const { flags, help } = parseFlags(FLAGS, argv);
  if (help) {
    process.stdout.write(helpText('controlplane', '[--build-only]', FLAGS));
    return 0;
  }
  if (flags['build-only']) {
    const binaries = await ensureBinaries();
    process.stdout.write(
      `Kubernetes v${KUBERNETES_VERSION}, etcd v${ETCD_VERSION}\n${JSON.stringify(binaries, null, 2)}\n`,
    );
    return 0;
  }
  const plane = await LocalControlPlane.start({
    progress: (line) => process.stderr.write(`[control-plane] ${line}\n`),
  });
  process.stdout.write(
    `Local control plane is up (Kubernetes v${KUBERNETES_VERSION}).\n` +
      `  export KUBECONFIG=${plane.kubeconfigPath}\n  ${plane.binaries.kubectl} get namespaces\n` +
      'Press Ctrl-C to stop it.\n',
  );
  await untilSignal();
  await plane.stop();
  return 0;
}
