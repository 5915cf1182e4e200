import * as k8s from '@kubernetes/client-node';
import { X509Certificate } from 'node:crypto';
import { lstatSync, mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { readFile, readlink } from 'node:fs/promises';
import type { Server } from 'node:http';
import { Agent, request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import {
  NO_API_TOKEN_VOLUME,
  SERVICE_ACCOUNT_TOKEN_DIR,
  SIDECAR_ADMIN_PORT,
  SIDECAR_VOLUME,
  sidecarContainerOf,
} from '../../operator/api/injection.ts';
import { type MtlsEndpoint } from '../../operator/api/types.ts';
import { freePort } from '../../local/controlplane/local-control-plane.ts';
import { LEADER_ELECTION_DEFAULTS } from '../../operator/kube/leader-election.ts';
import { runInjectedPod, type SimulatedPod } from '../../local/podsim/pod-runner.ts';
import { writeSecretVolume } from '../../sidecar/secret-volume.ts';
import { createTestNamespace, deleteTestNamespace, kubeConfig, kubeconfigPath, waitFor } from '../support/cluster.ts';
import { condition, createEndpoint, getEndpoint, installCrd } from '../support/endpoints.ts';
import { startOperator } from '../support/operator.ts';
import { startMockUpstream } from '../support/tls-fixtures.ts';
import {
  b64,
  type OperatorProcess,
  prng,
  reportSummary,
  secretProblems,
  SEED,
  serialOf,
  sleep,
  spawnOperator,
  waitHealthy,
} from './support.ts';

const MANAGED = 'app.kubernetes.io/managed-by=mtls-operator';
/** No background loop of this file outlives this, whatever happens to the test that started it. */
const LOOPS_END = Date.now() + 15 * 60_000;
const core = () => kubeConfig().makeApiClient(k8s.CoreV1Api);

const summary = {
  sent: 0,
  failed: 0,
  serverRotations: 0,
  clientRotations: 0,
  caRollovers: 0,
  staleAccepted: 0,
  failovers: 0,
  takeoverMaxMs: 0,
  doubleIssuance: 0,
  concurrentWriters: 0,
};

// ---- clients that behave like client teams ---------------------------------------------------------------

interface Credentials {
  /** The `..data` target the files were read from: a new one means the Secret changed. */
  version: string;
  cert: string;
  key: string;
  ca: string;
}

/** Reads tls.crt, tls.key and ca.crt from one `..data` generation of a Secret volume (never a mix of two). */
async function readVolume(dir: string): Promise<Credentials> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const version = await readlink(join(dir, '..data'));
    try {
      const [cert, key, ca] = await Promise.all(
        ['tls.crt', 'tls.key', 'ca.crt'].map((file) => readFile(join(dir, version, file), 'utf8')),
      );
      if ((await readlink(join(dir, '..data'))) === version) return { version, cert: cert!, key: key!, ca: ca! };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // swapped under us: read again
    }
  }
  throw new Error(`${dir} changed 20 times while being read`);
}

/** A Secret as kubelet mounts it for a client team: a folder kept in sync with the Secret every `everyMs`. */
async function mountSecret(namespace: string, secretName: string, everyMs: number) {
  const dir = mkdtempSync(join(tmpdir(), `mtls-${secretName}-`));
  const api = core();
  let last = '';
  const sync = async () => {
    const secret = await api.readNamespacedSecret({ namespace, name: secretName });
    const digest = JSON.stringify(secret.data ?? {});
    if (digest === last) return;
    const data = Object.fromEntries(Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')]));
    await writeSecretVolume(dir, data, 0o440);
    last = digest;
  };
  await sync();
  let stopped = false;
  const loop = (async () => {
    while (!stopped && Date.now() < LOOPS_END) {
      await sleep(everyMs);
      await sync().catch(() => undefined); // the next round retries
    }
  })();
  return {
    dir,
    async stop() {
      stopped = true;
      await loop;
    },
  };
}

interface Outcome {
  ok: boolean;
  status?: number;
  verify?: string;
  serverSerial?: string;
  error?: string;
}

function send(
  port: number,
  servername: string,
  creds: { cert: string; key: string; ca: string },
  agent: Agent | false,
  path: string,
): Promise<Outcome> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      req.destroy(new Error('no answer within 10 s'));
    }, 10_000);
    const req = httpsRequest(
      { host: '127.0.0.1', port, path, servername, cert: creds.cert, key: creds.key, ca: creds.ca, agent },
      (res) => {
        const serverSerial = (res.socket as TLSSocket).getPeerCertificate?.()?.serialNumber;
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => {
          clearTimeout(timer);
          let verify: string | undefined;
          try {
            verify = (JSON.parse(body) as { headers: Record<string, string> }).headers['x-client-verify'];
          } catch {
            verify = undefined;
          }
          resolve({
            ok: res.statusCode === 200,
            status: res.statusCode,
            verify,
            serverSerial: serverSerial?.toLowerCase(),
          });
        });
        res.on('error', (err) => {
          clearTimeout(timer);
          resolve({ ok: false, error: err.message });
        });
      },
    );
    req.on('error', (err) => {
      clearTimeout(timer);
      resolve({ ok: false, error: `${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}` });
    });
    req.end();
  });
}

