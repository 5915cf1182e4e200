import { existsSync } from 'node:fs';
import { readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { inNetns, runCommand } from './host-commands.ts';

/**
 * The local node's network, all in the benchmarking ranges (RFC 2544), so nothing it sends can reach a real
 * host: the node lives in its own network namespace, joined to the machine by one veth pair, with no default
 * route anywhere. Host processes (tests, `dev`, a person's curl) reach pod IPs and ClusterIPs through that veth.
 */
export const NODE_NETWORK = {
  netns: 'mtls-operator-node',
  hostVeth: 'mtls-host0',
  nodeVeth: 'mtls-node0',
  hostAddress: '198.19.255.1',
  nodeAddress: '198.19.255.2',
  linkPrefix: 24,
  podCidr: '198.18.0.0/16',
  /** This node's share of the pod range (kube-controller-manager hands the first /24 to the first node). */
  nodePodCidr: '198.18.0.0/24',
  podGateway: '198.18.0.1',
  serviceCidr: '198.19.0.0/24',
  /** Services and the node's own link: where pods may go besides other pods. */
  serviceAndNodeRange: '198.19.0.0/16',
  /** The `kubernetes` Service's ClusterIP: the first address of the Service range. */
  apiServiceIp: '198.19.0.1',
  bridge: 'mtls-cni0',
} as const;

const NETNS_DIR = '/run/netns';
export const NETNS_PATH = `${NETNS_DIR}/${NODE_NETWORK.netns}`;

/** Routes from the machine into the node's namespace (removed with the host's veth end). */
const HOST_ROUTES = [NODE_NETWORK.podCidr, NODE_NETWORK.serviceCidr];

/** Creates the namespace, the veth pair and the routes; undone by `removeNodeNetwork`. */
export async function createNodeNetwork(): Promise<void> {
  const { netns, hostVeth, nodeVeth, hostAddress, nodeAddress, linkPrefix } = NODE_NETWORK;
  await runCommand('ip', ['netns', 'add', netns]);
  await runCommand('ip', ['link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', nodeVeth, 'netns', netns]);
  await runCommand('ip', ['addr', 'add', `${hostAddress}/${linkPrefix}`, 'dev', hostVeth]);
  await runCommand('ip', ['link', 'set', hostVeth, 'up']);
  await runCommand('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
  await runCommand('ip', ['-n', netns, 'addr', 'add', `${nodeAddress}/${linkPrefix}`, 'dev', nodeVeth]);
  await runCommand('ip', ['-n', netns, 'link', 'set', nodeVeth, 'up']);
  for (const cidr of HOST_ROUTES) await runCommand('ip', ['route', 'add', cidr, 'via', nodeAddress, 'dev', hostVeth]);
  // Inside the node: route between the veth and the pod bridge, and let iptables see bridged pod-to-pod
  // traffic (kube-proxy's hairpin and kube-router's policies need it). Both sysctls are per namespace.
  await inNetns(NETNS_PATH, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  if (existsSync('/proc/sys/net/bridge/bridge-nf-call-iptables'))
    await inNetns(NETNS_PATH, 'sysctl', ['-qw', 'net.bridge.bridge-nf-call-iptables=1']);
}

/**
 * Deletes the namespace (its interfaces, addresses, iptables rules and ipsets go with it) and the host's
 * veth end with its routes. Safe to call when some or all of it is missing.
 */
export async function removeNodeNetwork(): Promise<void> {
  const { netns, hostVeth } = NODE_NETWORK;
  // Deleting the veth takes its routes along; no route of anyone else's is touched.
  await runCommand('ip', ['link', 'del', hostVeth], { allowFailure: true });
  if (existsSync(NETNS_PATH)) await runCommand('ip', ['netns', 'del', netns], { allowFailure: true });
  await removeEmptyNetnsMount();
}

/**
 * `ip netns add` makes /run/netns a shared bind mount of itself, and `ip netns del` leaves it. Once no named
 * namespace is left in it, that mount (and the empty folder) serve nobody; the next `ip netns add` makes both again.
 */
async function removeEmptyNetnsMount(): Promise<void> {
  const entries = await readdir(NETNS_DIR).catch(() => undefined);
  if (!entries || entries.length > 0) return;
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  const mounts = mountinfo.split('\n').filter((line) => line.split(' ')[4] === NETNS_DIR).length;
  // -n: util-linux's umount would otherwise make /run/mount for its utab, and leave it.
  for (let i = 0; i < mounts; i++) await runCommand('umount', ['-n', NETNS_DIR], { allowFailure: true });
  await rmdir(NETNS_DIR).catch(() => undefined);
}

/** CNI: a bridge with host-local addresses; pods get routes to the cluster ranges only, no default route. */
export async function writeCniConfig(confDir: string, ipamDir: string): Promise<void> {
  const { bridge, nodePodCidr, podGateway, podCidr } = NODE_NETWORK;
  const config = {
    cniVersion: '1.0.0',
    name: 'mtls-operator-node',
    plugins: [
      {
        type: 'bridge',
        bridge,
        isGateway: true,
        ipMasq: false,
        hairpinMode: true,
        ipam: {
          type: 'host-local',
          dataDir: ipamDir,
          ranges: [[{ subnet: nodePodCidr, gateway: podGateway }]],
          routes: [{ dst: podCidr }, { dst: NODE_NETWORK.serviceAndNodeRange }],
        },
      },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  };
  await writeFile(`${confDir}/10-mtls-operator-node.conflist`, JSON.stringify(config, null, 2));
}
