import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { freePort } from '../../../local/controlplane/local-control-plane.ts';
import { SIDECAR_NODE_OPTIONS } from '../../../sidecar/flags.ts';
import { waitFor } from '../../support/cluster.ts';
import { CLI } from '../support.ts';
import { type Mode, TIMEOUTS } from './settings.ts';

/** The sidecar as its own process for the hostile suite, and what is read of it from /proc. */

export interface SidecarProcess {
  child: ChildProcess;
  pid: number;
  ports: Record<Mode, number>;
  admin: number;
  logBytes: number;
  refusedLines: number;
  lastLines: string[];
  startedAt: number;
}

export async function startSidecarProcess(
  dir: string,
  upstreamPort: number,
  modes: readonly Mode[],
): Promise<SidecarProcess> {
  const ports = {} as Record<Mode, number>;
  const args = [CLI, 'sidecar'];
  for (const mode of modes) {
    ports[mode] = await freePort();
    args.push('--listen', `${mode}=${ports[mode]}`);
  }
  const admin = await freePort();
  args.push(
    ...['--upstream', `127.0.0.1:${upstreamPort}`, '--tls-dir', dir, '--admin', `127.0.0.1:${admin}`],
    ...['--handshake-timeout', String(TIMEOUTS.handshake), '--headers-timeout', String(TIMEOUTS.headers)],
    ...['--request-timeout', String(TIMEOUTS.request), '--idle-timeout', String(TIMEOUTS.idle)],
    ...['--upstream-timeout', String(TIMEOUTS.upstream)],
  );
  // With the Node options the injector gives the sidecar container, so memory is measured as deployed.
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_OPTIONS: SIDECAR_NODE_OPTIONS },
  });
  const proc: SidecarProcess = {
    child,
    pid: child.pid!,
    ports,
    admin,
    logBytes: 0,
    refusedLines: 0,
    lastLines: [],
    startedAt: Date.now(),
  };
  let partial = '';
  const onLog = (d: Buffer) => {
    proc.logBytes += d.length;
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      if (line.includes('"message":"refused"')) proc.refusedLines++;
      proc.lastLines.push(line.slice(0, 400));
      if (proc.lastLines.length > 40) proc.lastLines.shift();
    }
  };
  child.stdout!.on('data', onLog);
  child.stderr!.on('data', onLog);
  await waitFor('the sidecar to be ready', async () => (await fetch(`http://127.0.0.1:${admin}/readyz`)).ok, {
    timeoutMs: 30_000,
  });
  return proc;
}

export function rssMiB(pid: number): number {
  const kib = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
  return kib / 1024;
}

/** Samples a process's VmRSS every 100 ms. */
export class RssSampler {
  peak = 0;
  samples = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly pid: number;
  constructor(pid: number) {
    this.pid = pid;
    this.timer = setInterval(() => this.sample(), 100);
    this.timer.unref();
    this.sample();
  }
  sample(): void {
    try {
      this.peak = Math.max(this.peak, rssMiB(this.pid));
      this.samples++;
    } catch {
      // the process is gone: the liveness assertions report it
    }
  }
  stop(): void {
    clearInterval(this.timer);
  }
}

/**
 * Whether the sidecar process still holds the server side of the connection from `clientPort` to `serverPort`
 * (its socket inode among the process's file descriptors): a client that does not read cannot see a close.
 */
export function sidecarHolds(pid: number, serverPort: number, clientPort: number): boolean {
  const hex = (n: number) => `:${n.toString(16).toUpperCase().padStart(4, '0')}`;
  const inodes = new Set<string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(file, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9 && cols[1]!.endsWith(hex(serverPort)) && cols[2]!.endsWith(hex(clientPort)))
        if (cols[9] !== '0') inodes.add(`socket:[${cols[9]}]`);
    }
  }
  if (inodes.size === 0) return false;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (inodes.has(readlinkSync(`/proc/${pid}/fd/${fd}`))) return true;
    } catch {
      // closed while listing
    }
  }
  return false;
}
