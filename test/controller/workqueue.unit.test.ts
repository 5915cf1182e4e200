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

  it("reports client-go's metrics: adds, depth, time waiting, time worked, retries", async () => {
    let now = 0;
    const seen = { added: 0, depth: [] as number[], waited: [] as number[], worked: [] as number[], retried: 0 };
    const queue = new WorkQueue({
      now: () => now,
      metrics: {
        added: () => seen.added++,
        depth: (keys) => seen.depth.push(keys),
        waited: (s) => seen.waited.push(s),
        worked: (s) => seen.worked.push(s),
        retried: () => seen.retried++,
      },
    });
    queue.add('ns/a');
    queue.add('ns/a'); // already waiting: not an add
    now = 1_500;
    queue.add('ns/b');
    expect(seen.added).toBe(2);
    expect(seen.depth).toEqual([0, 1, 2]);
    now = 2_000;
    expect(await queue.get()).toBe('ns/a');
    expect(seen.waited).toEqual([2]); // seconds since its first add
    queue.add('ns/a'); // while processed: it will run again, an add
    expect(seen.added).toBe(3);
    now = 2_250;
    queue.done('ns/a');
    expect(seen.worked).toEqual([0.25]);
    expect(await queue.get()).toBe('ns/b');
    expect(await queue.get()).toBe('ns/a');
    expect(seen.waited).toEqual([2, 0.75, 0.25]); // b since 1.5 s; a since its add while processed, at 2 s
    expect(seen.depth.at(-1)).toBe(0);
    queue.addRateLimited('ns/a');
    expect(seen.retried).toBe(1);
    queue.shutDown();
  });
});
