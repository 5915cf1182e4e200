import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';

/**
 * A child process that cannot outlive us: it is started through `setpriv --pdeathsig KILL`, so the kernel
 * kills it when this process dies, even by SIGKILL or a crashed test runner. Output goes to a log file.
 */
export class SupervisedProcess {
  readonly name: string;
  private child: ChildProcess | undefined;
  private exited: Promise<number | null> | undefined;
  private readonly logFile: string;

  constructor(name: string, logFile: string) {
    this.name = name;
    this.logFile = logFile;
  }

  start(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): void {
    const log = createWriteStream(this.logFile, { flags: 'a' });
    const useSetpriv = process.platform === 'linux' && existsSync('/usr/bin/setpriv');
    const [file, argv] = useSetpriv
      ? ['/usr/bin/setpriv', ['--pdeathsig', 'KILL', '--', command, ...args]]
      : [command, args];
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], env });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    this.child = child;
    this.exited = new Promise((resolve) => {
      child.on('exit', (code) => resolve(code));
      child.on('error', () => resolve(-1));
    });
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves with the exit code when the process ends by itself. */
  whenExited(): Promise<number | null> {
    return this.exited ?? Promise.resolve(null);
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  async stop(graceMs = 5_000, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}
