import type * as k8s from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  type MtlsCredentialRequest,
  REQUEST_RESOURCE,
  type MtlsCredentialRequestSpec,
} from '../../operator/api/credential-request.ts';
import { RENEW_REQUESTED_ANNOTATION } from '../../operator/api/types.ts';
import type { EndpointController } from '../../operator/controller/manager.ts';
import { DeliveryController } from '../../operator/delivery/controller.ts';
import { OperatorMetrics } from '../../operator/metrics.ts';
import { parseCertificates } from '../../operator/pki/inspect.ts';
import { writeSecretVolume } from '../../sidecar/secret-volume.ts';
import type { RunningSidecar } from '../../sidecar/sidecar.ts';
import { createTestNamespace, deleteTestNamespace, kubeConfig, kubectl, waitFor } from '../support/cluster.ts';
import { core, createEndpoint, custom, installCrd, readSecret, secretText, waitReady } from '../support/endpoints.ts';
import { startController } from '../support/operator.ts';
import { startTestSidecar } from '../support/sidecar.ts';
import { startMockUpstream } from '../support/tls-fixtures.ts';

// MtlsCredentialRequest end to end against a real API server: the endpoint's namespace and the client's
// namespace each consent (or not), the copy follows renewals and a CA rollover, is withdrawn by either side and
// on revocation, never holds the CA key, and curl in the client's role reaches a sidecar with it.

const run = promisify(execFile);
const PROPAGATION_MS = 2_000;

