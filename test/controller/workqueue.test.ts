import { WorkQueue } from '../../operator/controller/workqueue.ts';

describe('WorkQueue (client-go semantics)', () => {
  it('dedupes queued keys and never hands one key to two workers at once', async () => {
    const queue = new WorkQueue();
    queue.add('ns/a');
    queue.add('ns/a');
    queue.add('ns/b');
    expect(queue.length).toBe(2);
    const first = await queue.get();
    expect(first).toBe('ns/a');
    queue.add('ns/a'); // while processing: remembered, not queued
    expect(queue.length).toBe(1);
    expect(await queue.get()).toBe('ns/b');
    queue.done('ns/b');
    queue.done('ns/a'); // processed again afterwards
    expect(await queue.get()).toBe('ns/a');
    queue.shutDown();
    expect(await queue.get()).toBeUndefined();
  });

  it('keeps the earliest of several delayed adds, and backs off per key until forgotten', async () => {
    const queue = new WorkQueue({ baseDelayMs: 10, maxDelayMs: 80 });
    queue.addAfter('ns/late', 10_000);
    queue.addAfter('ns/late', 20); // earlier wins
    expect(await queue.get()).toBe('ns/late');
    queue.done('ns/late');
    expect([1, 2, 3, 4, 5].map(() => queue.addRateLimited('ns/failing'))).toEqual([10, 20, 40, 80, 80]);
    expect(queue.addRateLimited('ns/stale', 1)).toBe(1);
    queue.forget('ns/failing');
    expect(queue.failureCount('ns/failing')).toBe(0);
    expect(queue.addRateLimited('ns/failing')).toBe(10);
    queue.shutDown();
  });
});
