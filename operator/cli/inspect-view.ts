import type { V1Secret } from '@kubernetes/client-node';
import {
  CERTIFICATE_LABEL,
  CLIENT_LABEL,
  ENDPOINT_LABEL,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  type MtlsEndpoint,
} from '../api/types.ts';
import type { CertificateInfo, Check } from '../pki/inspect.ts';
import { relative, table } from './output.ts';

/**
 * What `inspect secret NAME` reads and works out before rendering: the Secret, its endpoint (when it names
 * one and it exists), every certificate of its `*.crt` keys decoded, and the checks already run (the
 * command runs them: they need crypto, not the cluster). Private keys are only ever checked against their
 * certificate, never shown.
 */
export interface InspectSnapshot {
  secret: V1Secret;
  endpoint?: MtlsEndpoint;
  certificates: { key: string; index: number; info?: CertificateInfo; error?: string }[];
  /** `tls.key` matches `tls.crt`, `ca.key` matches `ca.crt`. */
  keyPairs: { cert: string; key: string; check: Check }[];
  /** The first certificate of `tls.crt` against each CA of `ca.crt`: which one signed it, if any. */
  signer?: { serial: string } | { problem: string };
  now: Date;
}

export interface InspectCheck {
  check: string;
  ok: boolean;
  message: string;
}

export interface InspectReport {
  namespace: string;
  name: string;
  type: string;
  managed: boolean;
  endpoint?: string;
  certificate?: string;
  client?: string;
  keys: string[];
  certificates: (Omit<CertificateInfo, 'notBefore' | 'notAfter'> & {
    key: string;
    notBefore: string;
    notAfter: string;
  })[];
  checks: InspectCheck[];
}

export function inspectReport(s: InspectSnapshot): InspectReport {
  const meta = s.secret.metadata ?? {};
  const labels = meta.labels ?? {};
  const endpointName = labels[ENDPOINT_LABEL];
  const kind = labels[CERTIFICATE_LABEL];
  const checks: InspectCheck[] = [];
  for (const bad of s.certificates.filter((c) => c.error)) {
    checks.push({ check: `${bad.key} parses`, ok: false, message: bad.error! });
  }
  for (const pair of s.keyPairs) {
    checks.push({
      check: `${pair.key} matches ${pair.cert}`,
      ok: pair.check.ok,
      message: pair.check.ok ? 'the private key belongs to the certificate' : pair.check.reason,
    });
  }
  const leaf = s.certificates.find((c) => c.key === 'tls.crt' && c.index === 0)?.info;
  const dated = leaf ?? s.certificates.find((c) => c.key === 'ca.crt' && c.index === 0)?.info;
  if (dated) {
    const ok = dated.notBefore <= s.now && s.now < dated.notAfter;
    checks.push({
      check: 'within its validity',
      ok,
      message: ok
        ? `valid until ${dated.notAfter.toISOString()} (${relative(dated.notAfter, s.now)})`
        : dated.notAfter <= s.now
          ? `expired ${relative(dated.notAfter, s.now)}`
          : `not valid before ${dated.notBefore.toISOString()}`,
    });
  }
  const status = s.endpoint?.status;
  const endpointCas = [status?.ca?.serialNumber, status?.caRollover?.newCASerialNumber].filter(Boolean);
  if (leaf && s.signer) {
    if ('problem' in s.signer) {
      checks.push({ check: 'chain', ok: false, message: s.signer.problem });
    } else if (!s.endpoint) {
      checks.push({
        check: 'chain',
        ok: true,
        message: `signed by CA ${s.signer.serial} of ca.crt${endpointName ? ` (MtlsEndpoint ${endpointName} not found to compare)` : ''}`,
      });
    } else {
      const ok = endpointCas.includes(s.signer.serial);
      checks.push({
        check: 'chain',
        ok,
        message: ok
          ? `signed by CA ${s.signer.serial}, ${s.signer.serial === status?.ca?.serialNumber ? "the endpoint's current CA" : 'the CA the endpoint is rolling over to'}`
          : `signed by CA ${s.signer.serial}, which is not the endpoint's CA (${endpointCas.join(', ') || 'none in its status yet'}): the Secret is from an older CA or was replaced`,
      });
    }
  }
  if (leaf && status?.revokedSerials?.includes(leaf.serial)) {
    checks.push({ check: 'not revoked', ok: false, message: `serial ${leaf.serial} is in the endpoint's CRL` });
  }
  if (leaf && s.endpoint && kind === 'client') {
    const current = status?.clients?.find((c) => c.name === labels[CLIENT_LABEL])?.serialNumber;
    if (current && current !== leaf.serial) {
      checks.push({
        check: 'current',
        ok: false,
        message: `the endpoint's status names serial ${current} for this client: the controller has not caught up, or the Secret was edited`,
      });
    }
  }
  return {
    namespace: meta.namespace ?? '',
    name: meta.name ?? '',
    type: s.secret.type ?? '',
    managed: labels[MANAGED_BY_LABEL] === MANAGED_BY_VALUE,
    ...(endpointName ? { endpoint: endpointName } : {}),
    ...(kind ? { certificate: kind } : {}),
    ...(labels[CLIENT_LABEL] ? { client: labels[CLIENT_LABEL] } : {}),
    keys: Object.keys(s.secret.data ?? {}).sort(),
    certificates: s.certificates
      .filter((c) => c.info)
      .map(({ key, info }) => ({
        key,
        ...info!,
        notBefore: info!.notBefore.toISOString(),
        notAfter: info!.notAfter.toISOString(),
      })),
    checks,
  };
}

export function inspectTable(report: InspectReport, now: Date): string {
  const owner = report.endpoint
    ? `MtlsEndpoint ${report.endpoint}, ${report.certificate === 'client' ? `client ${report.client}` : `${report.certificate ?? 'unknown'} certificate`}`
    : 'no MtlsEndpoint (not labelled mtls.operator.dev/endpoint)';
  const parts = [
    `Secret ${report.namespace}/${report.name} (${report.type})\n` +
      `Belongs to: ${owner}${report.managed ? '' : '; not managed by mtls-operator'}\n` +
      `Keys: ${report.keys.join(', ')}\n`,
  ];
  for (const c of report.certificates) {
    const names = [
      ...c.dnsNames.map((n) => `DNS:${n}`),
      ...c.ipAddresses.map((n) => `IP:${n}`),
      ...c.uris.map((n) => `URI:${n}`),
    ];
    parts.push(
      `${c.key}: ${c.subject}${c.isCA ? ' (CA)' : ''}\n` +
        `  issuer:      ${c.issuer}\n` +
        `  serial:      ${c.serial}\n` +
        `  valid:       ${c.notBefore} to ${c.notAfter} (expires ${relative(c.notAfter, now)})\n` +
        (names.length ? `  names:       ${names.join(', ')}\n` : '') +
        (c.extendedKeyUsages.length ? `  usages:      ${c.extendedKeyUsages.join(', ')}\n` : '') +
        `  key:         ${c.keyAlgorithm ?? 'unknown'}\n` +
        `  sha256:      ${c.fingerprintSha256}\n`,
    );
  }
  parts.push(
    'Checks:\n' +
      table(
        ['CHECK', 'RESULT', 'DETAIL'],
        report.checks.map((c) => [c.check, c.ok ? 'ok' : 'PROBLEM', c.message]),
        '  ',
      ),
  );
  return parts.join('\n');
}
