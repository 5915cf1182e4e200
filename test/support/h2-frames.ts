import { connect as tlsConnect, type TLSSocket } from 'node:tls';

/**
 * Raw HTTP/2 frames for attack tests only (RFC 9113 section 4.1, HPACK RFC 7541 without Huffman): a real
 * client (node:http2) refuses to send what these tests need to send. The sidecar itself never frames by hand.
 */
export const FRAME = {
  DATA: 0,
  HEADERS: 1,
  RST_STREAM: 3,
  SETTINGS: 4,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
  CONTINUATION: 9,
} as const;
export const FLAG = { END_STREAM: 1, ACK: 1, END_HEADERS: 4 } as const;
export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/** An HPACK integer with an N-bit prefix, the first byte or'ed with `mask`. */
function hpackInt(value: number, prefixBits: number, mask: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([mask | value]);
  const out = [mask | max];
  value -= max;
  while (value >= 128) {
    out.push((value % 128) + 128);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return Buffer.from(out);
}

const str = (text: string) => Buffer.concat([hpackInt(text.length, 7, 0), Buffer.from(text, 'latin1')]);

/** Literal field, new name, without indexing (or with incremental indexing: added to the dynamic table). */
export function literal(name: string, value: string, index = false): Buffer {
  return Buffer.concat([Buffer.from([index ? 0x40 : 0x00]), str(name), str(value)]);
}

/** A reference to a table entry (static 1-61, dynamic from 62). */
export const indexed = (index: number) => hpackInt(index, 7, 0x80);

/** :method GET, :scheme https, :path /, :authority localhost. */
export function getBlock(path = '/'): Buffer {
  return Buffer.concat([indexed(2), indexed(7), literal(':path', path), literal(':authority', 'localhost')]);
}

export const settingsFrame = (entries: [number, number][] = []) => {
  const payload = Buffer.alloc(entries.length * 6);
  entries.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, i * 6);
    payload.writeUInt32BE(value, i * 6 + 2);
  });
  return frame(FRAME.SETTINGS, 0, 0, payload);
};

export const rstStream = (stream: number, code: number) => {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(code);
  return frame(FRAME.RST_STREAM, 0, stream, payload);
};

/** Frames the server sent, as far as they were read: type, stream and (GOAWAY, RST_STREAM) the error code. */
export interface SeenFrame {
  type: number;
  flags: number;
  stream: number;
  code?: number;
}

/** A TLS connection that negotiated h2, sent the preface and an empty SETTINGS, and records the server's frames. */
export async function rawH2(
  port: number,
  ca: string,
  client?: { certPem: string; keyPem: string },
): Promise<{ socket: TLSSocket; frames: SeenFrame[]; closed: Promise<void> }> {
  const socket = tlsConnect({
    host: '127.0.0.1',
    port,
    servername: 'localhost',
    ca,
    cert: client?.certPem,
    key: client?.keyPem,
    ALPNProtocols: ['h2'],
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve());
    socket.once('error', reject);
  });
  socket.on('error', () => undefined);
  const frames: SeenFrame[] = [];
  let buffered = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 9) {
      const length = buffered.readUIntBE(0, 3);
      if (buffered.length < 9 + length) break;
      const type = buffered[3]!;
      const seen: SeenFrame = { type, flags: buffered[4]!, stream: buffered.readUInt32BE(5) & 0x7fffffff };
      if (type === FRAME.GOAWAY) seen.code = buffered.readUInt32BE(9 + 4);
      if (type === FRAME.RST_STREAM) seen.code = buffered.readUInt32BE(9);
      frames.push(seen);
      buffered = buffered.subarray(9 + length);
    }
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.write(Buffer.concat([PREFACE, settingsFrame()]));
  return { socket, frames, closed };
}

/** Writes `count` copies of what `make(i)` returns, respecting backpressure, until the peer closes. */
export async function flood(socket: TLSSocket, count: number, make: (i: number) => Buffer): Promise<number> {
  let sent = 0;
  for (let i = 0; i < count && !socket.destroyed && socket.writable; i++) {
    const ok = socket.write(make(i));
    sent++;
    if (!ok) {
      const drained = await Promise.race([
        new Promise<boolean>((resolve) => socket.once('drain', () => resolve(true))),
        new Promise<boolean>((resolve) => socket.once('close', () => resolve(false))),
        new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 5_000)),
      ]);
      if (!drained) break;
    }
  }
  return sent;
}
