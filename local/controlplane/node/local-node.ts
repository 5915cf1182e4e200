import { existsSync } from 'node:fs';
import { appendFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ControlPlaneBinaries, NodeBinaries } from '../binaries.ts';
import { ensurePauseImage, importImages } from '../images/local-images.ts';
import type { LocalControlPlane } from '../local-control-plane.ts';
import { SupervisedProcess } from '../supervised-process.ts';
import { runCommand } from './host-commands.ts';
import { saveKernelSettings } from './kernel-settings.ts';
import { createNodeCgroups } from './node-cgroups.ts';
import {
  containerdConfig,
  kubeletConfig,
  kubeProxyConfig,
  NODE_NAME,
  nodeFiles,
  PRIVATE_MOUNT_POINTS,
  POD_RESOLV_CONF,
  type NodeFiles,
} from './node-configs.ts';
import { NETNS_PATH, NODE_NETWORK, writeCniConfig } from './node-network.ts';

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * containerd, kubelet, kube-proxy and kube-router's firewall, inside the node's network namespace.
 * containerd and kubelet also share a private mount namespace: their mounts (Secret volumes, container root
 * filesystems, pod network namespaces) never reach the machine's, and vanish with the last of their processes.
 */
export class LocalNode {
  readonly files: NodeFiles = nodeFiles();
  private readonly mountHolder: SupervisedProcess;
  private readonly containerd: SupervisedProcess;
  private readonly kubelet: SupervisedProcess;
  private readonly kubeProxy: SupervisedProcess;
  private readonly kubeRouter: SupervisedProcess;
  private mountNamespace = '';
  private readonly binaries: ControlPlaneBinaries & NodeBinaries;
  private readonly plane: LocalControlPlane;
  private readonly progress: (line: string) => void;

  constructor(
    binaries: ControlPlaneBinaries & NodeBinaries,
    plane: LocalControlPlane,
    progress: (line: string) => void,
  ) {
    this.binaries = binaries;
    this.plane = plane;
    this.progress = progress;
    const log = (name: string) => join(this.files.logs, `${name}.log`);
    this.mountHolder = new SupervisedProcess('mount-namespace', log('mount-namespace'));
    this.containerd = new SupervisedProcess('containerd', log('containerd'));
    this.kubelet = new SupervisedProcess('kubelet', log('kubelet'));
    this.kubeProxy = new SupervisedProcess('kube-proxy', log('kube-proxy'));
    this.kubeRouter = new SupervisedProcess('kube-router', log('kube-router'));
  }

  async start(): Promise<void> {
    const files = this.files;
    for (const dir of [files.logs, files.cniConfDir, files.cniIpamDir, files.kubeletRoot, files.containerdRoot])
      await mkdir(dir, { recursive: true });
    await writeFile(files.containerdConfig, containerdConfig(files));
    await writeFile(files.kubeletConfig, kubeletConfig(files, this.plane.caCertFile));
    await writeFile(files.kubeProxyConfig, kubeProxyConfig(this.plane.kubeconfigPath));
    await writeFile(files.resolvConf, POD_RESOLV_CONF);
    await writeCniConfig(files.cniConfDir, files.cniIpamDir);

    await this.startMountNamespace();
    await this.startContainerd();
    this.progress('importing the pause image');
    await importImages(files.containerdSocket, [await ensurePauseImage()]);
    await this.startKubelet();
    await this.waitForNodeReady();
    this.startInNode(this.kubeProxy, this.binaries.kubeProxy, [`--config=${files.kubeProxyConfig}`, '--v=1']);
    // kube-router finds its Node object at start, so it starts once kubelet has registered it.
    this.startInNode(this.kubeRouter, this.binaries.kubeRouter, [
      `--kubeconfig=${this.plane.kubeconfigPath}`,
      `--hostname-override=${NODE_NAME}`,
      '--run-firewall=true',
      '--run-router=false',
      '--run-service-proxy=false',
      '--enable-cni=false',
      '--enable-ipv6=false',
      '--metrics-port=0',
      '--health-port=20244',
      '--v=1',
    ]);
    this.progress('waiting for kube-proxy and kube-router to program the node');
    await this.waitFor('kube-proxy', this.kubeProxy, () => this.hasIptablesChain('KUBE-SERVICES'));
    await this.waitFor('kube-router', this.kubeRouter, () => this.hasIptablesChain('KUBE-ROUTER-FORWARD'));
  }

  private async hasIptablesChain(chain: string): Promise<boolean> {
    const { stdout } = await runCommand('nsenter', [`--net=${NETNS_PATH}`, '--', 'iptables', '-S'], {
      allowFailure: true,
    });
    return stdout.split('\n').some((line) => line === `-N ${chain}`);
  }

