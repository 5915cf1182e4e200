import { startTestSidecar } from '../support/sidecar.ts';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { MAX_CONCURRENT_STREAMS } from '../../sidecar/http2.ts';
import type { RunningSidecar } from '../../sidecar/sidecar.ts';
import { h2Client, h2Request } from '../support/h2-fixtures.ts';
import {
  FLAG,
  flood,
  FRAME,
  frame,
  getBlock,
  indexed,
  literal,
  rawH2,
  rstStream,
  type SeenFrame,
  settingsFrame,
} from '../support/h2-frames.ts';
import { makePki, type Pki, startMockUpstream, tlsDir } from '../support/tls-fixtures.ts';

/**
 * The known HTTP/2 attacks, sent as raw frames to an in-process sidecar: each must end in a refusal (GOAWAY,
 * a closed connection or a reset stream), reach the upstream with nothing, leave the heap about where it was,
 * and leave the sidecar serving. The figures are printed: heap after a full GC (the sidecar and this test share
 * the process, and the attacker's own buffers are garbage by then) and RSS.
 */
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const MiB = 2 ** 20;
const heap = () => {
  gc();
  return process.memoryUsage().heapUsed;
};

const ENHANCE_YOUR_CALM = 11;
const REFUSED_STREAM = 7;
const CANCEL = 8;

