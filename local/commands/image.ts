import { existsSync } from 'node:fs';
import {
  buildProductImage,
  ensurePauseImage,
  imageToolsMissing,
  importImages,
} from '../controlplane/images/local-images.ts';
import { runningNodeOwner } from '../controlplane/node/local-node-cluster.ts';
import { nodeFiles } from '../controlplane/node/node-configs.ts';
import { helpText, parseFlags } from '../../common/flags.ts';

const FLAGS = {
  'no-import': { type: 'boolean', help: "build only; do not import into a running local node's containerd" },
} as const;

export async function run(argv: string[]): Promise<number> {
  const { flags, help } = parseFlags(FLAGS, argv);
  if (help) {
    process.stdout.write(helpText('image', '[--no-import]', FLAGS));
    return 0;
  }
  const missing = imageToolsMissing();
  if (missing.length > 0) {
    process.stderr.write(
      `mtls-operator image: needs ${missing.join(', ')} (Debian: apt-get install buildah containerd gcc)\n`,
    );
    return 1;
  }
  const progress = (line: string) => process.stderr.write(`[image] ${line}\n`);
  const started = Date.now();
  const image = await buildProductImage(progress);
  progress(`built ${image} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const socket = nodeFiles().containerdSocket;
  // The socket alone may be a leftover of a killed node; its owner tells whether one runs.
  if (!flags['no-import'] && existsSync(socket) && (await runningNodeOwner())) {
    await importImages(socket, [await ensurePauseImage(), image]);
    progress(`imported into the local node's containerd (${socket})`);
  }
  process.stdout.write(`${image}\n`);
  return 0;
}
