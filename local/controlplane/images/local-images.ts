import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cacheDir } from '../binaries.ts';
import { runCommand } from '../node/host-commands.ts';

/**
 * Images for the local node, made here without a registry: buildah (Debian) builds them into a store under
 * the project's cache, and they reach the node's containerd as OCI archives.
 */
const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const PACKAGE = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
  version: string;
  devDependencies: Record<string, string>;
};
const CHART = readFileSync(join(REPO_ROOT, 'charts/mtls-operator/Chart.yaml'), 'utf8');
const VALUES = readFileSync(join(REPO_ROOT, 'charts/mtls-operator/values.yaml'), 'utf8');

export const NODE_VERSION = PACKAGE.devDependencies.node!;
/** npm inside the base image, as the official Node image has it (its version is the one this project's CI uses). */
export const NPM_VERSION = '11.19.1';
/** The chart's default image: `image.repository` at the chart's `appVersion`, so `helm install` needs no overrides. */
export const PRODUCT_IMAGE = `${/^\s+repository:\s*(\S+)/m.exec(VALUES)![1]}:${/^appVersion:\s*'?([^'\s]+)'?/m.exec(CHART)![1]}`;
/** The stand-in for `node:<version>-bookworm-slim`: handed to the Dockerfile as its `BASE`. */
export const LOCAL_BASE_IMAGE = `localhost/mtls-operator/node-base:${NODE_VERSION}-bookworm`;
const PAUSE_SOURCE = join(dirname(fileURLToPath(import.meta.url)), 'pause.c');
/** Tagged with its source's digest, so an edited pause.c is rebuilt rather than found in the store. */
export const PAUSE_IMAGE = `localhost/mtls-operator/pause:${createHash('sha256').update(readFileSync(PAUSE_SOURCE)).digest('hex').slice(0, 12)}`;

/** overlay where the kernel allows it (rootless-free, fast); vfs copies every layer. */
const STORAGE_DRIVER = process.env.MTLS_BUILDAH_DRIVER ?? 'overlay';

function imagesDir(): string {
  return join(cacheDir(), 'images');
}

/**
 * buildah's network setup takes a lock file in its CNI config folder, /etc/cni/net.d by default, even for builds
 * that never use the network: a containers.conf of the store's own moves that folder into the store.
 */
function buildahContainersConf(store: string): string {
  const file = join(store, 'containers.conf');
  if (!existsSync(file)) {
    mkdirSync(store, { recursive: true });
    writeFileSync(file, `[network]\nnetwork_config_dir = "${join(store, 'cni')}"\n`);
  }
  return file;
}

/**
 * containers/image, under buildah, keeps a blob-info cache in /var/lib/containers/cache when run as root, whatever
 * --root says, and no flag or containers.conf key moves it: a build that made that folder removes it again.
 */
const BLOB_INFO_CACHE_ROOT = '/var/lib/containers';

async function buildah(args: string[], options: { timeoutMs?: number; allowFailure?: boolean } = {}) {
  const store = join(cacheDir(), `buildah-${STORAGE_DRIVER}`);
  const hadBlobInfoCache = existsSync(BLOB_INFO_CACHE_ROOT);
  try {
    return await runCommand(
      'buildah',
      ['--root', join(store, 'storage'), '--runroot', join(store, 'run'), '--storage-driver', STORAGE_DRIVER, ...args],
      {
        timeoutMs: options.timeoutMs ?? 600_000,
        allowFailure: options.allowFailure,
        env: { ...process.env, CONTAINERS_CONF: buildahContainersConf(store) },
      },
    );
  } finally {
    if (!hadBlobInfoCache) rmSync(BLOB_INFO_CACHE_ROOT, { recursive: true, force: true });
  }
}

async function imageExists(ref: string): Promise<boolean> {
  return (await buildah(['inspect', '--type', 'image', ref], { allowFailure: true })).code === 0;
}

/** An image holding one folder's files, with an entrypoint or a command. */
async function commitFolder(rootfs: string, ref: string, config: string[]): Promise<void> {
  const { stdout } = await buildah(['from', 'scratch']);
  const container = stdout.trim();
  try {
    await buildah(['copy', container, `${rootfs}/`, '/']);
    await buildah(['config', ...config, container]);
    await buildah(['commit', '--quiet', container, ref]);
  } finally {
    await buildah(['rm', container]);
  }
}