  /**
   * A process that does nothing but hold a private mount namespace for containerd and kubelet, with a tmpfs
   * of its own over each fixed host path they write to (pod network namespaces, shim sockets and runc state,
   * the CNI cache, device-plugin sockets, pod logs): nothing of theirs lands on the machine's disk. The
   * mounts are made before `sleep` runs, after `unshare` has made the namespace a slave of the machine's, so
   * none propagates back.
   */
  private async startMountNamespace(): Promise<void> {
    for (const dir of PRIVATE_MOUNT_POINTS) {
      if (existsSync(dir)) continue;
      await mkdir(dir, { recursive: true });
      await appendFile(this.files.createdMountPoints, `${dir}\n`);
    }
    // -n: no utab entry (util-linux would write one into /run/mount before its tmpfs is there).
    const mounts = PRIVATE_MOUNT_POINTS.map((dir) => `mount -n -t tmpfs -o mode=0755 tmpfs ${dir}`).join(' && ');
    this.mountHolder.start('unshare', [
      '--mount',
      '--propagation',
      'slave',
      '--',
      'sh',
      '-c',
      `${mounts} && exec sleep infinity`,
    ]);
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline) {
      if (!this.mountHolder.running)
        throw new Error(`the mount namespace holder exited with code ${await this.mountHolder.whenExited()}`);
      const pid = this.mountHolder.pid;
      const command = pid ? await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '') : '';
      if (command.trim() === 'sleep') {
        this.mountNamespace = `/proc/${pid}/ns/mnt`;
        return;
      }
      await sleep(20);
    }
    throw new Error('the mount namespace holder did not start within 5 s');
  }

  private startInNode(proc: SupervisedProcess, binary: string, args: string[], privateMounts = false): void {
    const enter = [`--net=${NETNS_PATH}`, ...(privateMounts ? [`--mount=${this.mountNamespace}`] : [])];
    proc.start('nsenter', [...enter, '--', binary, ...args]);
  }

  private async startContainerd(): Promise<void> {
    this.progress('starting containerd');
    this.startInNode(
      this.containerd,
      'containerd',
      [`--config=${this.files.containerdConfig}`, '--log-level=warn'],
      true,
    );
    await this.waitFor('containerd', this.containerd, async () => {
      if (!existsSync(this.files.containerdSocket)) return false;
      const version = await runCommand('ctr', ['--address', this.files.containerdSocket, 'version'], {
        allowFailure: true,
      });
      return version.code === 0;
    });
  }

  private async startKubelet(): Promise<void> {
    this.progress('starting kubelet');
    await saveKernelSettings(this.files.savedSysctls);
    await createNodeCgroups();
    this.startInNode(
      this.kubelet,
      this.binaries.kubelet,
      [
        `--config=${this.files.kubeletConfig}`,
        `--kubeconfig=${this.plane.kubeconfigPath}`,
        `--container-runtime-endpoint=unix://${this.files.containerdSocket}`,
        `--root-dir=${this.files.kubeletRoot}`,
        `--cert-dir=${this.files.kubeletRoot}/pki`,
        `--hostname-override=${NODE_NAME}`,
        `--node-ip=${NODE_NETWORK.nodeAddress}`,
        '--v=1',
      ],
      true,
    );
  }

  private async waitForNodeReady(timeoutMs = 90_000): Promise<void> {
    this.progress(`waiting for node ${NODE_NAME} to be Ready`);
    const kubectl = this.binaries.kubectl;
    await this.waitFor(
      'kubelet',
      this.kubelet,
      async () => {
        const { stdout } = await runCommand(
          kubectl,
          [
            '--kubeconfig',
            this.plane.kubeconfigPath,
            'get',
            'node',
            NODE_NAME,
            '-o',
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
          ],
          { allowFailure: true },
        );
        return stdout.trim() === 'True';
      },
      timeoutMs,
    );
  }

  private async waitFor(what: string, proc: SupervisedProcess, ready: () => Promise<boolean>, timeoutMs = 30_000) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!proc.running) throw new Error(`${what} exited with code ${await proc.whenExited()}`);
      if (await ready().catch(() => false)) return;
      await sleep(250);
    }
    throw new Error(`${what} was not ready within ${timeoutMs / 1000}s`);
  }

  async tailLogs(lines = 15): Promise<string> {
    const parts: string[] = [];
    for (const name of ['containerd', 'kubelet', 'kube-proxy', 'kube-router']) {
      const text = await readFile(join(this.files.logs, `${name}.log`), 'utf8').catch(() => '');
      if (text) parts.push(`--- last lines of ${name}.log ---\n${text.trimEnd().split('\n').slice(-lines).join('\n')}`);
    }
    return parts.join('\n');
  }

  /** Stops the node's daemons; the pods and what is left are removed by `removeNodeLeftovers`. */
  async stop(): Promise<void> {
    await Promise.all([this.kubeRouter.stop(), this.kubeProxy.stop(), this.kubelet.stop()]);
    await this.containerd.stop();
    await this.mountHolder.stop(1_000, 'SIGKILL');
  }
}
