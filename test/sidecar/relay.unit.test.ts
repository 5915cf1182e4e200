import { PassThrough, Writable } from 'node:stream';
import { relay } from '../../sidecar/relay.ts';

/** A destination that records its writes (writev batches as one entry) and completes them only when told. */
function slowSink(highWaterMark = 16) {
  const batches: string[][] = [];
  const pending: (() => void)[] = [];
  const sink = new Writable({
    highWaterMark,
    write(chunk: Buffer, _encoding, done) {
      batches.push([chunk.toString()]);
      pending.push(done);
    },
    writev(chunks, done) {
      batches.push(chunks.map((c) => (c.chunk as Buffer).toString()));
      pending.push(done);
    },
  });
  const release = () => pending.splice(0).forEach((done) => done());
  return { sink, batches, release };
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

describe('relay (stream to stream)', () => {
  it('passes every chunk and the end on; with end: false the destination stays open', async () => {
    for (const end of [true, false]) {
      const from = new PassThrough();
      const { sink, batches, release } = slowSink(1024);
      relay(from, sink, { end });
      from.write('a');
      from.end('b');
      await turn();
      release();
      await turn();
      expect(batches.flat().join('')).toBe('ab');
      expect(sink.writableEnded).toBe(end);
    }
  });

  it('stops reading its source while the destination is backed up, and resumes on drain', async () => {
    const from = new PassThrough();
    const { sink, release } = slowSink(16);
    relay(from, sink);
    from.write('x'.repeat(32));
    await turn();
    expect(from.isPaused()).toBe(true);
    release();
    await turn();
    expect(from.isPaused()).toBe(false);
  });

  it('with batch, the chunks of one turn leave in one writev', async () => {
    const from = new PassThrough();
    const { sink, batches, release } = slowSink(1024);
    relay(from, sink, { batch: true });
    from.write('1');
    from.write('2');
    from.write('3');
    await turn();
    await turn();
    release();
    expect(batches).toEqual([['1', '2', '3']]);
  });

  it('a destroyed destination takes nothing more', async () => {
    const from = new PassThrough();
    const { sink, batches } = slowSink(1024);
    sink.on('error', () => undefined);
    relay(from, sink);
    sink.destroy();
    from.write('late');
    await turn();
    expect(batches).toEqual([]);
  });
});
