import type { prng } from '../support.ts';
import { MAX_HEADER_BYTES } from './settings.ts';

export type Rnd = ReturnType<typeof prng>;

/** The hostile suite's seeded corpus of malformed request heads, each tagged so the relay can spot it upstream. */

export interface Malformed {
  id: number;
  kind: string;
  bytes: Buffer;
  /** Statuses the sidecar may answer with (or it closes the connection without an answer). */
  expect: readonly number[];
}

export const tag = (id: number) => `MALFORMED-${id}`;

/** A request head (with its blank line), tagged in the target and a header, with some ordinary headers. */
export function headWith(id: number, rnd: Rnd, extra: string[], requestLine = `GET /${tag(id)} HTTP/1.1`, host = true) {
  const lines = [...(host ? ['Host: localhost'] : []), `X-Tag: ${tag(id)}`];
  for (const h of ['Accept: */*', 'User-Agent: hostile/1.0', `X-Client-Verify: FORGED-${id}`, 'X-Seq: 1']) {
    if (rnd.next() < 0.5) lines.push(h);
  }
  for (const line of extra) lines.splice(rnd.int(0, lines.length), 0, line);
  return `${requestLine}\r\n${lines.join('\r\n')}\r\n\r\n`;
}

export const randomBytes = (rnd: Rnd, n: number, exclude: number[] = []) => {
  const out: number[] = [];
  while (out.length < n) {
    const b = rnd.int(0, 255);
    if (!exclude.includes(b)) out.push(b);
  }
  return Buffer.from(out).toString('latin1');
};

