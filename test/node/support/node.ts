import { execFile } from 'node:child_process';
import { appendFileSync, readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import type { PemPair } from '../../../operator/pki/issue.ts';
import { echoMockDeployment } from '../../../local/podsim/mock-upstream.ts';
import { ENDPOINT_RESOURCE, INJECTION_NAMESPACE_LABEL, type MtlsEndpointSpec } from '../../../operator/api/types.ts';
import { kubectl } from '../../support/cluster.ts';

/** What the real-node global setup hands the tests (through MTLS_TEST_CONTROL_PLANE_STATE, like the other tier). */
export interface NodeTestState {
  kubeconfig: string;
  kubectl: string;
  helm: string;
  dir: string;
  image: string;
  timings: Record<string, number>;
}

export const REPO_ROOT = new URL('../../..', import.meta.url).pathname;
export const CHART = join(REPO_ROOT, 'charts/mtls-operator');

export function nodeState(): NodeTestState {
  const file = process.env.MTLS_TEST_CONTROL_PLANE_STATE;
  if (!file)
    throw new Error('MTLS_TEST_CONTROL_PLANE_STATE is not set: run the tests through jest (npm run test:node)');
  return JSON.parse(readFileSync(file, 'utf8')) as NodeTestState;
}

const run = promisify(execFile);

/** kubectl's JSON output, read field by field. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

export const kubectlJson = async <T = Record<string, Json>>(args: string[]): Promise<T> =>
  JSON.parse(await kubectl([...args, '-o', 'json'])) as T;

/**
 * Every key of a Secret, decoded, from one read. Reading keys one by one can mix two rotations (the key of one,
 * the certificate of the next); a mounted Secret volume never does.
 */
export async function secretData(name: string, namespace: string): Promise<Record<string, string>> {
  const secret = await kubectlJson<{ data: Record<string, string> }>(['get', 'secret', name, '-n', namespace]);
  return Object.fromEntries(
    Object.entries(secret.data).map(([key, value]) => [key, Buffer.from(value, 'base64').toString()]),
  );
}

/** What a client holds from its credentials Secret: its certificate and key, and the CA bundle it trusts. */
export async function clientView(secret: string, namespace: string): Promise<{ creds: PemPair; trust: string }> {
  const data = await secretData(secret, namespace);
  const key = (name: string): string => {
    const value = data[name];
    if (value === undefined) throw new Error(`Secret ${namespace}/${secret} has no ${name}`);
    return value;
  };
  return { creds: { certPem: key('tls.crt'), keyPem: key('tls.key') }, trust: key('ca.crt') };
}

/** Helm against the node, as a person would run it. */
/** A namespace whose pods the webhook injects (the label the README tells users to set). */
export async function createInjectedNamespace(namespace: string): Promise<void> {
  await kubectl(['create', 'namespace', namespace]);
  await kubectl(['label', 'namespace', namespace, `${INJECTION_NAMESPACE_LABEL}=enabled`]);
}

/** Applies an MtlsEndpoint with kubectl, as a user would. */
export async function applyEndpoint(namespace: string, name: string, spec: MtlsEndpointSpec): Promise<void> {
  const { group, version } = ENDPOINT_RESOURCE;
  const endpoint = { apiVersion: `${group}/${version}`, kind: 'MtlsEndpoint', metadata: { name, namespace }, spec };
  await kubectl(['apply', '-f', '-'], JSON.stringify(endpoint));
}

/**
 * Applies a mock Deployment from the product image (the echo mock, or `command` instead) labelled app=NAME, the
 * label an endpoint's podSelector names; `adjust` edits it first (e.g. its grace period).
 */
export async function applyMock(options: {
  name: string;
  namespace: string;
  port: number;
  command?: string[];
  adjust?: (deployment: ReturnType<typeof echoMockDeployment>) => void;
}): Promise<void> {
  const { name, namespace, port, command, adjust } = options;
  const deployment = echoMockDeployment({
    name,
    namespace,
    labels: { app: name },
    image: nodeState().image,
    port,
    command,
  });
  adjust?.(deployment);
  await kubectl(['apply', '-f', '-'], JSON.stringify(deployment));
}

export async function helm(args: string[]): Promise<string> {
  const state = nodeState();
  try {
    return (await run(state.helm, ['--kubeconfig', state.kubeconfig, ...args], { timeout: 300_000 })).stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`helm ${args.join(' ')}: ${e.stderr?.trim() || e.message}`);
  }
}

/** `helm install mtls-operator charts/mtls-operator -n mtls-system --create-namespace`, waiting for Ready. */
export function helmInstall(extra: string[] = []): Promise<string> {
  return helm([
    'install',
    'mtls-operator',
    CHART,
    '-n',
    'mtls-system',
    '--create-namespace',
    '--wait',
    '--timeout',
    '180s',
    ...extra,
  ]);
}

