import { EndpointController } from '../../operator/controller/manager.ts';
import { OperatorMetrics } from '../../operator/metrics.ts';
import { parseCertificates } from '../../operator/pki/x509.ts';
import { createTestNamespace, deleteTestNamespace, kubeConfig, waitFor } from '../support/cluster.ts';
import {
  condition,
  createEndpoint,
  getEndpoint,
  installCrd,
  readSecret,
  secretText,
  waitReady,
} from '../support/endpoints.ts';
import { openssl, pemFiles } from '../support/openssl.ts';

const serialOf = (pem: string) => parseCertificates(pem)[0]!.serialNumber.toLowerCase();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function issuedCount(metrics: OperatorMetrics, certificate: string): Promise<number> {
  const metric = await metrics.issued.get();
  return metric.values.find((v) => v.labels.certificate === certificate)?.value ?? 0;
}

describe('controller: rotation and CA rollover with short lifetimes', () => {
  let namespace: string;
  let controller: EndpointController;
  let metrics: OperatorMetrics;

  beforeAll(async () => {
    await installCrd();
    namespace = await createTestNamespace('ctrl-rotate');
    metrics = new OperatorMetrics();
    controller = new EndpointController({
      kubeConfig: kubeConfig(),
      metrics,
      namespace,
      resyncMs: 60_000, // rotation must come from the scheduled requeue, not from a resync
      caPropagationDelayMs: 2_000,
    });
    await controller.start();
  });
  afterAll(async () => {
    await controller?.stop();
    await deleteTestNamespace(namespace);
  });

  it('re-issues a leaf at its renewal time, once per renewal', async () => {
    await createEndpoint(namespace, 'rotate', {
      upstreamPort: 8080,
      clients: [{ name: 'app' }],
      certificates: { validity: '40s', renewBefore: '32s' }, // renewal 8 s after issue
    });
    const ep = await waitReady(namespace, 'rotate');
    const firstSerial = ep.status!.server!.serialNumber;
    const renewalTime = new Date(ep.status!.server!.renewalTime).getTime();
    const issuedBefore = await issuedCount(metrics, 'server');

    const renewed = await waitFor(
      'the server certificate to be renewed',
      async () => {
        const secret = await readSecret(namespace, 'rotate-server');
        const serial = serialOf(secretText(secret, 'tls.crt'));
        return serial !== firstSerial ? { serial, at: Date.now() } : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    );
    // Scheduled precisely: not before the renewal time, and soon after it.
    expect(renewed.at).toBeGreaterThanOrEqual(renewalTime);
    expect(await issuedCount(metrics, 'server')).toBe(issuedBefore + 1);
    await sleep(3_000);
    expect(await issuedCount(metrics, 'server')).toBe(issuedBefore + 1);
    const after = await getEndpoint(namespace, 'rotate');
    expect(after.status?.server?.serialNumber).toBe(renewed.serial);
  });

  it('rolls the CA over: new CA trusted first, leaves moved, old CA retired, no client cut off', async () => {
    await createEndpoint(namespace, 'rollover', {
      upstreamPort: 8080,
      clients: [{ name: 'app' }],
      certificates: { validity: '12s', renewBefore: '4s', caValidity: '30s' },
    });
    await waitReady(namespace, 'rollover');
    const originalCa = secretText(await readSecret(namespace, 'rollover-ca'), 'ca.crt');
    const originalClient = secretText(await readSecret(namespace, 'rollover-client-app'), 'tls.crt');
    const seen = { bundleOfTwo: false, rolloverCondition: false, clientStillTrusted: true, leafOnNewCa: false };
    let newCa = '';

    await waitFor(
      'the rollover to complete',
      async () => {
        const [ca, server, ep] = await Promise.all([
          readSecret(namespace, 'rollover-ca'),
          readSecret(namespace, 'rollover-server'),
          getEndpoint(namespace, 'rollover'),
        ]);
        const bundle = secretText(server, 'ca.crt');
        const bundleCerts = parseCertificates(bundle);
        if (bundleCerts.length === 2) seen.bundleOfTwo = true;
        if (condition(ep, 'CARollover')?.status === 'True') seen.rolloverCondition = true;
        const currentCa = secretText(ca, 'ca.crt');
        if (currentCa !== originalCa) {
          newCa = currentCa;
          const files = pemFiles({ 'new.pem': currentCa, 'server.pem': secretText(server, 'tls.crt') });
          if (
            (await openssl(['verify', '-CAfile', files['new.pem']!, files['server.pem']!]).catch(() => '')).includes(
              'OK',
            )
          ) {
            seen.leafOnNewCa = true;
          }
        }
        // A client holding its original certificate keeps working as long as the old CA is in the bundle.
        const originalStillValid = parseCertificates(originalClient)[0]!.notAfter > new Date();
        if (originalStillValid && bundle.includes(originalCa.trim()) === false && !seen.leafOnNewCa) {
          seen.clientStillTrusted = false;
        }
        return seen.leafOnNewCa && bundleCerts.length === 1 && condition(ep, 'CARollover')?.status === 'False'
          ? true
          : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 150 },
    );
    expect(seen).toEqual({ bundleOfTwo: true, rolloverCondition: true, clientStillTrusted: true, leafOnNewCa: true });
    const finalBundle = secretText(await readSecret(namespace, 'rollover-server'), 'ca.crt');
    expect(finalBundle.trim()).toBe(newCa.trim());
    const files = pemFiles({
      'bundle.pem': secretText(await readSecret(namespace, 'rollover-client-app'), 'ca.crt'),
      'client.pem': secretText(await readSecret(namespace, 'rollover-client-app'), 'tls.crt'),
    });
    await expect(openssl(['verify', '-CAfile', files['bundle.pem']!, files['client.pem']!])).resolves.toMatch(/OK/);
  });
});
