/**
 * `cairnctl bench codec`: encode and reconstruct throughput of Cairn's codec next to its peers,
 * measured in one run so the ratios hold on a noisy machine.
 *
 *   cairn       the wasm SIMD kernel on this thread, extent kept in wasm memory (no copies)
 *   cairn-pool  the worker pool: every thread busy, two extents in flight per thread
 *   subspace    @subspace/reed-solomon-erasure.wasm, the Rust crate built for wasm (same matrix)
 *   isa-l       Intel ISA-L's best kernel for this CPU, and isa-l-avx2 its AVX2 kernel, native C
 *
 * Throughput is extent data bytes per second in decimal MB (k * shardBytes per call): the same
 * quantity for every implementation. Reconstruction rebuilds min(m, k) lost data shards, the
 * expensive case. Each loop first runs untimed, then repeats until `minSeconds` have passed.
 */
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { InvalidArgumentError, checkProfile, type Profile } from '../core/index.js';
import { CodecPool, WasmKernel, shardBytesFor, type ExtentBuffer } from '../codec/index.js';
import { runIsalBench } from './isal.js';

export const codecImpls = ['cairn', 'cairn-pool', 'subspace', 'isa-l'] as const;
export type CodecImpl = (typeof codecImpls)[number];

export interface CodecBenchRow {
  readonly impl: string;
  readonly k: number;
  readonly m: number;
  readonly extentBytes: number;
  readonly encodeMBps: number | null;
  readonly reconstructMBps: number | null;
  /** Extra facts about the run: threads, kernel variant. */
  readonly threads?: number;
  readonly variant?: string;
}

export interface CodecBenchSkip {
  readonly impl: string;
  readonly skipped: string;
}

/** Ratios the issue sets as targets, computed from rows of the same run. */
export interface CodecBenchSummary {
  readonly summary: 'codec';
  readonly k: number;
  readonly m: number;
  readonly extentBytes: number;
  readonly cairnOverSubspace: number | null;
  readonly cairnOverIsalAvx2: number | null;
  readonly poolOverCairn: number | null;
  readonly targets: { readonly cairnOverSubspace: 10; readonly cairnOverIsalAvx2: 0.5; readonly poolOverCairn: 1.7 };
}

export type CodecBenchLine = CodecBenchRow | CodecBenchSkip | CodecBenchSummary;

export interface CodecBenchOptions {
  readonly profile: Profile;
  readonly extentBytes: number;
  readonly minSeconds: number;
  readonly repoRoot: string;
  readonly impls?: readonly CodecImpl[];
  readonly threads?: number;
}

const round = (x: number): number => Math.round(x * 10) / 10;
/** Codec jobs kept in flight per pool worker. */
const jobsPerWorkerInFlight = 4;
/** Extents the single-thread measurement rotates over (as many as a 2-thread pool has in flight). */
const buffersInRotation = 8;

/** Calls `fn` repeatedly for at least `minSeconds` after an untimed warm-up; returns calls per second. */
function rate(fn: () => void, minSeconds: number): number {
  const warmUntil = performance.now() + Math.min(200, minSeconds * 200);
  do fn();
  while (performance.now() < warmUntil);
  const start = performance.now();
  const end = start + minSeconds * 1000;
  let calls = 0;
  let now = start;
  while (now < end) {
    fn();
    calls += 1;
    now = performance.now();
  }
  return (calls * 1000) / (now - start);
}

/** Keeps `inFlight` async jobs running for at least `minSeconds`; returns completions per second. */
async function asyncRate(job: (slot: number) => Promise<void>, inFlight: number, minSeconds: number): Promise<number> {
  const run = async (untilMs: number): Promise<number> => {
    let done = 0;
    await Promise.all(
      Array.from({ length: inFlight }, async (_, slot) => {
        while (performance.now() < untilMs) {
          await job(slot);
          done += 1;
        }
      }),
    );
    return done;
  };
  await run(performance.now() + Math.min(200, minSeconds * 200));
  const start = performance.now();
  const done = await run(start + minSeconds * 1000);
  return (done * 1000) / (performance.now() - start);
}

