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
    // The leader gauge: 1 on the leader, 0 on the standby.
    expect(leaderMetrics).toContain('mtls_leader_election_master_status{name="mtls-operator-leader"} 1');
    expect(await metricsOf(second)).toContain('mtls_leader_election_master_status{name="mtls-operator-leader"} 0');
    // Set once the status write returns, which may be just after the test saw Ready.
    await waitFor('the ready gauge', async () =>
      /mtls_endpoint_ready_status\{namespace="[^"]+",endpoint="ha",condition="True"\} 1/.test(await metricsOf(first))
        ? true
        : undefined,
    );

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
    expect(await metricsOf(second)).toContain('mtls_leader_election_master_status{name="mtls-operator-leader"} 1');
    // No private key ever reaches the logs.
    expect(first.output.join('') + second.output.join('')).not.toMatch(/PRIVATE KEY/);
  }, 120_000);

  it('SIGTERM: the leader releases its Lease and exits 0; the standby leads in well under half a lease', async () => {
    const ns = await createTestNamespace('ctrl-term');
    try {
      const first = await startOperator(ns);
      operators.push(first);
      const firstHolder = await waitFor('a lease holder', () => leaseHolder(ns).catch(() => undefined));
      const second = await startOperator(ns);
      operators.push(second);
      await createEndpoint(ns, 'term', { upstreamPort: 8080 });
      await waitReady(ns, 'term');
      await new Promise((resolve) => setTimeout(resolve, 1_000)); // the standby has read the lease and watches it

      const terminatedAt = Date.now();
      first.child.kill('SIGTERM');
      const secondHolder = await waitFor(
        'the standby to take the lease',
        async () => {
          const holder = await leaseHolder(ns);
          return holder && holder !== firstHolder ? holder : undefined;
        },
        { timeoutMs: 40_000, intervalMs: 50 },
      );
      const takeoverMs = Date.now() - terminatedAt;
      process.stdout.write(`controller-process: takeover after SIGTERM of the leader ${takeoverMs} ms\n`);
      expect(await first.exited).toBe(0);
      expect(first.output.join('')).toContain('released the lease');
      expect(secondHolder).not.toBe(firstHolder);
      // A lease left to expire would take 15 s (the lease duration) at least.
      expect(takeoverMs).toBeLessThan(15_000 / 2);
      expect(second.output.join('')).toContain('became leader');
      expect(await metricsOf(second)).toContain('mtls_leader_election_master_status{name="mtls-operator-leader"} 1');
      // The new leader works: a spec change is acted upon.
      await kubectl([
        'patch',
        '-n',
        ns,
        'mtlsendpoint',
        'term',
        '--type=merge',
        '-p',
        '{"spec":{"clients":[{"name":"x"}]}}',
      ]);
      await waitFor('the new leader to issue the new client', () => readSecret(ns, 'term-client-x'), {
        timeoutMs: 30_000,
      });
    } finally {
      await deleteTestNamespace(ns);
    }
  }, 120_000);

  it('every replica SIGTERMed at once (uninstall, scale to zero): the Lease is left free; the next process leads at once', async () => {
    const ns = await createTestNamespace('ctrl-down');
    try {
      const replicas = [await startOperator(ns), await startOperator(ns), await startOperator(ns)];
      operators.push(...replicas);
      await waitFor('a lease holder', () => leaseHolder(ns).catch(() => undefined));
      await new Promise((resolve) => setTimeout(resolve, 1_000)); // the standbys have read the lease and watch it
      for (const op of replicas) op.child.kill('SIGTERM');
      expect(await Promise.all(replicas.map((op) => op.exited))).toEqual([0, 0, 0]);
      expect(await leaseHolder(ns)).toBe('');

      const startedAt = Date.now();
      const next = await spawnOperator(kubeconfigPath(), ns);
      operators.push(next);
      await waitFor('the next process to lead', async () => ((await leaseHolder(ns)) ? true : undefined), {
        timeoutMs: 40_000,
        intervalMs: 50,
      });
      const leadsAfterMs = Date.now() - startedAt;
      process.stdout.write(`controller-process: a new process leads ${leadsAfterMs} ms after it starts\n`);
      expect(leadsAfterMs).toBeLessThan(15_000 / 2);
    } finally {
      await deleteTestNamespace(ns);
    }
  }, 120_000);
});
