import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { promisify } from 'node:util';
import { connect } from 'node:tls';
import { SIDECAR_CONTAINER } from '../../operator/api/injection.ts';
import { importImages, tagImage } from '../../local/controlplane/images/local-images.ts';
import { nodeFiles } from '../../local/controlplane/node/node-configs.ts';
import { issueCA, issueClient, type PemPair } from '../../operator/pki/issue.ts';
import { kubectl, waitFor } from '../support/cluster.ts';
import {
  applyEndpoint,
  applyMock,
  CHART,
  clientView,
  createInjectedNamespace,
  helm,
  helmInstall,
  httpsTo,
  type Json,
  kubectlJson,
  nodeState,
  type Reply,
  REPO_ROOT,
  reportNodeFigures,
  runScriptPod,
  secretData as supportSecretData,
  steadyLoad,
} from './support/node.ts';

/**
 * The product as a cluster operator meets it: `helm install` with no overrides on a real node (kubelet,
 * containerd, kube-proxy), an injected mock Deployment, and real requests through each Service's ClusterIP.
 */
const SYSTEM_NS = 'mtls-system';
const NS = 'payments-team';
const MODES = ['standard', 'flexible', 'strict'] as const;
const DAY = 86_400_000;
const json = kubectlJson;
const secretData = (name: string, namespace = NS) => supportSecretData(name, namespace);
const clientCreds = async (endpoint: string, client: string): Promise<PemPair> =>
  (await clientView(`${endpoint}-client-${client}`, NS)).creds;
const clusterIp = async (service: string) =>
  (await json<{ spec: { clusterIP: string } }>(['get', 'service', service, '-n', NS])).spec.clusterIP;

/**
 * Waits until a ClusterIP answers TLS: kube-proxy programs a new Service's rules a moment after its endpoints
 * appear (until then the node has no route for the address).
 */
async function waitServiceAnswers(address: string, servername: string): Promise<void> {
  await waitFor(`${servername} (${address}) to answer`, () => servedSerial(address, servername).then(() => true), {
    timeoutMs: 60_000,
    intervalMs: 500,
  });
}

/** The serial number of the certificate a listener serves right now. */
function servedSerial(address: string, servername: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: address, port: 443, servername, rejectUnauthorized: false }, () => {
      const serial = socket.getPeerX509Certificate()?.serialNumber ?? '';
      socket.destroy();
      resolve(serial);
    });
    socket.on('error', reject);
    socket.setTimeout(5_000, () => socket.destroy(new Error('timeout')));
  });
}

/** The payments endpoint's clients, each also allowed on the flexible and strict listeners. */
async function setClients(names: string[]): Promise<void> {
  const spec = { clients: names.map((name) => ({ name })), allowedClients: names };
  await kubectl(['patch', 'mtlsendpoint', 'payments', '-n', NS, '--type=merge', '-p', JSON.stringify({ spec })]);
}

async function waitPodsReady(app: string, timeoutMs = 90_000) {
  return waitFor(
    `pods of ${app} Ready`,
    async () => {
      const pods = await json<{ items: Json[] }>(['get', 'pods', '-n', NS, '-l', `app=${app}`]);
      const running = pods.items.filter((pod) => !pod.metadata.deletionTimestamp);
      const ready = running.filter((pod) =>
        pod.status?.conditions?.some((c: Json) => c.type === 'Ready' && c.status === 'True'),
      );
      return running.length > 0 && ready.length === running.length ? ready : undefined;
    },
    { timeoutMs, intervalMs: 250 },
  );
}

