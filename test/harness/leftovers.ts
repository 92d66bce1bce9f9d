/**
 * Finds the processes a run left behind, by a marker in their environment. A runner (the test
 * runner, scripts/demo.sh, a test) adds a fresh random token to CAIRN_RUN_MARKER; every process it
 * starts, and every process those start, inherits it (the environment is copied at fork and at
 * exec), including daemons that detach and are re-parented to init, which a walk of the process
 * tree would miss. When the run ends, the runner lists the live processes whose
 * /proc/PID/environ carries its token: there should be none.
 *
 * What it keeps true: it only signals a pid whose environment carries the token, read again just
 * before each signal, so a reused pid or another checkout's run (another token) is never
 * touched. It passes over itself and its ancestors (they are the checker, still running) and
 * zombies (dead already, waiting for their parent to reap them).
 * What it leaves out: a process started with an environment that drops the variable (none of
 * ours do), and systems without /proc (the harness is Linux-only anyway).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';

export const runMarkerVariable = 'CAIRN_RUN_MARKER';

/** A process that carries a run's token. */
export interface MarkedProcess {
  readonly pid: number;
  readonly ppid: number;
  /** Its command line, arguments joined by spaces (what `ps -o args` shows). */
  readonly command: string;
}

/** A fresh token for one run, e.g. "tests-81234-9f2c4a1b" (label, runner pid, 32 random bits). */
export function newRunMarker(label: string): string {
  return `${label}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/**
 * `env` with `token` added to CAIRN_RUN_MARKER. Tokens are space-separated and accumulate, so a
 * run inside a run (the demo under the test runner) is found by both: each looks for its own.
 */
export function withRunMarker(token: string, env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const before = env[runMarkerVariable];
  return { ...env, [runMarkerVariable]: before === undefined || before === '' ? token : `${before} ${token}` };
}

/** State and parent of a pid from /proc/PID/stat, or undefined when it is gone. */
function statOf(pid: number): { state: string; ppid: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses, so split after the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0] ?? '?', ppid: Number(fields[1]) };
  } catch {
    return undefined;
  }
}

/** True when the environment pid `pid` was started with carries `token` (false when unreadable). */
function carries(pid: number, token: string): boolean {
  let environ: string;
  try {
    environ = readFileSync(`/proc/${pid}/environ`, 'latin1');
  } catch {
    return false; // gone, or another user's
  }
  const prefix = `${runMarkerVariable}=`;
  const entry = environ.split('\0').find((e) => e.startsWith(prefix));
  return entry !== undefined && entry.slice(prefix.length).split(' ').includes(token);
}

function commandOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').filter(Boolean).join(' ');
  } catch {
    return '?';
  }
}

/** This process and every ancestor up to init: the checker, which is still running by design. */
function selfAndAncestors(): Set<number> {
  const out = new Set<number>();
  for (let pid = process.pid; pid > 1 && !out.has(pid);) {
    out.add(pid);
    const stat = statOf(pid);
    if (stat === undefined) break;
    pid = stat.ppid;
  }
  return out;
}

/** True while `pid` runs and carries `token` (a zombie has finished running). */
function liveAndMarked(pid: number, token: string): boolean {
  const stat = statOf(pid);
  return stat !== undefined && stat.state !== 'Z' && stat.state !== 'X' && carries(pid, token);
}

/** Live processes, other than this one and its ancestors, that carry `token`. */
export function markedProcesses(token: string): MarkedProcess[] {
  const skip = selfAndAncestors();
  const out: MarkedProcess[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (skip.has(pid)) continue;
    const stat = statOf(pid);
    if (stat === undefined || stat.state === 'Z' || stat.state === 'X' || !carries(pid, token)) continue;
    out.push({ pid, ppid: stat.ppid, command: commandOf(pid) });
  }
  return out;
}

async function until(condition: () => boolean, deadlineMs: number, intervalMs = 50): Promise<boolean> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    if (condition()) return true;
    if (Date.now() >= end) return false;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

function signal(pid: number, token: string, name: NodeJS.Signals): void {
  if (!liveAndMarked(pid, token)) return;
  try {
    process.kill(pid, name);
  } catch {
    // Exited between the check and the signal.
  }
}

/**
 * The processes carrying `token` that are still there after `exitDeadlineMs` (a process that
 * is exiting, such as a daemon flushing after SIGTERM, gets that long to go), each then stopped
 * by pid: SIGTERM, and SIGKILL after `graceMs`. Returns what it found; empty means a clean run.
 */
export async function reapLeftovers(
  token: string,
  options: { exitDeadlineMs?: number; graceMs?: number } = {},
): Promise<MarkedProcess[]> {
  await until(() => markedProcesses(token).length === 0, options.exitDeadlineMs ?? 10_000);
  const left = markedProcesses(token);
  if (left.length === 0) return [];
  for (const p of left) signal(p.pid, token, 'SIGTERM');
  const graceMs = options.graceMs ?? 5_000;
  if (!(await until(() => left.every((p) => !liveAndMarked(p.pid, token)), graceMs))) {
    for (const p of left) signal(p.pid, token, 'SIGKILL');
    await until(() => left.every((p) => !liveAndMarked(p.pid, token)), graceMs);
  }
  return left;
}

/** One line per process, for a failure message: "pid 123 (parent 1): node dist/... nbd serve". */
export function describeLeftovers(left: readonly MarkedProcess[]): string[] {
  return left.map((p) => `pid ${p.pid} (parent ${p.ppid}): ${p.command}`);
}
