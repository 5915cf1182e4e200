import type * as k8s from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { EndpointController } from '../../operator/controller/manager.ts';
import { parseSidecarArgs } from '../../sidecar/flags.ts';
import { writeSecretVolume } from '../../sidecar/secret-volume.ts';
import { type RunningSidecar, startSidecar } from '../../sidecar/sidecar.ts';
import { createTestNamespace, deleteTestNamespace, kubectl, waitFor } from '../support/cluster.ts';
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
import { startController } from '../support/operator.ts';
import { startMockUpstream } from '../support/tls-fixtures.ts';

// spec.clients[].keystores.pkcs12 end to end: the controller writes keystore.p12 and truststore.p12 into the
// client Secret; keytool and openssl read them; a real Java HTTPS client, configured with nothing but the
// standard javax.net.ssl properties, reaches a strict sidecar listener with them, before and after the
// client certificate is renewed; and a missing password Secret is reported, then picked up.

const run = promisify(execFile);
const PROPAGATION_MS = 2_000;
const PASSWORD = 'keystore-pass-7';
const JAVA_CLIENT = new URL('../support/java/KeystoreClient.java', import.meta.url).pathname;

const serialOf = (pem: string) => new X509Certificate(pem).serialNumber.toLowerCase();
const sha256Der = (pem: string) => createHash('sha256').update(new X509Certificate(pem).raw).digest('hex');

