import { packageVersion } from './defaults.ts';
import { UsageError } from '../common/flags.ts';
import { errorMessage } from '../common/log-text.ts';

/**
 * The one executable, loaded by operator/cli.ts (and operator/kubectl-mtls.ts, the kubectl plugin) once the
 * Node version is known to be enough. Each subcommand lives in its own module and is imported only when
 * chosen, so the sidecar never loads the Kubernetes client and starts fast.
 */
interface Command {
  summary: string;
  /** Offered by the kubectl plugin too: the commands for people looking at and acting on endpoints. */
  plugin?: true;
  load: () => Promise<{ run: (argv: string[]) => Promise<number> }>;
}

export type Program = 'mtls-operator' | 'kubectl-mtls';

const COMMANDS: Record<string, Command> = {
  controller: {
    summary: 'run the operator: controller, admission webhook, metrics, leader election',
    load: () => import('./commands/controller.ts'),
  },
  sidecar: {
    summary: 'run the TLS sidecar in front of a plain-HTTP upstream',
    load: () => import('../sidecar/main.ts'),
  },
  status: {
    summary: "an endpoint's conditions, certificates, CA rollover, pods and recent Events",
    plugin: true,
    load: () => import('./commands/status.ts'),
  },
  inspect: {
    summary: 'inspect secret NAME: decode its certificates, check the chain, name its endpoint and client',
    plugin: true,
    load: () => import('./commands/inspect.ts'),
  },
  renew: {
    summary: "re-issue an endpoint's certificates now (all, --server or --client NAME), recorded as Events",
    plugin: true,
    load: () => import('./commands/renew.ts'),
  },
  check: {
    summary: 'is the operator installed and working: CRD, leader, webhook, expiring certificates (exit 1 if not)',
    plugin: true,
    load: () => import('./commands/check.ts'),
  },
  credentials: {
    summary: "write a client's tls.crt/tls.key/ca.crt from the cluster and print a curl line",
    plugin: true,
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

function commandsOf(program: Program): Record<string, Command> {
  return Object.fromEntries(Object.entries(COMMANDS).filter(([, cmd]) => program === 'mtls-operator' || cmd.plugin));
}

/** How a person types the program: kubectl runs the plugin for `kubectl mtls`. */
const spelled = (program: Program) => (program === 'kubectl-mtls' ? 'kubectl mtls' : program);

function usage(program: Program): string {
  const commands = commandsOf(program);
  const width = Math.max(...Object.keys(commands).map((name) => name.length));
  const lines = Object.entries(commands).map(([name, cmd]) => `  ${name.padEnd(width)}  ${cmd.summary}`);
  const name = spelled(program);
  return `Usage: ${name} <command> [flags]\n\nCommands:\n${lines.join('\n')}\n\nRun '${name} <command> --help' for a command's flags.\n`;
}

export async function main(argv: string[], program: Program = 'mtls-operator'): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage(program));
    return 0;
  }
  if (name === '--version' || name === 'version') {
    process.stdout.write(`${program} ${packageVersion()}\n`);
    return 0;
  }
  const command = commandsOf(program)[name];
  if (!command) {
    process.stderr.write(`${spelled(program)}: unknown command '${name}'\n\n${usage(program)}`);
    return 2;
  }
  return (await command.load()).run(rest);
}

/** Runs the command line of this process and sets its exit code; errors become one line, not a stack trace. */
export function runCli(program: Program): Promise<void> {
  const name = spelled(program);
  return main(process.argv.slice(2), program).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      if (err instanceof UsageError) {
        process.stderr.write(
          `${name} ${process.argv[2]}: ${err.message}\nRun '${name} ${process.argv[2]} --help' for its flags.\n`,
        );
        process.exitCode = 2;
        return;
      }
      // An API error in the API server's words ("... is forbidden: User ... cannot patch ..."), not client-node's dump.
      process.stderr.write(`${name}: ${errorMessage(err)}\n`);
      process.exitCode = 1;
    },
  );
}