describe('sidecar: HTTP/2 attacks are refused with bounded memory', () => {
  let pki: Pki;
  let upstream: Awaited<ReturnType<typeof startMockUpstream>>;
  let sidecar: RunningSidecar;
  const figures: Record<string, unknown>[] = [];

  beforeAll(async () => {
    pki = await makePki();
    upstream = await startMockUpstream();
    sidecar = await startTestSidecar({ listen: 'standard=0', upstreamPort: upstream.port, tlsDir: await tlsDir(pki) });
  });
  afterAll(async () => {
    console.log(`HTTP/2 attack figures:\n${figures.map((f) => JSON.stringify(f)).join('\n')}`);
    await sidecar?.stop(1_000);
    upstream?.server.closeAllConnections();
    upstream?.server.close();
  });

  /** Runs one attack on a fresh connection; waits (at most 5 s) for the sidecar to close it. */
  async function attack(
    name: string,
    count: number,
    make: (i: number) => Buffer,
    opts: { stopReading?: boolean; waitForClose?: boolean } = {},
  ): Promise<{ sent: number; closed: boolean; frames: SeenFrame[]; upstream: number }> {
    const before = heap();
    const rssBefore = process.memoryUsage().rss;
    const requests = upstream.requests.length;
    const conn = await rawH2(sidecar.ports[0]!, pki.ca.certPem);
    if (opts.stopReading) conn.socket.pause();
    const sent = await flood(conn.socket, count, make);
    if (opts.waitForClose !== false) await Promise.race([conn.closed, new Promise((r) => setTimeout(r, 5_000))]);
    else await new Promise((r) => setTimeout(r, 300));
    const closed = conn.socket.destroyed || !conn.socket.readable;
    conn.socket.destroy();
    const result = { sent, closed, frames: conn.frames, upstream: upstream.requests.length - requests };
    const goaway = conn.frames.find((f) => f.type === FRAME.GOAWAY);
    figures.push({
      attack: name,
      framesSent: sent,
      closedBySidecar: closed,
      goaway: goaway?.code,
      resets: conn.frames.filter((f) => f.type === FRAME.RST_STREAM).length,
      reachedUpstream: result.upstream,
      heapGrowthMiB: +((heap() - before) / MiB).toFixed(1),
      rssMiB: Math.round(process.memoryUsage().rss / MiB),
      rssGrowthMiB: Math.round((process.memoryUsage().rss - rssBefore) / MiB),
    });
    return result;
  }

  /** After each attack the heap is back near where it was, and a normal client is served. */
  async function stillServing(): Promise<void> {
    const session = await h2Client(sidecar.ports[0]!, { ca: pki.ca.certPem });
    const result = await h2Request(session, { ':path': '/after-attack' });
    session.close();
    expect(result.status).toBe(200);
    expect(figures.at(-1)!.heapGrowthMiB).toBeLessThan(16);
  }

  it('rapid reset (CVE-2023-44487): HEADERS then RST_STREAM, over and over -> GOAWAY', async () => {
    const result = await attack('rapid reset', 50_000, (i) =>
      Buffer.concat([
        frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 2 * i + 1, getBlock('/rapid-reset')),
        rstStream(2 * i + 1, CANCEL),
      ]),
    );
    expect(result.closed).toBe(true);
    expect(result.frames.some((f) => f.type === FRAME.GOAWAY)).toBe(true);
    expect(result.sent).toBeLessThan(50_000);
    // Streams are reset before their upstream request got anywhere; at most a concurrency's worth could.
    expect(result.upstream).toBeLessThanOrEqual(MAX_CONCURRENT_STREAMS);
    await stillServing();
  });

  it('CONTINUATION flood (CVE-2024-27983): a header block that never ends -> connection closed', async () => {
    const pad = 'a'.repeat(1_000);
    const result = await attack('CONTINUATION flood', 20_000, (i) =>
      i === 0
        ? frame(FRAME.HEADERS, 0, 1, getBlock('/continuation'))
        : frame(FRAME.CONTINUATION, 0, 1, literal(`x-pad-${i}`, pad)),
    );
    expect(result.closed).toBe(true);
    // Refused within the header list limit (16 KiB by default) and a few frames of slack, not 20 MB later.
    expect(result.sent * 1_000).toBeLessThan(1 * MiB);
    expect(result.upstream).toBe(0);
    await stillServing();
  });

  it('SETTINGS flood from a client that does not read the ACKs -> connection closed', async () => {
    const result = await attack('SETTINGS flood', 200_000, () => settingsFrame([[3, 100]]), { stopReading: true });
    expect(result.closed).toBe(true);
    expect(result.sent).toBeLessThan(200_000);
    await stillServing();
  });

  it('PING flood from a client that does not read the replies -> connection closed', async () => {
    const result = await attack('PING flood', 200_000, () => frame(FRAME.PING, 0, 0, Buffer.alloc(8)), {
      stopReading: true,
    });
    expect(result.closed).toBe(true);
    expect(result.sent).toBeLessThan(200_000);
    await stillServing();
  });

  it('HPACK bomb: one 4 KB table entry referenced 8,000 times (32 MB decoded) -> stream refused', async () => {
    const block = Buffer.concat([
      getBlock('/hpack-bomb'),
      literal('x-bomb', 'b'.repeat(4_000), true),
      ...Array.from({ length: 8_000 }, () => indexed(62)),
    ]);
    const result = await attack(
      'HPACK bomb',
      1,
      () => frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, block),
      { waitForClose: false },
    );
    const refused = result.frames.some(
      (f) => (f.type === FRAME.RST_STREAM && f.code === ENHANCE_YOUR_CALM) || f.type === FRAME.GOAWAY,
    );
    expect(refused).toBe(true);
    expect(result.upstream).toBe(0);
    await stillServing();
  });

  it(`more than ${MAX_CONCURRENT_STREAMS} open streams: the extra ones are refused (REFUSED_STREAM)`, async () => {
    const extra = 20;
    const result = await attack(
      'concurrent streams',
      MAX_CONCURRENT_STREAMS + extra,
      (i) => frame(FRAME.HEADERS, FLAG.END_HEADERS, 2 * i + 1, getBlock('/open-stream')),
      { waitForClose: false },
    );
    const refused = result.frames.filter((f) => f.type === FRAME.RST_STREAM && f.code === REFUSED_STREAM);
    expect(refused.length).toBe(extra);
    expect(Math.min(...refused.map((f) => f.stream))).toBe(2 * MAX_CONCURRENT_STREAMS + 1);
    await stillServing();
  });
});
