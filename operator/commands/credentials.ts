import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { clientSecretName, serviceName } from '../api/types.ts';
import { helpText, parseFlags, UsageError } from '../../common/flags.ts';
import { isNotFound } from '../kube/errors.ts';
import { kubeContext, KUBE_FLAGS, OUTPUT_FLAG } from '../cli/context.ts';
import { outputFormat, render } from '../cli/output.ts';

const FLAGS = {
  ...KUBE_FLAGS,
  out: { type: 'string', value: 'DIR', help: 'folder to write tls.crt, tls.key and ca.crt into', default: '.' },
  ...OUTPUT_FLAG,
} as const;

export interface WrittenCredentials {
  dir: string;
  cert: string;
  key: string;
  ca: string;
}

/** Writes a client's tls.crt, tls.key (mode 0600) and ca.crt from its Secret into `dir`. */
export async function writeCredentials(
  kc: KubeConfig,
  namespace: string,
  endpoint: string,
  client: string,
  dir: string,
): Promise<WrittenCredentials> {
  const name = clientSecretName(endpoint, client);
  let data: Record<string, string>;
  try {
    data = (await kc.makeApiClient(CoreV1Api).readNamespacedSecret({ namespace, name })).data ?? {};
  } catch (err) {
    if (isNotFound(err)) {
      throw new Error(
        `Secret ${namespace}/${name} not found: is "${client}" listed in spec.clients of MtlsEndpoint ${namespace}/${endpoint}, and is it Ready? (kubectl get mtls -n ${namespace})`,
      );
    }
    throw err;
  }
  for (const key of ['tls.crt', 'tls.key', 'ca.crt']) {
    if (!data[key])
      throw new Error(`Secret ${namespace}/${name} has no ${key}; the operator repairs it on its next pass`);
  }
  const out = resolve(dir);
  await mkdir(out, { recursive: true });
  const files = { cert: join(out, 'tls.crt'), key: join(out, 'tls.key'), ca: join(out, 'ca.crt') };
  await writeFile(files.cert, Buffer.from(data['tls.crt']!, 'base64'));
  await writeFile(files.key, Buffer.from(data['tls.key']!, 'base64'), { mode: 0o600 });
  await chmod(files.key, 0o600);
  await writeFile(files.ca, Buffer.from(data['ca.crt']!, 'base64'));
  return { dir: out, ...files };
}

export function curlLine(creds: WrittenCredentials, url: string, resolveTo?: string): string {
  const host = new URL(url);
  const resolveArg = resolveTo ? ` --resolve ${host.hostname}:${host.port || 443}:${resolveTo}` : '';
  return `curl --cert ${creds.cert} --key ${creds.key} --cacert ${creds.ca}${resolveArg} ${url}`;
}

export async function run(argv: string[]): Promise<number> {
  const { flags, positionals, help } = parseFlags(FLAGS, argv);
  if (help) {
    process.stdout.write(helpText('credentials', 'ENDPOINT CLIENT [-n NS] [--out DIR] [-o table|json|yaml]', FLAGS));
    return 0;
  }
  const format = outputFormat(flags.output);
  const [endpoint, client] = positionals;
  if (!endpoint || !client || positionals.length > 2) throw new UsageError('expected two arguments: ENDPOINT CLIENT');
  const { kc, namespace } = kubeContext(flags);
  const creds = await writeCredentials(kc, namespace, endpoint, client, flags.out);
  const service = serviceName(endpoint, 'strict');
  const url = `https://${service}.${namespace}.svc/`;
  const report = {
    ...creds,
    curl: curlLine(creds, url),
    portForward: `kubectl -n ${namespace} port-forward svc/${service} 8443:443`,
    curlThroughPortForward: curlLine(creds, url.replace('.svc/', '.svc:8443/'), '127.0.0.1'),
  };
  process.stdout.write(
    render(
      format,
      report,
      (r) =>
        `Wrote ${r.cert}, ${r.key} (0600) and ${r.ca}.\n` +
        `From inside the cluster:\n  ${r.curl}\n` +
        `From your machine, through a port-forward:\n  ${r.portForward} &\n  ${r.curlThroughPortForward}\n`,
    ),
  );
  return 0;
}
