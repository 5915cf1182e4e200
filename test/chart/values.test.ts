import * as k8s from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ensureBinaries } from '../../local/controlplane/binaries.ts';
import { REQUEST_CRD_NAME } from '../../operator/api/credential-request.ts';
import { CRD_NAME } from '../../operator/api/types.ts';

// Every value of the chart reaches its object: rendered with helm (no cluster) and read back. values-all.yaml
// sets each one away from its default; helm lint --strict checks it against values.schema.json.

const run = promisify(execFile);
const ROOT = new URL('../..', import.meta.url).pathname;
const CHART = join(ROOT, 'charts/mtls-operator');
const ALL = join(ROOT, 'test/chart/values-all.yaml');

async function helm(args: string[]): Promise<string> {
  const { helm: bin } = await ensureBinaries();
  try {
    const { stdout, stderr } = await run(bin, args, { maxBuffer: 16 << 20 });
    return stdout + stderr;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    throw new Error(`helm ${args.join(' ')}: ${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

const render = async (args: string[] = [], chart = CHART) =>
  k8s
    .loadAllYaml(await helm(['template', 'mtls-operator', chart, '--namespace', 'mtls-system', ...args]))
    .filter(Boolean) as k8s.KubernetesObject[];

const named = <T extends k8s.KubernetesObject>(objects: k8s.KubernetesObject[], kind: string, name?: string) => {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata?.name === name));
  if (found.length !== 1) throw new Error(`expected one ${kind} ${name ?? ''}, found ${found.length}`);
  return found[0] as T;
};
const podSpec = (objects: k8s.KubernetesObject[]) => named<k8s.V1Deployment>(objects, 'Deployment').spec!.template;
const operator = (objects: k8s.KubernetesObject[]) => podSpec(objects).spec!.containers[0]!;

describe('chart values', () => {
  it('lint strictly: defaults, every value set, and a value of the wrong shape refused', async () => {
    expect(await helm(['lint', '--strict', CHART])).toContain('0 chart(s) failed');
    expect(await helm(['lint', '--strict', CHART, '-f', ALL])).toContain('0 chart(s) failed');
    await expect(helm(['lint', '--strict', CHART, '--set', 'logFormat=yaml'])).rejects.toThrow(/logFormat/);
    await expect(helm(['lint', '--strict', CHART, '--set', 'image.digest=latest'])).rejects.toThrow(/digest/);
    await expect(helm(['lint', '--strict', CHART, '--set', 'unknownValue=1'])).rejects.toThrow(/unknownValue/);
    // No symlink left in the chart (Helm warned "found symbolic link in path" on every install).
    expect(await helm(['template', 'x', CHART])).not.toMatch(/symbolic link/);
  });

  it('defaults: the CRD kept on uninstall, non-root without a fixed user, replicas apart, flags for logs', async () => {
    const objects = await render();
    const crd = named<k8s.V1CustomResourceDefinition>(objects, 'CustomResourceDefinition', CRD_NAME);
    expect(crd.metadata?.annotations).toEqual({ 'helm.sh/resource-policy': 'keep' });
    expect(crd.metadata?.labels).toMatchObject({ 'app.kubernetes.io/name': 'mtls-operator' });
    const schema = k8s.loadYaml(
      readFileSync(join(ROOT, 'crds/mtls.operator.dev_mtlsendpoints.yaml'), 'utf8'),
    ) as k8s.V1CustomResourceDefinition;
    expect(crd.spec).toEqual(schema.spec);
    expect(crd.metadata?.name).toBe(schema.metadata?.name);

    const pod = podSpec(objects).spec!;
    expect(pod.securityContext).toEqual({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(operator(objects).securityContext).toEqual({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    });
    expect(JSON.stringify(objects)).not.toContain('runAsUser');
    expect(pod.affinity?.podAntiAffinity?.preferredDuringSchedulingIgnoredDuringExecution).toEqual([
      {
        weight: 100,
        podAffinityTerm: {
          topologyKey: 'kubernetes.io/hostname',
          labelSelector: {
            matchLabels: { 'app.kubernetes.io/name': 'mtls-operator', 'app.kubernetes.io/instance': 'mtls-operator' },
          },
        },
      },
    ]);
    expect(operator(objects).resources?.requests).toMatchObject({ 'ephemeral-storage': '64Mi' });
    expect(operator(objects).args).toEqual(
      expect.arrayContaining(['--log-level=info', '--log-format=json', '--sidecar-log-format=json']),
    );
    expect(operator(objects).env?.map((e) => e.name)).not.toContain('MTLS_LOG_LEVEL');
    expect(objects.some((o) => o.kind === 'NetworkPolicy')).toBe(false);
    expect(pod.imagePullSecrets).toBeUndefined();
    expect(pod.priorityClassName).toBeUndefined();
  });

  it('crds.enabled=false leaves the CRD out; crds.keep=false lets helm uninstall delete it', async () => {
    expect((await render(['--set', 'crds.enabled=false'])).some((o) => o.kind === 'CustomResourceDefinition')).toBe(
      false,
    );
    const crd = named(await render(['--set', 'crds.keep=false']), 'CustomResourceDefinition', CRD_NAME);
    expect(crd.metadata?.annotations).toBeUndefined();
  });

  it('aggregated ClusterRoles: view reads MtlsEndpoints and MtlsCredentialRequests, edit and admin manage them', async () => {
    const objects = await render();
    const view = named<k8s.V1ClusterRole>(objects, 'ClusterRole', 'mtls-operator-view');
    expect(view.metadata?.labels).toMatchObject({
      'rbac.authorization.k8s.io/aggregate-to-view': 'true',
      'rbac.authorization.k8s.io/aggregate-to-edit': 'true',
      'rbac.authorization.k8s.io/aggregate-to-admin': 'true',
    });
    expect(view.rules).toEqual([
      {
        apiGroups: ['mtls.operator.dev'],
        resources: ['mtlsendpoints', 'mtlsendpoints/status', 'mtlscredentialrequests', 'mtlscredentialrequests/status'],
        verbs: ['get', 'list', 'watch'],
      },
    ]);
    const edit = named<k8s.V1ClusterRole>(objects, 'ClusterRole', 'mtls-operator-edit');
    expect(edit.metadata?.labels).toMatchObject({
      'rbac.authorization.k8s.io/aggregate-to-edit': 'true',
      'rbac.authorization.k8s.io/aggregate-to-admin': 'true',
    });
    expect(edit.metadata?.labels).not.toHaveProperty('rbac.authorization.k8s.io/aggregate-to-view');
    expect(edit.rules![0]!.verbs).toEqual(['create', 'update', 'patch', 'delete', 'deletecollection']);
    // Who may edit a namespace may ask for credentials to be delivered into it (the receiving side's consent).
    expect(edit.rules![0]!.resources).toEqual(['mtlsendpoints', 'mtlscredentialrequests']);
  });

  it('every value set (values-all.yaml) reaches its object', async () => {
    const objects = await render(['-f', ALL]);
    // fullnameOverride names everything; nameOverride is app.kubernetes.io/name.
    for (const o of objects) {
      if (o.kind !== 'ClusterRole' && o.kind !== 'ClusterRoleBinding' && o.kind !== 'MutatingWebhookConfiguration') {
        expect([o.kind, o.metadata?.name?.startsWith('edge-mtls') || o.metadata?.name === 'mtls-sa']).toEqual([
          o.kind,
          true,
        ]);
      }
      // global.commonLabels on every object.
      expect([o.kind, o.metadata?.labels?.team]).toEqual([o.kind, 'platform']);
      expect(o.metadata?.labels?.['app.kubernetes.io/name']).toBe('mtls');
    }
    expect(objects.some((o) => o.kind === 'CustomResourceDefinition')).toBe(false);
    expect(objects.some((o) => o.kind === 'PodDisruptionBudget')).toBe(false);
    expect(objects.filter((o) => o.kind === 'ClusterRole').map((o) => o.metadata?.name)).toEqual(['edge-mtls']);
    const deployment = named<k8s.V1Deployment>(objects, 'Deployment', 'edge-mtls');
    expect(deployment.spec?.replicas).toBe(3);
    const template = podSpec(objects);
    expect(template.metadata?.labels).toEqual({
      'app.kubernetes.io/name': 'mtls',
      'app.kubernetes.io/instance': 'mtls-operator',
      'cost-center': 'c42',
    });
    expect(template.metadata?.annotations).toEqual({ 'example.com/scrape': 'false' });
    const pod = template.spec!;
    expect(pod.serviceAccountName).toBe('mtls-sa');
    expect(pod.imagePullSecrets).toEqual([{ name: 'global-pull' }, { name: 'own-pull' }]);
    expect(pod.priorityClassName).toBe('own-priority');
    expect(pod.nodeSelector).toEqual({ 'kubernetes.io/os': 'linux' });
    expect(pod.tolerations).toEqual([{ key: 'dedicated', operator: 'Equal', value: 'ops', effect: 'NoSchedule' }]);
    expect(pod.affinity).toEqual({
      nodeAffinity: {
        requiredDuringSchedulingIgnoredDuringExecution: {
          nodeSelectorTerms: [{ matchExpressions: [{ key: 'kubernetes.io/arch', operator: 'In', values: ['amd64'] }] }],
        },
      },
    });
    expect(pod.topologySpreadConstraints).toEqual([
      {
        maxSkew: 1,
        topologyKey: 'topology.kubernetes.io/zone',
        whenUnsatisfiable: 'ScheduleAnyway',
        labelSelector: {
          matchLabels: { 'app.kubernetes.io/name': 'mtls', 'app.kubernetes.io/instance': 'mtls-operator' },
        },
      },
      {
        maxSkew: 1,
        topologyKey: 'kubernetes.io/hostname',
        whenUnsatisfiable: 'DoNotSchedule',
        labelSelector: { matchLabels: { custom: 'selector' } },
      },
    ]);
    expect(pod.securityContext).toEqual({
      runAsNonRoot: true,
      runAsUser: 1000700000,
      fsGroup: 1000700000,
      seccompProfile: { type: 'RuntimeDefault' },
    });
    const container = operator(objects);
    const image = `registry.example:5000/mirror/mtls-operator@sha256:${'0'.repeat(64)}`;
    expect(container.image).toBe(image);
    expect(container.imagePullPolicy).toBe('Always');
    expect(container.securityContext).toMatchObject({ runAsUser: 1000700000 });
    expect(container.resources).toEqual({
      requests: { cpu: '200m', memory: '256Mi', 'ephemeral-storage': '32Mi' },
      limits: { memory: '512Mi', 'ephemeral-storage': '128Mi' },
    });
    expect(container.args).toEqual(
      expect.arrayContaining([
        '--log-level=debug',
        '--log-format=text',
        '--webhook-configuration=edge-mtls',
        '--lease-name=edge-mtls-leader',
        '--metrics-port=9090',
        '--webhook-port=10250',
        '--sidecar-image=registry.example:5000/mirror/sidecar:9.9.9',
        '--sidecar-image-pull-policy=Never',
        '--sidecar-log-level=warn',
        '--sidecar-log-format=json',
        '--sidecar-admin-port=17001',
        '--sidecar-resources={"limits":{"memory":"128Mi"},"requests":{"cpu":"10m","memory":"64Mi"}}',
        '--sidecar-security-context={"runAsUser":65532}',
        '--ca-propagation-delay=1m',
        '--resync=5m',
        '--workers=4',
      ]),
    );
    expect(container.args!.at(-1)).toBe('--workers=8');
    expect(container.env).toEqual(expect.arrayContaining([{ name: 'EXTRA', value: 'yes' }]));
    expect(container.env).toContainEqual({
      name: 'NODE_OPTIONS',
      value: '--max-old-space-size=256 --max-semi-space-size=1',
    });
    expect(named<k8s.V1ServiceAccount>(objects, 'ServiceAccount').metadata?.annotations).toEqual({
      'iam.example/role': 'mtls',
    });
    const webhook = named<k8s.V1MutatingWebhookConfiguration>(objects, 'MutatingWebhookConfiguration');
    expect(webhook.webhooks![0]).toMatchObject({
      failurePolicy: 'Fail',
      timeoutSeconds: 10,
      namespaceSelector: { matchExpressions: [{ key: 'mtls', operator: 'Exists' }] },
      clientConfig: { service: { name: 'edge-mtls-webhook', namespace: 'mtls-system' } },
    });
    const policy = named<k8s.V1NetworkPolicy>(objects, 'NetworkPolicy', 'edge-mtls');
    expect(policy.spec).toEqual({
      podSelector: { matchLabels: { 'app.kubernetes.io/name': 'mtls', 'app.kubernetes.io/instance': 'mtls-operator' } },
      policyTypes: ['Ingress', 'Egress'],
      ingress: [
        { ports: [{ port: 'webhook', protocol: 'TCP' }] },
        {
          ports: [{ port: 'metrics', protocol: 'TCP' }],
          // client-node's name for `from` (a reserved word in its generated models).
          _from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }],
        },
      ],
      egress: [{}],
    });
    for (const kind of ['ServiceMonitor', 'PodMonitor', 'PrometheusRule']) named(objects, kind);
    expect(JSON.stringify(named(objects, 'PrometheusRule'))).toContain(`< ${7 * 86400}`);
  });

  it('global.priorityClassName applies when the chart sets none; image.tag and image.registry without a digest', async () => {
    const objects = await render([
      '--set',
      'global.priorityClassName=from-global,image.registry=registry.example,image.repository=mirror/op,image.tag=1.2.3',
    ]);
    expect(podSpec(objects).spec!.priorityClassName).toBe('from-global');
    expect(operator(objects).image).toBe('registry.example/mirror/op:1.2.3');
    expect(operator(objects).args).toContain('--sidecar-image=registry.example/mirror/op:1.2.3');
  });

  it('installs as a subchart of an umbrella chart with global set (lint and template)', async () => {
    const umbrella = mkdtempSync(join(tmpdir(), 'umbrella-'));
    try {
      cpSync(join(ROOT, 'test/chart/umbrella'), umbrella, { recursive: true });
      cpSync(CHART, join(umbrella, 'charts/mtls-operator'), { recursive: true });
      expect(await helm(['lint', '--strict', umbrella])).toContain('0 chart(s) failed');
      const objects = await render([], umbrella);
      const pod = podSpec(objects).spec!;
      expect(named<k8s.V1Deployment>(objects, 'Deployment').spec?.replicas).toBe(3);
      expect(pod.imagePullSecrets).toEqual([{ name: 'platform-pull' }]);
      expect(pod.priorityClassName).toBe('platform-critical');
      for (const o of objects) expect([o.kind, o.metadata?.labels?.platform]).toEqual([o.kind, 'yes']);
      named(objects, 'CustomResourceDefinition', CRD_NAME);
      named(objects, 'CustomResourceDefinition', REQUEST_CRD_NAME);
    } finally {
      rmSync(umbrella, { recursive: true, force: true });
    }
  });
});
