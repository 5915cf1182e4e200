import { connect } from 'node:net';
import { adminResponse, adminRoute, type RunningAdmin, startAdmin } from '../../sidecar/admin.ts';

/** Sends raw bytes to the admin port and reads until the server closes. */
function exchange(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(bytes));
    let text = '';
    socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
    socket.on('error', reject);
    socket.on('close', () => resolve(text));
  });
}

describe('sidecar: the admin port', () => {
  it('routes the three paths, and anything else is 404', () => {
    expect(adminRoute('/healthz', false)).toEqual({ status: 200, body: 'ok\n' });
    expect(adminRoute('/readyz', true)).toEqual({ status: 200, body: 'ok\n' });
    expect(adminRoute('/readyz', false)).toEqual({ status: 503, body: 'draining\n' });
    expect(adminRoute('/metrics', true)).toBe('metrics');
    expect(adminRoute('/status', false)).toBe('status');
    expect(adminRoute('/metrics?x=1', true)).toEqual({ status: 404, body: 'not found\n' });
    expect(adminRoute('/', true)).toEqual({ status: 404, body: 'not found\n' });
  });

  it('frames every answer with its length and closes; HEAD gets the head only', () => {
    expect(adminResponse(200, 'text/plain', 'ok\n')).toBe(
      'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n',
    );
    expect(adminResponse(200, 'text/plain', 'ok\n', true)).toMatch(/content-length: 3\r\nconnection: close\r\n\r\n$/);
  });

  describe('over TCP', () => {
    let admin: RunningAdmin;
    let ready = true;
    beforeAll(async () => {
      admin = await startAdmin('127.0.0.1', 0, {
        ready: () => ready,
        status: () => ({ ready, upstreamProtocol: { requested: 'auto', detected: 'h2c' } }),
        metrics: async () => 'a_metric 1\n',
        metricsContentType: 'text/plain; version=0.0.4; charset=utf-8',
      });
    });
    afterAll(() => admin.close());

    it('answers fetch() like any HTTP server: /healthz, /readyz, /metrics', async () => {
      const base = `http://127.0.0.1:${admin.port}`;
      expect(await (await fetch(`${base}/healthz`)).text()).toBe('ok\n');
      ready = false;
      expect((await fetch(`${base}/readyz`)).status).toBe(503);
      ready = true;
      const metrics = await fetch(`${base}/metrics`);
      expect(metrics.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
      expect(await metrics.text()).toBe('a_metric 1\n');
      const status = await fetch(`${base}/status`);
      expect(status.headers.get('content-type')).toBe('application/json');
      expect(await status.json()).toEqual({ ready: true, upstreamProtocol: { requested: 'auto', detected: 'h2c' } });
    });

    it('answers a request split over several packets, and a malformed one with 400', async () => {
      const socket = connect(admin.port, '127.0.0.1');
      let text = '';
      socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
      const closed = new Promise((resolve) => socket.on('close', resolve));
      socket.write('GET /heal');
      await new Promise((resolve) => setImmediate(resolve));
      socket.write('thz HTTP/1.1\r\nHost: x\r\n\r\n');
      await closed;
      expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nok\n$/);
      expect(await exchange(admin.port, 'GET /healthz HTTP/1.1\r\n\r\n')).toMatch(/^HTTP\/1\.1 400 /);
      expect(await exchange(admin.port, 'HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n')).toMatch(
        /^HTTP\/1\.1 200 OK\r\n[\s\S]*content-length: 11\r\nconnection: close\r\n\r\n$/,
      );
    });

    it('refuses a request head larger than 8 KiB with 431', async () => {
      expect(await exchange(admin.port, `GET /healthz HTTP/1.1\r\nX: ${'a'.repeat(9000)}`)).toMatch(/^HTTP\/1\.1 431 /);
    });
  });
});
