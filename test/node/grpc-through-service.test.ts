import type { Metadata } from '@grpc/grpc-js';
import { kubectl, waitFor } from '../support/cluster.ts';
import { ensureGoTool } from '../support/go-tools.ts';
import { healthClient } from '../support/grpc/echo.ts';
import { pemFiles } from '../support/openssl.ts';
import {
  applyEndpoint,
  applyMock,
  clientView,
  createInjectedNamespace,
  helm,
  helmInstall,
  type Json,
  kubectlJson,
  reportNodeFigures,
} from './support/node.ts';
import { execFile } from 'node:child_process';

/**
 * gRPC through an injected sidecar on the real node (issue 17): a gRPC mock speaking h2c behind an endpoint with
 * `upstreamProtocol: h2c`, called through the strict Service by @grpc/grpc-js and by grpc-health-probe (Go).
 */
const SYSTEM_NS = 'mtls-system';
const NS = 'grpc-team';
const UPSTREAM = 8080;
const STRICT = 8443;

/**
 * The mock, run with node in the product image (which has no gRPC library): an h2c server answering
 * grpc.health.v1.Health/Check with SERVING (the protobuf message 08 01 in a gRPC frame) and the identity
 * headers the sidecar set echoed back as response metadata.
 */
const GRPC_MOCK = `
  const http2 = require('http2');
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    stream.on('data', () => {});
    stream.on('end', () => {
      const known = headers[':path'] === '/grpc.health.v1.Health/Check';
      stream.respond({ ':status': 200, 'content-type': 'application/grpc',
        'x-seen-client-verify': String(headers['x-client-verify'] || ''),
        'x-seen-xfcc': String(headers['x-forwarded-client-cert'] || '') }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers(known ? { 'grpc-status': '0' } : { 'grpc-status': '12' }));
      stream.end(known ? Buffer.from([0, 0, 0, 0, 2, 8, 1]) : undefined);
    });
  });
  server.listen(${UPSTREAM});`;

const json = kubectlJson;
/** grpc.health.v1's ServingStatus.SERVING: proto-loader (without `enums: String`) gives enums as their numbers. */
const SERVING = 1;

function check(client: ReturnType<typeof healthClient>) {
  return new Promise<{ status?: number; code?: number; details?: string; metadata?: Metadata }>((resolve) => {
    let metadata: Metadata | undefined;
    const call = client.Check({}, { deadline: Date.now() + 10_000 }, (err, res) =>
      resolve(err ? { code: err.code, details: err.details } : { status: res!.status, metadata }),
    );
    call.on('metadata', (m: Metadata) => (metadata = m));
  });
}

describe('gRPC through an injected sidecar and its Service', () => {
  afterAll(async () => {
    await kubectl(['delete', 'namespace', NS, '--wait=false']).catch(() => undefined);
    await helm(['uninstall', 'mtls-operator', '-n', SYSTEM_NS, '--wait']).catch(() => undefined);
  });

  it('grpc-js and grpc-health-probe with the issued credentials reach the mock; no certificate is UNAUTHENTICATED', async () => {
    await helmInstall();
    await createInjectedNamespace(NS);
    await applyEndpoint(NS, 'grpc', {
      podSelector: { matchLabels: { app: 'grpc-mock' } },
      upstreamPort: UPSTREAM,
      upstreamProtocol: 'h2c',
      listeners: [{ mode: 'strict', port: STRICT }],
      clients: [{ name: 'caller' }],
    });
    await applyMock({ name: 'grpc-mock', namespace: NS, port: UPSTREAM, command: ['node', '-e', GRPC_MOCK] });
    await waitFor(
      'a Ready grpc-mock pod',
      async () =>
        (await json(['get', 'pods', '-n', NS, '-l', 'app=grpc-mock'])).items.find((pod: Json) =>
          pod.status?.conditions?.some((c: Json) => c.type === 'Ready' && c.status === 'True'),
        ),
      { timeoutMs: 180_000, intervalMs: 500 },
    );
    const { creds, trust } = await waitFor('the client Secret', () => clientView('grpc-client-caller', NS), {
      timeoutMs: 60_000,
    });
    const ip: string = (await json(['get', 'service', 'grpc-strict', '-n', NS])).spec.clusterIP;
    const sni = `grpc-strict.${NS}.svc`;

    const withCert = healthClient(ip, 443, sni, trust, creds);
    const ok = await waitFor(
      'the strict Service to answer gRPC',
      async () => {
        const result = await check(withCert);
        if (result.status !== SERVING) throw new Error(`gRPC answered ${JSON.stringify(result)}`);
        return result;
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    withCert.close();
    expect(ok.metadata?.get('x-seen-client-verify')).toEqual(['SUCCESS']);
    expect(String(ok.metadata?.get('x-seen-xfcc')[0])).toContain('Subject="CN=caller"');

    const anonymous = healthClient(ip, 443, sni, trust);
    const refused = await check(anonymous);
    anonymous.close();
    expect(refused.code).toBe(16); // UNAUTHENTICATED
    expect(refused.details).toMatch(/no_certificate/);

    const probe = await ensureGoTool('grpc-health-probe');
    const files = pemFiles({ 'ca.pem': trust, 'c.pem': creds.certPem, 'k.pem': creds.keyPem });
    const probed = await new Promise<{ code: number; out: string }>((resolve) =>
      execFile(
        probe,
        [
          '-addr',
          `${ip}:443`,
          '-tls',
          '-tls-ca-cert',
          files['ca.pem']!,
          '-tls-client-cert',
          files['c.pem']!,
          '-tls-client-key',
          files['k.pem']!,
          '-tls-server-name',
          sni,
        ],
        { timeout: 20_000 },
        (err, stdout, stderr) =>
          resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
      ),
    );
    expect(probed).toEqual({ code: 0, out: expect.stringContaining('status: SERVING') });
    reportNodeFigures(
      `gRPC through the strict Service: grpc-js SERVING, no certificate UNAUTHENTICATED, grpc-health-probe exit ${probed.code}`,
    );
  });
});
