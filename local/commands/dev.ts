import * as k8s from '@kubernetes/client-node';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { applyDefaults } from '../../operator/api/defaults.ts';
import { parseDuration } from '../../operator/api/duration.ts';
import { SIDECAR_ADMIN_PORT, sidecarContainerOf } from '../../operator/api/injection.ts';
import {
  ENDPOINT_RESOURCE,
  INJECTION_NAMESPACE_LABEL,
  type MtlsEndpoint,
  serviceName,
} from '../../operator/api/types.ts';
import { KUBERNETES_VERSION } from '../controlplane/binaries.ts';
import { freePort, LocalControlPlane } from '../controlplane/local-control-plane.ts';
import { helpText, parseFlags, UsageError } from '../../common/flags.ts';
import { setLogLevel } from '../../operator/log.ts';
import { echoMockDeployment, startEchoMock } from '../podsim/mock-upstream.ts';
import { runInjectedPod, type SimulatedPod } from '../podsim/pod-runner.ts';
import { curlLine, writeCredentials } from '../../operator/commands/credentials.ts';
import { printModeTable, strangerCertificate } from './dev-table.ts';
import { realNodeUnavailable, runDevOnCluster } from './dev-node.ts';
import { untilSignal } from '../../common/signals.ts';

const FLAGS = {
  namespace: { type: 'string', value: 'NS', help: 'namespace of the sample', default: 'demo' },
  validity: {
    type: 'string',
    value: 'DURATION',
    help: "lifetime of the sample certificates, e.g. 2m to watch rotations (default: the example's, one year)",
  },
  'ca-validity': {
    type: 'string',
    value: 'DURATION',
    help: 'lifetime of the sample CA, e.g. 10m to watch a CA rollover',
  },
  once: { type: 'boolean', help: 'print the table and exit instead of running until Ctrl-C' },
  simulate: {
    type: 'boolean',
    help: 'no node: the control plane alone, and the injected pod run as local processes (the fallback off Linux/root)',
  },
  kubeconfig: {
    type: 'string',
    value: 'FILE',
    help: 'use this existing cluster (kind, k3d, minikube) instead of a local one',
  },
  image: {
    type: 'string',
    value: 'REF',
    help: 'with --kubeconfig: the image the cluster can run (load or push it first)',
  },
} as const;

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(ROOT, 'operator/cli.ts');
const execFileAsync = promisify(execFile);
const say = (line = '') => process.stdout.write(line + '\n');
const step = (line: string) => process.stderr.write(`[dev] ${line}\n`);