/** Each value a Secret held, in order, with when it was first seen: from a poller, so nothing is inferred. */
type History = Map<string, { serial: string; notAfter: number; seenAt: number; pem: string }[]>;

function record(history: History, secrets: k8s.V1Secret[]): void {
  for (const s of secrets) {
    const pem = b64(s, 'tls.crt') ?? b64(s, 'ca.crt');
    if (!pem) continue;
    const list = history.get(s.metadata!.name!) ?? [];
    const serial = serialOf(pem);
    if (list.at(-1)?.serial !== serial) {
      list.push({ serial, notAfter: new X509Certificate(pem).validToDate.getTime(), seenAt: Date.now(), pem });
    }
    history.set(s.metadata!.name!, list);
  }
}

// ---- A and C: traffic through the injected sidecar while everything rotates; the pod's mounts ------------

describe('reliability: traffic through rotation, CA rollover and the injected pod', () => {
  const ENDPOINT = 'traffic';
  const CLIENTS = ['alpha', 'beta', 'gamma'] as const;
  const CONTAINER_PORTS = { standard: 21443, flexible: 22443, strict: 23443 } as const;
  const UPSTREAM = 21080;
  const PROPAGATION_MS = 4_000;
  let namespace: string;
  let operator: Awaited<ReturnType<typeof startOperator>> | undefined;
  let upstream: { server: Server; port: number } | undefined;
  let pod: SimulatedPod | undefined;
  const hostPorts: Record<number, number> = {};
  const mounts: Awaited<ReturnType<typeof mountSecret>>[] = [];
  /** Every CA private key the endpoint ever had, to prove none reached a pod's files. */
  const caKeys = new Set<string>();

  beforeAll(async () => {
    await installCrd();
    namespace = await createTestNamespace('rel-traffic', { 'mtls.operator.dev/injection': 'enabled' });
    operator = await startOperator(namespace, { resyncMs: 5_000, caPropagationDelayMs: PROPAGATION_MS });
    upstream = await startMockUpstream(0);
    for (const port of [...Object.values(CONTAINER_PORTS), SIDECAR_ADMIN_PORT]) hostPorts[port] = await freePort();
    hostPorts[UPSTREAM] = upstream.port;
  });
  afterAll(async () => {
    for (const mount of mounts) await mount.stop();
    await pod?.stop();
    await operator?.stop();
    upstream?.server.close();
    await deleteTestNamespace(namespace);
  });

  it('zero failed requests from several clients through server and client rotations and a full CA rollover; an old client certificate is accepted until it expires', async () => {
    await createEndpoint(namespace, ENDPOINT, {
      podSelector: { matchLabels: { app: 'traffic-mock' } },
      upstreamPort: UPSTREAM,
      listeners: Object.entries(CONTAINER_PORTS).map(([mode, port]) => ({ mode, port })),
      clients: CLIENTS.map((name) => ({ name })),
      // Leaves renew every ~10 s; the CA rolls over ~32 s after it was issued (a third of its life + margin).
      certificates: { validity: '20s', renewBefore: '10s', caValidity: '60s' },
    });
    await waitFor('the endpoint to be Ready', async () => {
      const ep = await getEndpoint(namespace, ENDPOINT);
      return condition(ep, 'Ready')?.status === 'True' ? ep : undefined;
    });
    // The webhook's configuration may take a moment to reach the API server: a pod admitted before that is
    // not injected, and is created again (as a rollout would).
    const injected = await waitFor(
      'an injected pod',
      async () => {
        await core()
          .deleteNamespacedPod({ namespace, name: 'traffic-mock', gracePeriodSeconds: 0 })
          .catch(() => undefined);
        await waitFor('the previous pod to go', () =>
          core()
            .readNamespacedPod({ namespace, name: 'traffic-mock' })
            .then(
              () => false,
              () => true,
            ),
        );
        const created = await core().createNamespacedPod({
          namespace,
          body: {
            metadata: { name: 'traffic-mock', labels: { app: 'traffic-mock' } },
            spec: {
              containers: [{ name: 'mock', image: 'registry.invalid/mock:1', ports: [{ containerPort: UPSTREAM }] }],
            },
          },
        });
        return sidecarContainerOf(created) ? created : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 1_000 },
    );
    pod = await runInjectedPod(kubeConfig(), injected, mkdtempSync(join(tmpdir(), 'mtls-pod-')), {
      syncEveryMs: 500,
      portMap: hostPorts,
    });
    const admin = `http://127.0.0.1:${hostPorts[SIDECAR_ADMIN_PORT]}`;
    await waitFor('the sidecar to be ready', async () => (await fetch(`${admin}/readyz`)).ok, { timeoutMs: 20_000 });
    for (const client of CLIENTS) mounts.push(await mountSecret(namespace, `${ENDPOINT}-client-${client}`, 500));

    // The observer: every Secret value, the rollover phases as the status reports them.
    const history: History = new Map();
    const phases: string[] = [];
    let observing = true;
    const observer = (async () => {
      while (observing && Date.now() < LOOPS_END) {
        const [secrets, ep] = await Promise.all([
          core()
            .listNamespacedSecret({ namespace, labelSelector: MANAGED })
            .then((l) => l.items)
            .catch(() => []),
          getEndpoint(namespace, ENDPOINT).catch(() => undefined),
        ]);
        record(history, secrets);
        for (const s of secrets.filter((x) => x.metadata?.name === `${ENDPOINT}-ca`)) {
          for (const key of ['ca.key', 'next-ca.key', 'previous-ca.key']) {
            const pem = b64(s, key);
            if (pem) caKeys.add(pem.trim());
          }
        }
        const reason = ep && condition(ep, 'CARollover')?.reason;
        if (reason && phases.at(-1) !== reason) phases.push(reason);
        await sleep(250);
      }
    })();
    const rolloverDone = () => {
      const start = phases.indexOf('NewCAPropagating');
      const retiring = phases.indexOf('OldCARetiring', start);
      return start >= 0 && retiring > start && phases.indexOf('NoRollover', retiring) > retiring;
    };

    // The client teams: each uses the files of its mounted Secret and re-reads them when they change.
    const failures: string[] = [];
    const servedSerials = new Set<string>();
    const perWorker: Record<string, { sent: number; reloads: number }> = {};
    let running = true;
    const deadline = Date.now() + 150_000;
    const worker = async (clientIndex: number, mode: keyof typeof CONTAINER_PORTS, keepAlive: boolean) => {
      const client = CLIENTS[clientIndex]!;
      const name = `${client}/${mode}/${keepAlive ? 'keep-alive' : 'new-connection'}`;
      const stats = (perWorker[name] = { sent: 0, reloads: 0 });
      const dir = mounts[clientIndex]!.dir;
      let creds = await readVolume(dir);
      let agent: Agent | false = keepAlive ? new Agent({ keepAlive: true, maxSockets: 1 }) : false;
      while (running && Date.now() < deadline && stats.sent < 3_000) {
        if ((await readlink(join(dir, '..data'))) !== creds.version) {
          creds = await readVolume(dir);
          stats.reloads++;
          if (agent) {
            agent.destroy();
            agent = new Agent({ keepAlive: true, maxSockets: 1 });
          }
        }
        const outcome = await send(
          hostPorts[CONTAINER_PORTS[mode]]!,
          `${ENDPOINT}-${mode}.${namespace}.svc`,
          creds,
          agent,
          `/${client}`,
        );
        stats.sent++;
        summary.sent++;
        if (outcome.serverSerial) servedSerials.add(outcome.serverSerial);
        const expected = mode === 'standard' ? 'NONE' : 'SUCCESS';
        if (!outcome.ok || outcome.verify !== expected) {
          summary.failed++;
          failures.push(
            `${new Date().toISOString()} ${name}: status ${outcome.status} verify ${outcome.verify} ${outcome.error ?? ''} (phases ${phases.join('>')})`,
          );
        }
        await sleep(100);
      }
      if (agent) agent.destroy();
    };

    // A client that keeps presenting the certificate it held when the rollover began (signed by the old CA,
    // replaced since, never revoked) while trusting the bundle it is given: accepted until it expires, then refused.
    const stale = {
      accepted: 0,
      failed: [] as string[],
      refusedAfterExpiry: 0,
      acceptedAfterExpiry: 0,
      notAfter: 0,
      finished: false,
    };
    const staleClient = async () => {
      await waitFor('the CA rollover to start', async () => phases.includes('NewCAPropagating'), {
        timeoutMs: 90_000,
        intervalMs: 100,
      });
      const secret = await core().readNamespacedSecret({ namespace, name: `${ENDPOINT}-client-alpha` });
      const caSecret = await core().readNamespacedSecret({ namespace, name: `${ENDPOINT}-ca` });
      const held = { cert: b64(secret, 'tls.crt')!, key: b64(secret, 'tls.key')! };
      const oldCa = new X509Certificate(b64(caSecret, 'ca.crt')!);
      const cert = new X509Certificate(held.cert);
      expect(cert.verify(oldCa.publicKey)).toBe(true); // the rollover has not re-issued it yet
      stale.notAfter = cert.validToDate.getTime();
      const modes = ['strict', 'flexible'] as const;
      for (let i = 0; i < 400 && Date.now() < stale.notAfter - 1_500; i++) {
        const mode = modes[i % 2]!;
        const { ca } = await readVolume(mounts[0]!.dir);
        const outcome = await send(
          hostPorts[CONTAINER_PORTS[mode]]!,
          `${ENDPOINT}-${mode}.${namespace}.svc`,
          { ...held, ca },
          false,
          '/stale',
        );
        if (outcome.ok && outcome.verify === 'SUCCESS') stale.accepted++;
        else
          stale.failed.push(
            `${new Date().toISOString()} ${mode}: status ${outcome.status} ${outcome.error ?? ''} (phases ${phases.join('>')}, expires ${cert.validTo})`,
          );
        await sleep(150);
      }
      await sleep(Math.max(0, stale.notAfter + 1_500 - Date.now()));
      for (const mode of modes) {
        const { ca } = await readVolume(mounts[0]!.dir);
        const outcome = await send(
          hostPorts[CONTAINER_PORTS[mode]]!,
          `${ENDPOINT}-${mode}.${namespace}.svc`,
          { ...held, ca },
          false,
          '/expired',
        );
        if (outcome.ok) stale.acceptedAfterExpiry++;
        else stale.refusedAfterExpiry++;
      }
    };
    const staleDone = staleClient()
      .catch((err: unknown) => void stale.failed.push(String(err)))
      .finally(() => (stale.finished = true));

    const enough = () => {
      const serials = (name: string) => history.get(name)?.length ?? 0;
      return (
        rolloverDone() &&
        serials(`${ENDPOINT}-server`) >= 4 &&
        CLIENTS.every((c) => serials(`${ENDPOINT}-client-${c}`) >= 3) &&
        stale.finished
      );
    };
    const workers = [
      worker(0, 'strict', false),
      worker(0, 'flexible', true),
      worker(1, 'strict', true),
      worker(1, 'flexible', false),
      worker(2, 'strict', false),
      worker(2, 'flexible', false),
      worker(2, 'standard', true),
    ];
    try {
      // Until a full rollover and several leaf rotations happened under traffic (or the deadline: the
      // assertions below then say what was missing), and a few seconds more after the old CA left.
      await waitFor('a full CA rollover and several leaf rotations under traffic', async () => enough(), {
        timeoutMs: 150_000,
        intervalMs: 500,
      }).catch(() => undefined);
      await sleep(3_000);
    } finally {
      running = false;
      await Promise.all(workers);
      await staleDone;
      observing = false;
      await observer;
    }

    const rotations = (name: string) => Math.max(0, (history.get(name)?.length ?? 1) - 1);
    summary.serverRotations = rotations(`${ENDPOINT}-server`);
    summary.clientRotations = CLIENTS.reduce((n, c) => n + rotations(`${ENDPOINT}-client-${c}`), 0);
    summary.caRollovers = rotations(`${ENDPOINT}-ca`);
    summary.staleAccepted = stale.accepted;
    process.stderr.write(
      `[rotation-traffic] phases ${phases.join(' > ')}; per worker ${JSON.stringify(perWorker)}; served server serials ${servedSerials.size}; stale ${JSON.stringify({ ...stale, failed: stale.failed.length })}\n`,
    );

    expect(failures.slice(0, 10)).toEqual([]);
    expect(summary.failed).toBe(0);
    // Rotation really happened, and the clients really followed it.
    expect(rolloverDone()).toBe(true);
    expect(summary.caRollovers).toBeGreaterThanOrEqual(1);
    expect(summary.serverRotations).toBeGreaterThanOrEqual(3);
    for (const c of CLIENTS) expect(rotations(`${ENDPOINT}-client-${c}`)).toBeGreaterThanOrEqual(2);
    expect(servedSerials.size).toBeGreaterThanOrEqual(3);
    for (const [name, stats] of Object.entries(perWorker)) {
      expect({ name, sent: stats.sent > 20, reloaded: stats.reloads > 0 }).toEqual({
        name,
        sent: true,
        reloaded: true,
      });
    }
    // The served certificates are the ones the Secret held: both CAs' leaves went through the sidecar.
    const serverSerials = new Set((history.get(`${ENDPOINT}-server`) ?? []).map((v) => v.serial));
    expect([...servedSerials].filter((s) => !serverSerials.has(s))).toEqual([]);
    // docs/DESIGN.md's mode table: a valid (not expired, not revoked) certificate of this endpoint's CA is accepted,
    // also one that was replaced and whose CA has since rolled over; once expired it is refused.
    expect(stale.failed).toEqual([]);
    expect(stale.accepted).toBeGreaterThan(10);
    expect({ refused: stale.refusedAfterExpiry, accepted: stale.acceptedAfterExpiry }).toEqual({
      refused: 2,
      accepted: 0,
    });
    // The sidecar reloaded each change and never refused one.
    const metrics = await (await fetch(`${admin}/metrics`)).text();
    const reloads = (result: string) =>
      Number(new RegExp(`mtls_sidecar_reloads_total\\{result="${result}"\\} (\\d+)`).exec(metrics)?.[1] ?? 0);
    expect(reloads('success')).toBeGreaterThanOrEqual(3);
    expect(reloads('failure')).toBe(0);
  }, 240_000);

  it('mounts: the server Secret read-only with a restrictive mode, the CA Secret in no pod, no API token in the sidecar', async () => {
    expect(pod).toBeDefined();
    const spec = (await core().readNamespacedPod({ namespace, name: 'traffic-mock' })).spec!;
    const sidecar = sidecarContainerOf({ spec })!;
    const volumeOf = (name: string) => spec.volumes?.find((v) => v.name === name);

    // The server Secret: read-only, files readable by owner and group only (the sidecar runs as group 0).
    const tlsMount = sidecar.volumeMounts?.find((m) => m.name === SIDECAR_VOLUME);
    expect(tlsMount?.readOnly).toBe(true);
    const tlsVolume = volumeOf(SIDECAR_VOLUME)!;
    expect(tlsVolume.secret?.secretName).toBe(`${ENDPOINT}-server`);
    expect(tlsVolume.secret?.defaultMode).toBeDefined();
    expect(tlsVolume.secret!.defaultMode! & ~0o440).toBe(0); // no write, no execute, nothing for others
    expect(tlsVolume.secret?.items).toBeUndefined();
    for (const mount of sidecar.volumeMounts ?? [])
      expect({ mount: mount.name, readOnly: mount.readOnly }).toEqual({ mount: mount.name, readOnly: true });

    // No API token in the sidecar: whatever it mounts at the token path is the empty in-memory folder, and no
    // volume it mounts is a token or a Secret other than the endpoint's server Secret.
    const tokenMount = sidecar.volumeMounts?.find((m) => m.mountPath === SERVICE_ACCOUNT_TOKEN_DIR);
    expect(tokenMount?.name).toBe(NO_API_TOKEN_VOLUME);
    expect(volumeOf(NO_API_TOKEN_VOLUME)?.emptyDir).toBeDefined();
    for (const mount of sidecar.volumeMounts ?? []) {
      const volume = volumeOf(mount.name)!;
      expect({ mount: mount.name, projected: volume.projected, secret: volume.secret?.secretName }).toEqual({
        mount: mount.name,
        projected: undefined,
        secret: mount.name === SIDECAR_VOLUME ? `${ENDPOINT}-server` : undefined,
      });
    }
    expect(sidecar.env?.some((e) => e.valueFrom?.secretKeyRef) ?? false).toBe(false);
    expect(sidecar.envFrom ?? []).toEqual([]);
    // The app container did get the API server's token (the ServiceAccount admission plugin is on), so the
    // check above is not vacuous.
    const mock = spec.containers.find((c) => c.name === 'mock')!;
    const mockToken = mock.volumeMounts?.find((m) => m.mountPath === SERVICE_ACCOUNT_TOKEN_DIR);
    expect(mockToken && volumeOf(mockToken.name)?.projected?.sources?.some((s) => s.serviceAccountToken)).toBe(true);

    // No pod in the cluster references any endpoint's CA Secret, in a volume or an environment variable.
    const caSecrets = new Set(
      (await core().listSecretForAllNamespaces({ labelSelector: 'mtls.operator.dev/certificate=ca' })).items.map(
        (s) => `${s.metadata!.namespace}/${s.metadata!.name}`,
      ),
    );
    expect(caSecrets.has(`${namespace}/${ENDPOINT}-ca`)).toBe(true);
    const references: string[] = [];
    for (const p of (await core().listPodForAllNamespaces()).items) {
      const ns = p.metadata!.namespace!;
      const names = [
        ...(p.spec?.volumes ?? []).flatMap((v) => [
          v.secret?.secretName,
          ...(v.projected?.sources ?? []).map((s) => s.secret?.name),
        ]),
        ...[...(p.spec?.containers ?? []), ...(p.spec?.initContainers ?? [])].flatMap((c) => [
          ...(c.env ?? []).map((e) => e.valueFrom?.secretKeyRef?.name),
          ...(c.envFrom ?? []).map((e) => e.secretRef?.name),
        ]),
      ];
      for (const name of names)
        if (name && caSecrets.has(`${ns}/${name}`)) references.push(`${ns}/${p.metadata!.name} -> ${name}`);
    }
    expect(references).toEqual([]);

    // The files as kubelet materialised them: the four keys of the server Secret, each 0440, and no CA key
    // (of any CA the endpoint had during the run) in any of them.
    const dir = pod!.volumes[SIDECAR_VOLUME]!;
    const keys = readdirSync(dir).filter((f) => !f.startsWith('..'));
    expect(keys.sort()).toEqual(['ca.crl', 'ca.crt', 'tls.crt', 'tls.key']);
    for (const key of keys) {
      expect(lstatSync(join(dir, key)).isSymbolicLink()).toBe(true);
      expect({ key, mode: (statSync(join(dir, key)).mode & 0o777).toString(8) }).toEqual({ key, mode: '440' });
    }
    expect(caKeys.size).toBeGreaterThanOrEqual(2);
    for (const mounted of [dir, ...mounts.map((m) => m.dir)]) {
      for (const key of readdirSync(mounted).filter((f) => !f.startsWith('..'))) {
        const text = readFileSync(join(mounted, key), 'utf8');
        for (const caKey of caKeys) expect(text.includes(caKey)).toBe(false);
      }
    }
  }, 60_000);
});

