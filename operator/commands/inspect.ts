import { CoreV1Api, type KubeConfig, type V1Secret } from '@kubernetes/client-node';
import { ENDPOINT_LABEL, type MtlsEndpoint } from '../api/types.ts';
import { kubeContext, KUBE_FLAGS, OUTPUT_FLAG } from '../cli/context.ts';
import { readEndpoint } from '../cli/endpoint.ts';
import { type InspectSnapshot, inspectReport, inspectTable } from '../cli/inspect-view.ts';
import { outputFormat, render } from '../cli/output.ts';
import { helpText, parseFlags, UsageError } from '../../common/flags.ts';
import { isNotFound } from '../kube/errors.ts';
import { inspectCertificate, parseCertificateBundle, validateKeyPair, verifyIssuedBy } from '../pki/inspect.ts';
import type { x509 } from '../pki/x509.ts';
import { secretText } from '../kube/secret-data.ts';

const FLAGS = { ...KUBE_FLAGS, ...OUTPUT_FLAG } as const;

const pem = (cert: x509.X509Certificate) => cert.toString('pem');

/** Decodes and checks a Secret's certificates (crypto only; the cluster was read before). */
export async function inspectSecret(
  secret: V1Secret,
  endpoint: MtlsEndpoint | undefined,
  now: Date,
): Promise<InspectSnapshot> {
  const certificates: InspectSnapshot['certificates'] = [];
  const parsed = new Map<string, x509.X509Certificate[]>();
  for (const key of Object.keys(secret.data ?? {})
    .filter((k) => k.endsWith('.crt'))
    .sort()) {
    try {
      const bundle = parseCertificateBundle(secretText(secret, key)!);
      parsed.set(key, bundle);
      for (const [index, cert] of bundle.entries())
        certificates.push({ key, index, info: await inspectCertificate(pem(cert)) });
    } catch (err) {
      certificates.push({ key, index: 0, error: (err as Error).message });
    }
  }
  const keyPairs: InspectSnapshot['keyPairs'] = [];
  for (const [cert, key] of [
    ['tls.crt', 'tls.key'],
    ['ca.crt', 'ca.key'],
  ] as const) {
    const certPem = secretText(secret, cert);
    const keyPem = secretText(secret, key);
    if (certPem && keyPem) keyPairs.push({ cert, key, check: validateKeyPair(certPem, keyPem) });
  }
  let signer: InspectSnapshot['signer'];
  const leaf = parsed.get('tls.crt')?.[0];
  if (leaf) {
    const cas = parsed.get('ca.crt') ?? [];
    const reasons: string[] = [];
    for (const ca of cas) {
      const check = await verifyIssuedBy(pem(leaf), pem(ca));
      if (check.ok) {
        signer = { serial: ca.serialNumber.toLowerCase() };
        break;
      }
      reasons.push(`CA ${ca.serialNumber.toLowerCase()}: ${check.reason}`);
    }
    signer ??= {
      problem: cas.length
        ? `no CA of ca.crt signed tls.crt (${reasons.join('; ')})`
        : 'the Secret has no readable ca.crt',
    };
  }
  return { secret, endpoint, certificates, keyPairs, signer, now };
}

async function readSecret(kc: KubeConfig, namespace: string, name: string): Promise<V1Secret> {
  try {
    return await kc.makeApiClient(CoreV1Api).readNamespacedSecret({ namespace, name });
  } catch (err) {
    if (isNotFound(err))
      throw new Error(
        `Secret ${namespace}/${name} not found (kubectl get secrets -n ${namespace} -l app.kubernetes.io/managed-by=mtls-operator lists the operator's)`,
      );
    throw err;
  }
}

export async function run(argv: string[]): Promise<number> {
  const { flags, positionals, help } = parseFlags(FLAGS, argv);
  if (help) {
    process.stdout.write(helpText('inspect', 'secret NAME [-n NS] [-o table|json|yaml]', FLAGS));
    return 0;
  }
  const format = outputFormat(flags.output);
  if (positionals[0] !== 'secret' || positionals.length !== 2) {
    throw new UsageError('expected: inspect secret NAME');
  }
  const { kc, namespace } = kubeContext(flags);
  const secret = await readSecret(kc, namespace, positionals[1]!);
  const endpointName = secret.metadata?.labels?.[ENDPOINT_LABEL];
  const endpoint = endpointName ? await readEndpoint(kc, namespace, endpointName).catch(() => undefined) : undefined;
  const now = new Date();
  const report = inspectReport(await inspectSecret(secret, endpoint, now));
  process.stdout.write(render(format, report, (r) => inspectTable(r, now)));
  // Like a check: scripts can tell a healthy Secret from one with a problem.
  return report.checks.every((c) => c.ok) ? 0 : 1;
}