export const MALFORMED_KINDS: { kind: string; expect: number[]; make: (id: number, rnd: Rnd) => string }[] = [
  {
    kind: 'Content-Length and Transfer-Encoding',
    expect: [400],
    make: (id, rnd) =>
      headWith(
        id,
        rnd,
        rnd.next() < 0.5
          ? ['Content-Length: 5', 'Transfer-Encoding: chunked']
          : ['transfer-encoding: CHUNKED', `content-length: ${rnd.int(0, 99)}`],
        `POST /${tag(id)} HTTP/1.1`,
      ) + '0\r\n\r\n',
  },
  {
    kind: 'conflicting Content-Length',
    expect: [400],
    make: (id, rnd) => {
      const a = rnd.int(0, 50);
      return headWith(
        id,
        rnd,
        [`Content-Length: ${a}`, `Content-Length: ${a + rnd.int(1, 9)}`],
        `POST /${tag(id)} HTTP/1.1`,
      );
    },
  },
  {
    kind: 'invalid Content-Length',
    expect: [400],
    make: (id, rnd) =>
      headWith(
        id,
        rnd,
        [
          `Content-Length: ${rnd.pick(['+5', '-1', '0x10', '5 5', '', '5.0', '1e3', '1234567890123456', '5\xa0', '\xa05', '5,5'])}`,
        ],
        `POST /${tag(id)} HTTP/1.1`,
      ),
  },
  {
    kind: 'Transfer-Encoding not ending in chunked',
    expect: [400],
    make: (id, rnd) =>
      headWith(
        id,
        rnd,
        [
          `Transfer-Encoding: ${rnd.pick(['chunked, gzip', 'gzip', 'identity', 'chunked, chunked', 'xchunked', '"chunked"', 'chunked;q=1', 'chunked\xa0', '\xa0chunked', ' , ', 'chunk ed'])}`,
        ],
        `POST /${tag(id)} HTTP/1.1`,
      ) + '0\r\n\r\n',
  },
  {
    kind: 'Transfer-Encoding: chunked twice',
    expect: [400],
    make: (id, rnd) =>
      headWith(id, rnd, ['Transfer-Encoding: chunked', 'Transfer-Encoding: chunked'], `POST /${tag(id)} HTTP/1.1`) +
      '0\r\n\r\n',
  },
  {
    kind: 'obs-fold',
    expect: [400],
    make: (id, rnd) => headWith(id, rnd, ['X-Folded: a', `${rnd.pick([' ', '\t'])}folded-${rnd.int(0, 9)}`]),
  },
  {
    kind: 'whitespace before the colon',
    expect: [400],
    make: (id, rnd) =>
      headWith(id, rnd, [
        `${rnd.pick(['Transfer-Encoding', 'Content-Length', 'X-Client-Verify', 'X-A'])}${rnd.pick([' ', '\t', '  '])}: 1`,
      ]),
  },
  {
    kind: 'bare CR or LF',
    expect: [400],
    make: (id, rnd) => {
      const bare = rnd.pick(['\r', '\n']);
      return rnd.next() < 0.5
        ? headWith(id, rnd, [`X-A: 1${bare}X-B: 2`])
        : headWith(id, rnd, []).replace('\r\n', bare);
    },
  },
  {
    kind: 'control character',
    expect: [400],
    make: (id, rnd) => {
      const value = `v${rnd.pick(['\x00', '\x01', '\x07', '\x08', '\x0b', '\x0c', '\x1b', '\x1f', '\x7f'])}v`;
      return rnd.next() < 0.7
        ? headWith(id, rnd, [`X-Ctl: ${value}`])
        : headWith(id, rnd, [], `GET /${tag(id)}${value} HTTP/1.1`);
    },
  },
  {
    kind: 'HTTP/1.0 with Transfer-Encoding',
    expect: [400],
    make: (id, rnd) => headWith(id, rnd, ['Transfer-Encoding: chunked'], `POST /${tag(id)} HTTP/1.0`) + '0\r\n\r\n',
  },
  {
    kind: 'unsupported HTTP version',
    expect: [505],
    make: (id, rnd) =>
      headWith(id, rnd, [], `GET /${tag(id)} ${rnd.pick(['HTTP/2.0', 'HTTP/0.9', 'HTTP/3.0', 'HTTP/2.1'])}`),
  },
  {
    kind: 'HTTP/2 connection preface',
    expect: [505],
    make: (id) => `PRI * HTTP/2.0\r\nX-Tag: ${tag(id)}\r\n\r\nSM\r\n\r\n`,
  },
  {
    kind: 'CONNECT',
    expect: [405],
    make: (id, rnd) =>
      headWith(id, rnd, [], `CONNECT 127.0.0.1:22 HTTP/1.1`).replace('Host: localhost', 'Host: 127.0.0.1:22'),
  },
  {
    kind: 'malformed request line',
    expect: [400],
    make: (id, rnd) =>
      headWith(
        id,
        rnd,
        [],
        rnd
          .pick([
            'GET  /T HTTP/1.1',
            'GET\t/T HTTP/1.1',
            'GET /T http/1.1',
            'GET /T',
            'GET /T HTTP/1.1 ',
            ' GET /T HTTP/1.1',
            'GET /T HTTP/1.10',
            '/T HTTP/1.1',
            'GET /T HTTPS/1.1',
            'G(ET /T HTTP/1.1',
            'GET /T HTTP/1.1/',
          ])
          .replace('T', tag(id)),
      ),
  },
  {
    kind: 'invalid header name',
    expect: [400],
    make: (id, rnd) =>
      headWith(id, rnd, [`X${rnd.pick(['(', ')', ',', '/', '[', '"', '@', '\xe9', '{', '=', '\\'])}A: 1`]),
  },
  {
    kind: 'Host missing or twice',
    expect: [400],
    make: (id, rnd) =>
      rnd.next() < 0.5 ? headWith(id, rnd, [], undefined, false) : headWith(id, rnd, ['Host: evil.example']),
  },
  {
    kind: 'h2c upgrade',
    expect: [400],
    make: (id, rnd) =>
      headWith(id, rnd, ['Connection: Upgrade, HTTP2-Settings', 'Upgrade: h2c', 'HTTP2-Settings: AAMAAABkAAQAAP__']),
  },
  {
    kind: 'too many header lines',
    expect: [431],
    make: (id, rnd) =>
      headWith(
        id,
        rnd,
        Array.from({ length: rnd.int(101, 600) }, (_, i) => `a${i}: v`),
      ),
  },
  {
    kind: 'oversized head',
    expect: [431],
    make: (id, rnd) => headWith(id, rnd, [`X-Big: ${'b'.repeat(rnd.int(MAX_HEADER_BYTES + 1, 64 * 1024))}`]),
  },
  {
    kind: 'random bytes as a request line',
    expect: [400],
    make: (id, rnd) => `${randomBytes(rnd, rnd.int(1, 120), [10, 13])}\r\nX-Tag: ${tag(id)}\r\n\r\n`,
  },
  {
    kind: 'blank lines, then garbage',
    expect: [400],
    make: (id, rnd) => `${'\r\n'.repeat(rnd.int(1, 5))}GARBAGE ${tag(id)}\r\nHost: localhost\r\n\r\n`,
  },
];

export function malformedCorpus(rnd: Rnd, count: number): Malformed[] {
  const corpus: Malformed[] = [];
  for (let id = 0; id < count; id++) {
    // Every kind at least once, then a seeded mix.
    const kind = id < MALFORMED_KINDS.length ? MALFORMED_KINDS[id]! : rnd.pick(MALFORMED_KINDS);
    // A well-formed request pipelined behind the bad one, with forged identity headers: it must never run.
    const smuggled = `GET /SMUGGLED-${id} HTTP/1.1\r\nHost: localhost\r\nX-Client-Verify: FORGED-${id}\r\n\r\n`;
    corpus.push({
      id,
      kind: kind.kind,
      bytes: Buffer.from(kind.make(id, rnd) + smuggled, 'latin1'),
      expect: kind.expect,
    });
  }
  return corpus;
}
