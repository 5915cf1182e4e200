import type { KubeConfig } from '@kubernetes/client-node';
import { loadKubeConfig } from '../../operator/kube/kubeconfig.ts';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBinaries, type ControlPlaneBinaries } from './binaries.ts';
import { type ClusterPkiFiles, writeClusterPki } from './cluster-pki.ts';
import { SupervisedProcess } from './supervised-process.ts';

/** Addresses for a control plane that serves a real node (see `node/node-network.ts`). */
export interface ClusterNetwork {
  /** The API server binds and advertises this address (the `kubernetes` Service's endpoint). */
  apiServerAddress: string;
  serviceCidr: string;
  /** The first address of `serviceCidr`, in the API server's certificate for pods that call it. */
  apiServiceIp: string;
  /** kube-controller-manager hands a /24 of this range to each node. */
  podCidr: string;
}

export interface LocalControlPlaneOptions {
  /** Run kube-controller-manager too (garbage collection, Deployments, namespaces, service accounts). */
  controllerManager?: boolean;
  /** Serve a real node: its addresses, and kube-scheduler (binary path) to place pods. */
  node?: { network: ClusterNetwork; kubeScheduler: string };
  /** A fixed folder instead of a new temporary one (it is emptied first and removed by `stop()`). */
  dir?: string;
  /** Progress lines for a person watching; silent by default. */
  progress?: (line: string) => void;
}

/** A free TCP port on 127.0.0.1 (the OS picks it; a tiny race remains until the binary binds it). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * etcd + kube-apiserver (+ kube-controller-manager) on loopback, as controller-runtime's envtest runs them:
 * free ports, a throwaway PKI, RBAC, service-account signing keys, and an admin kubeconfig. Everything lives
 * in one temporary folder that `stop()` removes; the processes die with us even if we are killed.
 */
export class LocalControlPlane {
  readonly dir: string;
  readonly kubeconfigPath: string;
  readonly binaries: ControlPlaneBinaries;
  apiServerUrl = '';
  private readonly pki: ClusterPkiFiles;
  private readonly options: LocalControlPlaneOptions;
  private readonly etcd: SupervisedProcess;
  private readonly apiserver: SupervisedProcess;
  private readonly controllerManager: SupervisedProcess;
  private readonly scheduler: SupervisedProcess;
  private etcdPort = 0;
  private etcdPeerPort = 0;
  private apiPort = 0;

  private constructor(
    dir: string,
    binaries: ControlPlaneBinaries,
    pki: ClusterPkiFiles,
    options: LocalControlPlaneOptions,
  ) {
    this.dir = dir;
    this.binaries = binaries;
    this.pki = pki;
    this.options = options;
    this.kubeconfigPath = join(dir, 'admin.kubeconfig');
    this.etcd = new SupervisedProcess('etcd', join(dir, 'etcd.log'));
    this.apiserver = new SupervisedProcess('kube-apiserver', join(dir, 'kube-apiserver.log'));
    this.controllerManager = new SupervisedProcess('kube-controller-manager', join(dir, 'kube-controller-manager.log'));
    this.scheduler = new SupervisedProcess('kube-scheduler', join(dir, 'kube-scheduler.log'));
  }

  static async start(options: LocalControlPlaneOptions = {}): Promise<LocalControlPlane> {
    const binaries = await ensureBinaries();
    let dir: string;
    if (options.dir) {
      await rm(options.dir, { recursive: true, force: true });
      await mkdir(options.dir, { recursive: true, mode: 0o700 });
      dir = options.dir;
    } else dir = await mkdtemp(join(tmpdir(), 'mtls-operator-cp-'));
    const network = options.node?.network;
    const extraIps = network ? [network.apiServerAddress, network.apiServiceIp] : [];
    const plane = new LocalControlPlane(dir, binaries, await writeClusterPki(dir, extraIps), options);
    try {
      await plane.startAll();
    } catch (err) {
      const logs = await plane.tailLogs();
      await plane.stop();
      throw new Error(`local control plane failed to start: ${(err as Error).message}\n${logs}`);
    }
    return plane;
  }

  /** The cluster CA (kubelet trusts client certificates it signed). */
  get caCertFile(): string {
    return this.pki.caCert;
  }

  kubeConfig(): KubeConfig {
    return loadKubeConfig(this.kubeconfigPath);
  }

