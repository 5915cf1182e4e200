import { EndpointController } from '../../operator/controller/manager.ts';
import { OperatorMetrics } from '../../operator/metrics.ts';
import { createTestNamespace, deleteTestNamespace, kubeConfig, kubectl, waitFor } from '../support/cluster.ts';
import { condition, core, createEndpoint, getEndpoint, installCrd, waitReady } from '../support/endpoints.ts';

// kubelet delivers a changed Secret into a pod's volume up to 60-90 s after the change: a renewBefore below
// that lets the served certificate expire before its successor arrives. The endpoint says so, and keeps working.
// The judgement itself: renew-before-floor.unit.test.ts.

describe('renewBefore floor', () => {
  describe('against the real API server', () => {
    let namespace: string;
    let controller: EndpointController;
    beforeAll(async () => {
      await installCrd();
      namespace = await createTestNamespace('renew-floor');
      controller = new EndpointController({
        kubeConfig: kubeConfig(),
        metrics: new OperatorMetrics(),
        namespace,
        resyncMs: 1_000,
      });
      await controller.start();
    });
    afterAll(async () => {
      await controller?.stop();
      await deleteTestNamespace(namespace);
    });

    const warnings = async (name: string) =>
      (await core().listNamespacedEvent({ namespace, fieldSelector: `involvedObject.name=${name}` })).items.filter(
        (e) => e.reason === 'RenewBeforeTooShort',
      );

    it('a renewBefore under the floor: Ready, with RenewBeforeTooShort=True and one Warning Event naming field, floor and why', async () => {
      await createEndpoint(namespace, 'short', {
        upstreamPort: 8080,
        certificates: { validity: '1h', renewBefore: '30s' },
      });
      const ep = await waitReady(namespace, 'short');
      expect(condition(ep, 'Ready')?.status).toBe('True');
      expect(condition(ep, 'RenewBeforeTooShort')).toMatchObject({
        status: 'True',
        reason: 'BelowKubeletSecretDelay',
        observedGeneration: ep.metadata?.generation,
      });
      expect(condition(ep, 'RenewBeforeTooShort')?.message).toMatch(
        /spec\.certificates\.renewBefore \(30s\).*less than 90s.*kubelet/,
      );
      const events = await waitFor('the Warning Event', async () => {
        const found = await warnings('short');
        return found.length ? found : undefined;
      });
      expect(events[0]).toMatchObject({ type: 'Warning', reason: 'RenewBeforeTooShort' });
      expect(events[0]!.message).toBe(condition(ep, 'RenewBeforeTooShort')?.message);

      // Said once, not at every resync.
      await new Promise((resolve) => setTimeout(resolve, 3_500));
      expect((await warnings('short')).map((e) => e.count ?? 1)).toEqual([1]);

      // Fixed: the condition clears.
      await kubectl([
        'patch',
        '-n',
        namespace,
        'mtlsendpoint',
        'short',
        '--type=merge',
        '-p',
        '{"spec":{"certificates":{"renewBefore":"2m"}}}',
      ]);
      const fixed = await waitFor('RenewBeforeTooShort=False', async () => {
        const current = await getEndpoint(namespace, 'short');
        return condition(current, 'RenewBeforeTooShort')?.status === 'False' ? current : undefined;
      });
      expect(condition(fixed, 'RenewBeforeTooShort')).toMatchObject({ reason: 'AsExpected' });
      expect(condition(fixed, 'Ready')?.status).toBe('True');
    });

    it('the default renewBefore of a short validity is judged too; a long one is not', async () => {
      await createEndpoint(namespace, 'brief', { upstreamPort: 8080, certificates: { validity: '2m' } });
      await createEndpoint(namespace, 'normal', { upstreamPort: 8080 });
      const brief = await waitReady(namespace, 'brief');
      expect(condition(brief, 'RenewBeforeTooShort')).toMatchObject({ status: 'True' });
      expect(condition(brief, 'RenewBeforeTooShort')?.message).toMatch(/^spec\.certificates\.validity \(2m\)/);
      const normal = await waitReady(namespace, 'normal');
      expect(condition(normal, 'RenewBeforeTooShort')).toMatchObject({ status: 'False', reason: 'AsExpected' });
      expect(await warnings('normal')).toEqual([]);
    });
  });
});