describe('controller: PKCS#12 keystores for Java clients, rotated with the client certificate', () => {
  let namespace: string;
  let controller: EndpointController;
  let upstream: Awaited<ReturnType<typeof startMockUpstream>>;
  let sidecar: RunningSidecar | undefined;
  const scratch = mkdtempSync(join(tmpdir(), 'mtls-keystores-'));
  const classes = join(scratch, 'classes');

  /** Writes a Secret's keystore files into the scratch folder, under a name of the test's choosing. */
  const storeFiles = (secret: k8s.V1Secret | undefined, tag: string) => {
    const files = {
      keystore: join(scratch, `${tag}-keystore.p12`),
      truststore: join(scratch, `${tag}-truststore.p12`),
    };
    writeFileSync(files.keystore, Buffer.from(secret!.data!['keystore.p12']!, 'base64'));
    writeFileSync(files.truststore, Buffer.from(secret!.data!['truststore.p12']!, 'base64'));
    return files;
  };

  const keytool = async (file: string, password = PASSWORD) => {
    const args = ['-list', '-v', '-storetype', 'PKCS12', '-keystore', file, '-storepass', password];
    try {
      return (await run('keytool', args, { timeout: 60_000 })).stdout;
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string };
      return `FAILED ${e.stdout ?? ''}${e.stderr ?? ''}`;
    }
  };

  /** The Java client against the strict listener, with the stores given (no keystore: no client certificate). */
  const java = async (port: number, stores: { keystore?: string; truststore: string }) => {
    const props = [
      `-Djavax.net.ssl.trustStore=${stores.truststore}`,
      '-Djavax.net.ssl.trustStoreType=PKCS12',
      `-Djavax.net.ssl.trustStorePassword=${PASSWORD}`,
      ...(stores.keystore
        ? [
            `-Djavax.net.ssl.keyStore=${stores.keystore}`,
            '-Djavax.net.ssl.keyStoreType=PKCS12',
            `-Djavax.net.ssl.keyStorePassword=${PASSWORD}`,
          ]
        : []),
    ];
    const args = ['-cp', classes, ...props, 'KeystoreClient', `https://localhost:${port}/from-java`];
    try {
      const { stdout } = await run('java', args, { timeout: 60_000 });
      const [status, ...body] = stdout.split('\n');
      return { status: Number(status), body: body.join('\n') };
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string };
      return { status: 0, body: `${e.stdout ?? ''}${e.stderr ?? ''}` };
    }
  };

  const clientCertHash = (body: string) =>
    /Hash=([0-9a-f]{64})/.exec(
      (JSON.parse(body) as { headers: Record<string, string> }).headers['x-forwarded-client-cert'] ?? '',
    )?.[1];

  /**
   * From the first issue until the renewal, every read of billing's Secret: each pass of the controller (a
   * resync every 2 s) must leave the stores as they are, since nothing they hold has changed (they are rebuilt
   * from their inputs, not because encrypted bytes differ from a fresh build). Started in beforeAll, so the
   * reads span the whole 30 s however long the other steps take.
   */
  let billingFirst: k8s.V1Secret;
  let billingRenewal: Promise<{ renewed?: k8s.V1Secret; unchangedReads: number; rewrites: string[] }>;
  let stopWatching = false;
  async function watchUntilRenewed(first: k8s.V1Secret) {
    const firstCert = secretText(first, 'tls.crt');
    const rewrites: string[] = [];
    let unchangedReads = 0;
    const deadline = Date.now() + 120_000;
    while (!stopWatching && Date.now() < deadline) {
      const secret = await readSecret(namespace, 'payments-client-billing');
      if (secret && secretText(secret, 'tls.crt') !== firstCert) return { renewed: secret, unchangedReads, rewrites };
      const same =
        secret?.data?.['keystore.p12'] === first.data!['keystore.p12'] &&
        secret?.data?.['truststore.p12'] === first.data!['truststore.p12'] &&
        secret?.metadata?.resourceVersion === first.metadata!.resourceVersion;
      if (!same) rewrites.push(secret?.metadata?.resourceVersion ?? 'deleted');
      unchangedReads++;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    return { unchangedReads, rewrites };
  }

  beforeAll(async () => {
    await installCrd();
    namespace = await createTestNamespace('ctrl-keystores');
    await run('javac', ['-d', classes, JAVA_CLIENT], { timeout: 120_000 });
    upstream = await startMockUpstream();
    controller = await startController(namespace, { caPropagationDelayMs: PROPAGATION_MS });
    await core().createNamespacedSecret({
      namespace,
      body: { metadata: { name: 'java-keystore' }, stringData: { password: PASSWORD } },
    });
    await createEndpoint(namespace, 'payments', {
      upstreamPort: 8080,
      dnsNames: ['localhost'],
      clients: [
        { name: 'billing', keystores: { pkcs12: { create: true, passwordSecretRef: { name: 'java-keystore' } } } },
        {
          name: 'legacy',
          keystores: {
            pkcs12: {
              create: true,
              passwordSecretRef: { name: 'java-keystore', key: 'password' },
              profile: 'LegacyDES',
            },
          },
        },
        { name: 'plain' },
      ],
      // Renewal 30 s after issue: time to look at the first keystore, and for several resyncs that must not
      // rewrite it, before its certificate is renewed.
      certificates: { validity: '90s', renewBefore: '60s' },
    });
    await waitReady(namespace, 'payments');
    billingFirst = (await readSecret(namespace, 'payments-client-billing'))!;
    billingRenewal = watchUntilRenewed(billingFirst);
  });
  afterAll(async () => {
    stopWatching = true;
    await billingRenewal;
    await sidecar?.stop(1_000);
    upstream?.server.close();
    await controller?.stop();
    await deleteTestNamespace(namespace);
    rmSync(scratch, { recursive: true, force: true });
  });

  it('writes keystore.p12 and truststore.p12 that keytool and openssl read with the password', async () => {
    for (const [client, profile] of [
      ['billing', 'Modern2023'],
      ['legacy', 'LegacyDES'],
    ] as const) {
      const secret = await readSecret(namespace, `payments-client-${client}`);
      expect(secret?.type).toBe('kubernetes.io/tls');
      const files = storeFiles(secret, `${client}-check`);
      const leafSerial = serialOf(secretText(secret, 'tls.crt'));
      const caSerial = serialOf(secretText(secret, 'ca.crt'));

      const keystore = await keytool(files.keystore);
      expect(keystore).toMatch(new RegExp(`Alias name: ${client}\\s+Creation date: .*\\s+Entry type: PrivateKeyEntry`));
      expect(keystore).toMatch(/Certificate chain length: 2/);
      expect(keystore).toContain(`Owner: CN=${client}`);
      // keytool prints serials without leading zeros.
      expect(keystore).toContain(`Serial number: ${leafSerial.replace(/^0+/, '')}`);
      const truststore = await keytool(files.truststore);
      expect(truststore).toMatch(/Your keystore contains 1 entry/);
      expect(truststore).toMatch(
        new RegExp(`Alias name: ca-${caSerial}\\s+Creation date: .*\\s+Entry type: trustedCertEntry`),
      );
      expect(await keytool(files.keystore, 'wrong-password')).toMatch(/^FAILED[\s\S]*password was incorrect/);

      for (const file of [files.keystore, files.truststore]) {
        const { stdout, stderr } = await run('openssl', [
          'pkcs12',
          '-info',
          '-nokeys',
          '-in',
          file,
          '-passin',
          `pass:${PASSWORD}`,
        ]);
        expect(stdout + stderr).toMatch(profile === 'Modern2023' ? /MAC: sha256/ : /MAC: sha1/);
        expect(stdout + stderr).toMatch(profile === 'Modern2023' ? /AES-256-CBC/ : /pbeWithSHA1And3-KeyTripleDES-CBC/);
      }
    }
    const plain = await readSecret(namespace, 'payments-client-plain');
    expect(Object.keys(plain?.data ?? {}).sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
  });

  it('lets a Java client through a strict listener with them, before and after the certificate is renewed', async () => {
    const server = await readSecret(namespace, 'payments-server');
    const tlsDir = join(scratch, 'server-tls');
    await writeSecretVolume(
      tlsDir,
      Object.fromEntries(['tls.crt', 'tls.key', 'ca.crt', 'ca.crl'].map((key) => [key, secretText(server, key)])),
    );
    const { config } = parseSidecarArgs([
      '--listen',
      'strict=0',
      '--upstream',
      `127.0.0.1:${upstream.port}`,
      '--tls-dir',
      tlsDir,
      '--admin',
      '127.0.0.1:0',
    ]);
    sidecar = await startSidecar(config!);
    const port = sidecar.ports[0]!;

    const firstCert = secretText(billingFirst, 'tls.crt');
    const firstStores = storeFiles(billingFirst, 'billing-before');
    const accepted = await java(port, firstStores);
    expect(accepted.status).toBe(200);
    expect(clientCertHash(accepted.body)).toBe(sha256Der(firstCert));
    const legacy = await java(port, storeFiles(await readSecret(namespace, 'payments-client-legacy'), 'legacy'));
    expect(legacy.status).toBe(200);
    // The control: the same client without its keystore is refused by the strict listener.
    const refused = await java(port, { truststore: firstStores.truststore });
    expect(refused.status).toBe(400);
    expect(refused.body).toMatch(/No required SSL certificate was sent/);

    const { renewed, unchangedReads, rewrites } = await billingRenewal;
    expect(renewed).toBeDefined();
    expect(rewrites).toEqual([]);
    // The renewal is 30 s after issue, reads every 0.5 s: many resyncs passed without a write.
    expect(unchangedReads).toBeGreaterThan(10);
    const newCert = secretText(renewed, 'tls.crt');
    expect(serialOf(newCert)).not.toBe(serialOf(firstCert));
    const newStores = storeFiles(renewed, 'billing-after');
    expect(await keytool(newStores.keystore)).toContain(`Serial number: ${serialOf(newCert).replace(/^0+/, '')}`);
    const after = await java(port, newStores);
    expect(after.status).toBe(200);
    expect(clientCertHash(after.body)).toBe(sha256Der(newCert));
  });

  it('rebuilds the truststore as CAs join and leave ca.crt during a CA rollover', async () => {
    await createEndpoint(namespace, 'rollover', {
      upstreamPort: 8080,
      clients: [{ name: 'app', keystores: { pkcs12: { create: true, passwordSecretRef: { name: 'java-keystore' } } } }],
      certificates: { validity: '12s', renewBefore: '4s', caValidity: '30s' },
    });
    await waitReady(namespace, 'rollover');
    const fingerprints = (pem: string) =>
      (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [])
        .map((block) => new X509Certificate(block).fingerprint256)
        .sort();
    const storeCerts = async (secret: k8s.V1Secret, key: string, args: string[]) => {
      const file = join(scratch, `rollover-${key}`);
      writeFileSync(file, Buffer.from(secret.data![key]!, 'base64'));
      const { stdout } = await run('openssl', ['pkcs12', '-in', file, '-passin', `pass:${PASSWORD}`, ...args]);
      return fingerprints(stdout);
    };
    const bundleSizes = new Set<number>();
    const outOfStep: string[] = [];
    let checked = 0;
    const firstCa = fingerprints(secretText(await readSecret(namespace, 'rollover-client-app'), 'ca.crt'));
    // Every version of the client Secret seen holds a truststore with exactly the CAs of its ca.crt and a
    // keystore with exactly its tls.crt: no version lags behind the PEM files it sits beside.
    await waitFor(
      'the rollover to complete, with the stores in step at every read',
      async () => {
        const secret = (await readSecret(namespace, 'rollover-client-app'))!;
        const bundle = fingerprints(secretText(secret, 'ca.crt'));
        const leaf = fingerprints(secretText(secret, 'tls.crt'));
        const trusted = await storeCerts(secret, 'truststore.p12', ['-nokeys']);
        const keyEntry = await storeCerts(secret, 'keystore.p12', ['-nokeys', '-clcerts']);
        // Recorded, not thrown: waitFor retries a probe that throws.
        if (JSON.stringify(trusted) !== JSON.stringify(bundle) || JSON.stringify(keyEntry) !== JSON.stringify(leaf))
          outOfStep.push(`resourceVersion ${secret.metadata!.resourceVersion}`);
        checked++;
        bundleSizes.add(bundle.length);
        return bundleSizes.has(2) && bundle.length === 1 && bundle[0] !== firstCa[0] ? true : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 300 },
    );
    expect(outOfStep).toEqual([]);
    expect(checked).toBeGreaterThan(3);
  });

  it('reports a missing password Secret with the fix, writes the keystores once it exists, removes them at create: false', async () => {
    await createEndpoint(namespace, 'nopassword', {
      upstreamPort: 8080,
      clients: [{ name: 'app', keystores: { pkcs12: { create: true, passwordSecretRef: { name: 'app-keystore' } } } }],
    });
    const degraded = await waitFor('the endpoint to report the missing password Secret', async () => {
      const ep = await getEndpoint(namespace, 'nopassword');
      const c = condition(ep, 'Degraded');
      return c?.status === 'True' && c.reason === 'KeystorePasswordMissing' ? c : undefined;
    });
    expect(degraded.message).toContain(
      `Secret ${namespace}/app-keystore (spec.clients[app].keystores.pkcs12.passwordSecretRef) does not exist`,
    );
    expect(degraded.message).toContain(`kubectl -n ${namespace} create secret generic app-keystore`);
    // The certificate itself is issued all the same; only the keystores wait.
    const ep = await getEndpoint(namespace, 'nopassword');
    expect(condition(ep, 'Ready')?.status).toBe('True');
    const secret = await readSecret(namespace, 'nopassword-client-app');
    expect(Object.keys(secret?.data ?? {}).sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
    const events = await waitFor('a Warning Event naming the missing Secret', async () => {
      const list = await core().listNamespacedEvent({ namespace });
      const found = list.items.filter(
        (e) => e.involvedObject.name === 'nopassword' && e.reason === 'KeystorePasswordMissing',
      );
      return found.length ? found : undefined;
    });
    expect(events[0]!.type).toBe('Warning');
    expect(events[0]!.message).toContain('app-keystore');

    await core().createNamespacedSecret({
      namespace,
      body: { metadata: { name: 'app-keystore' }, stringData: { password: PASSWORD } },
    });
    const written = await waitFor('the keystores once the password Secret exists', async () => {
      const s = await readSecret(namespace, 'nopassword-client-app');
      return s?.data?.['keystore.p12'] ? s : undefined;
    });
    expect(await keytool(storeFiles(written, 'app').keystore)).toMatch(/Entry type: PrivateKeyEntry/);
    await waitFor('Degraded to clear', async () => {
      const now = await getEndpoint(namespace, 'nopassword');
      return condition(now, 'Degraded')?.status === 'False' || undefined;
    });

    // create: false takes the files out again, with their digest annotation; the PEM files stay.
    const off = { pkcs12: { create: false, passwordSecretRef: { name: 'app-keystore' } } };
    const patch = JSON.stringify({ spec: { clients: [{ name: 'app', keystores: off }] } });
    await kubectl(['-n', namespace, 'patch', 'mtlsendpoint', 'nopassword', '--type', 'merge', '-p', patch]);
    const removed = await waitFor('the keystores to be removed', async () => {
      const s = await readSecret(namespace, 'nopassword-client-app');
      return s?.data && !s.data['keystore.p12'] ? s : undefined;
    });
    expect(Object.keys(removed.data!).sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
    expect(removed.metadata?.annotations?.['mtls.operator.dev/keystore-inputs']).toBeUndefined();
  });
});
