import * as k8s from '@kubernetes/client-node';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CRD_SOURCES } from '../../charts/crd-template.ts';
import { SIDECAR_ADMIN_PORT } from '../../operator/api/injection.ts';
import { ENDPOINT_LABEL } from '../../operator/api/types.ts';
import { ensureBinaries } from '../../local/controlplane/binaries.ts';
import { DEFAULT_SIDECAR_RESOURCES, OPERATOR_HEAP_MIB, operatorEnv } from '../../operator/defaults.ts';
import { freePort } from '../../local/controlplane/local-control-plane.ts';
import { parseCertificates } from '../../operator/pki/inspect.ts';
import {
  createTestNamespace,
  deleteTestNamespace,
  kubeConfig,
  kubeconfigPath,
  kubectl,
  waitFor,
} from '../support/cluster.ts';
import {
  core,
  createEndpoint,
  getEndpoint,
  installCrd,
  readSecret,
  secretText,
  waitReady,
} from '../support/endpoints.ts';
import { notesCommands, runNotesCommand } from '../support/helm-notes.ts';

const run = promisify(execFile);

/** The names of the Secrets the operator keeps for an endpoint (by its label), sorted. */
const endpointSecrets = async (namespace: string, endpoint: string) =>
  (await core().listNamespacedSecret({ namespace, labelSelector: `${ENDPOINT_LABEL}=${endpoint}` })).items
    .map((secret) => secret.metadata!.name!)
    .sort();
const CHART = new URL('../../charts/mtls-operator', import.meta.url).pathname;
const CRD_NAME = 'mtlsendpoints.mtls.operator.dev';
const ROOT = new URL('../..', import.meta.url).pathname;