describe('the product installed with Helm on a real node', () => {
  let ca = '';
  let billing: PemPair;
  const ips: Record<string, string> = {};
  const sni = (mode: string, endpoint = 'payments') => `${endpoint}-${mode}.${NS}.svc`;

  // A failure part-way must not leave the release for the next file to trip over.
  afterAll(async () => {
    await helm(['uninstall', 'mtls-operator', '-n', SYSTEM_NS, '--wait']).catch(() => undefined);
  });

  it('helm install with no overrides: two Ready operator pods, one of them leading', async () => {
    const started = Date.now();
    await helmInstall();
    const installMs = Date.now() - started;
    const deployment = await json(['get', 'deployment', 'mtls-operator', '-n', SYSTEM_NS]);
    expect(deployment.status.readyReplicas).toBe(2);
    expect(deployment.spec.template.spec.containers[0].image).toBe(nodeState().image);
    const pods = (
      await json<{ items: Json[] }>(['get', 'pods', '-n', SYSTEM_NS, '-l', 'app.kubernetes.io/name=mtls-operator'])
    ).items;
    const names = pods.map((pod) => pod.metadata.name as string);
    expect(names).toHaveLength(2);
    // The operator runs under its own ServiceAccount, not the namespace's default.
    for (const pod of pods) expect(pod.spec.serviceAccountName).toBe('mtls-operator');
    // The holder identity is the pod's host name plus a random suffix, as client-go's leader election makes it.
    const leader = await waitFor('a leader among the operator pods', async () => {
      const lease = await json(['get', 'lease', 'mtls-operator-leader', '-n', SYSTEM_NS]);
      const holder = (lease.spec.holderIdentity ?? '') as string;
      return names.find((name) => holder.startsWith(`${name}-`));
    });
    expect(names).toContain(leader);
    reportNodeFigures(
      `node up ${nodeState().timings.nodeUpMs} ms, image build ${nodeState().timings.imageBuildMs} ms, ` +
        `import ${nodeState().timings.imageImportMs} ms, helm install to 2 Ready ${installMs} ms`,
    );
  });

  it('injects the sidecar into a mock Deployment, whose pod mounts the server Secret through kubelet', async () => {
    await createInjectedNamespace(NS);
    await kubectl(['apply', '-n', NS, '-f', `${REPO_ROOT}/examples/mtlsendpoint.yaml`]);
    // A second client, revoked in the next test; the allowed list is part of the injected pod, so it comes first.
    await setClients(['billing', 'departed']);
    await waitFor(
      'payments Ready',
      async () =>
        (await json(['get', 'mtlsendpoint', 'payments', '-n', NS])).status?.conditions?.some(
          (c: Json) => c.type === 'Ready' && c.status === 'True',
        ),
      { timeoutMs: 60_000 },
    );
    const created = Date.now();
    await applyMock({ name: 'payments-mock', namespace: NS, port: 8080 });
    const [pod] = await waitPodsReady('payments-mock');
    const readyMs = Date.now() - created;
    expect((pod.spec.containers as Json[]).map((c) => c.name)).toEqual(['mock']);
    expect((pod.spec.initContainers as Json[]).map((c) => [c.name, c.restartPolicy])).toEqual([
      [SIDECAR_CONTAINER, 'Always'],
    ]);
    const volumes = (pod.spec.volumes as Json[]).filter((v) => v.secret).map((v) => v.secret.secretName);
    expect(volumes).toContain('payments-server');

    ca = (await secretData('payments-server'))['ca.crt']!;
    billing = await clientCreds('payments', 'billing');
    for (const mode of MODES) {
      ips[mode] = await clusterIp(`payments-${mode}`);
      await waitServiceAnswers(ips[mode]!, sni(mode));
    }
    // What the sidecar serves is what kubelet mounted from the Secret.
    const secretSerial = new X509Certificate((await secretData('payments-server'))['tls.crt']!).serialNumber;
    expect(await servedSerial(ips.strict!, sni('strict'))).toBe(secretSerial);
    reportNodeFigures(`mock Deployment created to pod Ready (with sidecar) ${readyMs} ms`);
  });

  it('kubectl mtls check passes on the installed release, and status sees the injected pod', async () => {
    // The CLI as a user runs it, with the kubeconfig from KUBECONFIG: here `check` finds the operator's namespace
    // through the chart's webhook Service and counts that Service's ready endpoints (the in-process
    // integration tests can only exercise a webhook called by URL).
    const cli = async (args: string[]) => {
      const { stdout } = await promisify(execFile)(process.execPath, [`${REPO_ROOT}/operator/cli.ts`, ...args], {
        env: { ...process.env, KUBECONFIG: nodeState().kubeconfig },
      });
      return JSON.parse(stdout) as Json;
    };
    const check = await cli(['check', '-A', '--within', '1', '-o', 'json']);
    expect(check.problems).toBe(0);
    const messages = (check.checks as Json[]).map((c) => c.message as string);
    expect(messages).toContainEqual(
      expect.stringMatching(/^mtls-operator-.* leads \(Lease mtls-system\/mtls-operator-leader /),
    );
    expect(messages).toContain('Service mtls-system/mtls-operator-webhook has 2 ready endpoint(s)');
    const status = await cli(['status', 'payments', '-n', NS, '-o', 'json']);
    expect(status.pods.injected).toHaveLength(1);
    expect(status.pods.notInjected).toEqual([]);
  });

  /** How the sidecar refused: its status and the reason its answer names, or how the connection ended. */
  const refusal = (reply: Reply) =>
    reply.status === undefined
      ? `no answer: ${reply.error}`
      : `${reply.status} ${/^[^(]*\((\w+)\)/.exec(reply.body ?? '')?.[1] ?? reply.body}`;

  it('answers the mode table through each ClusterIP: no certificate, issued, unknown CA, expired, revoked', async () => {
    // A client that is then removed from the spec: its certificate is revoked and lands in the CRL.
    const departed = await waitFor('the departed client Secret', () => clientCreds('payments', 'departed'));
    const caSecret = await secretData('payments-ca');
    const endpointCa = { certPem: caSecret['ca.crt']!, keyPem: caSecret['ca.key']! };
    const now = new Date();
    const expired = await issueClient({
      algorithm: 'ECDSA-P256',
      validityMs: DAY,
      ca: endpointCa,
      endpoint: 'payments',
      namespace: NS,
      client: 'billing',
      now: new Date(now.getTime() - 5 * DAY),
    });
    const otherCa = await issueCA({
      algorithm: 'ECDSA-P256',
      validityMs: DAY,
      endpoint: 'payments',
      namespace: 'elsewhere',
      now,
    });
    const unknownCa = await issueClient({
      algorithm: 'ECDSA-P256',
      validityMs: DAY,
      ca: otherCa,
      endpoint: 'payments',
      namespace: 'elsewhere',
      client: 'billing',
      now,
    });

    // Before it is revoked the departed client gets in; after, once kubelet has delivered the new CRL, it does not.
    expect((await httpsTo(ips.strict!, sni('strict'), ca, departed)).status).toBe(200);
    await setClients(['billing']);
    const revokedAt = Date.now();
    await waitFor(
      'the revocation to reach the sidecar through kubelet',
      async () => refusal(await httpsTo(ips.strict!, sni('strict'), ca, departed)) === '400 revoked',
      { timeoutMs: 120_000, intervalMs: 1_000 },
    );
    const revocationMs = Date.now() - revokedAt;

    const clients: Record<string, PemPair | undefined> = {
      none: undefined,
      issued: billing,
      'unknown CA': unknownCa,
      expired,
      revoked: departed,
    };
    const table: Record<string, Record<string, string>> = {};
    for (const mode of MODES) {
      table[mode] = {};
      for (const [label, client] of Object.entries(clients)) {
        const reply: Reply = await httpsTo(ips[mode]!, sni(mode), ca, client, '/table');
        table[mode]![label] =
          reply.status === 200 ? (JSON.parse(reply.body!).clientVerify === 'SUCCESS' ? 'mTLS' : 'TLS') : refusal(reply);
      }
    }
    // A refusal is the sidecar's answer with its reason (sidecar/refusal-answer.ts), not a closed connection.
    expect(table).toEqual({
      standard: { none: 'TLS', issued: 'TLS', 'unknown CA': 'TLS', expired: 'TLS', revoked: 'TLS' },
      flexible: {
        none: 'TLS',
        issued: 'mTLS',
        'unknown CA': '400 unknown_ca',
        expired: '400 expired',
        revoked: '400 revoked',
      },
      strict: {
        none: '400 no_certificate',
        issued: 'mTLS',
        'unknown CA': '400 unknown_ca',
        expired: '400 expired',
        revoked: '400 revoked',
      },
    });
    reportNodeFigures(
      `mode table from the host: 15 / 15 as documented; revocation reached the sidecar in ${revocationMs} ms`,
    );
  });

  it('answers the same from a pod on the pod network', async () => {
    const script = `
      const https = require('https'); const fs = require('fs');
      const ca = fs.readFileSync('/creds/ca.crt'), cert = fs.readFileSync('/creds/tls.crt'), key = fs.readFileSync('/creds/tls.key');
      const targets = JSON.parse(process.env.TARGETS);
      const one = (t, withCert) => new Promise((done) => {
        const req = https.request({ host: t.ip, port: 443, servername: t.sni, path: '/from-pod', ca, agent: false, timeout: 5000,
          ...(withCert ? { cert, key } : {}) }, (res) => { let b = ''; res.on('data', (d) => (b += d)); res.on('end', () => done(res.statusCode === 200 ? JSON.parse(b).clientVerify === 'SUCCESS' ? 'mTLS' : 'TLS' : res.statusCode + ' ' + ((/^[^(]*\\((\\w+)\\)/.exec(b) || [])[1] || b))); });
        req.on('error', (err) => done('no answer: ' + (err.code || err.message))); req.on('timeout', () => req.destroy()); req.end();
      });
      (async () => { const out = {}; for (const t of targets) out[t.mode] = { none: await one(t, false), issued: await one(t, true) }; console.log(JSON.stringify(out)); })();`;
    const targets = MODES.map((mode) => ({ mode, ip: ips[mode], sni: sni(mode) }));
    const output = await runScriptPod({
      name: 'table-client',
      namespace: NS,
      script,
      env: { TARGETS: JSON.stringify(targets) },
      credentialsSecret: 'payments-client-billing',
    });
    const table = JSON.parse(output);
    expect(table).toEqual({
      standard: { none: 'TLS', issued: 'TLS' },
      flexible: { none: 'TLS', issued: 'mTLS' },
      strict: { none: '400 no_certificate', issued: 'mTLS' },
    });
  });

  it("picks up server and client rotations through kubelet's Secret volume swap with no failed request", async () => {
    // Short-lived leaves: renewed every 50 s, each old one still valid 100 s after its successor is issued.
    await applyEndpoint(NS, 'rotating', {
      podSelector: { matchLabels: { app: 'rotating-mock' } },
      upstreamPort: 8080,
      listeners: [{ mode: 'strict', port: 8443 }],
      certificates: { validity: '150s', renewBefore: '100s' },
      clients: [{ name: 'load' }],
    });
    await waitFor('rotating-client-load', () => clientCreds('rotating', 'load'), { timeoutMs: 60_000 });
    await applyMock({ name: 'rotating-mock', namespace: NS, port: 8080 });
    await waitPodsReady('rotating-mock');
    const ip = await clusterIp('rotating-strict');
    await waitServiceAnswers(ip, sni('strict', 'rotating'));
    const rotatingCa = (await secretData('rotating-server'))['ca.crt']!;

    // The client re-reads its Secret every few seconds, as a client with a mounted Secret would.
    let creds = await clientCreds('rotating', 'load');
    const clientSerials = new Set<string>();
    const serverSerials = new Set<string>();
    const refresh = setInterval(() => {
      void clientCreds('rotating', 'load').then((c) => {
        creds = c;
        clientSerials.add(new X509Certificate(c.certPem).serialNumber);
      });
      void servedSerial(ip, sni('strict', 'rotating')).then(
        (s) => serverSerials.add(s),
        () => undefined,
      );
    }, 3_000);
    const load = steadyLoad(() => httpsTo(ip, sni('strict', 'rotating'), rotatingCa, creds, '/rotating'), 10);
    try {
      await waitFor('two server rotations served', async () => serverSerials.size >= 3, {
        timeoutMs: 240_000,
        intervalMs: 1_000,
      });
    } finally {
      clearInterval(refresh);
    }
    const result = await load.stop();
    reportNodeFigures(
      `rotation through kubelet: requests sent ${result.sent} / failed ${result.failed}; server certificates served ${serverSerials.size}, client certificates used ${clientSerials.size}`,
    );
    expect(result.failures).toEqual([]);
    expect(result.sent).toBeGreaterThan(300);
  }, 300_000);

  it('helm upgrade with changed values and a new image tag drops no request', async () => {
    const state = nodeState();
    const newTag = 'upgrade-test';
    const repository = state.image.slice(0, state.image.lastIndexOf(':'));
    await tagImage(state.image, `${repository}:${newTag}`);
    await importImages(nodeFiles().containerdSocket, [`${repository}:${newTag}`]);

    const load = steadyLoad(() => httpsTo(ips.strict!, sni('strict'), ca, billing, '/upgrade'), 10);
    const started = Date.now();
    await helm([
      'upgrade',
      'mtls-operator',
      CHART,
      '-n',
      SYSTEM_NS,
      '--reuse-values',
      '--set',
      `image.tag=${newTag}`,
      '--set',
      'webhook.timeoutSeconds=5',
      '--wait',
      '--timeout',
      '180s',
    ]);
    const upgradeMs = Date.now() - started;
    // A few more seconds of traffic after the rollout, then count.
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    const result = await load.stop();
    const deployment = await json(['get', 'deployment', 'mtls-operator', '-n', SYSTEM_NS]);
    expect(deployment.spec.template.spec.containers[0].image).toBe(`${repository}:${newTag}`);
    expect(deployment.status.updatedReplicas).toBe(2);
    reportNodeFigures(
      `helm upgrade (new image tag and values) in ${upgradeMs} ms: requests sent ${result.sent} / failed ${result.failed}`,
    );
    expect(result.failures).toEqual([]);
  });

  it('deleting an endpoint deletes its Secrets and Services', async () => {
    await kubectl(['delete', 'mtlsendpoint', 'rotating', '-n', NS, '--wait=true']);
    await waitFor(
      'the Secrets and Services of rotating to go',
      async () => {
        const secrets = (await json<{ items: Json[] }>(['get', 'secrets', '-n', NS])).items.map(
          (s) => s.metadata.name as string,
        );
        const services = (await json<{ items: Json[] }>(['get', 'services', '-n', NS])).items.map(
          (s) => s.metadata.name as string,
        );
        return [...secrets, ...services].every((name) => !name.startsWith('rotating-'));
      },
      { timeoutMs: 60_000 },
    );
  });

  it('helm uninstall removes the release and leaves the CRD, the endpoints and their Secrets; injected pods keep serving', async () => {
    await helm(['uninstall', 'mtls-operator', '-n', SYSTEM_NS, '--wait', '--timeout', '120s']);
    await waitFor(
      'the release objects to go',
      async () => {
        const left = await kubectl([
          'get',
          'deployments,services,secrets,configmaps,leases,serviceaccounts,roles,rolebindings',
          '-n',
          SYSTEM_NS,
          '-o',
          'name',
        ]);
        const remaining = left
          .split('\n')
          .filter((line) => line && !/serviceaccount\/default$|configmap\/kube-root-ca.crt$/.test(line));
        return remaining.length === 0 ? true : undefined;
      },
      { timeoutMs: 60_000 },
    );
    const cluster = await kubectl([
      'get',
      'mutatingwebhookconfigurations,clusterroles,clusterrolebindings',
      '-o',
      'name',
    ]);
    expect(cluster.split('\n').filter((line) => line.includes('mtls-operator'))).toEqual([]);
    expect(await kubectl(['get', 'crd', 'mtlsendpoints.mtls.operator.dev', '-o', 'name'])).toContain('mtlsendpoints');
    expect(await kubectl(['get', 'mtlsendpoint', 'payments', '-n', NS, '-o', 'name'])).toContain('payments');
    expect(Object.keys(await secretData('payments-ca'))).toContain('ca.key');
    expect((await httpsTo(ips.strict!, sni('strict'), ca, billing)).status).toBe(200);
  });
});
