import { PAUSE_IMAGE } from '../images/local-images.ts';
import { NODE_NETWORK } from './node-network.ts';

/** Where the local node keeps its state: fixed paths, so a start after a `kill -9` finds and removes leftovers. */
export const NODE_PATHS = {
  /** Sockets, configs, logs, the control plane's folder: all of it small and gone at reboot anyway. */
  state: '/run/mtls-operator-node',
  /** containerd's images and kubelet's pod folders. */
  data: '/var/lib/mtls-operator-node',
} as const;

export const NODE_NAME = 'mtls-operator-node';

/** Fixed host paths that containerd and kubelet write to whatever they are told: each gets a private tmpfs. */
export const PRIVATE_MOUNT_POINTS = [
  // util-linux's mount (kubelet runs it for volumes) keeps its utab here, and would leave the folder behind.
  '/run/mount',
  '/run/netns',
  '/run/containerd',
  '/var/lib/cni',
  '/var/lib/kubelet',
  '/var/log/pods',
  '/var/log/containers',
];

/** kubelet's cgroups, under a root of their own in every hierarchy (cgroupfs driver). */
export const NODE_CGROUP = 'mtls-operator-node';

export interface NodeFiles {
  containerdConfig: string;
  containerdSocket: string;
  containerdRoot: string;
  containerdState: string;
  cniConfDir: string;
  cniIpamDir: string;
  kubeletConfig: string;
  kubeletRoot: string;
  kubeProxyConfig: string;
  resolvConf: string;
  logs: string;
  /** Mount points that did not exist and were made for the private mounts: removed again at cleanup. */
  createdMountPoints: string;
  /** The kernel settings kubelet changes for the whole machine, as they were: restored at cleanup. */
  savedSysctls: string;
}

export function nodeFiles(): NodeFiles {
  const { state, data } = NODE_PATHS;
  return {
    containerdConfig: `${state}/containerd.toml`,
    containerdSocket: `${state}/containerd/containerd.sock`,
    containerdRoot: `${data}/containerd`,
    containerdState: `${state}/containerd`,
    cniConfDir: `${state}/cni/net.d`,
    cniIpamDir: `${state}/cni/ipam`,
    kubeletConfig: `${state}/kubelet.yaml`,
    kubeletRoot: `${data}/kubelet`,
    kubeProxyConfig: `${state}/kube-proxy.yaml`,
    resolvConf: `${state}/resolv.conf`,
    logs: `${state}/logs`,
    createdMountPoints: `${state}/created-mount-points`,
    savedSysctls: `${state}/saved-sysctls.json`,
  };
}

/**
 * containerd 1.6 with the CRI plugin. `restrict_oom_score_adj`: this kernel's bounding set lacks
 * CAP_SYS_RESOURCE, and without it every sandbox fails in runc ("can't get final child's PID from pipe").
 */
export function containerdConfig(files: NodeFiles): string {
  return `version = 2
root = "${files.containerdRoot}"
state = "${files.containerdState}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "${files.containerdSocket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${files.cniConfDir}"
`;
}

/**
 * kubelet on this cgroup v1 host (hence `failCgroupV1: false` and the cgroupfs driver). `syncFrequency: 10s`
 * brings a changed Secret to its volume in about 5-15 s instead of up to 90 s. Pods get a resolv.conf that
 * names no server outside the node, and no cluster DNS.
 */
export function kubeletConfig(files: NodeFiles, clusterCaFile: string): string {
  return `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /${NODE_CGROUP}
failCgroupV1: false
failSwapOn: false
address: ${NODE_NETWORK.nodeAddress}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${clusterCaFile}}
authorization: {mode: Webhook}
clusterDomain: cluster.local
resolvConf: ${files.resolvConf}
syncFrequency: 10s
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
shutdownGracePeriod: 0s
containerLogMaxSize: 5Mi
`;
}

export function kubeProxyConfig(kubeconfig: string): string {
  return `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: ${kubeconfig}}
hostnameOverride: ${NODE_NAME}
mode: iptables
clusterCIDR: ${NODE_NETWORK.podCidr}
bindAddress: ${NODE_NETWORK.nodeAddress}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [${NODE_NETWORK.nodeAddress}/32]
conntrack: {maxPerCore: 0, min: 0}
`;
}

/** Nothing listens on the pod's own loopback: a lookup fails at once instead of leaving the node. */
export const POD_RESOLV_CONF = 'nameserver 127.0.0.1\noptions ndots:1 timeout:1 attempts:1\n';
