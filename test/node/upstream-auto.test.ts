import type { MtlsEndpointSpec } from '../../operator/api/types.ts';
import type { Metadata } from '@grpc/grpc-js';
import { connect as h2connect } from 'node:http2';
import { kubectl, waitFor } from '../support/cluster.ts';
import { healthClient } from '../support/grpc/echo.ts';
import type { PemPair } from '../../operator/pki/issue.ts';
import {
  applyEndpoint,
  applyMock,
  clientView,
  createInjectedNamespace,
  helm,
  helmInstall,
  httpsTo,
  type Json,
  kubectlJson,
  reportNodeFigures,
} from './support/node.ts';

/**
 * `upstreamProtocol: auto` on the real node (issue 17): two endpoints that do not say what their upstream speaks,
 * one in front of an h2c gRPC mock and one in front of the HTTP/1.1 echo mock. Each sidecar probes its upstream;
 * the operator, running in the cluster, reads the finding from the pod's admin port (through the endpoint's
 * NetworkPolicy, with kube-router enforcing it) into status.upstreamProtocol. gRPC and HTTP/2 and HTTP/1.1 clients
 * with the issued credentials reach each mock through the strict Service.
 */
const SYSTEM_NS = 'mtls-system';
const NS = 'auto-team';
const UPSTREAM = 8080;
const STRICT = 8443;

/** An h2c server answering grpc.health.v1.Health/Check with SERVING (08 01 in a gRPC frame); node, no library. */
const GRPC_MOCK = `
  const http2 = require('http2');
  const server = http2.createServer();
  server.on('stream', (stream) => {
    stream.on('data', () => {});
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(Buffer.from([0, 0, 0, 0, 2, 8, 1]));
    });
  });
  server.listen(${UPSTREAM});`;

const json = kubectlJson;
const SERVING = 1;
/** gRPC status 14: no connection to the server (yet). */
const GRPC_UNAVAILABLE = 14;

function endpointSpec(app: string): MtlsEndpointSpec {
  return {
    podSelector: { matchLabels: { app } },
    upstreamPort: UPSTREAM,
    upstreamProtocol: 'auto',
    listeners: [{ mode: 'strict', port: STRICT }],
    clients: [{ name: 'caller' }],
  };
}

function grpcCheck(client: ReturnType<typeof healthClient>) {
  return new Promise<{ status?: number; code?: number; details?: string; metadata?: Metadata }>((resolve) =>
    client.Check({}, { deadline: Date.now() + 10_000 }, (err, res) =>
      resolve(err ? { code: err.code, details: err.details } : { status: res!.status }),
    ),
  );
}

/** One HTTP/2 GET over TLS to a Service address, with the Service's name for SNI. */
function h2Get(ip: string, servername: string, ca: string, client: PemPair, path: string) {
  return new Promise<{ status?: number; body: string; error?: string }>((resolve) => {
    const session = h2connect(`https://${ip}:443`, { ca, cert: client.certPem, key: client.keyPem, servername });
    session.on('error', (err: NodeJS.ErrnoException) => resolve({ body: '', error: err.code ?? err.message }));
    const req = session.request({ ':path': path });
    let status: number | undefined;
    let body = '';
    req.setEncoding('utf8');
    req.on('response', (headers) => (status = Number(headers[':status'])));
    req.on('data', (chunk: string) => (body += chunk));
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ body, error: err.code ?? err.message }));
    req.on('close', () => {
      session.close();
      resolve({ status, body });
    });
    req.setTimeout(10_000, () => req.close());
  });
}

const readyPod = (app: string) =>
  waitFor(
    `a Ready ${app} pod`,
    async () =>
      (await json(['get', 'pods', '-n', NS, '-l', `app=${app}`])).items.find((pod: Json) =>
        pod.status?.conditions?.some((c: Json) => c.type === 'Ready' && c.status === 'True'),
      ),
    { timeoutMs: 180_000, intervalMs: 500 },
  );

const detected = (name: string) =>
  waitFor(
    `status.upstreamProtocol of ${name} to be known`,
    async () => {
      const status = (await json(['get', 'mtls', name, '-n', NS])).status?.upstreamProtocol;
      return status && status.detected !== 'unknown' ? status : undefined;
    },
    { timeoutMs: 120_000, intervalMs: 1_000 },
  );

describe('upstreamProtocol auto on the real node', () => {
  afterAll(async () => {
    await kubectl(['delete', 'namespace', NS, '--wait=false']).catch(() => undefined);
    await helm(['uninstall', 'mtls-operator', '-n', SYSTEM_NS, '--wait']).catch(() => undefined);
  });

  it('finds h2c behind a gRPC mock and http1 behind the echo mock, says so in status, and both serve every client', async () => {
    await helmInstall();
    await createInjectedNamespace(NS);
    await applyEndpoint(NS, 'grpc', endpointSpec('grpc-mock'));
    await applyEndpoint(NS, 'echo', endpointSpec('echo-mock'));
    await applyMock({ name: 'grpc-mock', namespace: NS, port: UPSTREAM, command: ['node', '-e', GRPC_MOCK] });
    await applyMock({ name: 'echo-mock', namespace: NS, port: UPSTREAM });
    const grpcPod = await readyPod('grpc-mock');
    const echoPod = await readyPod('echo-mock');

    const grpcStatus = await detected('grpc');
    expect(grpcStatus).toMatchObject({ requested: 'auto', detected: 'h2c', pod: grpcPod.metadata.name });
    const echoStatus = await detected('echo');
    expect(echoStatus).toMatchObject({ requested: 'auto', detected: 'http1', pod: echoPod.metadata.name });

    const grpc = await waitFor('the grpc client Secret', () => clientView('grpc-client-caller', NS), {
      timeoutMs: 60_000,
    });
    const grpcIp: string = (await json(['get', 'service', 'grpc-strict', '-n', NS])).spec.clusterIP;
    const health = healthClient(grpcIp, 443, `grpc-strict.${NS}.svc`, grpc.trust, grpc.creds);
    // The finding comes from the pod itself; the Service's rules for that pod may lag a moment behind it, and
    // until they are in place a call is UNAVAILABLE. Any other answer ends the wait, and is asserted on.
    const served = await waitFor(
      'the grpc-strict Service to answer a gRPC call',
      async () => {
        const answer = await grpcCheck(health);
        if (answer.code === GRPC_UNAVAILABLE) throw new Error(`UNAVAILABLE: ${answer.details}`);
        return answer;
      },
      { timeoutMs: 60_000, intervalMs: 1_000 },
    );
    health.close();
    expect(served).toMatchObject({ status: SERVING });

    const echoCreds = await waitFor('the echo client Secret', () => clientView('echo-client-caller', NS), {
      timeoutMs: 60_000,
    });
    const echoIp: string = (await json(['get', 'service', 'echo-strict', '-n', NS])).spec.clusterIP;
    const sni = `echo-strict.${NS}.svc`;
    const viaH2 = await h2Get(echoIp, sni, echoCreds.trust, echoCreds.creds, '/from-h2');
    expect(viaH2).toMatchObject({ status: 200 });
    expect(viaH2.body).toContain('CN=caller');
    const viaH1 = await httpsTo(echoIp, sni, echoCreds.trust, echoCreds.creds, '/from-h1');
    expect(viaH1.status).toBe(200);

    reportNodeFigures(
      `upstreamProtocol auto: grpc ${grpcStatus.detected} (${grpcStatus.reason}), echo ${echoStatus.detected} ` +
        `(${echoStatus.reason}); gRPC SERVING, HTTP/2 ${viaH2.status}, HTTP/1.1 ${viaH1.status}`,
    );
  });
});