/** A summary line for the end of the run ("real-node: ..."), beside the reliability suite's. */
export function reportNodeFigures(line: string): void {
  const text = `real-node: ${line}`;
  process.stdout.write(`${text}\n`);
  const stateFile = process.env.MTLS_TEST_CONTROL_PLANE_STATE;
  if (stateFile) appendFileSync(join(dirname(stateFile), 'reliability-summary.txt'), `${text}\n`);
}

export interface Reply {
  status?: number;
  body?: string;
  /** What a refused request ended with: a TLS alert, a reset, a timeout. */
  error?: string;
}

/** One HTTPS request over a fresh connection to an address on the node's network, with the Service's name for SNI. */
export function httpsTo(
  address: string,
  servername: string,
  ca: string,
  client?: Pick<PemPair, 'certPem' | 'keyPem'>,
  path = '/',
): Promise<Reply> {
  return new Promise((resolve) => {
    const req = httpsRequest(
      {
        host: address,
        port: 443,
        path,
        servername,
        ca,
        cert: client?.certPem,
        key: client?.keyPem,
        agent: false,
        timeout: 5_000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode, body }));
        res.on('error', (err) => resolve({ error: err.message }));
      },
    );
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}

export interface LoadResult {
  sent: number;
  failed: number;
  failures: string[];
}

/**
 * Steady traffic while something happens: a new TLS connection per request (so each one meets the certificates
 * being served at that moment), `ratePerSecond` at most, until `stop()` is called or `maxMs` passes.
 */
export function steadyLoad(send: () => Promise<Reply>, ratePerSecond = 10, maxMs = 600_000) {
  const result: LoadResult = { sent: 0, failed: 0, failures: [] };
  let stopped = false;
  const started = Date.now();
  const done = (async () => {
    while (!stopped && Date.now() - started < maxMs) {
      const tick = Date.now();
      const reply = await send();
      result.sent++;
      if (reply.status !== 200) {
        result.failed++;
        if (result.failures.length < 10)
          result.failures.push(`${new Date().toISOString()} ${reply.status ?? reply.error}`);
      }
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, 1000 / ratePerSecond - (Date.now() - tick))));
    }
    return result;
  })();
  return {
    result,
    stop: async () => {
      stopped = true;
      return done;
    },
  };
}

/**
 * Runs `script` with node in a one-off pod on the pod network (the product image, as the sidecar's user, with a
 * client Secret at /creds and a CA-bundle ConfigMap at /trust when given) and returns what it printed, once the
 * pod has succeeded.
 */
export async function runScriptPod(options: {
  name: string;
  namespace: string;
  script: string;
  env?: Record<string, string>;
  credentialsSecret?: string;
  /** A ConfigMap mounted at /trust (a CA bundle). */
  trustConfigMap?: string;
  labels?: Record<string, string>;
}): Promise<string> {
  const { name, namespace, script, env = {}, credentialsSecret } = options;
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels: options.labels ?? { app: name } },
    spec: {
      restartPolicy: 'Never',
      containers: [
        {
          name: 'client',
          image: nodeState().image,
          imagePullPolicy: 'IfNotPresent',
          command: ['node', '-e', script],
          env: Object.entries(env).map(([key, value]) => ({ name: key, value })),
          volumeMounts: [
            ...(credentialsSecret ? [{ name: 'creds', mountPath: '/creds', readOnly: true }] : []),
            ...(options.trustConfigMap ? [{ name: 'trust', mountPath: '/trust', readOnly: true }] : []),
          ],
        },
      ],
      securityContext: { runAsUser: 65532, runAsGroup: 0, fsGroup: 0 },
      volumes: [
        ...(credentialsSecret ? [{ name: 'creds', secret: { secretName: credentialsSecret } }] : []),
        ...(options.trustConfigMap ? [{ name: 'trust', configMap: { name: options.trustConfigMap } }] : []),
      ],
    },
  };
  await kubectl(['apply', '-f', '-'], JSON.stringify(pod));
  const deadline = Date.now() + 120_000;
  for (;;) {
    const phase = (await kubectlJson(['get', 'pod', name, '-n', namespace])).status?.phase as string | undefined;
    if (phase === 'Succeeded') break;
    if (phase === 'Failed' || Date.now() > deadline) {
      const logs = await kubectl(['logs', name, '-n', namespace]).catch((err: Error) => err.message);
      throw new Error(`pod ${namespace}/${name} ${phase === 'Failed' ? 'failed' : 'did not finish in 120 s'}: ${logs}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return (await kubectl(['logs', name, '-n', namespace])).trim();
}
