import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SIDECAR_CONTAINER } from '../../operator/api/injection.ts';
import { EndpointController } from '../../operator/controller/manager.ts';
import { readSidecarStatus, SIDECAR_STATUS_MAX_BYTES } from '../../operator/controller/upstream-protocol-status.ts';
import { OperatorMetrics } from '../../operator/metrics.ts';
import { parseSidecarConfig } from '../../sidecar/flags.ts';
import { type RunningSidecar, startSidecar } from '../../sidecar/sidecar.ts';
import { createTestNamespace, deleteTestNamespace, kubeConfig, kubectl, waitFor } from '../support/cluster.ts';
import { core, createEndpoint, getEndpoint, installCrd } from '../support/endpoints.ts';
import { startH2cUpstream } from '../support/h2-fixtures.ts';
import { makePki, tlsDir } from '../support/tls-fixtures.ts';

/**
 * status.upstreamProtocol end to end without a node: a real sidecar (`--upstream-protocol auto`, admin port on
 * loopback) in front of a real h2c server, and a pod object whose status (set through the status subresource, as
 * kubelet would) says it is ready at 127.0.0.1. The controller reads that sidecar's /status and writes what it
 * found into the MtlsEndpoint.
 */
describe('controller: status.upstreamProtocol from a ready pod sidecar', () => {
  let namespace: string;
  let controller: EndpointController;
  let sidecar: RunningSidecar;
  let closeUpstream: () => void;

  beforeAll(async () => {
    await installCrd();
    namespace = await createTestNamespace('ctrl-upproto');
    const up = await startH2cUpstream();
    closeUpstream = () => up.server.close();
    const dir = await tlsDir(await makePki());
    sidecar = await startSidecar(
      parseSidecarConfig([
        '--listen',
        'strict=0',
        '--upstream',
        `127.0.0.1:${up.port}`,
        '--upstream-protocol',
        'auto',
        '--tls-dir',
        dir,
        '--admin',
        '127.0.0.1:0',
      ]),
    );
    controller = new EndpointController({
      kubeConfig: kubeConfig(),
      metrics: new OperatorMetrics(),
      namespace,
      resyncMs: 2_000,
      sidecarAdminPort: sidecar.adminPort,
    });
    await controller.start();
  });
  afterAll(async () => {
    await controller?.stop();
    await sidecar?.stop(500);
    closeUpstream?.();
    await deleteTestNamespace(namespace);
  });

  const protocolStatus = async () => (await getEndpoint(namespace, 'grpc')).status?.upstreamProtocol;

  it('says unknown until a pod is ready, then what its sidecar found; drops the field when auto is no longer asked', async () => {
    await createEndpoint(namespace, 'grpc', {
      podSelector: { matchLabels: { app: 'grpc-mock' } },
      upstreamPort: 9090,
      upstreamProtocol: 'auto',
      listeners: [{ mode: 'strict', port: 8443 }],
    });
    await waitFor('status.upstreamProtocol unknown', async () =>
      (await protocolStatus())?.reason === 'no ready pod runs the sidecar yet' ? true : undefined,
    );
    expect(await protocolStatus()).toEqual({
      requested: 'auto',
      detected: 'unknown',
      reason: 'no ready pod runs the sidecar yet',
    });

    await core().createNamespacedPod({
      namespace,
      body: {
        metadata: { name: 'grpc-0', labels: { app: 'grpc-mock' } },
        spec: {
          initContainers: [{ name: SIDECAR_CONTAINER, image: 'mtls-operator', restartPolicy: 'Always' }],
          containers: [{ name: 'mock', image: 'mock' }],
        },
      },
    });
    await kubectl([
      'patch',
      'pod',
      'grpc-0',
      '-n',
      namespace,
      '--subresource=status',
      '--type=merge',
      '-p',
      JSON.stringify({
        status: {
          phase: 'Running',
          podIP: '127.0.0.1',
          podIPs: [{ ip: '127.0.0.1' }],
          conditions: [{ type: 'Ready', status: 'True' }],
        },
      }),
    ]);
    const found = await waitFor('status.upstreamProtocol h2c', async () => {
      const status = await protocolStatus();
      return status?.detected === 'h2c' ? status : undefined;
    });
    expect(found).toMatchObject({ requested: 'auto', detected: 'h2c', pod: 'grpc-0' });
    expect(found.reason).toContain('SETTINGS');
    expect(found.probedAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

    await kubectl([
      'patch',
      'mtls',
      'grpc',
      '-n',
      namespace,
      '--type=merge',
      '-p',
      JSON.stringify({ spec: { upstreamProtocol: 'h2c' } }),
    ]);
    await waitFor('status.upstreamProtocol gone', async () =>
      (await protocolStatus()) === undefined ? true : undefined,
    );
  });

  it("reads a sidecar's /status bounded: an oversized answer and a closed port are errors that say where", async () => {
    const big: Server = createServer((_req, res) => res.end('x'.repeat(SIDECAR_STATUS_MAX_BYTES + 1)));
    await new Promise<void>((resolve) => big.listen(0, '127.0.0.1', resolve));
    const port = (big.address() as AddressInfo).port;
    expect(await readSidecarStatus('127.0.0.1', port)).toEqual({
      error: `answer larger than ${SIDECAR_STATUS_MAX_BYTES} bytes from 127.0.0.1:${port}`,
    });
    await new Promise((resolve) => big.close(resolve));
    expect(await readSidecarStatus('127.0.0.1', port)).toEqual({ error: `127.0.0.1:${port}: ECONNREFUSED` });
  });
});
