import * as k8s from '@kubernetes/client-node';
import { EndpointController } from '../../operator/controller/manager.ts';
import { LeaderElector } from '../../operator/kube/leader-election.ts';
import { OperatorMetrics } from '../../operator/metrics.ts';
import { createTestNamespace, deleteTestNamespace, kubeConfig, waitFor } from '../support/cluster.ts';
import { core, createEndpoint, installCrd, readSecret, secretText, waitReady } from '../support/endpoints.ts';

const startController = async (namespace: string) => {
  const controller = new EndpointController({
    kubeConfig: kubeConfig(),
    metrics: new OperatorMetrics(),
    namespace,
    resyncMs: 1_000,
  });
  await controller.start();
  return controller;
};

describe('controller: restarts and leader election', () => {
  let namespace: string;
  beforeAll(async () => {
    await installCrd();
    namespace = await createTestNamespace('ctrl-restart');
  });
  afterAll(() => deleteTestNamespace(namespace));

  it('a restarted controller adopts what exists: same CA, no writes', async () => {
    const first = await startController(namespace);
    await createEndpoint(namespace, 'restart', { upstreamPort: 8080, clients: [{ name: 'a' }, { name: 'b' }] });
    await waitReady(namespace, 'restart');
    await first.stop();
    const ca = secretText(await readSecret(namespace, 'restart-ca'), 'ca.crt');
    const versions = (await core().listNamespacedSecret({ namespace })).items.map((s) => s.metadata?.resourceVersion);

    const second = await startController(namespace);
    try {
      await new Promise((resolve) => setTimeout(resolve, 3_500)); // several resyncs
      expect(second.writer.writes).toBe(0);
      expect(secretText(await readSecret(namespace, 'restart-ca'), 'ca.crt')).toBe(ca);
      expect((await core().listNamespacedSecret({ namespace })).items.map((s) => s.metadata?.resourceVersion)).toEqual(
        versions,
      );
    } finally {
      await second.stop();
    }
  });

  it('two candidates: one leader at a time; the standby takes over when the leader goes', async () => {
    const timings = { leaseDurationMs: 2_000, renewDeadlineMs: 1_500, retryPeriodMs: 250 };
    const leading = new Set<string>();
    const overlap: string[] = [];
    const electors = ['a', 'b'].map(
      (identity) => new LeaderElector(kubeConfig(), { namespace, name: 'test-leader', identity, ...timings }),
    );
    const runs = electors.map((elector, i) =>
      elector.run({
        onStartedLeading: () => {
          if (leading.size > 0) overlap.push(`${i} started while ${[...leading]} led`);
          leading.add(String(i));
        },
        onStoppedLeading: () => leading.delete(String(i)),
      }),
    );
    await waitFor('a leader', async () => leading.size === 1);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(leading.size).toBe(1);
    const leaderIndex = Number([...leading][0]);
    const started = Date.now();
    leading.clear();
    await electors[leaderIndex]!.stop(); // releases the lease
    await waitFor('the standby to lead', async () => leading.size === 1);
    expect([...leading]).toEqual([String(1 - leaderIndex)]);
    expect(Date.now() - started).toBeLessThan(timings.leaseDurationMs + 1_000);
    expect(overlap).toEqual([]);
    await electors[1 - leaderIndex]!.stop();
    await Promise.all(runs);
  });

  it('a candidate stopped while its round wins the lease releases it instead of exiting as its holder', async () => {
    const coordination = kubeConfig().makeApiClient(k8s.CoordinationV1Api);
    const elector = new LeaderElector(kubeConfig(), { namespace, name: 'stopped-mid-round', identity: 'late' });
    let started = false;
    const run = elector.run({ onStartedLeading: () => (started = true), onStoppedLeading: () => undefined });
    // The first round (read, then create the free lease) is in flight: shutdown arrives now, as on SIGTERM.
    await elector.stop();
    await run;
    const lease = await coordination.readNamespacedLease({ name: 'stopped-mid-round', namespace });
    expect(started).toBe(false);
    expect(lease.spec?.holderIdentity ?? '').toBe('');
    expect(lease.spec?.leaseDurationSeconds).toBe(1);
  });

  it('a leader stops its work before it releases the lease, and the standby leads only after that', async () => {
    const timings = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 };
    const events: string[] = [];
    const [leader, standby] = ['first', 'second'].map(
      (identity) => new LeaderElector(kubeConfig(), { namespace, name: 'ordered', identity, ...timings }),
    );
    const leaderRun = leader!.run({ onStartedLeading: () => events.push('first leads'), onStoppedLeading: () => {} });
    await waitFor('the first to lead', async () => events.includes('first leads'));
    const standbyRun = standby!.run({
      onStartedLeading: () => events.push('second leads'),
      onStoppedLeading: () => {},
    });
    await new Promise((resolve) => setTimeout(resolve, 500)); // the standby has read the lease and watches it
    const stopping = Date.now();
    await leader!.stop(async () => {
      await new Promise((resolve) => setTimeout(resolve, 1_000)); // reconciles in flight finish
      events.push('first stopped its work');
    });
    await leaderRun;
    await waitFor('the standby to lead', async () => events.includes('second leads'));
    const takeoverMs = Date.now() - stopping;
    expect(events).toEqual(['first leads', 'first stopped its work', 'second leads']);
    // Released, not expired: a lease duration is 15 s.
    expect(takeoverMs).toBeLessThan(1_000 + timings.leaseDurationMs / 2);
    await standby!.stop();
    await standbyRun;
  });
});
