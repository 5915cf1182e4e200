import { untilSignal } from '../operator/commands/run-until-signal.ts';
import { parseSidecarArgs, sidecarHelp } from './flags.ts';
import { startSidecar } from './sidecar.ts';

/** `mtls-operator sidecar ...`: serve until SIGTERM, then drain. */
export async function run(argv: string[]): Promise<number> {
  const { config, help } = parseSidecarArgs(argv);
  if (help) {
    process.stdout.write(sidecarHelp());
    return 0;
  }
  const sidecar = await startSidecar(config);
  await untilSignal();
  await sidecar.stop();
  return 0;
}