/** The pod sandbox image: one static binary (gcc), a few KiB. */
export async function ensurePauseImage(): Promise<string> {
  if (await imageExists(PAUSE_IMAGE)) return PAUSE_IMAGE;
  const work = await mkdtemp(join(cacheDir(), 'pause-'));
  try {
    await mkdir(join(work, 'rootfs'));
    await runCommand('gcc', ['-Os', '-static', '-o', join(work, 'rootfs/pause'), PAUSE_SOURCE]);
    await runCommand('strip', [join(work, 'rootfs/pause')]);
    await commitFolder(join(work, 'rootfs'), PAUSE_IMAGE, ['--entrypoint', '["/pause"]', '--user', '65535:65535']);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return PAUSE_IMAGE;
}

/** Shared libraries a binary loads, as ldd resolves them on this (Debian bookworm) machine. */
async function sharedLibraries(binary: string): Promise<string[]> {
  const { stdout } = await runCommand('ldd', [binary]);
  return [...stdout.matchAll(/(\/\S+\.so[.\d]*)/g)].map((match) => match[1]!);
}

/**
 * A minimal Debian-bookworm-like root with the pinned Node (from the npm `node` package), npm, a shell and
 * CA certificates: what the Dockerfile's steps use of `node:<version>-bookworm-slim`.
 */
export async function ensureBaseImage(): Promise<string> {
  if (await imageExists(LOCAL_BASE_IMAGE)) return LOCAL_BASE_IMAGE;
  const work = await mkdtemp(join(cacheDir(), 'node-base-'));
  const rootfs = join(work, 'rootfs');
  try {
    const nodeBinary = realpathSync(join(REPO_ROOT, 'node_modules/.bin/node'));
    const version = (await runCommand(nodeBinary, ['--version'])).stdout.trim();
    if (version !== `v${NODE_VERSION}`)
      throw new Error(`node_modules has Node ${version}, expected v${NODE_VERSION}: run npm ci`);
    const place = async (from: string, to = from) => {
      await mkdir(dirname(join(rootfs, to)), { recursive: true });
      await copyFile(from, join(rootfs, to));
      await chmod(join(rootfs, to), 0o755);
    };
    await place(nodeBinary, '/usr/local/bin/node');
    await place('/bin/dash', '/bin/sh');
    await place('/usr/bin/env'); // for the `#!/usr/bin/env node` of npm's bin scripts
    for (const lib of new Set([
      ...(await sharedLibraries(nodeBinary)),
      ...(await sharedLibraries('/bin/dash')),
      ...(await sharedLibraries('/usr/bin/env')),
    ]))
      await place(realpathSync(lib), lib);
    await place('/etc/ssl/certs/ca-certificates.crt');

    const npmDir = join(rootfs, 'usr/local/lib/node_modules/npm');
    await mkdir(npmDir, { recursive: true });
    const { stdout } = await runCommand('npm', ['pack', `npm@${NPM_VERSION}`, '--silent', '--pack-destination', work]);
    await runCommand('tar', [
      '-xzf',
      join(work, stdout.trim().split('\n').pop()!),
      '-C',
      npmDir,
      '--strip-components=1',
    ]);
    await symlink('../lib/node_modules/npm/bin/npm-cli.js', join(rootfs, 'usr/local/bin/npm'));
    await symlink('../lib/node_modules/npm/bin/npx-cli.js', join(rootfs, 'usr/local/bin/npx'));

    // npm trusts what this machine's npm trusts (the registry may sit behind a proxy with its own CA).
    await mkdir(join(rootfs, 'usr/local/etc'), { recursive: true });
    await writeFile(join(rootfs, 'usr/local/etc/npmrc'), 'cafile=/etc/ssl/certs/ca-certificates.crt\n');
    await mkdir(join(rootfs, 'etc'), { recursive: true });
    await writeFile(
      join(rootfs, 'etc/passwd'),
      'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n',
    );
    await writeFile(join(rootfs, 'etc/group'), 'root:x:0:\nnode:x:1000:\nnogroup:x:65534:\n');
    await writeFile(join(rootfs, 'etc/nsswitch.conf'), 'passwd: files\ngroup: files\nhosts: files dns\n');
    for (const [dir, mode] of [
      ['tmp', 0o1777],
      ['root', 0o700],
      ['home/node', 0o755],
    ] as const) {
      await mkdir(join(rootfs, dir), { recursive: true });
      await chmod(join(rootfs, dir), mode);
    }
    await commitFolder(rootfs, LOCAL_BASE_IMAGE, [
      '--env',
      'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      '--env',
      `NODE_VERSION=${NODE_VERSION}`,
      '--cmd',
      'node',
    ]);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return LOCAL_BASE_IMAGE;
}

/** Builds the Dockerfile for real (buildah, layers cached), on the local base; returns the image reference. */
export async function buildProductImage(progress: (line: string) => void = () => undefined): Promise<string> {
  const base = await ensureBaseImage();
  progress(`building ${PRODUCT_IMAGE} from the Dockerfile (buildah, base ${base})`);
  await buildah(
    [
      'bud',
      '--layers',
      '--pull=never',
      '--isolation',
      'chroot',
      '--build-arg',
      `BASE=${base}`,
      '--tag',
      PRODUCT_IMAGE,
      '--file',
      join(REPO_ROOT, 'Dockerfile'),
      REPO_ROOT,
    ],
    { timeoutMs: 900_000 },
  );
  return PRODUCT_IMAGE;
}

/** Gives a built image another reference (a new tag for an upgrade, say). */
export async function tagImage(ref: string, newRef: string): Promise<string> {
  await buildah(['tag', ref, newRef]);
  return newRef;
}

/** Writes an image from the build store as an OCI archive (for `ctr images import`). */
export async function exportImage(ref: string): Promise<string> {
  await mkdir(imagesDir(), { recursive: true });
  const file = join(imagesDir(), `${ref.replace(/[^A-Za-z0-9.-]+/g, '_')}.tar`);
  await rm(file, { force: true });
  await buildah(['push', '--quiet', ref, `oci-archive:${file}:${ref}`]);
  return file;
}

/** Imports images into a containerd's `k8s.io` namespace, where kubelet looks for them. */
export async function importImages(containerdSocket: string, refs: string[]): Promise<void> {
  for (const ref of refs) {
    const archive = await exportImage(ref);
    await runCommand('ctr', [
      '--address',
      containerdSocket,
      '-n',
      'k8s.io',
      'images',
      'import',
      '--no-unpack=false',
      archive,
    ]);
    const listed = await runCommand('ctr', ['--address', containerdSocket, '-n', 'k8s.io', 'images', 'ls', '-q']);
    if (!listed.stdout.split('\n').includes(ref)) {
      throw new Error(`${ref} is not in the node's containerd after importing ${archive}: ${listed.stdout.trim()}`);
    }
  }
}

export function imageToolsMissing(): string[] {
  return ['buildah', 'ctr', 'gcc'].filter(
    (tool) => !['/usr/bin', '/usr/sbin', '/bin', '/usr/local/bin'].some((dir) => existsSync(join(dir, tool))),
  );
}