  private progress(line: string): void {
    this.options.progress?.(line);
  }

  private async startAll(): Promise<void> {
    [this.etcdPort, this.etcdPeerPort, this.apiPort] = await Promise.all([freePort(), freePort(), freePort()]);
    this.apiServerUrl = `https://${this.apiServerAddress}:${this.apiPort}`;
    await this.writeKubeconfig();
    await this.startEtcd();
    await this.startApiServer();
    if (this.options.controllerManager !== false) await this.startControllerManager();
    if (this.options.node) await this.startScheduler(this.options.node.kubeScheduler);
  }

  private get apiServerAddress(): string {
    return this.options.node?.network.apiServerAddress ?? '127.0.0.1';
  }

  /** Flags that differ when the control plane serves a real node. */
  private apiServerNetworkFlags(): string[] {
    const network = this.options.node?.network;
    if (!network) {
      return [
        '--advertise-address=127.0.0.1',
        '--bind-address=127.0.0.1',
        '--service-cluster-ip-range=10.0.0.0/16', // room for the Services of thousands of endpoints
        '--endpoint-reconciler-type=none',
      ];
    }
    return [
      `--advertise-address=${network.apiServerAddress}`,
      `--bind-address=${network.apiServerAddress}`,
      `--service-cluster-ip-range=${network.serviceCidr}`,
      // kubectl logs/exec: the API server calls kubelet with the admin identity.
      `--kubelet-client-certificate=${this.pki.adminCert}`,
      `--kubelet-client-key=${this.pki.adminKey}`,
      '--kubelet-preferred-address-types=InternalIP',
    ];
  }

  /** Starts (or restarts, with the same ports and data) etcd and waits until it is healthy. */
  async startEtcd(): Promise<void> {
    this.progress(`starting etcd on 127.0.0.1:${this.etcdPort}`);
    const client = `http://127.0.0.1:${this.etcdPort}`;
    const peer = `http://127.0.0.1:${this.etcdPeerPort}`;
    this.etcd.start(this.binaries.etcd, [
      `--name=default`,
      `--data-dir=${join(this.dir, 'etcd-data')}`,
      `--listen-client-urls=${client}`,
      `--advertise-client-urls=${client}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=default=${peer}`,
      '--unsafe-no-fsync=true',
      '--log-level=warn',
    ]);
    await this.waitFor('etcd', this.etcd, async () => (await httpGet(`${client}/health`)).includes('"health":"true"'));
  }

