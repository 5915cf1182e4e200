import * as k8s from '@kubernetes/client-node';
import {
  createTestNamespace,
  deleteTestNamespace,
  kubeConfig,
  kubeconfigPath,
  kubectl,
  waitFor,
} from '../support/cluster.ts';
import { createEndpoint, installCrd, readSecret, waitReady } from '../support/endpoints.ts';
import { type OperatorProcess, spawnOperator, waitHealthy } from '../support/operator.ts';

/** A controller process with leader election, as the chart runs it (two replicas). */
async function startOperator(namespace: string): Promise<OperatorProcess> {
  const op = await spawnOperator(kubeconfigPath(), namespace);
  await waitHealthy(op);
  return op;
}

const metricsOf = async (op: OperatorProcess) => (await fetch(`http://127.0.0.1:${op.metricsPort}/metrics`)).text();
const leaseHolder = async (namespace: string) =>
  (
    await kubeConfig()
      .makeApiClient(k8s.CoordinationV1Api)
      .readNamespacedLease({ name: 'mtls-operator-leader', namespace })
  ).spec?.holderIdentity;

describe('mtls-operator controller: two processes, one leader', () => {
  let namespace: string;
  const operators: OperatorProcess[] = [];
  beforeAll(async () => {
    await installCrd();
    namespace = await createTestNamespace('ctrl-proc');
  });
  afterAll(async () => {
    for (const op of operators) op.child.kill('SIGKILL');
    await deleteTestNamespace(namespace);
  });

  it('only the leader reconciles; after the leader is killed the standby takes over and converges', async () => {
    const first = await startOperator(namespace);
    operators.push(first);
    const firstHolder = await waitFor('a lease holder', () => leaseHolder(namespace).catch(() => undefined));
    const second = await startOperator(namespace);
    operators.push(second);

    await createEndpoint(namespace, 'ha', { upstreamPort: 8080, clients: [{ name: 'one' }] });
    await waitReady(namespace, 'ha');
    const leaderMetrics = await metricsOf(first);
    expect(leaderMetrics).toMatch(/mtls_reconcile_total\{result="success"\} [1-9]/);
    for (const name of [
      'mtls_certificate_expiration_timestamp_seconds',
      'mtls_certificate_renewal_timestamp_seconds',
      'mtls_reconcile_duration_seconds',
      'mtls_certificates_issued_total',
    ]) {
      expect(leaderMetrics).toContain(name);
    }
    expect(leaderMetrics).toMatch(
      /mtls_certificate_expiration_timestamp_seconds\{namespace="[^"]+",endpoint="ha",certificate="client",client="one"\}/,
    );
    expect(await metricsOf(second)).not.toMatch(/mtls_reconcile_total\{result="success"\} [1-9]/);

    const killedAt = Date.now();
    first.child.kill('SIGKILL');
    await kubectl([
      'patch',
      '-n',
      namespace,
      'mtlsendpoint',
      'ha',
      '--type=merge',
      '-p',
      '{"spec":{"clients":[{"name":"one"},{"name":"two"}]}}',
    ]);
    await waitFor(
      'the standby to take the lease',
      async () => ((await leaseHolder(namespace)) !== firstHolder ? true : undefined),
      {
        timeoutMs: 40_000,
      },
    );
    const takeoverMs = Date.now() - killedAt;
    await waitFor('the new leader to issue the new client', () => readSecret(namespace, 'ha-client-two'), {
      timeoutMs: 30_000,
    });
    await waitReady(namespace, 'ha');
    expect(takeoverMs).toBeLessThan(15_000 + 5_000); // lease duration + a retry period or two
    expect(second.output.join('')).toContain('became leader');
    // No private key ever reaches the logs.
    expect(first.output.join('') + second.output.join('')).not.toMatch(/PRIVATE KEY/);
  }, 120_000);
});