function fill(bytes: Uint8Array, seed: number): void {
  let x = seed | 1;
  for (let i = 0; i < bytes.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
}

function lostPattern(profile: Profile): { present: boolean[]; lost: number[] } {
  const lost = Array.from({ length: Math.min(profile.m, profile.k) }, (_, i) => i);
  const present = Array.from({ length: profile.k + profile.m }, (_, i) => !lost.includes(i));
  return { present, lost };
}

export async function benchCodec(options: CodecBenchOptions, emit: (line: CodecBenchLine) => void): Promise<void> {
  const profile = checkProfile(options.profile);
  const { k, m } = profile;
  if (!Number.isSafeInteger(options.extentBytes) || options.extentBytes < 1) {
    throw new InvalidArgumentError(`Invalid extent size ${options.extentBytes}: it must be at least 1 byte`);
  }
  if (!(options.minSeconds > 0 && options.minSeconds <= 600)) {
    throw new InvalidArgumentError(`Invalid --seconds ${options.minSeconds}: use a number above 0 and at most 600`);
  }
  const impls = options.impls ?? codecImpls;
  const shardBytes = shardBytesFor(options.extentBytes, k);
  const dataBytes = k * shardBytes;
  const mbps = (callsPerSecond: number): number => round((callsPerSecond * dataBytes) / 1e6);
  const base = { k, m, extentBytes: options.extentBytes };
  const { present, lost } = lostPattern(profile);
  const rows = new Map<string, CodecBenchRow>();
  const report = (row: CodecBenchRow): void => {
    rows.set(row.impl, row);
    emit(row);
  };

  if (impls.includes('cairn')) {
    // Rotate over as many extents as the pool keeps in flight, so neither measurement is flattered
    // by an extent that stays in the CPU cache.
    const kernel = new WasmKernel();
    const bufs = Array.from({ length: buffersInRotation }, (_, i) => {
      const buf = kernel.allocate(profile, shardBytes);
      fill(buf.data(), i + 1);
      return buf;
    });
    let turn = 0;
    const next = () => bufs[turn++ % bufs.length]!;
    try {
      const encode = rate(() => kernel.encodeInPlace(next()), options.minSeconds);
      const reconstruct =
        m === 0 ? null : mbps(rate(() => kernel.reconstructInPlace(next(), present, lost), options.minSeconds));
      report({
        impl: 'cairn',
        ...base,
        encodeMBps: mbps(encode),
        reconstructMBps: reconstruct,
        threads: 1,
        variant: kernel.variant,
      });
    } finally {
      for (const b of bufs) kernel.release(b);
    }
  }

  if (impls.includes('cairn-pool')) {
    const pool = await CodecPool.start(options.threads === undefined ? {} : { threads: options.threads });
    // Four jobs per worker: with fewer, a worker idles whenever the main thread is slow to wake.
    const inFlight = pool.threads * jobsPerWorkerInFlight;
    const bufs: ExtentBuffer[] = [];
    try {
      for (let i = 0; i < inFlight; i++) {
        const buf = pool.allocate(profile, shardBytes);
        fill(buf.data(), i + 2);
        bufs.push(buf);
      }
      const encode = await asyncRate((slot) => pool.encode(bufs[slot]!), inFlight, options.minSeconds);
      const reconstruct =
        m === 0
          ? null
          : mbps(await asyncRate((slot) => pool.reconstruct(bufs[slot]!, present, lost), inFlight, options.minSeconds));
      report({
        impl: 'cairn-pool',
        ...base,
        encodeMBps: mbps(encode),
        reconstructMBps: reconstruct,
        threads: pool.threads,
        variant: pool.variant,
      });
    } finally {
      for (const b of bufs) pool.release(b);
      await pool.close();
    }
  }

  if (impls.includes('subspace')) {
    const peer = await loadSubspace();
    if (peer === null)
      emit({ impl: 'subspace', skipped: '@subspace/reed-solomon-erasure.wasm is not installed (npm install)' });
    else if (m === 0) emit({ impl: 'subspace', skipped: 'it refuses profiles without parity shards' });
    else {
      const all = new Uint8Array(shardBytes * (k + m));
      fill(all.subarray(0, dataBytes), 1);
      const check = (code: number) => {
        if (code !== 0) throw new Error(`subspace returned error ${code}`);
      };
      const encode = rate(() => check(peer.encode(all, k, m)), options.minSeconds);
      const reconstruct = rate(() => check(peer.reconstruct(all, k, m, present)), options.minSeconds);
      report({ impl: 'subspace', ...base, encodeMBps: mbps(encode), reconstructMBps: mbps(reconstruct), threads: 1 });
    }
  }

  if (impls.includes('isa-l')) {
    const outcome = await runIsalBench({
      k,
      m,
      extentBytes: options.extentBytes,
      minSeconds: options.minSeconds,
      repoRoot: options.repoRoot,
    });
    if (outcome.results === null) emit({ impl: 'isa-l', skipped: outcome.reason });
    else
      for (const r of outcome.results)
        report({
          ...r,
          encodeMBps: m === 0 ? null : round(r.encodeMBps),
          reconstructMBps: r.reconstructMBps === null ? null : round(r.reconstructMBps),
          threads: 1,
        });
  }

  const ratio = (a: string, b: string): number | null => {
    const x = rows.get(a)?.encodeMBps;
    const y = rows.get(b)?.encodeMBps;
    return x == null || y == null || y === 0 ? null : Math.round((x / y) * 100) / 100;
  };
  emit({
    summary: 'codec',
    ...base,
    cairnOverSubspace: ratio('cairn', 'subspace'),
    cairnOverIsalAvx2: ratio('cairn', 'isa-l-avx2'),
    poolOverCairn: ratio('cairn-pool', 'cairn'),
    targets: { cairnOverSubspace: 10, cairnOverIsalAvx2: 0.5, poolOverCairn: 1.7 },
  });
}

interface SubspacePeer {
  encode(shards: Uint8Array, k: number, m: number): number;
  reconstruct(shards: Uint8Array, k: number, m: number, available: boolean[]): number;
}

/** The @subspace peer is a dev dependency: load it only when asked for, and say when it is absent. */
async function loadSubspace(): Promise<SubspacePeer | null> {
  try {
    const require = createRequire(import.meta.url);
    const main = require.resolve('@subspace/reed-solomon-erasure.wasm');
    const mod =
      (await import('@subspace/reed-solomon-erasure.wasm')) as typeof import('@subspace/reed-solomon-erasure.wasm');
    return mod.ReedSolomonErasure.fromBytes(readFileSync(join(dirname(main), 'reed_solomon_erasure_bg.wasm')));
  } catch {
    return null;
  }
}