export async function run(argv: string[]): Promise<number> {
  const { flags, help } = parseFlags(FLAGS, argv);
  if (help) {
    process.stdout.write(
      helpText(
        'dev',
        '[--validity 2m] [--ca-validity 10m] [--once] [--simulate | --kubeconfig FILE --image REF]',
        FLAGS,
      ),
    );
    return 0;
  }
  for (const flag of ['validity', 'ca-validity'] as const) {
    if (flags[flag]) {
      try {
        parseDuration(flags[flag]!);
      } catch (err) {
        throw new UsageError(`--${flag}: ${(err as Error).message}`);
      }
    }
  }
  if (flags.image && !flags.kubeconfig) throw new UsageError('--image goes with --kubeconfig (an existing cluster)');
  if (flags.kubeconfig && !flags.image) {
    throw new UsageError(
      `--kubeconfig needs --image: an image that cluster can run (e.g. build with npm run image and load it: kind load image-archive)`,
    );
  }
  const rewriteCertificates = (spec: MtlsEndpoint['spec']) => {
    const certificates = spec.certificates ?? {};
    if (flags.validity) Object.assign(certificates, { validity: flags.validity, renewBefore: '' });
    if (flags['ca-validity']) {
      certificates.caValidity = flags['ca-validity'];
      // A leaf cannot outlive its CA: without --validity, leaves live a fifth of the CA.
      if (!flags.validity) {
        const leafSeconds = Math.max(10, Math.floor(parseDuration(flags['ca-validity']) / 5_000));
        Object.assign(certificates, { validity: `${leafSeconds}s`, renewBefore: '' });
      }
    }
    spec.certificates = certificates;
  };
  if (!flags.simulate) {
    const unavailable = flags.kubeconfig ? undefined : realNodeUnavailable();
    if (!unavailable) {
      return runDevOnCluster({
        namespace: flags.namespace,
        certificates: rewriteCertificates,
        shortLived: !!(flags.validity || flags['ca-validity']),
        once: flags.once,
        existing: flags.kubeconfig ? { kubeconfig: flags.kubeconfig, image: flags.image! } : undefined,
      });
    }
    step(`no real node here (${unavailable}): simulating the pod instead (--simulate)`);
  }
  setLogLevel(process.env.MTLS_LOG_LEVEL ?? 'warn');
  const namespace = flags.namespace;
  const started = Date.now();
  const children: ChildProcess[] = [];
  let pod: SimulatedPod | undefined;
  let mock: Server | undefined;

  step(
    `starting a local Kubernetes ${KUBERNETES_VERSION} control plane (first run builds it from Go modules: 10-15 minutes; then seconds)`,
  );
  const plane = await LocalControlPlane.start({ progress: (line) => step(line) });
  const cleanup = async () => {
    await pod?.stop();
    mock?.close();
    for (const child of children) child.kill('SIGTERM');
    await plane.stop();
  };
  try {
    const kc = plane.kubeConfig();
    const kubectl = (args: string[]) =>
      execFileAsync(plane.binaries.kubectl, ['--kubeconfig', plane.kubeconfigPath, ...args]);
    step('installing the MtlsEndpoint CRD');
    await kubectl(['apply', '--server-side', '-f', join(ROOT, 'crds')]);
    await kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd/mtlsendpoints.mtls.operator.dev']);

    step('starting the operator (controller + admission webhook)');
    const webhookPort = await freePort();
    const metricsPort = await freePort();
    const operatorLog = join(plane.dir, 'operator.log');
    await kubectl(['create', 'namespace', 'mtls-system']);
    const shortLived = !!(flags.validity || flags['ca-validity']);
    const operator = spawn(
      process.execPath,
      [
        CLI,
        'controller',
        '--kubeconfig',
        plane.kubeconfigPath,
        '--no-leader-elect',
        '--operator-namespace',
        'mtls-system',
        '--webhook-url',
        `https://127.0.0.1:${webhookPort}/mutate-pods`,
        '--webhook-port',
        String(webhookPort),
        '--webhook-address',
        '127.0.0.1',
        '--metrics-port',
        String(metricsPort),
        '--metrics-address',
        '127.0.0.1',
        '--ca-propagation-delay',
        shortLived ? '20s' : '5m',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, MTLS_LOG_LEVEL: 'info' } },
    );
    children.push(operator);
    const logStream = createWriteStream(operatorLog);
    operator.stdout!.pipe(logStream);
    operator.stderr!.pipe(logStream);
    const admission = kc.makeApiClient(k8s.AdmissionregistrationV1Api);
    await waitUntil(
      'the webhook configuration',
      async () =>
        !!(await admission.readMutatingWebhookConfiguration({ name: 'mtls-operator' }).catch(() => undefined)),
      operator,
    );

    step(
      `creating namespace ${namespace} (labelled ${INJECTION_NAMESPACE_LABEL}=enabled) and the sample MtlsEndpoint from examples/`,
    );
    const core = kc.makeApiClient(k8s.CoreV1Api);
    await core.createNamespace({
      body: { metadata: { name: namespace, labels: { [INJECTION_NAMESPACE_LABEL]: 'enabled' } } },
    });
    await waitUntil(
      `the default ServiceAccount of ${namespace}`,
      async () => !!(await core.readNamespacedServiceAccount({ name: 'default', namespace }).catch(() => undefined)),
      operator,
    );
    const example = k8s.loadYaml(readFileSync(join(ROOT, 'examples/mtlsendpoint.yaml'), 'utf8')) as MtlsEndpoint;
    example.metadata = { ...example.metadata, namespace };
    rewriteCertificates(example.spec);
    const custom = kc.makeApiClient(k8s.CustomObjectsApi);
    await custom.createNamespacedCustomObject({ ...ENDPOINT_RESOURCE, namespace, body: example });
    const name = example.metadata.name!;
    await waitUntil(
      `MtlsEndpoint ${name} to be Ready`,
      async () => {
        const ep = (await custom.getNamespacedCustomObject({ ...ENDPOINT_RESOURCE, namespace, name })) as MtlsEndpoint;
        return !!ep.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
      },
      operator,
    );

    step('creating the sample mock Deployment; the webhook injects its sidecar');
    const spec = applyDefaults(example.spec);
    const labels = example.spec.podSelector?.matchLabels ?? {};
    // The image is never run here: the simulation runs the mock in-process.
    await kc.makeApiClient(k8s.AppsV1Api).createNamespacedDeployment({
      namespace,
      body: echoMockDeployment({
        name: 'payments-mock',
        namespace,
        labels,
        image: 'mtls-operator/echo-mock:dev',
        port: spec.upstreamPort,
      }),
    });
    const injected = await waitUntil(
      'the injected pod',
      async () => (await core.listNamespacedPod({ namespace })).items.find((p) => sidecarContainerOf(p) !== undefined),
      operator,
    );

    step('no kubelet here: running the injected pod ourselves (its Secret volume, its sidecar args, a built-in mock)');
    mock = await startEchoMock(spec.upstreamPort);
    const podDir = join(plane.dir, 'pod');
    mkdirSync(podDir, { recursive: true });
    pod = await runInjectedPod(kc, injected, podDir);
    await waitUntil(
      'the sidecar to be ready',
      async () => (await fetch(`http://127.0.0.1:${SIDECAR_ADMIN_PORT}/readyz`).catch(() => undefined))?.ok === true,
      pod.child,
    );

    const client = spec.clients[0]!.name;
    const creds = await writeCredentials(kc, namespace, name, client, join(plane.dir, 'credentials', client));
    const stranger = await strangerCertificate(client);
    const issued = { certPem: readFileSync(creds.cert, 'utf8'), keyPem: readFileSync(creds.key, 'utf8') };
    const ca = readFileSync(creds.ca, 'utf8');

    say();
    say(
      `mtls-operator dev is up in ${((Date.now() - started) / 1000).toFixed(1)}s. Real requests through the sidecar of pod ${injected.metadata!.name}:`,
    );
    say();
    const rows = spec.listeners.map((listener) => ({
      mode: listener.mode,
      port: listener.port,
      address: '127.0.0.1',
      targetPort: listener.port,
      servername: `${serviceName(name, listener.mode)}.${namespace}.svc`,
    }));
    const ok = await printModeTable(say, rows, ca, client, issued, stranger);
    say();
    const strict = spec.listeners.find((l) => l.mode === 'strict') ?? spec.listeners[0]!;
    const strictHost = `${serviceName(name, strict.mode)}.${namespace}.svc`;
    say('Try it yourself:');
    say(`  ${curlLine(creds, `https://${strictHost}:${strict.port}/hello`, '127.0.0.1')}`);
    say(
      `  curl --cacert ${creds.ca} --resolve ${strictHost}:${strict.port}:127.0.0.1 https://${strictHost}:${strict.port}/hello   # 400 No required SSL certificate was sent`,
    );
    say();
    say('Look around:');
    say(`  export KUBECONFIG=${plane.kubeconfigPath}`);
    say(`  ${plane.binaries.kubectl} get mtls -n ${namespace}`);
    say(`  ${plane.binaries.kubectl} describe mtlsendpoint ${name} -n ${namespace}`);
    say(`  ${plane.binaries.kubectl} get secrets,services,pods -n ${namespace}`);
    say(`  curl -s http://127.0.0.1:${metricsPort}/metrics | grep ^mtls_      # operator metrics`);
    say(`  curl -s http://127.0.0.1:${SIDECAR_ADMIN_PORT}/metrics | grep ^mtls_sidecar     # sidecar metrics`);
    say(`  operator log: ${operatorLog}`);
    if (flags.validity)
      say(
        `Certificates live ${flags.validity} and renew when a third is left: watch kubectl get mtls -n ${namespace} -w`,
      );
    say();
    if (!ok) {
      say('The table does not match the mode table in the README; see the operator log above.');
      return 1;
    }
    if (flags.once) return 0;
    say('Press Ctrl-C to stop everything.');
    await untilSignal();
    step('stopping');
    return 0;
  } finally {
    await cleanup();
  }
}

async function waitUntil<T>(
  what: string,
  probeFn: () => Promise<T | undefined | false>,
  watched: ChildProcess,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (watched.exitCode !== null)
      throw new Error(`${what}: the process it depends on exited with code ${watched.exitCode}`);
    const value = await probeFn().catch(() => undefined);
    if (value !== undefined && value !== false) return value as T;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}`);
}
