import { packageVersion } from './defaults.ts';
import { UsageError } from '../common/flags.ts';

/**
 * The one executable, loaded by operator/cli.ts once the Node version is known to be enough. Each subcommand lives in its own module and is imported only when chosen, so the
 * sidecar never loads the Kubernetes client and starts fast.
 */
interface Command {
  summary: string;
  load: () => Promise<{ run: (argv: string[]) => Promise<number> }>;
}

const COMMANDS: Record<string, Command> = {
  controller: {
    summary: 'run the operator: controller, admission webhook, metrics, leader election',
    load: () => import('./commands/controller.ts'),
  },
  sidecar: {
    summary: 'run the TLS sidecar in front of a plain-HTTP upstream',
    load: () => import('../sidecar/main.ts'),
  },
  credentials: {
    summary: "write a client's tls.crt/tls.key/ca.crt from the cluster and print a curl line",
    load: () => import('./commands/credentials.ts'),
  },
  dev: {
    summary: 'run everything locally: control plane, operator, a sample mock with its sidecar',
    load: () => import('../local/commands/dev.ts'),
  },
  controlplane: {
    summary: 'start the local control plane (etcd, kube-apiserver, kube-controller-manager); --node adds a real node',
    load: () => import('../local/commands/controlplane.ts'),
  },
  'echo-mock': {
    summary: 'a plain-HTTP mock that answers with the identity the sidecar forwarded (for trying the product)',
    load: () => import('../local/commands/echo-mock.ts'),
  },
  image: {
    summary: "build the image with buildah (no registry needed) and load it into the local node's containerd",
    load: () => import('../local/commands/image.ts'),
  },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((name) => name.length));
  const lines = Object.entries(COMMANDS).map(([name, cmd]) => `  ${name.padEnd(width)}  ${cmd.summary}`);
  return `Usage: mtls-operator <command> [flags]\n\nCommands:\n${lines.join('\n')}\n\nRun 'mtls-operator <command> --help' for a command's flags.\n`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return 0;
  }
  if (name === '--version' || name === 'version') {
    process.stdout.write(`mtls-operator ${packageVersion()}\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`mtls-operator: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  return (await command.load()).run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(
        `mtls-operator ${process.argv[2]}: ${err.message}\nRun 'mtls-operator ${process.argv[2]} --help' for its flags.\n`,
      );
      process.exitCode = 2;
      return;
    }
    process.stderr.write(`mtls-operator: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
