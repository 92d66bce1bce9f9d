/**
 * The whole Cairn stack for integration tests, as a user runs it: `cairnctl dev up` in a temp dir
 * (a real etcd, six cairnd storage nodes in zones a, b, c, one NBD frontend), extra frontends
 * (`cairnctl nbd serve`) on new ports, and real NBD clients (nbdinfo, nbdcopy, nbdsh, qemu-io,
 * qemu-img, fio, nbdfuse) as subprocesses.
 *
 * What it keeps true:
 * - Every process it starts is stopped by its pid: clients when they overrun their deadline,
 *   frontends and nbdfuse by their handles, the dev cluster by `cairnctl dev down` (which stops
 *   each recorded pid), and anything still alive after that by SIGKILL of its recorded pid, but
 *   only when /proc says that pid still runs our command line (pids get reused).
 * - Nothing waits on the wall clock: every wait is for a condition (a ready line, a log line, a
 *   file, a pid gone) with a deadline, and failures say what was awaited and what was seen.
 * - useStack() brings one cluster up per test file (mocha before) and down in after, running the
 *   cleanups the tests deferred (unmounts, loop devices) first, in reverse order.
 *
 * What it leaves out: installing tools (make setup does), S3 targets, kernel NBD (not available).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cairnctlPath, repoRoot } from './cli.js';
import {
  clusterFile,
  devProcesses,
  freePort,
  killPid,
  pidGone,
  pidRuns,
  readDevCluster,
  waitFor,
  type DevCluster,
  type DevNode,
} from '../../src/dev/index.js';

// ---------------------------------------------------------------------------------------------
// Limits.

/** `dev up` starts etcd and six nodes and a frontend: about 5 s on 2 idle cores. */
const devUpDeadlineMs = 90_000;
/** `dev down` gives each process 10 s after SIGTERM; etcd can take a few seconds to leave. */
const devDownDeadlineMs = 90_000;
/** A frontend starts a codec pool and reads etcd before it prints its ready line. */
const frontendStartDeadlineMs = 30_000;
/** A frontend's SIGTERM flushes every attached volume: seconds at most for test-sized volumes. */
const frontendStopGraceMs = 20_000;
/** Default deadline of one client command (nbdinfo, qemu-io, ...). */
const clientDeadlineMsDefault = 60_000;
/** Output kept per process, for failure messages. */
const outputCharsMax = 256_000;

// ---------------------------------------------------------------------------------------------
// Client commands.

export interface ClientResult {
  readonly command: string;
  /** Exit code, or null when killed by a signal. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly elapsedMs: number;
}

/** Environment for clients: Debian's python3 first (nbdsh needs its nbd module, INFRA.md §3). */
function clientEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `/usr/bin:/usr/sbin:/bin:/sbin:${process.env['PATH'] ?? ''}`, ...extra };
}

