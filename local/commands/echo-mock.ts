import { startEchoMock } from '../podsim/mock-upstream.ts';
import { helpText, parseFlags, UsageError } from '../../common/flags.ts';
import { untilSignal } from '../../common/signals.ts';

const FLAGS = {
  port: { type: 'string', help: 'port to listen on (plain HTTP)', default: '8080' },
  host: { type: 'string', help: 'address to listen on', default: '0.0.0.0' },
} as const;

/** The sample mock as a container command: `dev` and the real-node tests run it in pods from the product image. */
export async function run(argv: string[]): Promise<number> {
  const { flags, help } = parseFlags(FLAGS, argv);
  if (help) {
    process.stdout.write(helpText('echo-mock', '[--port 8080] [--host 0.0.0.0]', FLAGS));
    return 0;
  }
  const port = Number(flags.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`--port: ${flags.port} is not a port`);
  const server = await startEchoMock(port, flags.host);
  process.stderr.write(`echo-mock listening on ${flags.host}:${port}\n`);
  await untilSignal();
  server.close();
  return 0;
}