describe('delivery: credentials and CA bundles in the client namespace', () => {
  let epNs: string;
  let clientNs: string;
  let webNs: string;
  let strangerNs: string;
  let controller: EndpointController;
  let delivery: DeliveryController;
  let upstream: Awaited<ReturnType<typeof startMockUpstream>>;
  let sidecar: RunningSidecar | undefined;
  const scratch = mkdtempSync(join(tmpdir(), 'mtls-delivery-'));

  const createRequest = (namespace: string, name: string, spec: MtlsCredentialRequestSpec) =>
    custom().createNamespacedCustomObject({
      ...REQUEST_RESOURCE,
      namespace,
      body: { apiVersion: 'mtls.operator.dev/v1alpha1', kind: 'MtlsCredentialRequest', metadata: { name }, spec },
    });
  const getRequest = async (namespace: string, name: string) =>
    (await custom().getNamespacedCustomObject({ ...REQUEST_RESOURCE, namespace, name })) as MtlsCredentialRequest;
  const readyOf = (r: MtlsCredentialRequest) => r.status?.conditions?.find((c) => c.type === 'Ready');
  const waitReason = (namespace: string, name: string, reason: string) =>
    waitFor(`${namespace}/${name} to have reason ${reason}`, async () => {
      const r = await getRequest(namespace, name);
      return readyOf(r)?.reason === reason && r.status?.observedGeneration === r.metadata?.generation ? r : undefined;
    });
  /** `type reason` of the Events on a request, as `kubectl describe mtlscr` lists them. */
  const eventsOf = (namespace: string, name: string) =>
    waitFor(`Events on ${namespace}/${name}`, async () => {
      const list = await core().listNamespacedEvent({ namespace, fieldSelector: `involvedObject.name=${name}` });
      const events = list.items.filter((e) => e.involvedObject.kind === 'MtlsCredentialRequest');
      return events.length > 0 ? events.map((e) => `${e.type} ${e.reason}`) : undefined;
    });
  const readConfigMap = (namespace: string, name: string) =>
    core()
      .readNamespacedConfigMap({ namespace, name })
      .catch(() => undefined);
  /** Merge patches through kubectl: lists (clients, allowedNamespaces) are replaced whole, as a person would. */
  const mergePatch = (name: string, body: object) =>
    kubectl(['patch', 'mtlsendpoint', name, '-n', epNs, '--type', 'merge', '-p', JSON.stringify(body)]);

  /** Files a client would mount from the delivered Secret. */
  const files = (secret: k8s.V1Secret | undefined, tag: string) => {
    const out: Record<string, string> = {};
    for (const key of ['tls.crt', 'tls.key', 'ca.crt']) {
      out[key] = join(scratch, `${tag}-${key}`);
      writeFileSync(out[key], secretText(secret, key));
    }
    return out;
  };
  const curl = async (port: number, args: string[]) => {
    try {
      const { stdout } = await run(
        'curl',
        [
          '-sS',
          '-o',
          '/dev/null',
          '-w',
          '%{http_code}',
          '--resolve',
          `localhost:${port}:127.0.0.1`,
          ...args,
          `https://localhost:${port}/`,
        ],
        { timeout: 30_000 },
      );
      return stdout;
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string };
      return `FAILED ${e.stdout ?? ''} ${e.stderr ?? ''}`;
    }
  };

  beforeAll(async () => {
    await installCrd();
    [epNs, clientNs, webNs, strangerNs] = await Promise.all([
      createTestNamespace('dlv-payments'),
      createTestNamespace('dlv-billing'),
      createTestNamespace('dlv-web'),
      createTestNamespace('dlv-stranger'),
    ]);
    upstream = await startMockUpstream();
    controller = await startController(epNs, { caPropagationDelayMs: PROPAGATION_MS });
    delivery = new DeliveryController({ kubeConfig: kubeConfig(), metrics: new OperatorMetrics(), resyncMs: 60_000 });
    await delivery.start();
    await createEndpoint(epNs, 'payments', {
      upstreamPort: 8080,
      dnsNames: ['localhost'],
      clients: [{ name: 'billing', allowedNamespaces: [clientNs] }, { name: 'audit' }],
      trustBundle: { allowedNamespaces: [webNs] },
    });
    await waitReady(epNs, 'payments');
  });
  afterAll(async () => {
    await sidecar?.stop(500);
    upstream?.server.close();
    await delivery?.stop();
    await controller?.stop();
    await Promise.all([epNs, clientNs, webNs, strangerNs].map((ns) => ns && deleteTestNamespace(ns)));
    rmSync(scratch, { recursive: true, force: true });
  });

  it('both sides consent: the client Secret arrives, without the CA key, and curl reaches a strict listener with it', async () => {
    await createRequest(clientNs, 'payments', { endpoint: { namespace: epNs, name: 'payments' }, client: 'billing' });
    const request = await waitReason(clientNs, 'payments', 'Delivered');
    const source = await readSecret(epNs, 'payments-client-billing');
    const copy = await readSecret(clientNs, 'payments');
    expect(copy?.type).toBe('kubernetes.io/tls');
    expect(Object.keys(copy!.data!).sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
    for (const key of ['ca.crt', 'tls.crt', 'tls.key']) expect(copy!.data![key]).toBe(source!.data![key]);
    const caKey = secretText(await readSecret(epNs, 'payments-ca'), 'ca.key');
    expect(Object.values(copy!.data!).some((v) => Buffer.from(v, 'base64').toString().includes(caKey.trim()))).toBe(
      false,
    );
    expect(copy?.metadata?.ownerReferences).toEqual([
      expect.objectContaining({ kind: 'MtlsCredentialRequest', uid: request.metadata!.uid, controller: true }),
    ]);
    expect(request.status?.delivered).toMatchObject({
      kind: 'Secret',
      name: 'payments',
      serialNumber: parseCertificates(secretText(source, 'tls.crt'))[0]!.serialNumber.toLowerCase(),
    });
    expect(readyOf(request)).toMatchObject({ status: 'True' });
    expect(await eventsOf(clientNs, 'payments')).toContain('Normal Delivered');

    const server = await readSecret(epNs, 'payments-server');
    const tlsDir = join(scratch, 'sidecar');
    await writeSecretVolume(
      tlsDir,
      Object.fromEntries(['tls.crt', 'tls.key', 'ca.crt', 'ca.crl'].map((key) => [key, secretText(server, key)])),
    );
    sidecar = await startTestSidecar({ tlsDir, upstreamPort: upstream.port, listen: ['strict=0', 'standard=0'] });
    const [strict] = sidecar.ports as [number, number];
    const f = files(copy, 'billing');
    expect(await curl(strict, ['--cacert', f['ca.crt']!, '--cert', f['tls.crt']!, '--key', f['tls.key']!])).toBe('200');
    // The listener is strict indeed: the same CA file without the certificate is refused.
    expect(await curl(strict, ['--cacert', f['ca.crt']!])).not.toBe('200');
  });

  it('the CA bundle arrives as a ConfigMap where the endpoint allows it, and curl trusts the standard listener with it', async () => {
    await createRequest(webNs, 'payments-ca', { endpoint: { namespace: epNs, name: 'payments' } });
    const request = await waitReason(webNs, 'payments-ca', 'Delivered');
    const cm = await readConfigMap(webNs, 'payments-ca');
    const server = await readSecret(epNs, 'payments-server');
    expect(cm?.data).toEqual({ 'ca.crt': secretText(server, 'ca.crt') });
    expect(request.status?.delivered).toMatchObject({ kind: 'ConfigMap', name: 'payments-ca' });
    // The endpoint's own namespace has it without asking, as <endpoint>-ca-bundle.
    expect((await readConfigMap(epNs, 'payments-ca-bundle'))?.data).toEqual(cm?.data);
    const bundle = join(scratch, 'web-ca.crt');
    writeFileSync(bundle, cm!.data!['ca.crt']!);
    const standard = sidecar!.ports[1]!;
    expect(await curl(standard, ['--cacert', bundle])).toBe('200');
  });

  it('one side only delivers nothing, and the condition names the missing side', async () => {
    // The receiving side asks, the endpoint does not list it.
    await createRequest(strangerNs, 'grab', { endpoint: { namespace: epNs, name: 'payments' }, client: 'billing' });
    await createRequest(strangerNs, 'grab-ca', { endpoint: { namespace: epNs, name: 'payments' } });
    const refused = await waitReason(strangerNs, 'grab', 'NotAllowed');
    expect(readyOf(refused)?.message).toContain(`add ${strangerNs} to spec.clients[name=billing].allowedNamespaces`);
    expect(await eventsOf(strangerNs, 'grab')).toEqual(['Warning NotAllowed']);
    expect(readyOf(await waitReason(strangerNs, 'grab-ca', 'NotAllowed'))?.message).toContain(
      'spec.trustBundle.allowedNamespaces',
    );
    // Another client of the same endpoint, not allowed there, from the namespace that may have billing's.
    await createRequest(clientNs, 'audit', { endpoint: { namespace: epNs, name: 'payments' }, client: 'audit' });
    await waitReason(clientNs, 'audit', 'NotAllowed');
    expect(await readSecret(strangerNs, 'grab')).toBeUndefined();
    expect(await readConfigMap(strangerNs, 'grab-ca')).toBeUndefined();
    expect(await readSecret(clientNs, 'audit')).toBeUndefined();
    // The endpoint side alone (clientNs is allowed billing's credentials) made nothing else appear there.
    const secrets = await core().listNamespacedSecret({ namespace: clientNs });
    expect(secrets.items.map((s) => s.metadata?.name).filter((n) => n !== 'payments')).toEqual([]);
    // An endpoint that does not exist is reported as such.
    await createRequest(clientNs, 'nowhere', { endpoint: { namespace: epNs, name: 'nowhere' }, client: 'billing' });
    expect(readyOf(await waitReason(clientNs, 'nowhere', 'EndpointNotFound'))?.message).toContain(
      `${epNs}/nowhere does not exist`,
    );
  });

  it('an object of the target name made by someone else is never overwritten, and the name is used once freed', async () => {
    await core().createNamespacedSecret({
      namespace: clientNs,
      body: { metadata: { name: 'theirs' }, stringData: { mine: 'yes' } },
    });
    await createRequest(clientNs, 'clash', {
      endpoint: { namespace: epNs, name: 'payments' },
      client: 'billing',
      targetName: 'theirs',
    });
    expect(readyOf(await waitReason(clientNs, 'clash', 'TargetConflict'))?.message).toContain('spec.targetName');
    expect((await readSecret(clientNs, 'theirs'))?.data).toEqual({ mine: Buffer.from('yes').toString('base64') });
    // Once the name is free (a Secret the operator does not watch: found at the next look, within 30 s), the copy
    // takes it.
    await core().deleteNamespacedSecret({ namespace: clientNs, name: 'theirs' });
    await waitFor(
      'the copy to take the freed name',
      async () => ((await readSecret(clientNs, 'theirs'))?.type === 'kubernetes.io/tls' ? true : undefined),
      { timeoutMs: 45_000 },
    );
    await waitReason(clientNs, 'clash', 'Delivered');
  });

  it('a renewal of the client certificate rewrites the copy within seconds', async () => {
    const before = secretText(await readSecret(clientNs, 'payments'), 'tls.crt');
    await mergePatch('payments', {
      metadata: { annotations: { [RENEW_REQUESTED_ANNOTATION]: `client/billing=${new Date().toISOString()}` } },
    });
    const renewed = await waitFor('the copy to hold the renewed certificate', async () => {
      const [source, copy] = await Promise.all([
        readSecret(epNs, 'payments-client-billing'),
        readSecret(clientNs, 'payments'),
      ]);
      const cert = secretText(copy, 'tls.crt');
      return cert !== before &&
        cert === secretText(source, 'tls.crt') &&
        copy?.data?.['tls.key'] === source?.data?.['tls.key']
        ? cert
        : undefined;
    });
    const serial = parseCertificates(renewed)[0]!.serialNumber.toLowerCase();
    await waitFor('the status to name the new serial', async () =>
      (await getRequest(clientNs, 'payments')).status?.delivered?.serialNumber === serial ? true : undefined,
    );
    // Steady state: once the caches have caught up, a pass over the request writes nothing.
    await waitFor('a pass that writes nothing', async () => {
      const writes = delivery.writes;
      await delivery.reconcile(`${clientNs}/payments`);
      return delivery.writes === writes ? true : undefined;
    });
  });

  it('withdrawal by the endpoint deletes the ConfigMap; revocation and withdrawal by the request delete the Secret', async () => {
    await mergePatch('payments', { spec: { trustBundle: { allowedNamespaces: [] } } });
    await waitReason(webNs, 'payments-ca', 'NotAllowed');
    await waitFor('the ConfigMap to be deleted', async () =>
      (await readConfigMap(webNs, 'payments-ca')) ? undefined : true,
    );
    expect((await getRequest(webNs, 'payments-ca')).status?.delivered).toBeUndefined();

    // Revocation: the client leaves spec.clients.
    await mergePatch('payments', { spec: { clients: [{ name: 'audit' }] } });
    await waitReason(clientNs, 'payments', 'ClientNotFound');
    await waitFor('the Secret to be deleted', async () =>
      (await readSecret(clientNs, 'payments')) ? undefined : true,
    );

    // Back again, then withdrawn by the receiving side: deleting the request deletes the copy.
    await mergePatch('payments', {
      spec: { clients: [{ name: 'audit' }, { name: 'billing', allowedNamespaces: [clientNs] }] },
    });
    await waitReason(clientNs, 'payments', 'Delivered');
    expect(await readSecret(clientNs, 'payments')).toBeDefined();
    await custom().deleteNamespacedCustomObject({ ...REQUEST_RESOURCE, namespace: clientNs, name: 'payments' });
    await waitFor('the Secret to be deleted with its request', async () =>
      (await readSecret(clientNs, 'payments')) ? undefined : true,
    );
  });

  it("keystores built with the receiving namespace's own password, which keytool opens", async () => {
    const keystoresFor = (name: string) => ({
      pkcs12: { create: true, passwordSecretRef: { name } },
    });
    await createRequest(clientNs, 'java-nopass', {
      endpoint: { namespace: epNs, name: 'payments' },
      client: 'billing',
      keystores: keystoresFor('absent'),
    });
    const missing = await waitReason(clientNs, 'java-nopass', 'KeystorePasswordMissing');
    expect(readyOf(missing)?.message).toContain(`kubectl -n ${clientNs} create secret generic absent`);
    expect(Object.keys((await readSecret(clientNs, 'java-nopass'))!.data!).sort()).toEqual([
      'ca.crt',
      'tls.crt',
      'tls.key',
    ]);

    await core().createNamespacedSecret({
      namespace: clientNs,
      body: { metadata: { name: 'java-pass' }, stringData: { password: 'billing-pass-1' } },
    });
    await createRequest(clientNs, 'java', {
      endpoint: { namespace: epNs, name: 'payments' },
      client: 'billing',
      keystores: keystoresFor('java-pass'),
    });
    await waitReason(clientNs, 'java', 'Delivered');
    const copy = await readSecret(clientNs, 'java');
    const file = join(scratch, 'java-keystore.p12');
    writeFileSync(file, Buffer.from(copy!.data!['keystore.p12']!, 'base64'));
    const list = (password: string) =>
      run('keytool', ['-list', '-storetype', 'PKCS12', '-keystore', file, '-storepass', password], {
        timeout: 60_000,
      }).then(
        (r) => r.stdout,
        (err: { stderr?: string; stdout?: string }) => `FAILED ${err.stdout ?? ''}${err.stderr ?? ''}`,
      );
    expect(await list('billing-pass-1')).toMatch(/billing, .*PrivateKeyEntry/);
    expect(await list('wrong')).toMatch(/^FAILED/);
  });

  it('the API server refuses "*" for a client\'s credentials and "*" beside other namespaces', async () => {
    const spec = (extra: object) => ({ upstreamPort: 8080, ...extra });
    await expect(
      createEndpoint(epNs, 'star-client', spec({ clients: [{ name: 'x', allowedNamespaces: ['*'] }] })),
    ).rejects.toThrow(/allowedNamespaces/);
    await expect(
      createEndpoint(epNs, 'star-mixed', spec({ trustBundle: { allowedNamespaces: ['*', 'web'] } })),
    ).rejects.toThrow(/must be the only entry/);
    await expect(createRequest(clientNs, 'bad', { endpoint: { name: 'Not_A_Name' } })).rejects.toThrow(
      /spec.endpoint.name/,
    );
  });

  it('a CA rollover reaches the copies and <endpoint>-ca-bundle: both CAs while it propagates, then the new one alone', async () => {
    await createEndpoint(epNs, 'rolling', {
      upstreamPort: 8080,
      clients: [{ name: 'app', allowedNamespaces: [clientNs] }],
      trustBundle: { allowedNamespaces: ['*'] },
      certificates: { validity: '12s', renewBefore: '4s', caValidity: '30s' },
    });
    await waitReady(epNs, 'rolling');
    await createRequest(clientNs, 'rolling', { endpoint: { namespace: epNs, name: 'rolling' }, client: 'app' });
    await createRequest(webNs, 'rolling-ca', { endpoint: { namespace: epNs, name: 'rolling' } });
    await waitReason(clientNs, 'rolling', 'Delivered');
    await waitReason(webNs, 'rolling-ca', 'Delivered');
    const originalCa = secretText(await readSecret(epNs, 'rolling-ca'), 'ca.crt').trim();
    const seen = { secretOfTwo: false, configMapOfTwo: false, ownOfTwo: false };
    await waitFor(
      'the copies to move to the new CA',
      async () => {
        const [copy, cm, source, own] = await Promise.all([
          readSecret(clientNs, 'rolling'),
          readConfigMap(webNs, 'rolling-ca'),
          readSecret(epNs, 'rolling-client-app'),
          readConfigMap(epNs, 'rolling-ca-bundle'),
        ]);
        const ownBundle = own?.data?.['ca.crt'] ?? '';
        if (parseCertificates(ownBundle).length === 2) seen.ownOfTwo = true;
        const secretBundle = secretText(copy, 'ca.crt');
        const cmBundle = cm?.data?.['ca.crt'] ?? '';
        if (parseCertificates(secretBundle).length === 2) seen.secretOfTwo = true;
        if (parseCertificates(cmBundle).length === 2) seen.configMapOfTwo = true;
        const moved = (bundle: string) => !bundle.includes(originalCa) && parseCertificates(bundle).length === 1;
        return seen.secretOfTwo &&
          seen.configMapOfTwo &&
          seen.ownOfTwo &&
          moved(ownBundle) &&
          moved(secretBundle) &&
          moved(cmBundle) &&
          secretText(copy, 'tls.crt') === secretText(source, 'tls.crt')
          ? true
          : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 150 },
    );
  });
});