function describeCommand(command: string, args: readonly string[]): string {
  return [command, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

/** One line for a failure message: the command, how it ended, and the end of its output. */
export function describeResult(r: ClientResult): string {
  const how = r.code === null ? `killed by ${r.signal}` : `exit ${r.code}`;
  const tail = (s: string) => s.trim().slice(-3000);
  return `${r.command} -> ${how} after ${r.elapsedMs} ms\n--- stdout:\n${tail(r.stdout)}\n--- stderr:\n${tail(r.stderr)}`;
}

/**
 * A client process we started: its output so far, waiting for a line, writing to its stdin,
 * its exit. Killed by pid (SIGKILL) when it overruns `deadlineMs`.
 */
export class ClientProcess {
  readonly command: string;
  readonly child: ChildProcess;
  readonly pid: number;
  private out = '';
  private err = '';
  private readonly started = Date.now();
  private readonly done: Promise<ClientResult>;
  private timedOut = false;

  constructor(
    command: string,
    args: readonly string[],
    options: { deadlineMs?: number; env?: NodeJS.ProcessEnv; cwd?: string; input?: string } = {},
  ) {
    this.command = describeCommand(command, args);
    this.child = spawn(command, [...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: clientEnv(options.env),
      cwd: options.cwd ?? repoRoot,
    });
    this.pid = this.child.pid ?? -1;
    live.add(this);
    this.child.stdout?.on('data', (c: Buffer) => (this.out = (this.out + c.toString()).slice(-outputCharsMax)));
    this.child.stderr?.on('data', (c: Buffer) => (this.err = (this.err + c.toString()).slice(-outputCharsMax)));
    this.child.stdin?.on('error', () => undefined);
    if (options.input !== undefined) this.child.stdin?.end(options.input);
    const deadlineMs = options.deadlineMs ?? clientDeadlineMsDefault;
    const timer = setTimeout(() => {
      this.timedOut = true;
      this.kill('SIGKILL');
    }, deadlineMs);
    timer.unref();
    this.done = new Promise((resolve) => {
      this.child.once('error', (e) => {
        this.err += `\ncannot run ${command}: ${e.message} (run make setup to install the NBD tools)`;
      });
      // 'close' comes after 'exit', once stdout and stderr are drained.
      this.child.once('close', (code, signal) => {
        clearTimeout(timer);
        live.delete(this);
        const note = this.timedOut ? `\n(harness: killed after its ${deadlineMs} ms deadline)` : '';
        resolve({
          command: this.command,
          code,
          signal,
          stdout: this.out,
          stderr: this.err + note,
          elapsedMs: Date.now() - this.started,
        });
      });
    });
  }

  stdout(): string {
    return this.out;
  }

  stderr(): string {
    return this.err;
  }

  running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Waits until stdout matches `pattern`; throws if the process exits first or the deadline passes. */
  async waitForOutput(pattern: RegExp, deadlineMs = 30_000): Promise<RegExpMatchArray> {
    return waitFor(
      `${this.command} to print ${pattern}`,
      () => {
        const m = this.out.match(pattern);
        if (m !== null) return m;
        if (!this.running())
          throw new Error(
            `it exited (${this.child.exitCode ?? this.child.signalCode}) first; stdout: ${this.out.slice(-2000)} stderr: ${this.err.slice(-2000)}`,
          );
        return undefined;
      },
      deadlineMs,
    );
  }

  write(line: string): void {
    this.child.stdin?.write(line);
  }

  endInput(): void {
    this.child.stdin?.end();
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.running() && this.pid > 0) {
      try {
        process.kill(this.pid, signal);
      } catch {
        // exited meanwhile
      }
    }
  }

  exit(): Promise<ClientResult> {
    return this.done;
  }
}

/** Processes started here and not yet exited; after() of useStack kills leftovers by pid. */
const live = new Set<ClientProcess>();

/** Runs a client to completion (killed by pid after `deadlineMs`). */
export function runClient(
  command: string,
  args: readonly string[],
  options: { deadlineMs?: number; env?: NodeJS.ProcessEnv; cwd?: string; input?: string } = {},
): Promise<ClientResult> {
  return new ClientProcess(command, args, options).exit();
}

/** runClient that insists on exit code 0; the error names `step` and shows the output. */
export async function runOk(
  step: string,
  command: string,
  args: readonly string[],
  options: { deadlineMs?: number; env?: NodeJS.ProcessEnv; cwd?: string; input?: string } = {},
): Promise<ClientResult> {
  const r = await runClient(command, args, options);
  if (r.code !== 0) throw new Error(`${step}: ${describeResult(r)}`);
  return r;
}

/**
 * nbdsh (Debian python3 with libnbd) running `script`. The script gets `A`, the JSON-decoded
 * `args`, so tests never splice values into Python source. Without `uri`, `h` is unconnected.
 */
export function nbdshProcess(
  script: string,
  args: unknown = {},
  options: { uri?: string; deadlineMs?: number } = {},
): ClientProcess {
  const prelude = 'import json, os, sys\nA = json.loads(os.environ["CAIRN_TEST_ARGS"])\n';
  return new ClientProcess(
    '/usr/bin/nbdsh',
    [...(options.uri === undefined ? [] : ['-u', options.uri]), '-c', prelude + script],
    {
      env: { CAIRN_TEST_ARGS: JSON.stringify(args), LIBNBD_DEBUG: '0' },
      ...(options.deadlineMs === undefined ? {} : { deadlineMs: options.deadlineMs }),
    },
  );
}

export async function nbdsh(
  step: string,
  script: string,
  args: unknown = {},
  options: { uri?: string; deadlineMs?: number } = {},
): Promise<string> {
  const r = await nbdshProcess(script, args, options).exit();
  if (r.code !== 0) throw new Error(`${step}: ${describeResult(r)}`);
  return r.stdout;
}

// ---------------------------------------------------------------------------------------------
// Bytes.

/** `length` pseudo-random bytes from `seed` (AES-256-CTR keystream): the same seed, the same bytes. */
export function seededBytes(seed: string, length: number): Buffer {
  const key = createHash('sha256').update(`cairn-stack-test:${seed}`).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(length)), cipher.final()]);
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