// ---- B: leader failover with two replicas -------------------------------------------------------------------

describe('reliability: leader failover with two controller replicas', () => {
  let namespace: string;
  const processes: OperatorProcess[] = [];
  /** Stops the test's pollers, also when it failed half-way. */
  let stopPolling: () => Promise<void> = async () => undefined;

  beforeAll(async () => {
    await installCrd();
    namespace = await createTestNamespace('rel-failover');
  });
  afterAll(async () => {
    await stopPolling();
    for (const op of processes) op.child.kill('SIGKILL');
    await deleteTestNamespace(namespace);
    reportSummary(
      `rotation-traffic: requests sent ${summary.sent} / failed ${summary.failed} through ${summary.serverRotations} server rotations, ` +
        `${summary.clientRotations} client rotations, ${summary.caRollovers} CA rollovers (old client cert accepted ${summary.staleAccepted} times until it expired); ` +
        `failovers ${summary.failovers} / takeover max ${(summary.takeoverMaxMs / 1000).toFixed(1)} s / double issuance ${summary.doubleIssuance}` +
        ` / concurrent writers ${summary.concurrentWriters}`,
    );
  });

  it('the leader is SIGKILLed 3 times while endpoints are created and rotate: the standby takes over within the lease, nothing is issued twice', async () => {
    const rnd = prng(SEED);
    const kc = kubeConfig();
    const api = kc.makeApiClient(k8s.CoreV1Api);
    const leases = kc.makeApiClient(k8s.CoordinationV1Api);
    const { leaseDurationMs, retryPeriodMs } = LEADER_ELECTION_DEFAULTS;
    const args = ['--resync', '10s'];
    const lease = () =>
      leases.readNamespacedLease({ namespace, name: 'mtls-operator-leader' }).then((l) => l.spec ?? {});
    const identityOf = (op: OperatorProcess) =>
      /"identity":"([^"]+)"[^\n]*"message":"became leader"|"message":"became leader"[^\n]*"identity":"([^"]+)"/
        .exec(op.output.join(''))
        ?.slice(1)
        .find(Boolean);
    const start = async () => {
      const op = await spawnOperator(kubeconfigPath(), namespace, args, []);
      processes.push(op);
      await waitHealthy(op);
      return op;
    };

    // Scrapes every live replica: who reconciles and how much each issued.
    const scrapes = new Map<OperatorProcess, { reconciles: number; issued: Record<string, number> }>();
    const concurrentWriters: string[] = [];
    let scraping = true;
    const scraper = (async () => {
      while (scraping && Date.now() < LOOPS_END) {
        const grew: number[] = [];
        await Promise.all(
          processes.map(async (op, i) => {
            if (op.child.exitCode !== null || op.child.signalCode !== null) return;
            const text = await fetch(`http://127.0.0.1:${op.metricsPort}/metrics`)
              .then((r) => r.text())
              .catch(() => undefined);
            if (!text) return;
            let reconciles = 0;
            const issued: Record<string, number> = {};
            for (const m of text.matchAll(/^mtls_reconcile_total\{result="[^"]+"\} (\d+)/gm))
              reconciles += Number(m[1]);
            for (const m of text.matchAll(/^mtls_certificates_issued_total\{certificate="([^"]+)"\} (\d+)/gm))
              issued[m[1]!] = Number(m[2]);
            if (reconciles > (scrapes.get(op)?.reconciles ?? 0)) grew.push(i);
            scrapes.set(op, { reconciles, issued });
          }),
        );
        if (grew.length > 1)
          concurrentWriters.push(`${new Date().toISOString()}: replicas ${grew.join(', ')} both reconciled`);
        await sleep(500);
      }
    })();

    // Every value each Secret held.
    const history: History = new Map();
    let observing = true;
    const observer = (async () => {
      while (observing && Date.now() < LOOPS_END) {
        record(
          history,
          await api.listNamespacedSecret({ namespace, labelSelector: MANAGED }).then(
            (l) => l.items,
            () => [],
          ),
        );
        await sleep(250);
      }
    })();

    stopPolling = async () => {
      scraping = false;
      observing = false;
      await Promise.all([scraper, observer]);
    };

    let leader = await start();
    await waitFor('the first replica to lead', async () => identityOf(leader));
    let standby = await start();
    // One endpoint rotates throughout: renewal 15 s after issue, 45 s of slack before expiry (> a takeover).
    const VALIDITY_MS = 60_000;
    const RENEW_BEFORE_MS = 45_000;
    await createEndpoint(namespace, 'rot', {
      upstreamPort: 8080,
      clients: [{ name: 'app' }],
      certificates: { validity: '60s', renewBefore: '45s' },
    });
    const endpoints = ['rot'];
    const clientsOf = new Map<string, string[]>([['rot', ['app']]]);
    const create = async (name: string) => {
      const clients = Array.from({ length: rnd.int(1, 2) }, (_, i) => `c${i}`);
      clientsOf.set(name, clients);
      endpoints.push(name);
      await createEndpoint(namespace, name, { upstreamPort: 8080, clients: clients.map((c) => ({ name: c })) });
    };
    const converged = async () =>
      waitFor(
        'every endpoint to converge',
        async () => {
          const secrets = (await api.listNamespacedSecret({ namespace, labelSelector: MANAGED })).items;
          const problems: string[] = [];
          for (const name of endpoints) {
            const ep: MtlsEndpoint = await getEndpoint(namespace, name);
            if (condition(ep, 'Ready')?.status !== 'True' || ep.status?.observedGeneration !== ep.metadata?.generation)
              problems.push(`${name} not Ready`);
            const server = b64(
              secrets.find((s) => s.metadata?.name === `${name}-server`),
              'tls.crt',
            );
            if (!server || ep.status?.server?.serialNumber?.toLowerCase() !== serialOf(server))
              problems.push(`${name}: status.server is not the Secret's`);
            problems.push(...(await secretProblems(secrets, name, clientsOf.get(name)!)));
          }
          if (problems.length) throw new Error(problems.join('; '));
          return true;
        },
        { timeoutMs: 60_000, intervalMs: 500 },
      );
    await create('ep-0');
    await converged();

    // Takeover: from the kill to the new holder's write of the lease (its acquireTime; one host, one clock), and
    // from the dead leader's last renewal to that write.
    const takeovers: { fromKillMs: number; fromLastRenewMs: number; seenAfterMs: number }[] = [];
    for (let round = 1; round <= 3; round++) {
      const killedIdentity = identityOf(leader)!;
      expect((await lease()).holderIdentity).toBe(killedIdentity);
      // The standby has been campaigning for a while (it has seen the lease being renewed).
      await sleep(3_000);
      await create(`ep-${round}a`); // issuance in flight when the leader dies
      await sleep(rnd.int(0, 1_500));
      leader.child.kill('SIGKILL');
      const killedAt = Date.now();
      await leader.exited;
      const lastRenew = new Date((await lease()).renewTime!).getTime();
      const replacement = spawnOperator(kubeconfigPath(), namespace, args, []).then((op) => {
        processes.push(op);
        return op;
      });
      await create(`ep-${round}b`); // created while nobody leads
      const taken = await waitFor(
        'the standby to take the lease',
        async () => {
          const spec = await lease();
          return spec.holderIdentity && spec.holderIdentity !== killedIdentity
            ? { at: Date.now(), holder: spec.holderIdentity, acquired: new Date(spec.acquireTime!).getTime() }
            : undefined;
        },
        { timeoutMs: 40_000, intervalMs: 100 },
      );
      takeovers.push({
        fromKillMs: taken.acquired - killedAt,
        fromLastRenewMs: taken.acquired - lastRenew,
        seenAfterMs: taken.at - killedAt,
      });
      // The replica that was already standing by took over, not the replacement.
      await waitFor('the standby to log its leadership', async () => identityOf(standby)).catch((err: unknown) => {
        const tail = (op: OperatorProcess) =>
          op.output
            .join('')
            .split('\n')
            .filter((l) => !l.includes('"component":"controller"'))
            .slice(-15)
            .join('\n');
        process.stderr.write(
          `[rotation-traffic] takeover by ${taken.holder}\nstandby pid ${standby.child.pid} exit ${standby.child.exitCode}:\n${tail(standby)}\n` +
            processes.map((op) => `--- pid ${op.child.pid}:\n${tail(op)}`).join('\n') +
            '\n',
        );
        throw err;
      });
      expect(identityOf(standby)).toBe(taken.holder);
      summary.failovers++;
      await converged();
      leader = standby;
      standby = await replacement;
      await waitHealthy(standby);
    }
    // Let the rotating endpoint renew once more under the last leader, then stop watching.
    await sleep(5_000);
    await converged();
    await stopPolling();

    summary.takeoverMaxMs = Math.max(...takeovers.map((t) => t.fromKillMs));
    process.stderr.write(`[rotation-traffic] takeovers ${JSON.stringify(takeovers)}\n`);
    // Within the lease duration (+ one retry period, the leader's renewal interval) of the kill.
    for (const t of takeovers) {
      expect(t.fromKillMs).toBeLessThanOrEqual(leaseDurationMs + retryPeriodMs);
      expect(t.fromLastRenewMs).toBeGreaterThanOrEqual(leaseDurationMs); // and never before the lease expired
    }

    // No double issuance. Stable Secrets (every CA, every leaf of a long-lived endpoint) held one value;
    // the rotating leaves were renewed once per renewal period, never twice in a row.
    const doubles: string[] = [];
    for (const [name, values] of history) {
      if (/^rot-(server|client-)/.test(name)) {
        for (let i = 1; i < values.length; i++) {
          const gap = values[i]!.notAfter - values[i - 1]!.notAfter;
          if (gap < VALIDITY_MS - RENEW_BEFORE_MS - 2_000) doubles.push(`${name}: re-issued after ${gap} ms`);
        }
      } else if (values.length !== 1) {
        doubles.push(`${name}: ${values.map((v) => v.serial).join(', ')}`);
      }
    }
    summary.doubleIssuance = doubles.length;
    expect(doubles).toEqual([]);
    expect(history.get('rot-server')?.length ?? 0).toBeGreaterThanOrEqual(3);
    // At most one writer at a time, and only leaders ever reconciled or issued.
    summary.concurrentWriters = concurrentWriters.length;
    expect(concurrentWriters).toEqual([]);
    const led = processes.filter((op) => identityOf(op));
    for (const op of processes.filter((p) => !identityOf(p))) {
      expect(scrapes.get(op)?.reconciles ?? 0).toBe(0);
      expect(Object.values(scrapes.get(op)?.issued ?? {}).reduce((a, b) => a + b, 0)).toBe(0);
    }
    expect(led.length).toBe(4);
    // What the replicas say they issued is what the Secrets show (a killed replica's last few may be unscraped).
    const issuedByMetrics = [...scrapes.values()].reduce((n, s) => n + (s.issued.ca ?? 0), 0);
    const cas = [...history].filter(([name]) => name.endsWith('-ca')).length;
    expect(issuedByMetrics).toBeLessThanOrEqual(cas);
    const events = (await api.listNamespacedEvent({ namespace })).items;
    expect(events.filter((e) => /Repaired/.test(e.reason ?? '')).map((e) => e.message)).toEqual([]);
    expect(processes.map((p) => p.output.join('')).join('')).not.toMatch(/PRIVATE KEY/);
  }, 240_000);
});
