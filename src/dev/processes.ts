/**
 * Processes by pid, for the dev cluster (`cairnctl dev`) and the test harness alike: a free
 * loopback port, waiting for a condition with a deadline (never a blind sleep), and stopping a
 * process by its pid, never by its name.
 *
 * What it keeps true: a pid this process did not just start is signalled only while /proc says it
 * still runs the command we expect (pidRuns), because pids are reused; every wait has a deadline
 * and its failure names what was awaited.
 * What it leaves out: starting processes (each caller knows its own stdio and environment), and
 * systems without /proc (pidGone and pidRuns read it; the dev cluster and the harness are Linux
 * only).
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { CairnError } from '../core/index.js';

/** How often stopPid looks whether a signalled pid has exited. */
const stopPollMs = 50;
/** stopChild's default time between SIGTERM and SIGKILL: a test process exits in well under it. */
const childStopGraceMsDefault = 5_000;
/** killPid's default wait for a signalled pid to vanish: SIGKILL takes effect in milliseconds. */
const killDeadlineMsDefault = 15_000;
/** waitFor's default deadline: generous for a condition in this process or a local daemon. */
const waitDeadlineMsDefault = 10_000;
/** waitFor's default poll interval: probes are cheap, so we notice soon after a condition holds. */
const waitIntervalMsDefault = 25;

/** A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it). */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === 'object') resolvePort(address.port);
        else reject(new CairnError('EADDR', 'Cannot read the port the kernel picked on 127.0.0.1'));
      });
    });
  });
}

/**
 * `count` distinct free loopback ports. All are held open until every one is chosen, so the
 * kernel cannot hand the same port out twice (one freePort() after another can: a port is free
 * again the moment its probe closes, before the process meant to use it has bound it).
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<Server>((resolveServer, reject) => {
          const server = createServer();
          server.unref();
          server.on('error', reject);
          server.listen(0, '127.0.0.1', () => resolveServer(server));
        }),
    ),
  );
  const ports = servers.map((s) => {
    const address = s.address();
    if (address === null || typeof address !== 'object')
      throw new CairnError('EADDR', 'Cannot read the port the kernel picked on 127.0.0.1');
    return address.port;
  });
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  return ports;
}

/**
 * True when a process with this pid exists (signal 0 probes without signalling). A zombie still
 * exists: see pidGone for "runs nothing any more".
 */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** True when `pid` no longer runs (a zombie counts as gone: it runs nothing and holds no socket). */
export function pidGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 3, after "pid (comm)"; comm may contain spaces and parentheses, so split at the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

/**
 * True when `pid` runs a command line containing `needle`. A recorded pid belongs to a process an
 * earlier command started; if that one exited and its pid was reused, we must not signal a stranger.
 */
export function pidRuns(pid: number, needle: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').includes(needle);
  } catch {
    return false;
  }
}

export interface WaitForOptions {
  /** What was seen so far, for the timeout message (a log tail, the last listing). */
  readonly seen?: () => string;
  /** Only sets how soon after the condition holds we notice; polling is the waiting. */
  readonly intervalMs?: number;
}

/**
 * Polls `condition` until it returns something other than undefined or false, and returns that.
 * A condition that throws counts as "not yet". After `deadlineMs` it throws a CairnError with code
 * ETIMEDOUT naming `what`, the last error the condition threw and what `seen()` reports, e.g.
 * `Timed out after 30000 ms waiting for etcd at http://127.0.0.1:2379: fetch failed`.
 */
export async function waitFor<T>(
  what: string,
  condition: () => T | undefined | false | Promise<T | undefined | false>,
  deadlineMs = waitDeadlineMsDefault,
  options: WaitForOptions = {},
): Promise<T> {
  const until = Date.now() + deadlineMs;
  let lastError = '';
  for (;;) {
    try {
      const value = await condition();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() > until) {
      const extra = [lastError, options.seen?.() ?? ''].filter((s) => s !== '').join('; ');
      throw new CairnError(
        'ETIMEDOUT',
        `Timed out after ${deadlineMs} ms waiting for ${what}${extra === '' ? '' : `: ${extra}`}`,
      );
    }
    await new Promise((r) => setTimeout(r, options.intervalMs ?? waitIntervalMsDefault));
  }
}

/** Resolves when our child has exited (at once if it already has). */
export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/**
 * Stops our child by its pid: SIGTERM, SIGKILL when it is still running after `graceMs`, and
 * resolves once it has exited. Waits for the child's exit event rather than polling its pid, so a
 * pid reused after the exit is never signalled.
 */
export async function stopChild(child: ChildProcess, graceMs = childStopGraceMsDefault): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const done = exited(child);
  process.kill(child.pid, 'SIGTERM');
  const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), graceMs).unref());
  if ((await Promise.race([done.then(() => 'exited' as const), timer])) === 'timeout') {
    process.kill(child.pid, 'SIGKILL');
    await done;
  }
}

export type StopOutcome = 'stopped' | 'killed' | 'gone' | 'not ours';

/**
 * Stops a process that is not our child (a detached daemon, a pid read from cluster.json): SIGTERM,
 * then SIGKILL when the pid still exists after `graceMs`. With `needle`, does nothing ('not ours')
 * unless the pid still runs a command line containing it (see pidRuns). Resolves with what
 * happened; after 'killed' the process may take a moment more to vanish.
 */
export async function stopPid(pid: number, options: { graceMs: number; needle?: string }): Promise<StopOutcome> {
  if (!pidAlive(pid)) return 'gone';
  if (options.needle !== undefined && !pidRuns(pid, options.needle)) return 'not ours';
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return 'gone';
  }
  const until = Date.now() + options.graceMs;
  while (Date.now() < until) {
    if (!pidAlive(pid)) return 'stopped';
    await new Promise((r) => setTimeout(r, stopPollMs));
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // exited just now
  }
  return 'killed';
}

/**
 * Sends `signal` (SIGKILL unless told) to a pid that is not our child and waits until it is gone
 * (pidGone); throws naming `what` when it is still there after `deadlineMs`. The caller checks
 * pidRuns first when the pid was recorded by another process.
 */
export async function killPid(
  pid: number,
  what: string,
  signal: NodeJS.Signals = 'SIGKILL',
  deadlineMs = killDeadlineMsDefault,
): Promise<void> {
  if (pidGone(pid)) return;
  try {
    process.kill(pid, signal);
  } catch {
    return;
  }
  await waitFor(`${what} (pid ${pid}) to exit after ${signal}`, () => pidGone(pid), deadlineMs);
}
