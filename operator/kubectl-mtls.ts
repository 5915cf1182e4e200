#!/usr/bin/env node
import { refuseOldNode } from './node-version.ts';

/*
 * The kubectl plugin's entry (package.json bin `kubectl-mtls`): kubectl runs any `kubectl-mtls` on PATH for
 * `kubectl mtls ...`. The user-facing commands of `mtls-operator`, behind the same Node check as operator/cli.ts.
 */

if (!refuseOldNode('kubectl-mtls')) await (await import('./main.ts')).runCli('kubectl-mtls');