const blockBytes = 4096;

function isZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/**
 * Undefined when `actual` equals `expected`; otherwise a description for a failure message: the
 * first differing byte, its extent, how many 4 KiB blocks differ, and how many of those read as
 * zeros (the signature of data reported or read as a hole).
 */
export function differences(actual: Uint8Array, expected: Uint8Array, extentBytes: number): string | undefined {
  if (
    actual.length === expected.length &&
    Buffer.compare(
      Buffer.from(actual.buffer, actual.byteOffset, actual.length),
      Buffer.from(expected.buffer, expected.byteOffset, expected.length),
    ) === 0
  ) {
    return undefined;
  }
  const lines: string[] = [];
  if (actual.length !== expected.length) lines.push(`length ${actual.length}, expected ${expected.length}`);
  const n = Math.min(actual.length, expected.length);
  let first = -1;
  let blocks = 0;
  let zeroBlocks = 0;
  const extents = new Set<number>();
  for (let at = 0; at < n; at += blockBytes) {
    const a = actual.subarray(at, Math.min(n, at + blockBytes));
    const e = expected.subarray(at, Math.min(n, at + blockBytes));
    if (Buffer.compare(a, e) === 0) continue;
    blocks += 1;
    extents.add(Math.floor(at / extentBytes));
    if (isZero(a)) zeroBlocks += 1;
    if (first < 0) {
      for (let i = 0; i < a.length; i++) {
        if (a[i] !== e[i]) {
          first = at + i;
          break;
        }
      }
    }
  }
  if (first >= 0) {
    const ext = [...extents].sort((x, y) => x - y);
    lines.push(
      `first difference at byte ${first} (extent ${Math.floor(first / extentBytes)}): read 0x${actual[first]!.toString(16)}, expected 0x${expected[first]!.toString(16)}; ` +
        `${blocks} of ${Math.ceil(n / blockBytes)} 4 KiB blocks differ (${zeroBlocks} of them read as all zeros) in ${ext.length} extents: ${ext.slice(0, 20).join(', ')}${ext.length > 20 ? ', ...' : ''}`,
    );
  }
  return lines.join('; ');
}

/** Throws (the whole description, untruncated) unless `actual` equals `expected`. */
export function expectSameBytes(actual: Uint8Array, expected: Uint8Array, step: string, extentBytes: number): void {
  const diff = differences(actual, expected, extentBytes);
  if (diff !== undefined) throw new Error(`${step}: the bytes read back differ from those written: ${diff}`);
}

// ---------------------------------------------------------------------------------------------
// The dev cluster.

export interface FrontendOptions {
  readonly readOnly?: boolean;
  readonly forceTakeover?: boolean;
  /** --flush-age in ms; tests that need dirty data to stay dirty pass a large one. */
  readonly flushAgeMs?: number;
  readonly cacheSize?: string;
  readonly dirtyMax?: string;
  /** --lock-wait in ms. */
  readonly lockWaitMs?: number;
  /** --etcd-timeout in ms (the deadline of every etcd call the frontend makes). */
  readonly etcdTimeoutMs?: number;
  /** --final-flush-retry in ms. */
  readonly finalFlushRetryMs?: number;
  /** More `nbd serve` flags, as given (limits: `--max-volumes 2`, ...). */
  readonly extraArgs?: readonly string[];
  /** More environment for the frontend (CAIRN_KEK_DIR, ...). */
  readonly env?: NodeJS.ProcessEnv;
}

