/**
 * The Intel ISA-L peer for `cairnctl bench codec`.
 *
 * ISA-L is the usual yardstick for Reed-Solomon speed, so the codec benchmark reports its numbers
 * next to ours. Cairn never links ISA-L: we compile the small C driver in
 * scripts/bench/isal_bench.c against the system libisal on first use, cache the binary by the
 * source's sha256, run it, and parse the one JSON line it prints per ISA-L implementation.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { InvalidArgumentError } from '../core/index.js';

/** One ISA-L implementation's throughput, in decimal MB of extent data per second. */
export interface IsalResult {
  impl: string;
  k: number;
  m: number;
  extentBytes: number;
  encodeMBps: number;
  /** Null when m is 0, because there is nothing to reconstruct from. */
  reconstructMBps: number | null;
}

export interface IsalBenchOptions {
  k: number;
  m: number;
  extentBytes: number;
  /** How long each timed loop (encode, then reconstruct, per implementation) runs at least. */
  minSeconds: number;
  /** The checkout root; the C source is read from scripts/bench/isal_bench.c under it. */
  repoRoot: string;
}

export type IsalBenchOutcome = { results: IsalResult[] } | { results: null; reason: string };

const libisalMissingReason = 'libisal-dev is not installed';
const compilerMissingReason = 'cc is not installed (a C compiler is needed to build the ISA-L peer)';
const compileTimeoutMs = 120_000;
/** Headroom on top of the timed loops for start-up, filling the data and the untimed warm-ups. */
const runSlackMs = 60_000;
/** The driver runs at most two implementations with two timed loops each. */
const timedLoopsPerRun = 4;

interface ProcessOutcome {
  /** The exit code, or null when the process was killed or could not be started. */
  exitCode: number | null;
  /** Set when the process could not be started at all, e.g. 'ENOENT' for a missing binary. */
  spawnErrorCode: string | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
}

/**
 * Compiles scripts/bench/isal_bench.c (cached by source sha256 under os.tmpdir()/cairn-bench/) and
 * runs it. Returns null with a reason when libisal is not installed or cc is missing.
 */
export async function runIsalBench(opts: IsalBenchOptions): Promise<IsalBenchOutcome> {
  validateOptions(opts);
  const sourcePath = path.join(opts.repoRoot, 'scripts/bench/isal_bench.c');
  const built = await buildDriver(sourcePath);
  if ('reason' in built) {
    return { results: null, reason: built.reason };
  }

  const args = [opts.k, opts.m, opts.extentBytes, opts.minSeconds].map(String);
  const timeoutMs = Math.ceil(opts.minSeconds * 1000 * timedLoopsPerRun) + runSlackMs;
  const run = await runProcess(built.binaryPath, args, timeoutMs);
  if (run.timedOut) {
    throw new Error(`ISA-L benchmark did not finish within ${timeoutMs} ms`);
  }
  // The cached binary outlives the package, so the shared library may have been removed since.
  if (run.exitCode === 127 && /libisal/.test(run.stderr)) {
    return { results: null, reason: libisalMissingReason };
  }
  if (run.exitCode !== 0) {
    const detail = run.stderr.trim() || `exit code ${String(run.exitCode)}`;
    throw new Error(`ISA-L benchmark failed: ${detail}`);
  }
  return { results: parseResults(run.stdout, opts) };
}

/**
 * Rejects bad geometry before we spend time compiling. The driver checks the same rules itself;
 * these limits come from GF(2^8), which has 255 usable evaluation points, and from ISA-L taking
 * the shard length as a C int.
 */
function validateOptions(opts: IsalBenchOptions): void {
  const { k, m, extentBytes, minSeconds } = opts;
  if (!Number.isSafeInteger(k) || k < 1) {
    throw new InvalidArgumentError(`Cannot run ISA-L benchmark: k must be an integer >= 1, got ${k}`);
  }
  if (!Number.isSafeInteger(m) || m < 0) {
    throw new InvalidArgumentError(`Cannot run ISA-L benchmark: m must be an integer >= 0, got ${m}`);
  }
  if (k + m > 255) {
    throw new InvalidArgumentError(`Cannot run ISA-L benchmark: k + m must be <= 255, got ${k + m}`);
  }
  if (!Number.isSafeInteger(extentBytes) || extentBytes < 1) {
    throw new InvalidArgumentError(
      `Cannot run ISA-L benchmark: extentBytes must be an integer >= 1, got ${extentBytes}`,
    );
  }
  if (Math.ceil(extentBytes / k) > 0x7fffffff) {
    throw new InvalidArgumentError(
      `Cannot run ISA-L benchmark: shards of ${extentBytes} / ${k} bytes exceed ISA-L's int length`,
    );
  }
  if (!Number.isFinite(minSeconds) || minSeconds <= 0 || minSeconds > 3600) {
    throw new InvalidArgumentError(`Cannot run ISA-L benchmark: minSeconds must be in (0, 3600], got ${minSeconds}`);
  }
}

