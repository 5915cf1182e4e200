import { type AddressInfo, createServer, type Socket } from 'node:net';
import { CRLFCRLF, parseRequestHeadBytes } from './http1.ts';

/**
 * The admin port: /healthz, /readyz and /metrics for kubelet and Prometheus, and /status (JSON: what the sidecar
 * found of its upstream, which the operator copies into the MtlsEndpoint's status). One request per connection,
 * answered with `Connection: close`, on a plain TCP server with the sidecar's own request parser: Node's
 * `http` module would cost every pod ~1.5 MiB of resident memory for three fixed answers (bench/RESULTS.md).
 */

const MAX_HEAD_BYTES = 8 * 1024;
/** A connection that has not sent its request (or not closed after the answer) by then is closed. */
const ADMIN_TIMEOUT_MS = 10_000;

export interface AdminState {
  ready(): boolean;
  /** /status: facts about this sidecar as a JSON object (no secrets: the admin port is open to the pod network). */
  status(): object;
  metrics(): Promise<string>;
  metricsContentType: string;
}

/** What the admin port answers to one request line: a fixed answer, or the metrics. */
export type AdminRoute = { status: number; body: string } | 'metrics' | 'status';

export function adminRoute(target: string, ready: boolean): AdminRoute {
  switch (target) {
    case '/healthz':
      return { status: 200, body: 'ok\n' };
    case '/readyz':
      return ready ? { status: 200, body: 'ok\n' } : { status: 503, body: 'draining\n' };
    case '/metrics':
      return 'metrics';
    case '/status':
      return 'status';
    default:
      return { status: 404, body: 'not found\n' };
  }
}

const STATUS_TEXT: Record<number, string> = {
  200: 'OK',
  400: 'Bad Request',
  404: 'Not Found',
  431: 'Request Header Fields Too Large',
  503: 'Service Unavailable',
};

/** A whole response; HEAD gets the same head without the body. */
export function adminResponse(status: number, contentType: string, body: string, head = false): string {
  return (
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\ncontent-type: ${contentType}\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${head ? '' : body}`
  );
}

export interface RunningAdmin {
  port: number;
  close(): Promise<void>;
}

export async function startAdmin(host: string, port: number, state: AdminState): Promise<RunningAdmin> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    let buf: Buffer | null = null;
    let answered = false;
    const timer = setTimeout(() => socket.destroy(), ADMIN_TIMEOUT_MS);
    timer.unref();
    const send = (text: string) => {
      answered = true;
      buf = null;
      if (!socket.destroyed) socket.end(text, 'latin1');
    };
    socket.on('data', (chunk: Buffer) => {
      if (answered) return;
      buf = buf ? Buffer.concat([buf, chunk]) : chunk;
      const end = buf.indexOf(CRLFCRLF);
      if (end < 0) {
        if (buf.length > MAX_HEAD_BYTES) send(adminResponse(431, 'text/plain', 'request head too large\n'));
        return;
      }
      let method: string;
      let target: string;
      try {
        ({ method, target } = parseRequestHeadBytes(buf, 0, end));
      } catch (err) {
        return send(adminResponse(400, 'text/plain', `${(err as Error).message}\n`));
      }
      const head = method === 'HEAD';
      const route = adminRoute(target, state.ready());
      if (route === 'status')
        return send(adminResponse(200, 'application/json', `${JSON.stringify(state.status())}\n`, head));
      if (route !== 'metrics') return send(adminResponse(route.status, 'text/plain', route.body, head));
      answered = true;
      state.metrics().then(
        (text) => send(adminResponse(200, state.metricsContentType, text, head)),
        (err: unknown) => send(adminResponse(503, 'text/plain', `metrics unavailable: ${(err as Error).message}\n`)),
      );
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      clearTimeout(timer);
      sockets.delete(socket);
    });
  });
  const bound = await new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
  });
  return {
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
}
