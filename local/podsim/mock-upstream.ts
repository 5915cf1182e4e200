import { createServer, type Server } from 'node:http';

/**
 * The built-in mock of `mtls-operator dev`: answers every request with what it saw, so a person can see
 * the identity the sidecar forwarded (X-Client-Verify, X-Forwarded-Client-Cert).
 */
export function startEchoMock(port: number, host = '127.0.0.1'): Promise<Server> {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({
          mock: 'payments-mock',
          method: req.method,
          path: req.url,
          clientVerify: req.headers['x-client-verify'] ?? null,
          clientCert: req.headers['x-forwarded-client-cert'] ?? null,
        }) + '\n',
      );
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        err.code === 'EADDRINUSE'
          ? new Error(
              `port ${host}:${port} is in use; the sample mock needs it (stop what uses it, or pass --namespace with another example)`,
            )
          : err,
      ),
    );
    server.listen(port, host, () => resolve(server));
  });
}

/**
 * A Deployment of the echo mock from the product image (its `echo-mock` command), as `dev` and the tests run it;
 * `command` runs another mock from the same image instead (e.g. a gRPC server as `node -e SCRIPT`).
 */
export function echoMockDeployment(options: {
  name: string;
  namespace: string;
  labels: Record<string, string>;
  image: string;
  port: number;
  command?: string[];
}) {
  const { name, namespace, labels, image, port, command } = options;
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, namespace },
    spec: {
      replicas: 1,
      selector: { matchLabels: labels },
      template: {
        metadata: { labels },
        spec: {
          terminationGracePeriodSeconds: 5,
          containers: [
            {
              name: 'mock',
              image,
              imagePullPolicy: 'IfNotPresent',
              ...(command ? { command } : { args: ['echo-mock', '--port', String(port)] }),
              ports: [{ containerPort: port }],
            },
          ],
        },
      },
    },
  };
}
