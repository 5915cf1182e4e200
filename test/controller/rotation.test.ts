import { ROLLOVER_PHASE_ANNOTATION, ROLLOVER_SINCE_ANNOTATION } from '../../operator/controller/ca-state.ts';
import { EndpointController } from '../../operator/controller/manager.ts';
import { OperatorMetrics } from '../../operator/metrics.ts';
import { parseCertificates } from '../../operator/pki/inspect.ts';
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

const PROPAGATION_MS = 2_000;
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
      caPropagationDelayMs: PROPAGATION_MS,
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
    const originalCaSubject = parseCertificates(originalCa)[0]!.subject;
    const originalClient = secretText(await readSecret(namespace, 'rollover-client-app'), 'tls.crt');
    const seen = { bundleOfTwo: false, rolloverCondition: false, leafOnNewCa: false };
    let newCa = '';
    // When the old CA may leave the bundle that listeners verify clients against: not before the new CA has
    // signed for caPropagationDelayMs (phase Retiring since + delay), nor before the last client certificate
    // the old CA signed has expired (a replaced, unrevoked one is still presented by a client that has not
    // re-read its Secret). Both are tracked as they are seen; so is the first poll that no longer found the
    // old CA.
    let retiringSince: number | undefined;
    let lastOldClientNotAfter = 0;
    let oldCaGoneAt: number | undefined;
    let oldCaGoneTooEarly: string | undefined;

    await waitFor(
      'the rollover to complete',
      async () => {
        const [ca, server, client, ep] = await Promise.all([
          readSecret(namespace, 'rollover-ca'),
          readSecret(namespace, 'rollover-server'),
          readSecret(namespace, 'rollover-client-app'),
          getEndpoint(namespace, 'rollover'),
        ]);
        // Every read above answered before this instant: a bundle without the old CA was served no later.
        const readBy = Date.now();
        const bundle = secretText(server, 'ca.crt');
        const bundleCerts = parseCertificates(bundle);
        if (bundleCerts.length === 2) seen.bundleOfTwo = true;
        if (condition(ep, 'CARollover')?.status === 'True') seen.rolloverCondition = true;
        const annotations = ca?.metadata?.annotations ?? {};
        if (annotations[ROLLOVER_PHASE_ANNOTATION] === 'Retiring' && retiringSince === undefined) {
          retiringSince = Date.parse(annotations[ROLLOVER_SINCE_ANNOTATION]!);
        }
        const clientCert = parseCertificates(secretText(client, 'tls.crt'))[0]!;
        if (clientCert.issuer === originalCaSubject) {
          lastOldClientNotAfter = Math.max(lastOldClientNotAfter, clientCert.notAfter.getTime());
        }
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
        if (!bundle.includes(originalCa.trim()) && oldCaGoneAt === undefined) {
          oldCaGoneAt = readBy;
          const due = Math.max(lastOldClientNotAfter, (retiringSince ?? Infinity) + PROPAGATION_MS);
          if (readBy < due) {
            oldCaGoneTooEarly =
              `the old CA left the server's bundle by ${new Date(readBy).toISOString()}, before ` +
              `${retiringSince === undefined ? 'the new CA signed anything' : new Date(due).toISOString()} ` +
              `(Retiring since ${retiringSince === undefined ? '-' : new Date(retiringSince).toISOString()}, ` +
              `last old-CA client certificate valid until ${new Date(lastOldClientNotAfter).toISOString()})`;
          }
        }
        return seen.leafOnNewCa && bundleCerts.length === 1 && condition(ep, 'CARollover')?.status === 'False'
          ? true
          : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 150 },
    );
    // The original client certificate was seen, so the deadline is a real one; the old CA did leave, and not early.
    expect(lastOldClientNotAfter).toBeGreaterThanOrEqual(parseCertificates(originalClient)[0]!.notAfter.getTime());
    expect(retiringSince).toBeDefined();
    expect(oldCaGoneAt).toBeDefined();
    expect(oldCaGoneTooEarly).toBeUndefined();
    expect(seen).toEqual({ bundleOfTwo: true, rolloverCondition: true, leafOnNewCa: true });
    const finalBundle = secretText(await readSecret(namespace, 'rollover-server'), 'ca.crt');
    expect(finalBundle.trim()).toBe(newCa.trim());
    const files = pemFiles({
      'bundle.pem': secretText(await readSecret(namespace, 'rollover-client-app'), 'ca.crt'),
      'client.pem': secretText(await readSecret(namespace, 'rollover-client-app'), 'tls.crt'),
    });
    await expect(openssl(['verify', '-CAfile', files['bundle.pem']!, files['client.pem']!])).resolves.toMatch(/OK/);
  });
});