async function helm(args: string[]): Promise<string> {
  const { helm: bin } = await ensureBinaries();
  try {
    const { stdout } = await run(bin, args, { maxBuffer: 16 << 20 });
    return stdout;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    throw new Error(`helm ${args.join(' ')}: ${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

const render = async (release: string, namespace: string, values: string[] = []) =>
  k8s.loadAllYaml(
    await helm(['template', release, CHART, '--namespace', namespace, '--include-crds', ...values]),
  ) as k8s.KubernetesObject[];

const deploymentOf = (objects: k8s.KubernetesObject[]) => find<k8s.V1Deployment>(objects, 'Deployment');
const find = <T>(objects: k8s.KubernetesObject[], kind: string) => objects.find((o) => o.kind === kind) as T;

/** A kubeconfig that authenticates as the chart's ServiceAccount, as the operator's pod does. */
async function serviceAccountKubeconfig(namespace: string, sa: string): Promise<string> {
  const token = (await kubectl(['create', 'token', sa, '-n', namespace, '--duration', '1h'])).trim();
  const cluster = kubeConfig().getCurrentCluster()!;
  const kubeconfig = join(tmpdir(), `chart-sa-${namespace}.kubeconfig`);
  writeFileSync(
    kubeconfig,
    `apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "${cluster.server}", certificate-authority-data: ${cluster.caData}}}]\nusers: [{name: sa, user: {token: ${token}}}]\ncontexts: [{name: c, context: {cluster: c, user: sa}}]\ncurrent-context: c\n`,
  );
  return kubeconfig;
}

/**
 * The operator with the arguments the chart gives it (names derived from the release's fullname), under the
 * chart's ServiceAccount, its ports on loopback, its controller scoped to `workload`.
 */
async function spawnChartOperator(namespace: string, workload: string, fullname: string, output: string[]) {
  const kubeconfig = await serviceAccountKubeconfig(namespace, fullname);
  const webhookPort = await freePort();
  const metricsPort = await freePort();
  const child = spawn(
    process.execPath,
    [
      join(ROOT, 'operator/cli.ts'),
      'controller',
      '--kubeconfig',
      kubeconfig,
      '--namespace',
      workload,
      '--operator-namespace',
      namespace,
      '--lease-name',
      `${fullname}-leader`,
      '--owner-deployment',
      fullname,
      '--webhook-configuration',
      fullname,
      '--webhook-service',
      `${fullname}-webhook`,
      '--webhook-secret',
      `${fullname}-webhook-tls`,
      '--webhook-port',
      String(webhookPort),
      '--webhook-address',
      '127.0.0.1',
      '--metrics-port',
      String(metricsPort),
      '--metrics-address',
      '127.0.0.1',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.once('exit', () => rmSync(kubeconfig, { force: true }));
  child.stdout!.on('data', (d: Buffer) => output.push(d.toString()));
  child.stderr!.on('data', (d: Buffer) => output.push(d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, exited, webhookPort, metricsPort };
}

describe('Helm chart and plain manifests', () => {
  it('lints strictly with default and non-default values, and its schema refuses unknown values', async () => {
    await expect(helm(['lint', '--strict', CHART])).resolves.toContain('0 chart(s) failed');
    await expect(
      helm([
        'lint',
        '--strict',
        CHART,
        '--set',
        'replicaCount=3,metrics.serviceMonitor.enabled=true,metrics.podMonitor.enabled=true,metrics.prometheusRule.enabled=true,webhook.failurePolicy=Fail',
      ]),
    ).resolves.toContain('0 chart(s) failed');
    await expect(helm(['lint', '--strict', CHART, '--set', 'webhook.failurePolicy=Sometimes'])).rejects.toThrow(
      /failurePolicy/,
    );
  });

  it('renders what an operator team expects, and values reach the objects', async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const chart = k8s.loadYaml(readFileSync(join(CHART, 'Chart.yaml'), 'utf8')) as { appVersion: string };
    expect(chart.appVersion).toBe(pkg.version);
    // One source of truth: the chart's CRD is the file in crds/, with the release's labels and annotations.
    const objects = await render('mtls-operator', 'mtls-system');
    const crds = objects.filter((o) => o.kind === 'CustomResourceDefinition') as k8s.V1CustomResourceDefinition[];
    const schemas = CRD_SOURCES.map(
      ({ source }) => k8s.loadYaml(readFileSync(join(ROOT, source), 'utf8')) as k8s.V1CustomResourceDefinition,
    );
    expect(crds.map((c) => c.metadata?.name).sort()).toEqual(schemas.map((c) => c.metadata?.name).sort());
    for (const schema of schemas) {
      const crd = crds.find((c) => c.metadata?.name === schema.metadata?.name)!;
      expect({ ...crd, metadata: { name: crd.metadata?.name } }).toEqual({
        ...schema,
        metadata: { name: schema.metadata?.name },
      });
    }
    // The sidecar's resources: the chart's default is the injector's own.
    const values = k8s.loadYaml(readFileSync(join(CHART, 'values.yaml'), 'utf8')) as {
      sidecar: { resources: unknown; adminPort: number };
    };
    expect(values.sidecar.resources).toEqual(DEFAULT_SIDECAR_RESOURCES);
    // And its admin port the operator's (and so the sidecar's) default.
    expect(values.sidecar.adminPort).toBe(SIDECAR_ADMIN_PORT);
    // The operator runs as bench:controller measured it.
    const env = Object.fromEntries(
      (deploymentOf(objects).spec!.template.spec!.containers[0]!.env ?? []).map((e) => [e.name, e.value]),
    );
    expect(env).toMatchObject(operatorEnv(OPERATOR_HEAP_MIB));
    const deployment = find<k8s.V1Deployment>(objects, 'Deployment');
    expect(deployment.spec?.replicas).toBe(2);
    const container = deployment.spec!.template.spec!.containers[0]!;
    expect(container.image).toBe(`ghcr.io/mtls-operator/mtls-operator:${pkg.version}`);
    expect(deployment.spec!.template.spec!.securityContext).toMatchObject({ runAsNonRoot: true });
    expect(container.securityContext).toMatchObject({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
    });
    expect(container.args).toEqual(
      expect.arrayContaining([
        'controller',
        '--webhook-configuration=mtls-operator',
        '--lease-name=mtls-operator-leader',
        `--sidecar-admin-port=${SIDECAR_ADMIN_PORT}`,
        '--owner-deployment=mtls-operator',
      ]),
    );
    // The operator reads its own Deployment (and no other) to own the Lease and the webhook Secret with it.
    const role = objects.find((o) => o.kind === 'Role') as k8s.V1Role;
    expect(role.rules).toEqual(
      expect.arrayContaining([
        { apiGroups: ['apps'], resources: ['deployments'], resourceNames: ['mtls-operator'], verbs: ['get'] },
      ]),
    );
    expect(find<k8s.V1PodDisruptionBudget>(objects, 'PodDisruptionBudget').spec?.minAvailable).toBe(1);
    const webhook = find<k8s.V1MutatingWebhookConfiguration>(objects, 'MutatingWebhookConfiguration').webhooks![0]!;
    expect(webhook).toMatchObject({
      failurePolicy: 'Ignore',
      timeoutSeconds: 5,
      namespaceSelector: { matchLabels: { 'mtls.operator.dev/injection': 'enabled' } },
    });
    expect(objects.some((o) => o.kind === 'PrometheusRule')).toBe(false);

    const custom = await render('mtls', 'ops', [
      '--set',
      'webhook.failurePolicy=Fail,webhook.timeoutSeconds=10,replicaCount=3,metrics.prometheusRule.enabled=true,metrics.serviceMonitor.enabled=true,sidecar.image=registry.example/sidecar:9,sidecar.logLevel=debug,sidecar.adminPort=17001',
    ]);
    expect(find<k8s.V1Deployment>(custom, 'Deployment').spec?.replicas).toBe(3);
    expect(find<k8s.V1MutatingWebhookConfiguration>(custom, 'MutatingWebhookConfiguration').webhooks![0]).toMatchObject(
      { failurePolicy: 'Fail', timeoutSeconds: 10 },
    );
    const args = find<k8s.V1Deployment>(custom, 'Deployment').spec!.template.spec!.containers[0]!.args!;
    expect(args).toEqual(
      expect.arrayContaining([
        '--sidecar-image=registry.example/sidecar:9',
        '--sidecar-log-level=debug',
        '--sidecar-admin-port=17001',
      ]),
    );
    const rule = JSON.stringify(custom.find((o) => o.kind === 'PrometheusRule'));
    for (const alert of [
      'MtlsCertificateExpiringSoon',
      'MtlsCertificateRenewalOverdue',
      'MtlsReconcileErrors',
      'MtlsRefusedHandshakesSpike',
    ]) {
      expect(rule).toContain(alert);
    }
  });

  it("README's kubectl uninstall selects every object of deploy/mtls-operator.yaml but the CRD", () => {
    const objects = k8s.loadAllYaml(
      readFileSync(join(ROOT, 'deploy/mtls-operator.yaml'), 'utf8'),
    ) as k8s.KubernetesObject[];
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const commands = [
      ...readme.matchAll(
        /^kubectl delete (-n mtls-system )?([a-z,]+) -l app\.kubernetes\.io\/instance=mtls-operator$/gm,
      ),
    ];
    expect(commands).toHaveLength(2);
    const kinds = new Set(commands.flatMap((m) => m[2]!.split(',')));
    for (const o of objects) {
      const selected =
        kinds.has(o.kind!.toLowerCase()) && o.metadata?.labels?.['app.kubernetes.io/instance'] === 'mtls-operator';
      expect([o.kind, selected]).toEqual([o.kind, o.kind !== 'CustomResourceDefinition']);
    }
  });

  it('deploy/mtls-operator.yaml is the chart rendered with defaults (regenerate with npm run manifests)', async () => {
    const { helm: bin } = await ensureBinaries();
    const { stdout } = await run('bash', [join(ROOT, 'charts/render-manifest.sh')], {
      env: {
        ...process.env,
        MTLS_HELM: bin,
        MTLS_MANIFEST_OUT: join(tmpdir(), `manifest-${process.pid}.yaml`),
        MTLS_SKIP_CRD_TEMPLATES: '1',
      },
    });
    expect(stdout).toContain('wrote');
    expect(readFileSync(join(tmpdir(), `manifest-${process.pid}.yaml`), 'utf8')).toBe(
      readFileSync(join(ROOT, 'deploy/mtls-operator.yaml'), 'utf8'),
    );
  });

  describe('against the real API server', () => {
    let namespace: string;
    let workload: string;
    const release = `chart-${Date.now().toString(36)}`;
    const fullname = `${release}-mtls-operator`;
    let operator: ChildProcess | undefined;
    const output: string[] = [];

    beforeAll(async () => {
      await installCrd();
      namespace = await createTestNamespace('chart');
      workload = await createTestNamespace('chart-work');
    });
    afterAll(async () => {
      operator?.kill('SIGKILL');
      for (const [kind, name] of [
        ['mutatingwebhookconfiguration', fullname],
        ['clusterrole', fullname],
        ['clusterrole', `${fullname}-view`],
        ['clusterrole', `${fullname}-edit`],
        ['clusterrolebinding', fullname],
      ]) {
        await kubectl(['delete', kind!, name!, '--ignore-not-found']).catch(() => undefined);
      }
      await deleteTestNamespace(namespace);
      await deleteTestNamespace(workload);
    });

    it('applies cleanly with server-side apply, CRD and webhook included', async () => {
      // The webhook selects only a label no namespace has, so it cannot disturb other suites.
      const manifest = await helm([
        'template',
        release,
        CHART,
        '--namespace',
        namespace,
        '--include-crds',
        '--set',
        'webhook.namespaceSelector.matchLabels.chart-test=never',
      ]);
      const out = await kubectl(['apply', '--server-side', '--force-conflicts', '-f', '-'], manifest);
      expect(out).toMatch(/mutatingwebhookconfiguration.admissionregistration.k8s.io\/chart-[\w-]+ serverside-applied/);
      expect(out).toMatch(/deployment.apps\/chart-[\w-]+-mtls-operator serverside-applied/);
    });

    it("the chart's RBAC is enough for create -> inject -> rotate -> revoke, and grants nothing more", async () => {
      const sa = fullname;
      const spawned = await spawnChartOperator(namespace, workload, fullname, output);
      operator = spawned.child;
      const webhookPort = spawned.webhookPort;

      // create
      await createEndpoint(workload, 'rbac', {
        podSelector: { matchLabels: { app: 'rbac' } },
        upstreamPort: 8080,
        clients: [{ name: 'a' }, { name: 'b' }],
        certificates: { validity: '30s', renewBefore: '25s' },
      });
      const ready = await waitReady(workload, 'rbac', 60_000);
      // deliver: a client's Secret and the CA bundle copied for MtlsCredentialRequests (the endpoint's own
      // namespace consents without allowedNamespaces), under the same RBAC
      const request = (name: string, client?: string) => ({
        apiVersion: 'mtls.operator.dev/v1alpha1',
        kind: 'MtlsCredentialRequest',
        metadata: { name, namespace: workload },
        spec: { endpoint: { name: 'rbac' }, client },
      });
      await kubectl(
        ['apply', '-f', '-'],
        JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [request('copy-a', 'a'), request('copy-ca')] }),
      );
      await waitFor('the copies under the service account', async () =>
        (await readSecret(workload, 'copy-a')) &&
        (await core().readNamespacedConfigMap({ namespace: workload, name: 'copy-ca' }))
          ? true
          : undefined,
      );
      // inject: the operator keeps caBundle of the chart's webhook configuration, and its webhook answers
      const review = await postAdmission(webhookPort, workload);
      expect(review.response.allowed).toBe(true);
      expect(JSON.parse(Buffer.from(review.response.patch, 'base64').toString())).toEqual(
        expect.arrayContaining([expect.objectContaining({ op: 'add', path: '/spec/initContainers' })]),
      );
      // rotate
      await waitFor(
        'a renewal under the service account',
        async () => {
          const ep = await getEndpoint(workload, 'rbac');
          return ep.status?.server?.serialNumber !== ready.status?.server?.serialNumber ? true : undefined;
        },
        { timeoutMs: 30_000 },
      );
      // revoke
      await kubectl([
        'patch',
        '-n',
        workload,
        'mtlsendpoint',
        'rbac',
        '--type=merge',
        '-p',
        '{"spec":{"clients":[{"name":"a"}]}}',
      ]);
      await waitFor('client b revoked', async () => ((await readSecret(workload, 'rbac-client-b')) ? undefined : true));
      expect(await endpointSecrets(workload, 'rbac')).toEqual(['rbac-ca', 'rbac-client-a', 'rbac-server']);
      // delete
      await kubectl(['delete', '-n', workload, 'mtlsendpoint', 'rbac']);
      expect(output.join('')).not.toMatch(/forbidden/i);

      const as = ['--as', `system:serviceaccount:${namespace}:${sa}`];
      // `kubectl auth can-i` prints yes/no and exits 1 for no.
      const can = async (...args: string[]) => {
        const { kubectl: bin } = await ensureBinaries();
        return new Promise<string>((resolve) =>
          execFile(bin, ['--kubeconfig', kubeconfigPath(), 'auth', 'can-i', ...args, ...as], (_err, stdout) =>
            resolve(stdout.trim()),
          ),
        );
      };
      expect(await can('update', 'mtlsendpoints', '--subresource=status', '-n', workload)).toBe('yes');
      expect(await can('delete', 'mtlsendpoints', '-n', workload)).toBe('no');
      expect(await can('update', 'mtlsendpoints', '-n', workload)).toBe('no');
      expect(await can('create', 'mutatingwebhookconfigurations')).toBe('no');
      expect(await can('update', 'mutatingwebhookconfigurations/someone-elses')).toBe('no');
      expect(await can('update', 'leases/another-lease', '-n', namespace)).toBe('no');
      expect(await can('create', 'pods', '-n', workload)).toBe('no');
      expect(await can('update', 'mtlscredentialrequests', '--subresource=status', '-n', workload)).toBe('yes');
      expect(await can('update', 'mtlscredentialrequests', '-n', workload)).toBe('no');
      expect(await can('create', 'mtlscredentialrequests', '-n', workload)).toBe('no');
      // Its own Deployment (the owner of the Lease and the webhook Secret): read, and only that one.
      expect(await can('get', `deployments/${fullname}`, '-n', namespace)).toBe('yes');
      expect(await can('update', `deployments/${fullname}`, '-n', namespace)).toBe('no');
      expect(await can('get', 'deployments/another', '-n', namespace)).toBe('no');
      expect(await can('list', 'deployments', '-n', namespace)).toBe('no');
      // The Secrets it wrote carry the owner reference its RBAC let it set: they go with the endpoint.
      // The garbage collector resolves an owner of a kind it has not seen yet at its next discovery refresh (30 s).
      await waitFor(
        'the garbage collector to delete the Secrets of the deleted endpoint',
        async () => ((await endpointSecrets(workload, 'rbac')).length === 0 ? true : undefined),
        { timeoutMs: 90_000 },
      );
    }, 180_000);
  });
});

describe('helm install and uninstall against the real API server', () => {
  let namespace: string;
  let workload: string;
  const release = `rel-${Date.now().toString(36)}`;
  const fullname = `${release}-mtls-operator`;
  const helmArgs = () => ['--namespace', namespace, '--kubeconfig', kubeconfigPath()];
  let operator: ChildProcess | undefined;
  const output: string[] = [];

  beforeAll(async () => {
    await installCrd();
    namespace = await createTestNamespace('chart-rel');
    workload = await createTestNamespace('chart-rel-work');
  });
  afterAll(async () => {
    operator?.kill('SIGKILL');
    await helm(['uninstall', release, ...helmArgs()]).catch(() => undefined);
    await deleteTestNamespace(namespace);
    await deleteTestNamespace(workload);
  });

  it('uninstall takes the Lease and the webhook Secret with the release; the CRD, endpoints and their Secrets stay; a reinstall leads at once', async () => {
    const coordination = kubeConfig().makeApiClient(k8s.CoordinationV1Api);
    const apps = kubeConfig().makeApiClient(k8s.AppsV1Api);
    const admission = kubeConfig().makeApiClient(k8s.AdmissionregistrationV1Api);
    const leaseName = `${fullname}-leader`;
    const leaseHolder = () =>
      coordination
        .readNamespacedLease({ name: leaseName, namespace })
        .then((lease) => lease.spec?.holderIdentity ?? '')
        .catch(() => undefined);
    // The webhook selects only a label no namespace has, so it cannot disturb other suites.
    // The CRD (shared by every suite) was applied with kubectl: the release adopts it, as an upgrade from a
    // chart that shipped it in crds/ does (CHANGELOG.md).
    const install = () =>
      helm([
        'install',
        release,
        CHART,
        ...helmArgs(),
        '--take-ownership',
        '--set',
        'webhook.namespaceSelector.matchLabels.chart-test=never',
      ]);
    await install();
    const crdMetadata = async () =>
      (await kubeConfig().makeApiClient(k8s.ApiextensionsV1Api).readCustomResourceDefinition({ name: CRD_NAME }))
        .metadata!;
    expect((await crdMetadata()).annotations).toMatchObject({
      'meta.helm.sh/release-name': release,
      'helm.sh/resource-policy': 'keep',
    });
    // helm upgrade upgrades the CRD (a chart whose CRD template carries one more label stands in for a new schema).
    const changed = mkdtempSync(join(tmpdir(), 'chart-crd-'));
    try {
      cpSync(CHART, changed, { recursive: true });
      const template = join(changed, 'templates/crd-mtlsendpoints.yaml');
      writeFileSync(
        template,
        readFileSync(template, 'utf8').replace(
          '  labels: {{- include "mtls-operator.labels" . | nindent 4 }}',
          '  labels:\n    {{- include "mtls-operator.labels" . | nindent 4 }}\n    mtls.operator.dev/test-upgrade: "2"',
        ),
      );
      await helm(['upgrade', release, changed, ...helmArgs(), '--reuse-values']);
      expect((await crdMetadata()).labels?.['mtls.operator.dev/test-upgrade']).toBe('2');
      await helm(['upgrade', release, CHART, ...helmArgs(), '--reuse-values']);
      expect((await crdMetadata()).labels).not.toHaveProperty('mtls.operator.dev/test-upgrade');
    } finally {
      rmSync(changed, { recursive: true, force: true });
    }
    // People bound to the built-in roles in a namespace: the chart's ClusterRoles are aggregated into them
    // (kube-controller-manager's aggregation controller fills edit and view).
    await kubectl(['create', 'rolebinding', 'alice-edit', '--clusterrole=edit', '--user=alice', '-n', workload]);
    await kubectl(['create', 'rolebinding', 'bob-view', '--clusterrole=view', '--user=bob', '-n', workload]);
    const canAs = async (user: string, ...args: string[]) => {
      const { kubectl: bin } = await ensureBinaries();
      return new Promise<string>((resolve) =>
        execFile(
          bin,
          ['--kubeconfig', kubeconfigPath(), 'auth', 'can-i', ...args, '-n', workload, '--as', user],
          (_err, stdout) => resolve(stdout.trim()),
        ),
      );
    };
    await waitFor('edit and view to aggregate the chart ClusterRoles', async () =>
      (await canAs('alice', 'create', 'mtlsendpoints')) === 'yes' &&
      (await canAs('bob', 'list', 'mtlsendpoints')) === 'yes'
        ? true
        : undefined,
    );
    expect(await canAs('alice', 'delete', 'mtlsendpoints')).toBe('yes');
    expect(await canAs('alice', 'update', 'mtlsendpoints', '--subresource=status')).toBe('no');
    expect(await canAs('bob', 'get', 'mtlsendpoints')).toBe('yes');
    expect(await canAs('bob', 'create', 'mtlsendpoints')).toBe('no');
    expect(await canAs('bob', 'get', 'secrets')).toBe('no');
    expect(await canAs('carol', 'list', 'mtlsendpoints')).toBe('no');

    const deployment = await apps.readNamespacedDeployment({ name: fullname, namespace });
    const owner = { apiVersion: 'apps/v1', kind: 'Deployment', name: fullname, uid: deployment.metadata!.uid };

    // No kubelet here: the operator runs as the chart's pod would (its arguments, its ServiceAccount).
    const first = await spawnChartOperator(namespace, workload, fullname, output);
    operator = first.child;
    const lease = await waitFor('the leader Lease', () =>
      coordination.readNamespacedLease({ name: leaseName, namespace }),
    );
    expect(lease.metadata?.ownerReferences).toEqual([owner]);
    const secret = await waitFor('the webhook serving Secret', () => readSecret(namespace, `${fullname}-webhook-tls`));
    expect(secret.metadata?.ownerReferences).toEqual([owner]);
    await waitFor(
      'the operator to be ready (caBundle in place)',
      async () => (await fetch(`http://127.0.0.1:${first.metricsPort}/readyz`)).ok,
    );
    await createEndpoint(workload, 'kept', { upstreamPort: 8080, clients: [{ name: 'a' }] });
    await waitReady(workload, 'kept');
    const firstHolder = await leaseHolder();
    expect(firstHolder).toBeTruthy();

    // As on a node: helm deletes the Deployment, then at once its RBAC and ServiceAccount; the pod gets its
    // SIGTERM only after the garbage collector has deleted it, when the operator's credentials are gone and
    // it cannot release anything. Only ownership takes the Lease and the Secret away.
    await helm(['uninstall', release, ...helmArgs()]);
    operator.kill('SIGTERM');
    expect(await first.exited).not.toBeNull();
    await waitFor(
      'the garbage collector to delete the Lease and the webhook Secret with the Deployment',
      async () => (await leaseHolder()) === undefined && !(await readSecret(namespace, `${fullname}-webhook-tls`)),
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    await expect(admission.readMutatingWebhookConfiguration({ name: fullname })).rejects.toThrow();

    // What stays on purpose: the CRD (helm.sh/resource-policy: keep), the endpoints, their Secrets with the CA key.
    expect(await kubectl(['get', 'crd', CRD_NAME, '-o', 'name'])).toContain(CRD_NAME);
    expect((await getEndpoint(workload, 'kept')).metadata?.name).toBe('kept');
    const ca = await readSecret(workload, 'kept-ca');
    expect(Object.keys(ca?.data ?? {})).toEqual(expect.arrayContaining(['ca.crt', 'ca.key']));
    const keptCa = parseCertificates(secretText(ca, 'ca.crt'))[0]!;
    const server = await readSecret(workload, 'kept-server');
    const client = await readSecret(workload, 'kept-client-a');
    expect(Object.keys(server?.data ?? {}).sort()).toEqual(['ca.crl', 'ca.crt', 'tls.crt', 'tls.key']);
    expect(Object.keys(client?.data ?? {}).sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
    // Still the chain of the kept CA: a reinstalled operator picks it up instead of issuing a new one.
    expect(parseCertificates(secretText(server, 'tls.crt'))[0]!.issuer).toBe(keptCa.subject);
    expect(parseCertificates(secretText(client, 'tls.crt'))[0]!.issuer).toBe(keptCa.subject);

    // Installed again: its first replica leads at once (a stale Lease would hold it off for 15 s).
    const installed = await install();
    const startedAt = Date.now();
    const second = await spawnChartOperator(namespace, workload, fullname, []);
    operator = second.child;
    await waitFor(
      'the new replica to lead',
      async () => {
        const holder = await leaseHolder();
        return holder && holder !== firstHolder ? true : undefined;
      },
      {
        timeoutMs: 40_000,
        intervalMs: 50,
      },
    );
    const leadsAfterMs = Date.now() - startedAt;
    process.stdout.write(
      `chart: after uninstall and install, the first replica leads ${leadsAfterMs} ms after it starts\n`,
    );
    expect(leadsAfterMs).toBeLessThan(15_000 / 2);
    // It adopts what stayed: same CA.
    await waitReady(workload, 'kept');
    expect((await readSecret(workload, 'kept-ca'))?.data?.['ca.crt']).toBe(ca?.data?.['ca.crt']);

    // NOTES prints only commands that work: each one run as printed, in the workload namespace. Without a
    // kubelet here the two rollout commands cannot run; the real-node test (test/node/helm-upgrade.test.ts)
    // runs them too.
    const commands = notesCommands(installed)
      .filter((c) => !c.includes(' rollout '))
      .map((c) => c.replaceAll('<ns>', workload));
    expect(commands.length).toBeGreaterThanOrEqual(7);
    const { kubectl: kubectlBin } = await ensureBinaries();
    const work = mkdtempSync(join(tmpdir(), 'notes-'));
    try {
      for (const command of commands) {
        if (command.includes('get secret')) await waitReady(workload, 'payments');
        await runNotesCommand(command, { bin: kubectlBin, kubeconfig: kubeconfigPath() }, work);
      }
      const files = readdirSync(work).sort();
      expect(files).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
      const issued = parseCertificates(readFileSync(join(work, 'tls.crt'), 'utf8'))[0]!;
      expect(issued.subject).toContain('billing');
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }, 180_000);
});

async function postAdmission(
  port: number,
  namespace: string,
): Promise<{ response: { allowed: boolean; patch: string } }> {
  const body = JSON.stringify({
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: 'test',
      operation: 'CREATE',
      namespace,
      object: { metadata: { name: 'p', labels: { app: 'rbac' } }, spec: { containers: [{ name: 'm', image: 'x' }] } },
    },
  });
  const { request } = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path: '/mutate-pods',
        method: 'POST',
        rejectUnauthorized: false,
        headers: { 'content-type': 'application/json' },
      },
      (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve(JSON.parse(text)));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}
