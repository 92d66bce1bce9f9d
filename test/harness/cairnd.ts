/**
 * Starts real storage nodes (node dist/src/bin/cairnd.js) for integration tests: a temp data dir,
 * a free loopback port, a harness etcd; waits for the ready line with a deadline (never a blind
 * sleep) and stops each node by its pid. Also runs cairnd to completion for tests of its exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { repoRoot } from './cli.js';
import { exited, freePort, stopChild } from '../../src/dev/index.js';

export const cairndPath = resolve(repoRoot, 'dist/src/bin/cairnd.js');

export interface CairndOptions {
  /** etcd client URL (from startEtcd()); undefined passes no --etcd (CAIRN_ETCD in `env` then). */
  readonly etcd: string | undefined;
  readonly name: string;
  readonly zone: string;
  /** Default: a new temp dir, removed by stop(). */
  readonly dataDir?: string;
  /** Default: a free port. Pass the old port to restart a node where clients expect it. */
  readonly port?: number;
  /**
   * Port of the journal protocol. Default: another free port (not the shard port + 1, which a
   * busy machine may have given to someone else). Pass the old one to restart a node in place.
   * Ignored when extraArgs has --journal-listen.
   */
  readonly journalPort?: number;
  readonly extraArgs?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  readonly startDeadlineMs?: number;
}

export interface CairndHandle {
  readonly name: string;
  readonly zone: string;
  /** host:port of the shard API. */
  readonly address: string;
  readonly port: number;
  /** host:port of the journal protocol, from the ready line. */
  readonly journalAddress: string;
  readonly journalPort: number;
  readonly pid: number;
  readonly dataDir: string;
  readonly process: ChildProcess;
  /** Everything written to stderr so far (the node logs one line per error). */
  stderr(): string;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exit(): Promise<number | string>;
  /** SIGTERM by pid, SIGKILL after `graceMs`; removes a temp data dir unless `keepData`. */
  stop(options?: { graceMs?: number; keepData?: boolean }): Promise<void>;
}

/** Tries of startCairnd() when a port it picked itself was taken before cairnd could bind it. */
const portRaceAttemptsMax = 3;

/**
 * Starts cairnd and resolves once it printed its ready line; rejects with its stderr if it exits
 * first. A free port is found by binding and closing it, so another process can take it before
 * cairnd binds it (seen under load: a restarted node's journal port): when a port this function
 * picked was taken, it tries again with new ones.
 */
export async function startCairnd(options: CairndOptions): Promise<CairndHandle> {
  const picksPorts = options.port === undefined || options.journalPort === undefined;
  for (let attempt = 1; ; attempt++) {
    try {
      return await startCairndOnce(options);
    } catch (err) {
      const taken = err instanceof Error && /EADDRINUSE/.test(err.message);
      if (!taken || !picksPorts || attempt >= portRaceAttemptsMax) throw err;
    }
  }
}

async function startCairndOnce(options: CairndOptions): Promise<CairndHandle> {
  const ownDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), `cairnd-${options.name}-`));
  const port = options.port ?? (await freePort());
  const ownJournal = !(options.extraArgs ?? []).includes('--journal-listen');
  const journalPort = ownJournal ? (options.journalPort ?? (await freePort())) : 0;
  const args = [
    cairndPath,
    ...(options.etcd === undefined ? [] : ['--etcd', options.etcd]),
    '--name',
    options.name,
    '--zone',
    options.zone,
    '--data-dir',
    dataDir,
    '--listen',
    `127.0.0.1:${port}`,
    ...(ownJournal ? ['--journal-listen', `127.0.0.1:${journalPort}`] : []),
    ...(options.extraArgs ?? []),
  ];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env });
  let stdout = '';
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-64_000);
  });
  const done = exited(child);
  const exitCode = done.then(() => child.exitCode ?? child.signalCode ?? -1);
  const address = `127.0.0.1:${port}`;
  const deadlineMs = options.startDeadlineMs ?? 20_000;
  let journalAddress = '';
  const ready = new Promise<void>((resolveReady, reject) => {
    const timer = setTimeout(
      () =>
        reject(
          new Error(`cairnd ${options.name} printed no ready line within ${deadlineMs} ms; stderr: ${stderr.trim()}`),
        ),
      deadlineMs,
    );
    child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      const line = new RegExp(`serving on ${address.replace(/\./g, '\\.')}, journal on (\\S+)\\n`).exec(stdout);
      if (line !== null) {
        journalAddress = line[1]!;
        clearTimeout(timer);
        resolveReady();
      }
    });
    void done.then(() => {
      clearTimeout(timer);
      reject(
        new Error(
          `cairnd ${options.name} exited (${child.exitCode ?? child.signalCode}) before it was ready: ${stderr.trim()}`,
        ),
      );
    });
  });
  const handle: CairndHandle = {
    name: options.name,
    zone: options.zone,
    address,
    port,
    get journalAddress() {
      return journalAddress;
    },
    get journalPort() {
      return Number(journalAddress.slice(journalAddress.lastIndexOf(':') + 1));
    },
    pid: child.pid ?? -1,
    dataDir,
    process: child,
    stderr: () => stderr,
    exit: () => exitCode,
    async stop(stopOptions = {}) {
      await stopChild(child, stopOptions.graceMs ?? 15_000);
      if (ownDir && stopOptions.keepData !== true) rmSync(dataDir, { recursive: true, force: true });
    },
  };
  try {
    await ready;
  } catch (err) {
    await handle.stop();
    throw err;
  }
  return handle;
}

export interface CairndRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly elapsedMs: number;
}

/** Runs cairnd with `args` until it exits (for start failures); kills it after `timeoutMs`. */
export function runCairnd(
  args: readonly string[],
  options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<CairndRun> {
  const started = Date.now();
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, [cairndPath, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: options.env ?? process.env,
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
    // 'close' comes after 'exit', once the pipes are drained too.
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code: code ?? (signal === null ? -1 : 128), stdout, stderr, elapsedMs: Date.now() - started });
    });
  });
}
