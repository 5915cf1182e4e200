import type { EndpointController } from '../../operator/controller/manager.ts';
import { parseCertificates } from '../../operator/pki/inspect.ts';
import { x509 } from '../../operator/pki/x509.ts';
import { createTestNamespace, deleteTestNamespace, waitFor } from '../support/cluster.ts';
import {
  condition,
  core,
  createEndpoint,
  getEndpoint,
  installCrd,
  readSecret,
  secretText,
  waitReady,
} from '../support/endpoints.ts';
import { openssl, pemFiles } from '../support/openssl.ts';
import { startController } from '../support/operator.ts';

const EXAMPLE_SPEC = {
  podSelector: { matchLabels: { app: 'payments-mock' } },
  upstreamPort: 8080,
  listeners: [
    { mode: 'standard', port: 8443 },
    { mode: 'flexible', port: 9443 },
    { mode: 'strict', port: 10443 },
  ],
  clients: [{ name: 'billing' }],
};

describe('controller: issuance against the real API server', () => {
  let namespace: string;
  let controller: EndpointController;

  beforeAll(async () => {
    await installCrd();
    namespace = await createTestNamespace('ctrl-issue');
    controller = await startController(namespace, { resyncMs: 2_000, caPropagationDelayMs: 2_000 });
  });
  afterAll(async () => {
    await controller?.stop();
    await deleteTestNamespace(namespace);
  });

  it('creates the CA, server and client Secrets of contract 2, valid for openssl, with a one-year default', async () => {
    await createEndpoint(namespace, 'payments', EXAMPLE_SPEC);
    const ep = await waitReady(namespace, 'payments');
    expect(condition(ep, 'Issued')?.status).toBe('True');

    const [ca, server, client] = await Promise.all(
      ['payments-ca', 'payments-server', 'payments-client-billing'].map((name) => readSecret(namespace, name)),
    );
    expect(ca?.type).toBe('Opaque');
    expect(Object.keys(ca!.data!)).toEqual(expect.arrayContaining(['ca.crt', 'ca.key']));
    expect(server?.type).toBe('kubernetes.io/tls');
    expect(Object.keys(server!.data!).sort()).toEqual(['ca.crl', 'ca.crt', 'tls.crt', 'tls.key']);
    expect(client?.type).toBe('kubernetes.io/tls');
    expect(Object.keys(client!.data!).sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
    for (const secret of [ca!, server!, client!]) {
      expect(secret.metadata?.labels).toMatchObject({
        'app.kubernetes.io/managed-by': 'mtls-operator',
        'mtls.operator.dev/endpoint': 'payments',
      });
      expect(secret.metadata?.ownerReferences?.[0]).toMatchObject({
        kind: 'MtlsEndpoint',
        name: 'payments',
        controller: true,
      });
    }

    const files = pemFiles({
      'ca.pem': secretText(ca, 'ca.crt'),
      'server.pem': secretText(server, 'tls.crt'),
      'client.pem': secretText(client, 'tls.crt'),
      'crl.pem': secretText(server, 'ca.crl'),
    });
    await expect(
      openssl(['verify', '-CAfile', files['ca.pem']!, '-purpose', 'sslserver', files['server.pem']!]),
    ).resolves.toMatch(/OK/);
    await expect(
      openssl(['verify', '-CAfile', files['ca.pem']!, '-purpose', 'sslclient', files['client.pem']!]),
    ).resolves.toMatch(/OK/);
    // Client-auth only: the client certificate is no server certificate.
    await expect(
      openssl(['verify', '-CAfile', files['ca.pem']!, '-purpose', 'sslserver', files['client.pem']!]),
    ).rejects.toThrow(/unsuitable certificate purpose/);
    await expect(
      openssl([
        'verify',
        '-crl_check',
        '-CAfile',
        files['ca.pem']!,
        '-CRLfile',
        files['crl.pem']!,
        files['client.pem']!,
      ]),
    ).resolves.toMatch(/OK/);

    const serverText = await openssl(['x509', '-noout', '-text', '-in', files['server.pem']!]);
    expect(serverText).toContain('TLS Web Server Authentication');
    expect(serverText).not.toContain('TLS Web Client Authentication');
    for (const mode of ['standard', 'flexible', 'strict']) {
      expect(serverText).toContain(`DNS:payments-${mode}.${namespace}.svc`);
    }
    const clientText = await openssl(['x509', '-noout', '-text', '-in', files['client.pem']!]);
    expect(clientText).toContain('Subject: CN = billing');
    expect(clientText).toContain(`URI:spiffe://cluster.local/ns/${namespace}/mtlsendpoint/payments/client/billing`);
    expect(clientText).toContain('TLS Web Client Authentication');
    expect(clientText).not.toContain('TLS Web Server Authentication');

    const [leaf] = parseCertificates(secretText(server, 'tls.crt'));
    const lifetimeHours = (leaf!.notAfter.getTime() - leaf!.notBefore.getTime()) / 3_600_000;
    expect(lifetimeHours).toBeGreaterThanOrEqual(8760);
    expect(lifetimeHours).toBeLessThan(8760.1);
    expect(leaf!.serialNumber.length).toBeGreaterThanOrEqual(31); // 128-bit random serial

    expect(ep.status?.server?.serialNumber).toBe(leaf!.serialNumber.toLowerCase());
    expect(ep.status?.clients?.map((c) => c.name)).toEqual(['billing']);
    expect(ep.status?.modes).toBe('standard:8443,flexible:9443,strict:10443');
    const columns = await kubectl(['get', 'mtls', 'payments', '-n', namespace]);
    expect(columns).toMatch(/payments\s+True\s+False\s+standard:8443,flexible:9443,strict:10443\s+20\d\d-/);

    const services = await core().listNamespacedService({
      namespace,
      labelSelector: 'mtls.operator.dev/endpoint=payments',
    });
    expect(services.items.map((s) => s.metadata?.name).sort()).toEqual([
      'payments-flexible',
      'payments-standard',
      'payments-strict',
    ]);
    const strict = services.items.find((s) => s.metadata?.name === 'payments-strict');
    expect(strict?.spec?.ports?.[0]).toMatchObject({ port: 443, targetPort: 'mtls-strict' });
    expect(strict?.spec?.selector).toEqual({ app: 'payments-mock' });
  });

  it('makes no writes when nothing changed (level-triggered and idempotent)', async () => {
    await waitReady(namespace, 'payments');
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // let the informers see the last writes
    const before = controller.writer.writes;
    const secretsBefore = await core().listNamespacedSecret({ namespace });
    // Two resyncs (every 2 s) reconcile everything again.
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    expect(controller.writer.writes).toBe(before);
    const secretsAfter = await core().listNamespacedSecret({ namespace });
    expect(secretsAfter.items.map((s) => s.metadata?.resourceVersion)).toEqual(
      secretsBefore.items.map((s) => s.metadata?.resourceVersion),
    );
  });

  it('revokes a removed client: its Secret goes and its serial is in the CRL at once', async () => {
    await createEndpoint(namespace, 'revoke', { upstreamPort: 8080, clients: [{ name: 'keep' }, { name: 'gone' }] });
    await waitReady(namespace, 'revoke');
    const gone = await readSecret(namespace, 'revoke-client-gone');
    const [goneCert] = parseCertificates(secretText(gone, 'tls.crt'));
    const serial = goneCert!.serialNumber.toLowerCase();

    await kubectlPatch(namespace, 'revoke', { spec: { clients: [{ name: 'keep' }] } });
    await waitFor(
      'the Secret of the removed client to be deleted',
      async () => !(await readSecret(namespace, 'revoke-client-gone')),
    );
    const server = await waitFor('the CRL to list the serial', async () => {
      const s = await readSecret(namespace, 'revoke-server');
      const crlPem = secretText(s, 'ca.crl');
      const crl = new x509.X509Crl(crlPem.match(/-----BEGIN X509 CRL-----[\s\S]*?-----END X509 CRL-----/)![0]);
      return crl.entries.some((e) => e.serialNumber.toLowerCase() === serial) ? s : undefined;
    });
    const ca = await readSecret(namespace, 'revoke-ca');
    const files = pemFiles({
      'ca.pem': secretText(ca, 'ca.crt'),
      'crl.pem': secretText(server, 'ca.crl'),
      'gone.pem': secretText(gone, 'tls.crt'),
    });
    await expect(openssl(['crl', '-noout', '-CAfile', files['ca.pem']!, '-in', files['crl.pem']!])).resolves.toMatch(
      /verify OK/,
    );
    await expect(
      openssl(['verify', '-crl_check', '-CAfile', files['ca.pem']!, '-CRLfile', files['crl.pem']!, files['gone.pem']!]),
    ).rejects.toThrow(/certificate revoked/);
    const ep = await waitFor('status.revokedSerials', async () => {
      const e = await getEndpoint(namespace, 'revoke');
      return e.status?.revokedSerials?.includes(serial) ? e : undefined;
    });
    expect(ep.status?.clients?.map((c) => c.name)).toEqual(['keep']);
  });

  it('repairs a deleted Secret and a Secret whose certificate was replaced by garbage', async () => {
    await createEndpoint(namespace, 'repair', { upstreamPort: 8080, clients: [{ name: 'app' }] });
    await waitReady(namespace, 'repair');
    const caBefore = secretText(await readSecret(namespace, 'repair-ca'), 'ca.crt');
    await core().deleteNamespacedSecret({ namespace, name: 'repair-server' });
    await waitFor('the server Secret to come back', () => readSecret(namespace, 'repair-server'));
    await waitFor('an Event that says what was found', async () =>
      (await core().listNamespacedEvent({ namespace, fieldSelector: 'involvedObject.name=repair' })).items.some(
        (e) => e.reason === 'Repaired' && e.message?.startsWith('Secret repair-server was deleted'),
      ),
    );

    const client = (await readSecret(namespace, 'repair-client-app'))!;
    await core().replaceNamespacedSecret({
      namespace,
      name: 'repair-client-app',
      body: {
        ...client,
        data: {
          ...client.data,
          'tls.crt': Buffer.from('-----BEGIN CERTIFICATE-----\nnot a cert\n').toString('base64'),
        },
      },
    });
    const repaired = await waitFor('the client Secret to be repaired', async () => {
      const s = await readSecret(namespace, 'repair-client-app');
      try {
        return parseCertificates(secretText(s, 'tls.crt')).length === 1 ? s : undefined;
      } catch {
        return undefined;
      }
    });
    const files = pemFiles({ 'ca.pem': caBefore, 'client.pem': secretText(repaired, 'tls.crt') });
    await expect(openssl(['verify', '-CAfile', files['ca.pem']!, files['client.pem']!])).resolves.toMatch(/OK/);
    const events = await core().listNamespacedEvent({ namespace, fieldSelector: 'involvedObject.name=repair' });
    expect(events.items.map((e) => `${e.reason}: ${e.message}`).join('\n')).toMatch(
      /Repaired: Secret repair-client-app: the certificate PEM is truncated/,
    );

    // A key that does not belong to the certificate (someone pasted another key) is repaired too.
    const server = (await readSecret(namespace, 'repair-server'))!;
    const otherKey = secretText(repaired, 'tls.key');
    await core().replaceNamespacedSecret({
      namespace,
      name: 'repair-server',
      body: { ...server, data: { ...server.data, 'tls.key': Buffer.from(otherKey).toString('base64') } },
    });
    await waitFor('the mismatched server key to be repaired', async () => {
      const events = await core().listNamespacedEvent({ namespace, fieldSelector: 'involvedObject.name=repair' });
      return events.items.some(
        (e) => e.reason === 'Repaired' && e.message?.includes('the private key does not match the certificate'),
      );
    });
    const fixed = await waitFor('a matching pair', async () => {
      const s = await readSecret(namespace, 'repair-server');
      return secretText(s, 'tls.key') !== otherKey ? s : undefined;
    });
    const pair = pemFiles({ 'crt.pem': secretText(fixed, 'tls.crt'), 'key.pem': secretText(fixed, 'tls.key') });
    const fromCert = await openssl(['x509', '-noout', '-pubkey', '-in', pair['crt.pem']!]);
    const fromKey = await openssl(['pkey', '-pubout', '-in', pair['key.pem']!]);
    expect(fromKey.trim()).toBe(fromCert.trim());
  });

  it('marks a spec it cannot act on Ready=False with a message that says what to change', async () => {
    // Valid for the schema, but 15201 is where the injected sidecar serves health and metrics by default.
    await createEndpoint(namespace, 'clash', { upstreamPort: 8080, listeners: [{ mode: 'strict', port: 15201 }] });
    const ep = await waitFor('Ready=False', async () => {
      const e = await getEndpoint(namespace, 'clash');
      return condition(e, 'Ready')?.status === 'False' ? e : undefined;
    });
    expect(condition(ep, 'Ready')).toMatchObject({
      reason: 'InvalidSpec',
      message:
        "spec.listeners[0].port: 15201 is the sidecar's admin port (health and metrics; the operator's --sidecar-admin-port, chart value sidecar.adminPort); choose another port",
    });
    expect(await readSecret(namespace, 'clash-ca')).toBeUndefined();
  });

  it('garbage-collects the Secrets and Services when the endpoint is deleted', async () => {
    await createEndpoint(namespace, 'doomed', { upstreamPort: 8080, clients: [{ name: 'x' }] });
    await waitReady(namespace, 'doomed');
    await kubectlDelete(namespace, 'doomed');
    await waitFor('owned objects to be garbage-collected', async () => {
      const [secrets, services] = await Promise.all([
        core().listNamespacedSecret({ namespace, labelSelector: 'mtls.operator.dev/endpoint=doomed' }),
        core().listNamespacedService({ namespace, labelSelector: 'mtls.operator.dev/endpoint=doomed' }),
      ]);
      return secrets.items.length === 0 && services.items.length === 0;
    });
  });
});

import { kubectl } from '../support/cluster.ts';
async function kubectlPatch(namespace: string, name: string, patch: unknown) {
  await kubectl(['patch', '-n', namespace, 'mtlsendpoint', name, '--type=merge', '-p', JSON.stringify(patch)]);
}
async function kubectlDelete(namespace: string, name: string) {
  await kubectl(['delete', '-n', namespace, 'mtlsendpoint', name, '--wait=false']);
}