  /** Starts (or restarts, with the same port and data) the API server and waits for /readyz. */
  async startApiServer(): Promise<void> {
    this.progress(`starting kube-apiserver on ${this.apiServerUrl}`);
    this.apiserver.start(this.binaries.kubeApiserver, [
      `--etcd-servers=http://127.0.0.1:${this.etcdPort}`,
      ...this.apiServerNetworkFlags(),
      `--secure-port=${this.apiPort}`,
      `--tls-cert-file=${this.pki.apiserverCert}`,
      `--tls-private-key-file=${this.pki.apiserverKey}`,
      `--client-ca-file=${this.pki.caCert}`,
      '--authorization-mode=RBAC',
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${this.pki.serviceAccountPub}`,
      `--service-account-signing-key-file=${this.pki.serviceAccountKey}`,
      '--allow-privileged=true',
      `--cert-dir=${join(this.dir, 'apiserver-certs')}`,
      '--profiling=false',
      '--v=1',
    ]);
    await this.waitFor('kube-apiserver', this.apiserver, async () => (await this.apiGet('/readyz')) === 'ok');
  }

  async stopApiServer(): Promise<void> {
    await this.apiserver.stop();
  }

  async stopEtcd(): Promise<void> {
    await this.etcd.stop();
  }

  private async startControllerManager(): Promise<void> {
    const port = await freePort();
    this.progress('starting kube-controller-manager');
    await mkdir(join(this.dir, 'kcm-certs'), { recursive: true });
    this.controllerManager.start(this.binaries.kubeControllerManager, [
      `--kubeconfig=${this.kubeconfigPath}`,
      `--authentication-kubeconfig=${this.kubeconfigPath}`,
      `--authorization-kubeconfig=${this.kubeconfigPath}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${port}`,
      `--cert-dir=${join(this.dir, 'kcm-certs')}`,
      '--leader-elect=false',
      `--service-account-private-key-file=${this.pki.serviceAccountKey}`,
      `--root-ca-file=${this.pki.caCert}`,
      '--use-service-account-credentials=false',
      '--controllers=*',
      '--concurrent-gc-syncs=5',
      ...(this.options.node
        ? [
            '--allocate-node-cidrs=true',
            `--cluster-cidr=${this.options.node.network.podCidr}`,
            '--node-cidr-mask-size=24',
            `--service-cluster-ip-range=${this.options.node.network.serviceCidr}`,
          ]
        : []),
      '--v=1',
    ]);
    // The service-account controller creating `default` in `default` proves the controllers are running.
    await this.waitFor('kube-controller-manager', this.controllerManager, async () =>
      (await this.apiGet('/api/v1/namespaces/default/serviceaccounts/default')).includes('"kind":"ServiceAccount"'),
    );
  }

  private async startScheduler(binary: string): Promise<void> {
    const port = await freePort();
    this.progress('starting kube-scheduler');
    this.scheduler.start(binary, [
      `--kubeconfig=${this.kubeconfigPath}`,
      `--authentication-kubeconfig=${this.kubeconfigPath}`,
      `--authorization-kubeconfig=${this.kubeconfigPath}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${port}`,
      '--leader-elect=false',
      '--v=1',
    ]);
    // Its serving certificate is self-signed, and /healthz is open to anyone: only "ok" matters here.
    await this.waitFor(
      'kube-scheduler',
      this.scheduler,
      async () => (await httpGet(`https://127.0.0.1:${port}/healthz`, { rejectUnauthorized: false })) === 'ok',
    );
  }

  private async waitFor(what: string, proc: SupervisedProcess, ready: () => Promise<boolean>, timeoutMs = 60_000) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!proc.running) throw new Error(`${what} exited with code ${await proc.whenExited()}`);
      if (await ready().catch(() => false)) return;
      await sleep(200);
    }
    throw new Error(`${what} was not ready within ${timeoutMs / 1000}s`);
  }

  private async apiGet(path: string): Promise<string> {
    const [ca, cert, key] = await Promise.all(
      [this.pki.caCert, this.pki.adminCert, this.pki.adminKey].map((file) => readFile(file)),
    );
    return httpGet(`${this.apiServerUrl}${path}`, { ca, cert, key });
  }

  private async writeKubeconfig(): Promise<void> {
    const b64 = async (file: string) => (await readFile(file)).toString('base64');
    const yaml = `apiVersion: v1
kind: Config
clusters:
- name: mtls-operator-local
  cluster:
    server: ${this.apiServerUrl}
    certificate-authority-data: ${await b64(this.pki.caCert)}
users:
- name: admin
  user:
    client-certificate-data: ${await b64(this.pki.adminCert)}
    client-key-data: ${await b64(this.pki.adminKey)}
contexts:
- name: mtls-operator-local
  context: {cluster: mtls-operator-local, user: admin}
current-context: mtls-operator-local
`;
    await writeFile(this.kubeconfigPath, yaml, { mode: 0o600 });
  }

  private async tailLogs(lines = 15): Promise<string> {
    const parts: string[] = [];
    for (const proc of [this.etcd, this.apiserver, this.controllerManager, this.scheduler]) {
      const text = await readFile(join(this.dir, `${proc.name}.log`), 'utf8').catch(() => '');
      if (text)
        parts.push(`--- last lines of ${proc.name}.log ---\n${text.trimEnd().split('\n').slice(-lines).join('\n')}`);
    }
    return parts.join('\n');
  }

  /** Stops everything (controller-manager, API server, etcd) and removes the folder unless `keep`. */
  async stop({ keep = false } = {}): Promise<void> {
    await this.scheduler.stop();
    await this.controllerManager.stop();
    await this.apiserver.stop();
    await this.etcd.stop();
    if (!keep) await rm(this.dir, { recursive: true, force: true });
  }
}

function httpGet(
  url: string,
  tls: { ca?: Buffer; cert?: Buffer; key?: Buffer; rejectUnauthorized?: boolean } = {},
): Promise<string> {
  const send = url.startsWith('https:') ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(url, { ...tls, timeout: 2_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject).on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}
