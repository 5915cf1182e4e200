import { request as httpsRequest } from 'node:https';
import { connect } from 'node:tls';
import type { Mode } from '../../operator/api/types.ts';
import { issueCA, issueClient, type PemPair } from '../../operator/pki/issue.ts';

/**
 * `accepted`, or how the sidecar refused: `refused (400)` / `refused (403)` is its answer with the reason
 * (sidecar/refusal-answer.ts); `refused (no answer)` is a closed connection or a TLS alert.
 */
type Outcome = 'accepted' | `refused (${number | 'no answer' | 'not the mock'})`;

/** One request over a fresh TLS connection; what the mock saw, or how it was refused. */
function probe(
  address: string,
  port: number,
  servername: string,
  ca: string,
  cert?: Pick<PemPair, 'certPem' | 'keyPem'>,
): Promise<{ outcome: Outcome; verify?: string }> {
  return new Promise((resolve) => {
    const req = httpsRequest(
      {
        host: address,
        port,
        servername,
        path: '/demo',
        ca,
        cert: cert?.certPem,
        key: cert?.keyPem,
        agent: false,
        timeout: 5_000,
      },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => {
          if (res.statusCode !== 200) return resolve({ outcome: `refused (${res.statusCode ?? 0})` });
          try {
            resolve({ outcome: 'accepted', verify: JSON.parse(body).clientVerify });
          } catch {
            resolve({ outcome: 'refused (not the mock)' });
          }
        });
      },
    );
    req.on('error', () => resolve({ outcome: 'refused (no answer)' }));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

/** A client certificate from a CA nobody trusts, for the table's third column. */
export async function strangerCertificate(client: string): Promise<PemPair> {
  const now = new Date();
  const day = 86_400_000;
  const ca = await issueCA({
    endpoint: 'stranger',
    namespace: 'elsewhere',
    algorithm: 'ECDSA-P256',
    validityMs: day,
    now,
  });
  return issueClient({
    ca,
    endpoint: 'stranger',
    namespace: 'elsewhere',
    client,
    algorithm: 'ECDSA-P256',
    validityMs: day,
    now,
  });
}

export interface TableRow {
  mode: Mode;
  /** The listener's own port, shown in the table. */
  port: number;
  /** Where the request goes: the Service's ClusterIP, a forwarded port, or the simulated pod's loopback. */
  address: string;
  targetPort: number;
  servername: string;
}

function answersTls(row: TableRow): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(
      { host: row.address, port: row.targetPort, servername: row.servername, rejectUnauthorized: false },
      () => {
        resolve(true);
        socket.destroy();
      },
    );
    socket.on('error', () => resolve(false));
    socket.on('close', () => resolve(false));
    socket.setTimeout(2_000, () => socket.destroy(new Error('timeout')));
  });
}

/**
 * Waits until every listener completes a TLS handshake: a new Service answers a moment after its pod is
 * Ready (kube-proxy programs it), and the table should show the modes, not that moment.
 */
export async function waitForListeners(rows: TableRow[], timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const row of rows) {
    while (!(await answersTls(row))) {
      if (Date.now() > deadline)
        throw new Error(
          `${row.servername} (${row.address}:${row.targetPort}) did not answer within ${timeoutMs / 1000}s`,
        );
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

const EXPECTED: Record<Mode, string[]> = {
  standard: ['accepted', 'accepted', 'accepted'],
  flexible: ['accepted', 'accepted (mTLS)', 'refused (400)'],
  strict: ['refused (400)', 'accepted (mTLS)', 'refused (400)'],
};

/** Sends the table's real requests and prints it; false when a cell differs from the README's mode table. */
export async function printModeTable(
  say: (line?: string) => void,
  rows: TableRow[],
  ca: string,
  client: string,
  issued: Pick<PemPair, 'certPem' | 'keyPem'>,
  stranger: PemPair,
): Promise<boolean> {
  const cols = ['no certificate', `client "${client}"`, 'unknown-CA certificate'];
  say(`  ${'listener'.padEnd(18)}${cols.map((c) => c.padEnd(26)).join('')}`);
  let ok = true;
  for (const row of rows) {
    const cells: string[] = [];
    for (const cert of [undefined, issued, stranger]) {
      const result = await probe(row.address, row.targetPort, row.servername, ca, cert);
      cells.push(result.outcome === 'accepted' && result.verify === 'SUCCESS' ? 'accepted (mTLS)' : result.outcome);
    }
    if (cells.join() !== EXPECTED[row.mode].join()) ok = false;
    say(`  ${`${row.mode} :${row.port}`.padEnd(18)}${cells.map((c) => c.padEnd(26)).join('')}`);
  }
  return ok;
}
