import type { Readable, Writable } from 'node:stream';

/**
 * Bytes a batching relay lets wait unsent on its destination before it stops reading its source: several TLS
 * records' worth, so one writev can carry what one turn of the event loop decrypted.
 */
const BATCHED_HIGH_WATER = 256 * 1024;

/**
 * Relays `from` to `to` with backpressure, passing the end on unless `end` is false, as pipe() does, with two
 * listeners where pipe() adds and later removes seven per pair (this runs twice for every relayed HTTP/2
 * stream). A destination that is already closed takes nothing more; the caller tears the pair down.
 *
 * With `batch`, the chunks that arrive in one turn of the event loop leave in one writev: a TLS socket hands
 * over its decrypted bytes one 16 KiB record per callback, and a send per record cost more than the decryption
 * (the TCP row of bench/RESULTS.md).
 */
export function relay(from: Readable, to: Writable, options: { end?: boolean; batch?: boolean } = {}): void {
  const { end = true, batch = false } = options;
  const limit = batch ? BATCHED_HIGH_WATER : to.writableHighWaterMark;
  let corked = false;
  const flush = () => {
    corked = false;
    to.uncork();
  };
  from.on('data', (chunk: Buffer) => {
    if (to.destroyed || to.writableEnded) return;
    if (batch && !corked) {
      corked = true;
      to.cork();
      setImmediate(flush);
    }
    to.write(chunk);
    // write() has set the destination to emit 'drain' once this backlog is sent.
    if (to.writableLength >= limit) from.pause();
  });
  to.on('drain', () => from.resume());
  if (end) from.once('end', () => !to.destroyed && !to.writableEnded && to.end());
}
