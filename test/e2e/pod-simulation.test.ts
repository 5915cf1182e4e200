import * as k8s from '@kubernetes/client-node';
import { execFile, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import type { Server } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { promisify } from 'node:util';
import { SIDECAR_ADMIN_PORT, sidecarContainerOf } from '../../operator/api/injection.ts';
import { runInjectedPod, type SimulatedPod } from '../../local/podsim/pod-runner.ts';
import { startOperator } from '../support/operator.ts';
import {
  createTestNamespace,
  deleteTestNamespace,
  kubeConfig,
  kubeconfigPath,
  kubectl,
  waitFor,
} from '../support/cluster.ts';
import { core, createEndpoint, installCrd, readSecret, secretText, waitReady } from '../support/endpoints.ts';
import { pemFiles } from '../support/openssl.ts';
import { makePki, startMockUpstream } from '../support/tls-fixtures.ts';

const run = promisify(execFile);
const PORTS = { standard: 18443, flexible: 19443, strict: 20443 } as const;
const UPSTREAM = 18080;

describe('end to end: the injected pod spec, run as kubelet would, against real clients', () => {
  let namespace: string;
  let operator: Awaited<ReturnType<typeof startOperator>> | undefined;
  let upstream: { server: Server };
  let pod: SimulatedPod | undefined;

  beforeAll(async () => {
    await installCrd();
    namespace = await createTestNamespace('e2e', { 'mtls.operator.dev/injection': 'enabled' });
    operator = await startOperator(namespace, { resyncMs: 5_000 });
    upstream = await startMockUpstream(UPSTREAM);
  });
  afterAll(async () => {
    await pod?.stop();
    await operator?.stop();
    upstream?.server.close();
    await deleteTestNamespace(namespace);
  });

  it('serves the mode table from the injected spec and survives a server certificate rotation without a failed request', async () => {
    await createEndpoint(namespace, 'payments', {
      podSelector: { matchLabels: { app: 'payments-mock' } },
      upstreamPort: UPSTREAM,
      listeners: Object.entries(PORTS).map(([mode, port]) => ({ mode, port })),
      clients: [{ name: 'billing' }],
    });
    await waitReady(namespace, 'payments');
    await kubeConfig()
      .makeApiClient(k8s.AppsV1Api)
      .createNamespacedDeployment({
        namespace,
        body: {
          metadata: { name: 'payments-mock' },
          spec: {
            replicas: 1,
            selector: { matchLabels: { app: 'payments-mock' } },
            template: {
              metadata: { labels: { app: 'payments-mock' } },
              spec: {
                containers: [{ name: 'mock', image: 'registry.invalid/mock:1', ports: [{ containerPort: UPSTREAM }] }],
              },
            },
          },
        },
      });
    const injected = await waitFor('the injected pod', async () =>
      (await core().listNamespacedPod({ namespace, labelSelector: 'app=payments-mock' })).items.find(
        (p) => sidecarContainerOf(p) !== undefined,
      ),
    );
    pod = await runInjectedPod(kubeConfig(), injected, mkdtempSync(join(tmpdir(), 'mtls-pod-')), { syncEveryMs: 500 });
    // Exactly the injected args, but for the Secret mount path.
    expect(pod.args.filter((a, i) => a !== pod!.injectedArgs[i])).toEqual([pod.volumes['mtls-server-tls']]);
    await waitFor(
      'the sidecar to be ready',
      async () => (await fetch(`http://127.0.0.1:${SIDECAR_ADMIN_PORT}/readyz`)).ok,
      {
        timeoutMs: 20_000,
      },
    );

    const client = await readSecret(namespace, 'payments-client-billing');
    const stranger = await makePki();
    const files = pemFiles({
      'ca.crt': secretText(client, 'ca.crt'),
      'tls.crt': secretText(client, 'tls.crt'),
      'tls.key': secretText(client, 'tls.key'),
      'x.crt': stranger.client.certPem,
      'x.key': stranger.client.keyPem,
    });
    const curl = async (mode: keyof typeof PORTS, cert?: 'issued' | 'unknown') => {
      const host = `payments-${mode}.${namespace}.svc`;
      const certArgs =
        cert === 'issued'
          ? ['--cert', files['tls.crt']!, '--key', files['tls.key']!]
          : cert === 'unknown'
            ? ['--cert', files['x.crt']!, '--key', files['x.key']!]
            : [];
      try {
        const { stdout } = await run('curl', [
          '-sS',
          '--max-time',
          '10',
          '-w',
          '\n%{http_code}',
          '--cacert',
          files['ca.crt']!,
          ...certArgs,
          '--resolve',
          `${host}:${PORTS[mode]}:127.0.0.1`,
          `https://${host}:${PORTS[mode]}/orders`,
        ]);
        const status = stdout.slice(stdout.lastIndexOf('\n') + 1);
        const body = stdout.slice(0, stdout.lastIndexOf('\n'));
        if (status !== '200') return `${status} ${body.slice(0, body.indexOf(':'))}`;
        return JSON.parse(body).headers['x-client-verify'] as string;
      } catch (err) {
        return `no answer: ${(err as Error).message.split('\n')[0]}`;
      }
    };
    const table: Record<string, string> = {};
    for (const mode of Object.keys(PORTS) as (keyof typeof PORTS)[]) {
      for (const cert of [undefined, 'issued', 'unknown'] as const)
        table[`${mode}/${cert ?? 'none'}`] = await curl(mode, cert);
    }
    expect(table).toEqual({
      'standard/none': 'NONE',
      'standard/issued': 'NONE',
      'standard/unknown': 'NONE',
      'flexible/none': 'NONE',
      'flexible/issued': 'SUCCESS',
      'flexible/unknown': '400 The SSL certificate error (unknown_ca)',
      'strict/none': '400 No required SSL certificate was sent (no_certificate)',
      'strict/issued': 'SUCCESS',
      'strict/unknown': '400 The SSL certificate error (unknown_ca)',
    });

    // Rotation through the controller: a spec change re-issues the server certificate.
    const before = new X509Certificate(secretText(await readSecret(namespace, 'payments-server'), 'tls.crt'))
      .serialNumber;
    const served = () =>
      new Promise<string>((resolve, reject) => {
        const socket = tlsConnect(
          {
            host: '127.0.0.1',
            port: PORTS.strict,
            ca: secretText(client, 'ca.crt'),
            cert: secretText(client, 'tls.crt'),
            key: secretText(client, 'tls.key'),
            servername: `payments-strict.${namespace}.svc`,
          },
          () => {
            resolve(socket.getPeerCertificate().serialNumber);
            socket.destroy();
          },
        );
        socket.on('error', reject);
      });
    expect(await served()).toBe(before);
    const results = { sent: 0, failed: 0 };
    let rotating = true;
    const traffic = (async () => {
      const deadline = Date.now() + 60_000;
      while (rotating && Date.now() < deadline && results.sent < 5_000) {
        results.sent++;
        const status = await new Promise<number>((resolve) => {
          const req = httpsRequest(
            {
              host: '127.0.0.1',
              port: PORTS.strict,
              path: '/during-rotation',
              ca: secretText(client, 'ca.crt'),
              cert: secretText(client, 'tls.crt'),
              key: secretText(client, 'tls.key'),
              servername: `payments-strict.${namespace}.svc`,
              agent: false,
            },
            (res) => {
              res.resume();
              res.on('end', () => resolve(res.statusCode ?? 0));
            },
          );
          req.on('error', () => resolve(0));
          req.end();
        });
        if (status !== 200) results.failed++;
      }
    })();
    await kubectl([
      'patch',
      '-n',
      namespace,
      'mtlsendpoint',
      'payments',
      '--type=merge',
      '-p',
      '{"spec":{"dnsNames":["payments.example.test"]}}',
    ]);
    const after = await waitFor(
      'the sidecar to serve the re-issued certificate',
      async () => {
        const serial = await served();
        return serial !== before ? serial : undefined;
      },
      { timeoutMs: 30_000 },
    );
    rotating = false;
    await traffic;
    expect(after).toBe(
      new X509Certificate(secretText(await readSecret(namespace, 'payments-server'), 'tls.crt')).serialNumber,
    );
    expect(results.sent).toBeGreaterThan(10);
    expect(results.failed).toBe(0);
    process.stderr.write(`[e2e] requests during rotation: ${results.sent} sent, ${results.failed} failed\n`);
  });

  it('mtls-operator credentials writes the client files and prints a curl line that works', async () => {
    const out = mkdtempSync(join(tmpdir(), 'mtls-creds-'));
    const { stdout } = await run(process.execPath, [
      new URL('../../operator/cli.ts', import.meta.url).pathname,
      'credentials',
      'payments',
      'billing',
      '-n',
      namespace,
      '--out',
      out,
      '--kubeconfig',
      kubeconfigPath(),
    ]);
    const secret = await readSecret(namespace, 'payments-client-billing');
    expect(readFileSync(join(out, 'tls.crt'), 'utf8')).toBe(secretText(secret, 'tls.crt'));
    expect(statSync(join(out, 'tls.key')).mode & 0o777).toBe(0o600);
    const line = stdout.split('\n').find((l) => l.trim().startsWith('curl') && l.includes('--resolve'))!;
    // The printed line targets a port-forward on 8443; aim it at the simulated pod's strict listener instead.
    const args = line
      .trim()
      .split(/\s+/)
      .slice(1)
      .map((a) => a.replace(':8443', `:${PORTS.strict}`));
    const { stdout: body } = await run('curl', ['-sS', '--max-time', '10', ...args]);
    expect(JSON.parse(body).headers['x-client-verify']).toBe('SUCCESS');
    // The README's Java recipe: a PKCS#12 keystore and a truststore from the same files.
    await run('openssl', [
      'pkcs12',
      '-export',
      '-in',
      join(out, 'tls.crt'),
      '-inkey',
      join(out, 'tls.key'),
      '-name',
      'billing',
      '-out',
      join(out, 'client.p12'),
      '-passout',
      'pass:changeit',
    ]);
    const p12 = await run('openssl', [
      'pkcs12',
      '-in',
      join(out, 'client.p12'),
      '-passin',
      'pass:changeit',
      '-nokeys',
      '-clcerts',
    ]);
    expect(p12.stdout).toContain('subject=CN = billing');
    await run('keytool', [
      '-importcert',
      '-noprompt',
      '-alias',
      'mtls-ca',
      '-file',
      join(out, 'ca.crt'),
      '-keystore',
      join(out, 'truststore.p12'),
      '-storetype',
      'PKCS12',
      '-storepass',
      'changeit',
    ]);
    expect(
      (await run('keytool', ['-list', '-keystore', join(out, 'truststore.p12'), '-storepass', 'changeit'])).stdout,
    ).toContain('mtls-ca');
    await expect(
      run(process.execPath, [
        new URL('../../operator/cli.ts', import.meta.url).pathname,
        'credentials',
        'payments',
        'nobody',
        '-n',
        namespace,
        '--kubeconfig',
        kubeconfigPath(),
      ]),
    ).rejects.toThrow(/Secret .*payments-client-nobody not found: is "nobody" listed in spec.clients/);
  });
});

// In this file, not its own: it uses the same fixed sidecar admin port (SIDECAR_ADMIN_PORT, 15201) as the test above.
describe("mtls-operator dev (the README's first command)", () => {
  it('brings up the whole product and prints the mode table obtained with real requests', async () => {
    const child = spawn(
      process.execPath,
      [
        new URL('../../operator/cli.ts', import.meta.url).pathname,
        'dev',
        '--simulate',
        '--once',
        '--namespace',
        'readme',
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise((resolve) => child.on('exit', resolve));
    expect({ code, stderr: code === 0 ? '' : stderr }).toEqual({ code: 0, stderr: '' });
    expect(stdout).toMatch(/standard :8443\s+accepted\s+accepted\s+accepted/);
    expect(stdout).toMatch(/flexible :9443\s+accepted\s+accepted \(mTLS\)\s+refused \(400\)/);
    expect(stdout).toMatch(/strict :10443\s+refused \(400\)\s+accepted \(mTLS\)\s+refused \(400\)/);
    expect(stdout).toContain('export KUBECONFIG=');
    expect(stdout).toMatch(
      /curl --cert \S+tls\.crt --key \S+tls\.key --cacert \S+ca\.crt --resolve payments-strict\.readme\.svc:10443:127\.0\.0\.1/,
    );
  }, 180_000);
});