/** An extra `cairnctl nbd serve` on its own TCP port and Unix socket, our child, stopped by pid. */
export class Frontend {
  private log = '';
  private readonly exited: Promise<void>;

  constructor(
    readonly label: string,
    readonly child: ChildProcess,
    readonly port: number,
    readonly socket: string,
  ) {
    this.child.stderr?.on('data', (c: Buffer) => (this.log = (this.log + c.toString()).slice(-outputCharsMax)));
    this.exited = new Promise((resolve) => {
      if (!this.running()) resolve();
      else this.child.once('exit', () => resolve());
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  uri(volume: string): string {
    return `nbd://127.0.0.1:${this.port}/${volume}`;
  }

  unixUri(volume: string): string {
    return `nbd+unix:///${volume}?socket=${this.socket}`;
  }

  /** Everything the frontend logged (stderr). */
  logText(): string {
    return this.log;
  }

  /** Waits until the log, from character `since` on, matches `pattern`. */
  waitForLog(pattern: RegExp, since = 0, deadlineMs = 30_000): Promise<RegExpMatchArray> {
    return waitFor(
      `frontend ${this.label} (pid ${this.pid}) to log ${pattern}`,
      () => this.log.slice(since).match(pattern) ?? undefined,
      deadlineMs,
      { seen: () => `its log: ${this.log.slice(-2000)}` },
    );
  }

  /** SIGTERM by pid (it flushes and releases its locks), SIGKILL after a grace period. */
  async stop(graceMs = frontendStopGraceMs): Promise<void> {
    if (!this.running()) return;
    process.kill(this.pid, 'SIGTERM');
    const timer = new Promise<'late'>((r) => setTimeout(() => r('late'), graceMs).unref());
    if ((await Promise.race([this.exited.then(() => 'ok' as const), timer])) === 'late') {
      if (this.running()) process.kill(this.pid, 'SIGKILL');
      await this.exited;
      throw new Error(
        `frontend ${this.label} (pid ${this.pid}) did not exit within ${graceMs} ms of SIGTERM; SIGKILLed. Log: ${this.log.slice(-2000)}`,
      );
    }
  }

  /** SIGKILL by pid: a crash. Unflushed writes die with it. */
  async kill(): Promise<void> {
    if (!this.running()) return;
    process.kill(this.pid, 'SIGKILL');
    await this.exited;
  }

  exitCode(): number | string | null {
    return this.child.exitCode ?? this.child.signalCode;
  }
}

export interface StackOptions {
  /** Default profile of new volumes (dev up --profile). */
  readonly profile?: string;
  /** Default extent size of new volumes (dev up --extent-size). */
  readonly extentSize?: string;
  /** Storage nodes per zone (dev up --nodes-per-zone; default 2, three zones). */
  readonly nodesPerZone?: number;
}

export class Stack {
  private readonly deferred: { what: string; fn: () => Promise<void> | void }[] = [];
  private readonly frontends: Frontend[] = [];
  private frontendCount = 0;

  constructor(
    readonly dir: string,
    readonly cluster: DevCluster,
  ) {}

  get etcd(): string {
    return this.cluster.etcd;
  }

  /** The dev frontend's URI for `volume` over TCP. */
  uri(volume: string): string {
    return `${this.cluster.frontend.nbdUri}/${volume}`;
  }

  unixUri(volume: string): string {
    return `nbd+unix:///${volume}?socket=${this.cluster.frontend.socket}`;
  }

  /** A scratch path inside the cluster's dir (removed with it). */
  path(name: string): string {
    return join(this.dir, name);
  }

  /** `cairnctl ARGS` against this cluster's etcd; throws naming `step` unless it exits 0. */
  async cairnctl(step: string, args: readonly string[], deadlineMs = 60_000): Promise<ClientResult> {
    return runOk(step, process.execPath, [cairnctlPath, ...args], { deadlineMs, env: { CAIRN_ETCD: this.etcd } });
  }

  async createVolume(
    name: string,
    size: string,
    options: { profile?: string; extentSize?: string } = {},
  ): Promise<void> {
    await this.cairnctl(`create volume ${name}`, [
      'volume',
      'create',
      name,
      size,
      ...(options.profile === undefined ? [] : ['--profile', options.profile]),
      ...(options.extentSize === undefined ? [] : ['--extent-size', options.extentSize]),
    ]);
  }

  /** The random id of a volume (shard and extent keys use it). */
  async volumeId(name: string): Promise<string> {
    const value = await this.etcdGet(`cairn/v1/volumes/${name}`);
    if (value === undefined) throw new Error(`volume ${name} has no record in etcd`);
    return (JSON.parse(value) as { id: string }).id;
  }

  /** One etcd value (etcdctl, with a deadline), or undefined. */
  async etcdGet(key: string): Promise<string | undefined> {
    const r = await runOk(
      `etcdctl get ${key}`,
      'etcdctl',
      ['--endpoints', this.etcd, '--command-timeout=5s', 'get', key, '--print-value-only'],
      { deadlineMs: 15_000 },
    );
    const text = r.stdout.replace(/\n$/, '');
    return text === '' ? undefined : text;
  }

  /** Every key and value under `prefix`. */
  async etcdGetPrefix(prefix: string): Promise<Map<string, string>> {
    const r = await runOk(
      `etcdctl get --prefix ${prefix}`,
      'etcdctl',
      ['--endpoints', this.etcd, '--command-timeout=5s', 'get', '--prefix', prefix, '-w', 'json'],
      {
        deadlineMs: 15_000,
      },
    );
    const body = JSON.parse(r.stdout) as { kvs?: { key: string; value: string }[] };
    const out = new Map<string, string>();
    for (const kv of body.kvs ?? [])
      out.set(Buffer.from(kv.key, 'base64').toString(), Buffer.from(kv.value, 'base64').toString());
    return out;
  }

  /** The write lock record of a volume: owner ("host/pid") and fencing epoch, or undefined. */
  async lockOf(volume: string): Promise<{ owner: string; epoch: number } | undefined> {
    const value = await this.etcdGet(`cairn/v1/locks/${volume}`);
    return value === undefined ? undefined : (JSON.parse(value) as { owner: string; epoch: number });
  }

  /** The dev frontend's log file (its stderr and stdout). */
  devFrontendLog(): string {
    try {
      return readFileSync(join(this.dir, 'frontend.log'), 'utf8');
    } catch {
      return '';
    }
  }

  /** Waits until the dev frontend's log, from character `since` on, matches `pattern`. */
  waitForDevFrontendLog(pattern: RegExp, since: number, deadlineMs = 30_000): Promise<RegExpMatchArray> {
    return waitFor(
      `the dev frontend to log ${pattern}`,
      () => this.devFrontendLog().slice(since).match(pattern) ?? undefined,
      deadlineMs,
      { seen: () => `its log: ${this.devFrontendLog().slice(-2000)}` },
    );
  }

  /**
   * Waits until the dev frontend has detached `volume` (its cache is dropped and its lock
   * released), counting only log lines after `since` (a devFrontendLog().length taken before the
   * client disconnected). The next client then reads through the erasure-coded store. The
   * message ends the line in plain text and ends the `msg` string in JSON logs.
   */
  waitForDevDetach(volume: string, since: number, deadlineMs = 30_000): Promise<RegExpMatchArray> {
    return this.waitForDevFrontendLog(new RegExp(`detached volume ${volume}(?:\\n|")`), since, deadlineMs);
  }

  /** Starts another `cairnctl nbd serve` against this cluster on new ports. */
  async startFrontend(options: FrontendOptions = {}): Promise<Frontend> {
    const fe = await startFrontendProcess({
      ...options,
      etcd: this.etcd,
      dir: this.dir,
      label: `fe${++this.frontendCount}`,
    });
    this.frontends.push(fe);
    return fe;
  }

  node(name: string): DevNode {
    const n = this.cluster.nodes.find((x) => x.name === name);
    if (n === undefined) throw new Error(`no node ${name} in ${this.dir}/cluster.json`);
    return n;
  }

  /** SIGKILLs a storage node by the pid in cluster.json (only if that pid still runs it). */
  async killNode(name: string): Promise<void> {
    const n = this.node(name);
    if (!pidRuns(n.pid, n.dataDir)) throw new Error(`node ${name} (pid ${n.pid}) is not running`);
    await killPid(n.pid, `storage node ${name}`);
  }

  /** Stops the dev frontend by its recorded pid (SIGTERM: it flushes) and waits until it is gone. */
  async stopDevFrontend(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const { pid, socket } = this.cluster.frontend;
    if (!pidRuns(pid, socket)) return;
    await killPid(pid, 'the dev frontend', signal, frontendStopGraceMs);
  }

  /** Runs `fn` in after(), before the cluster goes down; later deferrals run first. */
  defer(what: string, fn: () => Promise<void> | void): void {
    this.deferred.push({ what, fn });
  }

  /** Deferred cleanups, extra frontends, leftover clients, then `dev down`, then any survivor. */
  async down(): Promise<string[]> {
    const problems: string[] = [];
    for (const d of this.deferred.reverse()) {
      try {
        await d.fn();
      } catch (err) {
        problems.push(`${d.what}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    for (const c of [...live]) {
      c.kill('SIGKILL');
      await c.exit();
    }
    for (const fe of this.frontends) {
      try {
        await fe.stop();
      } catch (err) {
        problems.push(err instanceof Error ? err.message : String(err));
      }
    }
    const r = await runClient(process.execPath, [cairnctlPath, 'dev', 'down', '--dir', this.dir], {
      deadlineMs: devDownDeadlineMs,
    });
    if (r.code !== 0) problems.push(`dev down: ${describeResult(r)}`);
    // dev down stops each recorded pid that still runs our command; anything left is SIGKILLed.
    const recorded = devProcesses(this.cluster);
    for (const { pid, needle } of [recorded.frontend, ...recorded.nodes, recorded.etcd]) {
      if (!pidGone(pid) && pidRuns(pid, needle)) {
        problems.push(`pid ${pid} (${needle}) survived dev down; SIGKILLed`);
        await killPid(pid, needle).catch(() => undefined);
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
    return problems;
  }
}

/** Runs `cairnctl dev up` in a new temp dir and returns the stack. */
export interface FrontendProcessOptions extends FrontendOptions {
  /** --etcd value (one URL or a comma-separated list). */
  readonly etcd: string;
  /** Where the Unix socket goes. */
  readonly dir: string;
  readonly label: string;
  readonly env?: NodeJS.ProcessEnv;
}

/** Starts `cairnctl nbd serve` (our child, stopped by pid through the Frontend handle). */
export async function startFrontendProcess(options: FrontendProcessOptions): Promise<Frontend> {
  const port = await freePort();
  const socket = join(options.dir, `${options.label}.sock`);
  const args = [
    cairnctlPath,
    'nbd',
    'serve',
    '--etcd',
    options.etcd,
    '--listen',
    `127.0.0.1:${port}`,
    '--socket',
    socket,
    ...(options.readOnly ? ['--read-only'] : []),
    ...(options.forceTakeover ? ['--force-takeover'] : []),
    ...(options.flushAgeMs === undefined ? [] : ['--flush-age', String(options.flushAgeMs)]),
    ...(options.cacheSize === undefined ? [] : ['--cache-size', options.cacheSize]),
    ...(options.dirtyMax === undefined ? [] : ['--dirty-max', options.dirtyMax]),
    ...(options.lockWaitMs === undefined ? [] : ['--lock-wait', String(options.lockWaitMs)]),
    ...(options.etcdTimeoutMs === undefined ? [] : ['--etcd-timeout', String(options.etcdTimeoutMs)]),
    ...(options.finalFlushRetryMs === undefined ? [] : ['--final-flush-retry', String(options.finalFlushRetryMs)]),
    ...(options.extraArgs ?? []),
  ];
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: repoRoot,
    env: { ...process.env, ...options.env },
  });
  const fe = new Frontend(options.label, child, port, socket);
  let stdout = '';
  child.stdout?.on('data', (c: Buffer) => (stdout = (stdout + c.toString()).slice(-outputCharsMax)));
  try {
    await waitFor(
      `frontend ${options.label} (cairnctl nbd serve --etcd ${options.etcd}) to print its ready line`,
      () => {
        if (stdout.includes('cairnctl serving NBD')) return true;
        if (!fe.running()) throw new Error(`it exited (${fe.exitCode()}) first: ${fe.logText().slice(-2000)}`);
        return undefined;
      },
      frontendStartDeadlineMs,
      { seen: () => `stdout: ${stdout.slice(-500)} log: ${fe.logText().slice(-1500)}` },
    );
  } catch (err) {
    await fe.kill();
    throw err;
  }
  return fe;
}

export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'cairn-stack-'));
  const r = await runClient(
    process.execPath,
    [
      cairnctlPath,
      'dev',
      'up',
      '--dir',
      dir,
      '--json',
      ...(options.profile === undefined ? [] : ['--profile', options.profile]),
      ...(options.extentSize === undefined ? [] : ['--extent-size', options.extentSize]),
      ...(options.nodesPerZone === undefined ? [] : ['--nodes-per-zone', String(options.nodesPerZone)]),
    ],
    { deadlineMs: devUpDeadlineMs },
  );
  if (r.code !== 0 || !existsSync(clusterFile(dir))) {
    // dev up stops what it started when it fails; stop anything it recorded all the same.
    if (existsSync(clusterFile(dir)))
      await runClient(process.execPath, [cairnctlPath, 'dev', 'down', '--dir', dir], { deadlineMs: devDownDeadlineMs });
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`cairnctl dev up failed: ${describeResult(r)}`);
  }
  // dev up's nodes require the cluster's secret: every client this test process runs or starts
  // (cairnctl, frontends, NodeShardStores, nodes of a NodeFleet) inherits it from here.
  process.env['CAIRN_NODE_SECRET_FILE'] = join(dir, 'node-secret');
  return new Stack(dir, readDevCluster(dir));
}

/**
 * Mocha hooks for one cluster per test file: up in before(), down in after(). Use inside a
 * describe(): `const s = useStack(); it('...', async () => s().uri('v'))`.
 */
export function useStack(options: StackOptions = {}): () => Stack {
  let stack: Stack | undefined;
  before(async function () {
    this.timeout(devUpDeadlineMs + 10_000);
    stack = await startStack(options);
  });
  after(async function () {
    this.timeout(devDownDeadlineMs + 60_000);
    const s = stack;
    stack = undefined;
    if (s === undefined) return;
    const problems = await s.down();
    if (process.env['CAIRN_NODE_SECRET_FILE'] === join(s.dir, 'node-secret'))
      delete process.env['CAIRN_NODE_SECRET_FILE'];
    if (problems.length > 0) throw new Error(`Cleaning up the stack in ${s.dir}:\n${problems.join('\n')}`);
  });
  return () => {
    if (stack === undefined) throw new Error('the stack is not up (before() failed?)');
    return stack;
  };
}

// ---------------------------------------------------------------------------------------------
// A kernel filesystem over NBD: nbdfuse -> loop device -> ext4.

/** Why a filesystem test cannot run here, or undefined when it can. */
/**
 * Skips the running test, saying why in its title, when this host cannot mount a filesystem on
 * an export (filesystemUnsupported); the test then returns at once: `if (skipWithoutFilesystem(this)) return;`.
 */
export function skipWithoutFilesystem(ctx: Mocha.Context): boolean {
  const why = filesystemUnsupported();
  if (why === undefined) return false;
  if (ctx.test !== undefined) ctx.test.title += ` (skipped: ${why})`;
  ctx.skip();
  return true;
}

export function filesystemUnsupported(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root for losetup and mount';
  if (!existsSync('/dev/fuse')) return 'no /dev/fuse (CONFIG_FUSE_FS)';
  if (!existsSync('/dev/loop-control')) return 'no /dev/loop-control (CONFIG_BLK_DEV_LOOP)';
  for (const tool of [
    '/usr/bin/nbdfuse',
    '/usr/bin/fusermount3',
    '/usr/sbin/losetup',
    '/usr/sbin/mkfs.ext4',
    '/usr/sbin/fsck.ext4',
    '/usr/bin/mount',
    '/usr/bin/umount',
  ]) {
    if (!existsSync(tool)) return `${tool} is not installed (make setup)`;
  }
  return undefined;
}

/**
 * An NBD export as a file (nbdfuse, our child, stopped by pid), that file as a loop device, and
 * optionally an ext4 filesystem on it mounted at `mountDir`. detach() undoes whatever was done,
 * in reverse order, and is safe to call twice.
 */
export class NbdLoopDevice {
  loopDevice: string | undefined;
  mounted = false;
  private fuse: ClientProcess | undefined;
  private fuseMounted = false;

  private constructor(
    readonly fuseDir: string,
    readonly mountDir: string,
  ) {}

  static async attach(uri: string, fuseDir: string, mountDir: string): Promise<NbdLoopDevice> {
    const d = new NbdLoopDevice(fuseDir, mountDir);
    try {
      // nbdfuse stays in the foreground until the FUSE filesystem is unmounted.
      d.fuse = new ClientProcess('/usr/bin/nbdfuse', [fuseDir, uri], { deadlineMs: 10 * 60_000 });
      const file = join(fuseDir, 'nbd');
      await waitFor(
        `nbdfuse (pid ${d.fuse.pid}) to show ${file}`,
        () => {
          if (!d.fuse!.running()) throw new Error(`nbdfuse exited: ${d.fuse!.stderr()}`);
          return existsSync(file) && statSync(file).size > 0;
        },
        30_000,
      );
      d.fuseMounted = true;
      const r = await runOk('losetup -f --show', '/usr/sbin/losetup', ['-f', '--show', file], { deadlineMs: 30_000 });
      d.loopDevice = r.stdout.trim();
      if (!d.loopDevice.startsWith('/dev/loop')) throw new Error(`losetup printed ${JSON.stringify(r.stdout)}`);
      return d;
    } catch (err) {
      await d.detach().catch(() => undefined);
      throw err;
    }
  }

  get device(): string {
    if (this.loopDevice === undefined) throw new Error('no loop device');
    return this.loopDevice;
  }

  async mount(): Promise<void> {
    await runOk(`mount ${this.device} ${this.mountDir}`, '/usr/bin/mount', [this.device, this.mountDir], {
      deadlineMs: 60_000,
    });
    this.mounted = true;
  }

  async unmount(): Promise<void> {
    if (!this.mounted) return;
    await runOk(`umount ${this.mountDir}`, '/usr/bin/umount', [this.mountDir], { deadlineMs: 120_000 });
    this.mounted = false;
  }

  /** umount, losetup -d, fusermount3 -u, then nbdfuse's exit (SIGTERM, then SIGKILL, by pid). */
  async detach(): Promise<void> {
    const problems: string[] = [];
    const step = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        problems.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
      }
    };
    if (this.mounted) await step('umount', () => this.unmount());
    if (this.loopDevice !== undefined) {
      const dev = this.loopDevice;
      await step(`losetup -d ${dev}`, () =>
        runOk(`losetup -d ${dev}`, '/usr/sbin/losetup', ['-d', dev], { deadlineMs: 30_000 }),
      );
      this.loopDevice = undefined;
    }
    if (this.fuseMounted) {
      await step(`fusermount3 -u ${this.fuseDir}`, () =>
        runOk(`fusermount3 -u`, '/usr/bin/fusermount3', ['-u', this.fuseDir], { deadlineMs: 30_000 }),
      );
      this.fuseMounted = false;
    }
    const fuse = this.fuse;
    if (fuse !== undefined) {
      // INFRA.md: nbdfuse did not always exit by itself after fusermount -u.
      const exited = await Promise.race([
        fuse.exit().then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), 5_000).unref()),
      ]);
      if (!exited) {
        fuse.kill('SIGTERM');
        const again = await Promise.race([
          fuse.exit().then(() => true),
          new Promise<false>((r) => setTimeout(() => r(false), 5_000).unref()),
        ]);
        if (!again) fuse.kill('SIGKILL');
        await fuse.exit();
      }
      this.fuse = undefined;
    }
    if (problems.length > 0) throw new Error(`Cannot detach ${this.fuseDir}: ${problems.join('; ')}`);
  }
}