/**
 * Returns the path of a compiled driver for the current source, compiling it if needed. Compiling
 * is also how we detect libisal: a missing header or library is the one failure we expect on a
 * normal machine, so it becomes a reason rather than an error.
 */
async function buildDriver(sourcePath: string): Promise<{ binaryPath: string } | { reason: string }> {
  const source = await readFile(sourcePath);
  const sourceSha256 = createHash('sha256').update(source).digest('hex');
  const cacheDir = path.join(os.tmpdir(), 'cairn-bench');
  const binaryPath = path.join(cacheDir, `isal_bench-${sourceSha256}`);

  await ensurePrivateDir(cacheDir);
  if (await isFile(binaryPath)) {
    return { binaryPath };
  }

  // Compile to a unique name and rename into place, so concurrent runs never execute a binary
  // that another run is still writing.
  const partialPath = `${binaryPath}.${process.pid}.${Date.now()}.partial`;
  const compile = await runProcess('cc', ['-O2', '-o', partialPath, sourcePath, '-lisal'], compileTimeoutMs);
  if (compile.spawnErrorCode === 'ENOENT') {
    return { reason: compilerMissingReason };
  }
  if (compile.exitCode !== 0) {
    await rm(partialPath, { force: true });
    if (/isa-l[/\\]erasure_code\.h|cannot find -lisal|-lisal: No such file/.test(compile.stderr)) {
      return { reason: libisalMissingReason };
    }
    const detail = compile.timedOut ? 'compiler timed out' : compile.stderr.trim();
    throw new Error(`Cannot compile ${sourcePath}: ${detail}`);
  }
  await rename(partialPath, binaryPath);
  return { binaryPath };
}

/**
 * Creates the cache directory and refuses to use it if someone else owns it or can write to it.
 * os.tmpdir() is usually shared, and we execute whatever binary sits at a predictable name there.
 */
async function ensurePrivateDir(dirPath: string): Promise<void> {
  await mkdir(dirPath, { recursive: true, mode: 0o700 });
  const info = await stat(dirPath);
  const ownUid = process.getuid?.();
  const foreignOwner = ownUid !== undefined && info.uid !== ownUid;
  if (!info.isDirectory() || foreignOwner || (info.mode & 0o022) !== 0) {
    throw new Error(
      `Cannot use benchmark cache ${dirPath}: it must be a directory owned by the current user ` +
        'and not writable by group or others',
    );
  }
}

async function isFile(filePath: string): Promise<boolean> {
  try {
    return (await stat(filePath)).isFile();
  } catch {
    return false;
  }
}

/** Runs a program to completion and reports what happened instead of throwing. */
function runProcess(file: string, args: string[], timeoutMs: number): Promise<ProcessOutcome> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error === null) {
        resolve({ exitCode: 0, spawnErrorCode: null, timedOut: false, stdout, stderr });
        return;
      }
      // execFile reports the exit status as a number and a failed spawn as an errno string.
      const exitCode = typeof error.code === 'number' ? error.code : null;
      const spawnErrorCode = typeof error.code === 'string' ? error.code : null;
      const timedOut = error.killed === true && error.signal === 'SIGTERM';
      resolve({ exitCode, spawnErrorCode, timedOut, stdout, stderr });
    });
  });
}

/** Parses the driver's JSON lines and checks each one is well formed and for the geometry asked. */
function parseResults(stdout: string, opts: IsalBenchOptions): IsalResult[] {
  const results: IsalResult[] = [];
  for (const line of stdout.split('\n')) {
    if (line.trim() === '') {
      continue;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      throw new Error(`ISA-L benchmark printed a line that is not JSON: ${line}`);
    }
    const result = toIsalResult(parsed);
    if (result === null) {
      throw new Error(`ISA-L benchmark printed a malformed result: ${line}`);
    }
    if (result.k !== opts.k || result.m !== opts.m || result.extentBytes !== opts.extentBytes) {
      throw new Error(`ISA-L benchmark reported a different geometry than requested: ${line}`);
    }
    results.push(result);
  }
  if (results.length === 0) {
    throw new Error('ISA-L benchmark printed no results');
  }
  return results;
}

function toIsalResult(value: unknown): IsalResult | null {
  if (typeof value !== 'object' || value === null) {
    return null;
  }
  const record = value as Record<string, unknown>;
  const { impl, k, m, extentBytes, encodeMBps, reconstructMBps } = record;
  if (
    typeof impl !== 'string' ||
    !isFiniteNumber(k) ||
    !isFiniteNumber(m) ||
    !isFiniteNumber(extentBytes) ||
    !isFiniteNumber(encodeMBps) ||
    !(reconstructMBps === null || isFiniteNumber(reconstructMBps))
  ) {
    return null;
  }
  return { impl, k, m, extentBytes, encodeMBps, reconstructMBps };
}

function isFiniteNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}
