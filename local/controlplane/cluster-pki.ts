import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  certificateToPem,
  generateKeyPair,
  issueCertificate,
  type Issuer,
  privateKeyToPem,
  x509,
} from '../../operator/pki/x509.ts';

/** File paths of the throwaway PKI of one local control plane. */
export interface ClusterPkiFiles {
  caCert: string;
  caKey: string;
  apiserverCert: string;
  apiserverKey: string;
  adminCert: string;
  adminKey: string;
  serviceAccountKey: string;
  serviceAccountPub: string;
}

const HOUR = 3_600_000;

/** Writes a cluster CA, the API server's serving certificate, an admin (system:masters) client and SA keys. */
export async function writeClusterPki(dir: string, extraIpAddresses: string[] = []): Promise<ClusterPkiFiles> {
  const files: ClusterPkiFiles = {
    caCert: join(dir, 'ca.crt'),
    caKey: join(dir, 'ca.key'),
    apiserverCert: join(dir, 'apiserver.crt'),
    apiserverKey: join(dir, 'apiserver.key'),
    adminCert: join(dir, 'admin.crt'),
    adminKey: join(dir, 'admin.key'),
    serviceAccountKey: join(dir, 'sa.key'),
    serviceAccountPub: join(dir, 'sa.pub'),
  };
  const notBefore = new Date(Date.now() - HOUR);
  const notAfter = new Date(Date.now() + 24 * 365 * HOUR);

  const caKeys = await generateKeyPair('ECDSA-P256');
  const caCert = await issueCertificate(
    {
      subject: 'CN=mtls-operator-local-control-plane-ca',
      publicKey: caKeys.publicKey,
      notBefore,
      notAfter,
      isCA: true,
    },
    { selfSigned: caKeys.privateKey },
  );
  const ca: Issuer = { certificate: caCert, privateKey: caKeys.privateKey };

  const serverKeys = await generateKeyPair('ECDSA-P256');
  const serverCert = await issueCertificate(
    {
      subject: 'CN=kube-apiserver',
      publicKey: serverKeys.publicKey,
      notBefore,
      notAfter,
      serverAuth: true,
      dnsNames: ['localhost', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc'],
      ipAddresses: ['127.0.0.1', '10.0.0.1', ...extraIpAddresses],
    },
    ca,
  );
  const adminKeys = await generateKeyPair('ECDSA-P256');
  const adminCert = await issueCertificate(
    { subject: 'CN=admin, O=system:masters', publicKey: adminKeys.publicKey, notBefore, notAfter, clientAuth: true },
    ca,
  );
  const saKeys = await generateKeyPair('ECDSA-P256');
  const saPub = x509.PemConverter.encode(await crypto.subtle.exportKey('spki', saKeys.publicKey), 'PUBLIC KEY');

  await Promise.all([
    writeFile(files.caCert, certificateToPem(caCert)),
    writeFile(files.caKey, await privateKeyToPem(caKeys.privateKey), { mode: 0o600 }),
    writeFile(files.apiserverCert, certificateToPem(serverCert)),
    writeFile(files.apiserverKey, await privateKeyToPem(serverKeys.privateKey), { mode: 0o600 }),
    writeFile(files.adminCert, certificateToPem(adminCert)),
    writeFile(files.adminKey, await privateKeyToPem(adminKeys.privateKey), { mode: 0o600 }),
    writeFile(files.serviceAccountKey, await privateKeyToPem(saKeys.privateKey), { mode: 0o600 }),
    writeFile(files.serviceAccountPub, saPub + '\n'),
  ]);
  return files;
}
