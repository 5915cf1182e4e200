import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { applyDefaults } from '../../operator/api/defaults.ts';
import { INJECTION_NAMESPACE_LABEL, type MtlsEndpoint, serviceName } from '../../operator/api/types.ts';
import { ensureBinaries, KUBERNETES_VERSION } from '../controlplane/binaries.ts';
import {
  buildProductImage,
  ensurePauseImage,
  importImages,
  PRODUCT_IMAGE,
} from '../controlplane/images/local-images.ts';
import { freePort } from '../controlplane/local-control-plane.ts';
import { LocalNodeCluster } from '../controlplane/node/local-node-cluster.ts';
import { missingNodePackages } from '../controlplane/node/node-packages.ts';
import { loadKubeConfig } from '../../operator/kube/kubeconfig.ts';
import { echoMockDeployment } from '../podsim/mock-upstream.ts';
import { curlLine, writeCredentials } from '../../operator/commands/credentials.ts';
import { printModeTable, strangerCertificate, type TableRow, waitForListeners } from './dev-table.ts';
import { untilSignal } from '../../common/signals.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const execFileAsync = promisify(execFile);
const say = (line = '') => process.stdout.write(line + '\n');
const step = (line: string) => process.stderr.write(`[dev] ${line}\n`);

class Interrupted extends Error {}

/** Why `dev` cannot start a real node here, or undefined when it can. */
export function realNodeUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'a local node needs Linux';
  if (process.getuid?.() !== 0) return 'a local node needs root (network namespaces, containerd, iptables)';
  const missing = missingNodePackages();
  if (missing.length > 0 && !existsSync('/usr/bin/apt-get'))
    return `a local node needs ${missing.join(', ')}, and apt-get is not here to install them`;
  return undefined;
}

export interface DevOnClusterOptions {
  namespace: string;
  /** Rewrites the example's certificate lifetimes (`--validity`, `--ca-validity`). */
  certificates: (spec: MtlsEndpoint['spec']) => void;
  shortLived: boolean;
  once: boolean;
  /** An existing cluster (kind, k3d, minikube) and an image it can pull or already has; else a local node. */
  existing?: { kubeconfig: string; image: string };
}

/**
 * `dev` for real: the image built and loaded, the chart installed with Helm, the sample mock as a real pod
 * with its injected sidecar, and the mode table from requests through each Service (on the local node) or
 * through `kubectl port-forward` to the pod (on an existing cluster, whose pod network is not routed here).
 */
