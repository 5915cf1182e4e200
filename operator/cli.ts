#!/usr/bin/env node
import { refuseOldNode } from './node-version.ts';

/*
 * The executable's entry (package.json bin, the image's ENTRYPOINT, `npm run mtls-operator`): it checks the
 * Node version, then loads the CLI (main.ts). ESM imports are all loaded before a module's code runs, so on
 * an older Node a dependency fails first, with its own stack trace (on Node 20, undici's use of zlib's zstd).
 * Hence only Node built-ins here and in node-version.ts, and the CLI behind a dynamic import. The required
 * version is package.json's engines.node, read at run time: one source of truth. (From source, on a Node
 * without type stripping, Node itself refuses the .ts file first: npm's scripts use the pinned Node.)
 * operator/kubectl-mtls.ts is the same entry for the kubectl plugin.
 */

if (!refuseOldNode('mtls-operator')) await (await import('./main.ts')).runCli('mtls-operator');
