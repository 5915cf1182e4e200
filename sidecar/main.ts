import { untilSignal } from '../common/signals.ts';
import { parseSidecarArgs, sidecarHelp } from './flags.ts';
import { startSidecar } from './sidecar.ts';
import { isWorker, runWorker, runWorkerGroup } from './workers.ts';

/** `mtls-operator sidecar ...`: serve until SIGTERM, then drain. */
export async function run(argv: string[]): Promise<number> {
  const { config } = parseSidecarArgs(argv);
  if (!config) {
    process.stdout.write(sidecarHelp());
    return 0;
  }
  if (isWorker()) return runWorker(config);
  if (config.workers > 1) return runWorkerGroup(config, process.argv[1]!);
  const sidecar = await startSidecar(config);
  await untilSignal();
  await sidecar.stop();
  return 0;
}
