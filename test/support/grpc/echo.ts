import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PemPair } from '../../../operator/pki/issue.ts';

/**
 * The gRPC mock for the tests (echo.proto), served as h2c behind the sidecar, and a client of it. Each reply
 * carries the identity metadata the sidecar set (x-client-verify, x-forwarded-client-cert, x-forwarded-for).
 * The standard gRPC health service (grpc.health.v1.Health, for grpc-health-probe) is served too.
 */
const here = dirname(fileURLToPath(import.meta.url));
const definition = loadSync(join(here, 'echo.proto'), { keepCase: false, defaults: true });
const healthDefinition = loadSync(join(here, 'health.proto'), { keepCase: false, defaults: true });

interface EchoRequest {
  text: string;
  count: number;
  delayMs: number;
  failCode: number;
}
export interface EchoReply {
  text: string;
  clientVerify: string;
  xfcc: string;
  forwardedFor: string;
}

type ServiceCtor = grpc.ServiceClientConstructor;
const loaded = grpc.loadPackageDefinition(definition) as unknown as { mtls: { test: { Echo: ServiceCtor } } };
const health = grpc.loadPackageDefinition(healthDefinition) as unknown as {
  grpc: { health: { v1: { Health: ServiceCtor } } };
};
export const EchoService = loaded.mtls.test.Echo;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const first = (metadata: grpc.Metadata, key: string) => String(metadata.get(key)[0] ?? '');

function reply(text: string, metadata: grpc.Metadata): EchoReply {
  return {
    text,
    clientVerify: first(metadata, 'x-client-verify'),
    xfcc: first(metadata, 'x-forwarded-client-cert'),
    forwardedFor: first(metadata, 'x-forwarded-for'),
  };
}

export interface EchoServer {
  port: number;
  /** Calls the mock saw cancelled by its client (the sidecar passing on a client's cancel or deadline). */
  cancelled: string[];
  /** Text of every request that reached the mock. */
  seen: string[];
  stop(): Promise<void>;
}

export async function startEchoServer(): Promise<EchoServer> {
  const server = new grpc.Server();
  const cancelled: string[] = [];
  const seen: string[] = [];
  const fail = (req: EchoRequest): grpc.ServiceError | null =>
    req.failCode
      ? Object.assign(new Error(`failing as asked: ${req.failCode}`), {
          code: req.failCode,
          details: `failing as asked: ${req.failCode}`,
          metadata: new grpc.Metadata(),
        })
      : null;
  server.addService(EchoService.service, {
    async Unary(call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, done: grpc.sendUnaryData<EchoReply>) {
      seen.push(call.request.text);
      call.on('cancelled', () => cancelled.push(call.request.text));
      if (call.request.delayMs) await sleep(call.request.delayMs);
      if (call.cancelled) return;
      const error = fail(call.request);
      if (error) return done(error);
      done(null, reply(call.request.text, call.metadata));
    },
    async ServerStream(call: grpc.ServerWritableStream<EchoRequest, EchoReply>) {
      seen.push(call.request.text);
      call.on('cancelled', () => cancelled.push(call.request.text));
      for (let i = 0; i < call.request.count && !call.cancelled; i++) {
        if (call.request.delayMs) await sleep(call.request.delayMs);
        call.write(reply(`${call.request.text}-${i}`, call.metadata));
      }
      if (!call.cancelled) call.end();
    },
    ClientStream(call: grpc.ServerReadableStream<EchoRequest, EchoReply>, done: grpc.sendUnaryData<EchoReply>) {
      const texts: string[] = [];
      call.on('data', (req: EchoRequest) => texts.push(req.text));
      call.on('end', () => {
        seen.push(...texts);
        done(null, reply(texts.join(','), call.metadata));
      });
    },
    Bidi(call: grpc.ServerDuplexStream<EchoRequest, EchoReply>) {
      call.on('data', (req: EchoRequest) => {
        seen.push(req.text);
        call.write(reply(req.text.toUpperCase(), call.metadata));
      });
      call.on('end', () => call.end());
    },
  });
  server.addService(health.grpc.health.v1.Health.service, {
    Check(_call: unknown, done: grpc.sendUnaryData<{ status: string }>) {
      done(null, { status: 'SERVING' });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, bound) =>
      err ? reject(err) : resolve(bound),
    ),
  );
  return {
    port,
    cancelled,
    seen,
    stop: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}

export type EchoClient = grpc.Client & {
  Unary(
    req: Partial<EchoRequest>,
    options: grpc.CallOptions,
    cb: grpc.requestCallback<EchoReply>,
  ): grpc.ClientUnaryCall;
  ServerStream(req: Partial<EchoRequest>, options?: grpc.CallOptions): grpc.ClientReadableStream<EchoReply>;
  ClientStream(cb: grpc.requestCallback<EchoReply>): grpc.ClientWritableStream<Partial<EchoRequest>>;
  Bidi(): grpc.ClientDuplexStream<Partial<EchoRequest>, EchoReply>;
};

/** A client over TLS to the sidecar, presenting `client` when given (the issued tls.crt and tls.key). */
export function echoClient(port: number, ca: string, client?: PemPair): EchoClient {
  const credentials = grpc.credentials.createSsl(
    Buffer.from(ca),
    client ? Buffer.from(client.keyPem) : null,
    client ? Buffer.from(client.certPem) : null,
  );
  return new EchoService(`127.0.0.1:${port}`, credentials, {
    'grpc.ssl_target_name_override': 'localhost',
    'grpc.default_authority': 'localhost',
  }) as unknown as EchoClient;
}

/** A unary call as a promise: the reply, or the gRPC status code and details it failed with. */
export function unary(
  client: EchoClient,
  req: Partial<EchoRequest>,
  deadlineMs = 10_000,
): Promise<{ reply?: EchoReply; code?: number; details?: string }> {
  return new Promise((resolve) => {
    client.Unary(req, { deadline: Date.now() + deadlineMs }, (err, res) =>
      resolve(err ? { code: err.code, details: err.details } : { reply: res }),
    );
  });
}

export type HealthClient = grpc.Client & {
  Check(
    req: { service?: string },
    options: grpc.CallOptions,
    cb: grpc.requestCallback<{ status: number }>, // decoded enums are numbers (SERVING is 1)
  ): grpc.ClientUnaryCall;
};

/** A grpc.health.v1 client over TLS to `host:port`, naming the server `serverName`, presenting `client` if given. */
export function healthClient(
  host: string,
  port: number,
  serverName: string,
  ca: string,
  client?: PemPair,
): HealthClient {
  const credentials = grpc.credentials.createSsl(
    Buffer.from(ca),
    client ? Buffer.from(client.keyPem) : null,
    client ? Buffer.from(client.certPem) : null,
  );
  return new health.grpc.health.v1.Health(`${host}:${port}`, credentials, {
    'grpc.ssl_target_name_override': serverName,
    'grpc.default_authority': serverName,
  }) as unknown as HealthClient;
}