export async function runDevOnCluster(options: DevOnClusterOptions): Promise<number> {
  const started = Date.now();
  // Ctrl-C while things start: stop after the current step and remove what was made.
  let interrupted = false;
  const stopRequested = untilSignal().then(() => (interrupted = true));
  const checkpoint = () => {
    if (interrupted) throw new Interrupted();
  };
  let cluster: LocalNodeCluster | undefined;
  let forward: ChildProcess | undefined;
  let credsRoot: string | undefined;
  try {
    let kubeconfig: string;
    let image: string;
    if (options.existing) {
      ({ kubeconfig, image } = options.existing);
      step(`using the cluster of ${kubeconfig} and image ${image}`);
    } else {
      step(
        `starting a local Kubernetes ${KUBERNETES_VERSION} cluster with a real node (first run builds it from Go modules: 10-20 minutes; then seconds)`,
      );
      cluster = await LocalNodeCluster.start({ progress: step });
      kubeconfig = cluster.kubeconfigPath;
      checkpoint();
      image = await buildProductImage(step);
      step('loading the image into the node');
      await importImages(cluster.node.files.containerdSocket, [await ensurePauseImage(), image]);
    }
    const { kubectl: kubectlBinary, helm: helmBinary } = await ensureBinaries();
    const kubectl = (args: string[], input?: string) => {
      const child = execFileAsync(kubectlBinary, ['--kubeconfig', kubeconfig, ...args]);
      if (input !== undefined) child.child.stdin?.end(input);
      return child;
    };
    const [repository, tag] = [image.slice(0, image.lastIndexOf(':')), image.slice(image.lastIndexOf(':') + 1)];
    checkpoint();
    const shortLived = options.shortLived ? ['--set', 'controller.caPropagationDelay=20s'] : [];
    const overrides =
      image === PRODUCT_IMAGE ? [] : ['--set', `image.repository=${repository}`, '--set', `image.tag=${tag}`];
    step('helm install mtls-operator charts/mtls-operator -n mtls-system --create-namespace');
    await execFileAsync(helmBinary, [
      '--kubeconfig',
      kubeconfig,
      'upgrade',
      '--install',
      'mtls-operator',
      join(ROOT, 'charts/mtls-operator'),
      '-n',
      'mtls-system',
      '--create-namespace',
      '--wait',
      '--timeout',
      '180s',
      ...overrides,
      ...shortLived,
    ]);

    checkpoint();
    const namespace = options.namespace;
    step(
      `namespace ${namespace} (labelled ${INJECTION_NAMESPACE_LABEL}=enabled), the sample MtlsEndpoint, a mock Deployment`,
    );
    await kubectl(['create', 'namespace', namespace]).catch(() => undefined);
    await kubectl(['label', '--overwrite', 'namespace', namespace, `${INJECTION_NAMESPACE_LABEL}=enabled`]);
    const example = k8s.loadYaml(readFileSync(join(ROOT, 'examples/mtlsendpoint.yaml'), 'utf8')) as MtlsEndpoint;
    example.metadata = { ...example.metadata, namespace };
    options.certificates(example.spec);
    await kubectl(['apply', '-f', '-'], JSON.stringify(example));
    const name = example.metadata.name!;
    await kubectl(['wait', `mtlsendpoint/${name}`, '-n', namespace, '--for=condition=Ready', '--timeout=120s']);
    const spec = applyDefaults(example.spec);
    const labels = example.spec.podSelector?.matchLabels ?? {};
    const mock = echoMockDeployment({ name: `${name}-mock`, namespace, labels, image, port: spec.upstreamPort });
    await kubectl(['apply', '-f', '-'], JSON.stringify(mock));
    await kubectl(['rollout', 'status', `deployment/${name}-mock`, '-n', namespace, '--timeout=180s']);
    const pod = JSON.parse(
      (
        await kubectl([
          'get',
          'pods',
          '-n',
          namespace,
          '-l',
          `${Object.entries(labels)
            .map(([k, v]) => `${k}=${v}`)
            .join(',')}`,
          '-o',
          'json',
        ])
      ).stdout,
    ).items.find((p: k8s.V1Pod) => !p.metadata?.deletionTimestamp) as k8s.V1Pod;

    checkpoint();
    const rows: TableRow[] = [];
    if (options.existing) {
      const ports = await Promise.all(spec.listeners.map(() => freePort()));
      forward = spawn(
        kubectlBinary,
        [
          '--kubeconfig',
          kubeconfig,
          'port-forward',
          '-n',
          namespace,
          `pod/${pod.metadata!.name}`,
          ...spec.listeners.map((l, i) => `${ports[i]}:${l.port}`),
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      // kubectl prints "Forwarding from ..." once it listens.
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('kubectl port-forward did not start within 30 s')), 30_000);
        forward!.stdout!.once('data', () => (clearTimeout(timer), resolve()));
        forward!.once(
          'exit',
          (code) => (clearTimeout(timer), reject(new Error(`kubectl port-forward exited (${code})`))),
        );
      });
      spec.listeners.forEach((listener, i) =>
        rows.push({
          mode: listener.mode,
          port: listener.port,
          address: '127.0.0.1',
          targetPort: ports[i]!,
          servername: `${serviceName(name, listener.mode)}.${namespace}.svc`,
        }),
      );
    } else {
      for (const listener of spec.listeners) {
        const service = serviceName(name, listener.mode);
        const ip = JSON.parse((await kubectl(['get', 'service', service, '-n', namespace, '-o', 'json'])).stdout).spec
          .clusterIP as string;
        rows.push({
          mode: listener.mode,
          port: listener.port,
          address: ip,
          targetPort: 443,
          servername: `${service}.${namespace}.svc`,
        });
      }
    }

    await waitForListeners(rows);
    const kc = loadKubeConfig(kubeconfig);
    const client = spec.clients[0]!.name;
    credsRoot = await mkdtemp(join(tmpdir(), 'mtls-operator-dev-'));
    const credsDir = join(credsRoot, client);
    const creds = await writeCredentials(kc, namespace, name, client, credsDir);
    const issued = { certPem: readFileSync(creds.cert, 'utf8'), keyPem: readFileSync(creds.key, 'utf8') };
    const ca = readFileSync(creds.ca, 'utf8');
    say();
    say(
      `mtls-operator dev is up in ${((Date.now() - started) / 1000).toFixed(1)}s. Real requests through ${options.existing ? 'a port-forward to' : 'the Services of'} pod ${pod.metadata!.name} (sidecar injected by the webhook, certificates mounted by kubelet):`,
    );
    say();
    const ok = await printModeTable(say, rows, ca, client, issued, await strangerCertificate(client));
    say();
    const strict = rows.find((row) => row.mode === 'strict') ?? rows[0]!;
    say('Try it yourself:');
    say(`  ${curlLine(creds, `https://${strict.servername}:${strict.targetPort}/hello`, strict.address)}`);
    say(
      `  curl --cacert ${creds.ca} --resolve ${strict.servername}:${strict.targetPort}:${strict.address} https://${strict.servername}:${strict.targetPort}/hello   # 400 No required SSL certificate was sent`,
    );
    say();
    say('Look around:');
    say(`  export KUBECONFIG=${kubeconfig}`);
    say(`  ${kubectlBinary} get mtls,pods,services,secrets -n ${namespace}`);
    say(`  ${kubectlBinary} logs -n ${namespace} ${pod.metadata!.name} -c mtls-sidecar`);
    say(`  ${kubectlBinary} logs -n mtls-system deployment/mtls-operator`);
    if (options.existing)
      say(`Remove it later: helm uninstall mtls-operator -n mtls-system; kubectl delete namespace ${namespace}`);
    say();
    if (!ok) {
      say('The table does not match the mode table in the README; see the operator and sidecar logs above.');
      return 1;
    }
    if (options.once) return 0;
    say(
      options.existing
        ? 'Press Ctrl-C to stop the port-forward.'
        : 'Press Ctrl-C to stop the node and remove everything.',
    );
    await stopRequested;
    step('stopping');
    return 0;
  } catch (err) {
    if (err instanceof Interrupted) {
      step('interrupted: stopping');
      return 130;
    }
    throw err;
  } finally {
    forward?.kill('SIGTERM');
    await cluster?.stop();
    // The credentials were for this run's cluster; an existing cluster keeps its own copy in the Secret.
    if (credsRoot) await rm(credsRoot, { recursive: true, force: true });
  }
}
