import { ensureBinaries, ensureNodeBinaries, ETCD_VERSION, KUBERNETES_VERSION } from '../controlplane/binaries.ts';
import { LocalControlPlane } from '../controlplane/local-control-plane.ts';
import { LocalNodeCluster } from '../controlplane/node/local-node-cluster.ts';
import { NODE_NETWORK } from '../controlplane/node/node-network.ts';
import { helpText, parseFlags } from '../../common/flags.ts';
import { untilSignal } from '../../common/signals.ts';

const FLAGS = {
  'build-only': { type: 'boolean', help: 'build or find the binaries, print where they are, and exit' },
  node: {
    type: 'boolean',
    help: 'also run a real node: kube-scheduler, containerd, kubelet, kube-proxy, NetworkPolicy (Linux, root)',
  },
} as const;

export async function run(argv: string[]): Promise<number> {
  const { flags, help } = parseFlags(FLAGS, argv);
  if (help) {
    process.stdout.write(helpText('controlplane', '[--node] [--build-only]', FLAGS));
    return 0;
  }
  if (flags['build-only']) {
    const binaries = flags.node ? await ensureNodeBinaries() : await ensureBinaries();
    process.stdout.write(
      `Kubernetes v${KUBERNETES_VERSION}, etcd v${ETCD_VERSION}\n${JSON.stringify(binaries, null, 2)}\n`,
    );
    return 0;
  }
  const progress = (line: string) => process.stderr.write(`[control-plane] ${line}\n`);
  if (flags.node) {
    const started = Date.now();
    // A Ctrl-C while the node starts stops it as soon as it is up (a second one exits at once; the next start
    // then removes what is left).
    const stopRequested = untilSignal();
    const cluster = await LocalNodeCluster.start({ progress });
    process.stdout.write(
      `Local cluster is up with one node in ${((Date.now() - started) / 1000).toFixed(1)} s (Kubernetes v${KUBERNETES_VERSION}).\n` +
        `  export KUBECONFIG=${cluster.kubeconfigPath}\n  ${cluster.plane.binaries.kubectl} get nodes,pods -A -o wide\n` +
        `Pods ${NODE_NETWORK.podCidr} and Services ${NODE_NETWORK.serviceCidr} are routed from this machine.\n` +
        'Load the image with `npm run image`. Press Ctrl-C to stop and remove everything.\n',
    );
    await stopRequested;
    progress('stopping the node and removing what it made');
    await cluster.stop();
    return 0;
  }
  const plane = await LocalControlPlane.start({ progress });
  process.stdout.write(
    `Local control plane is up (Kubernetes v${KUBERNETES_VERSION}).\n` +
      `  export KUBECONFIG=${plane.kubeconfigPath}\n  ${plane.binaries.kubectl} get namespaces\n` +
      'Press Ctrl-C to stop it.\n',
  );
  await untilSignal();
  await plane.stop();
  return 0;
}
