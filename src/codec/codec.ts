/**
 * The erasure-codec contract, and the systematic Reed-Solomon codec built on one primitive.
 *
 * Every implementation (the TypeScript reference, the wasm SIMD kernel, the worker pool) provides
 * `mulRows`: outputs[r] = XOR over i of coefficients[r][i] * inputs[i], bytewise in GF(2^8).
 * Encoding applies the parity rows of the encoding matrix to the data shards; reconstruction
 * applies rows built by gf256.reconstructionMatrix() to any k present shards. So one kernel serves
 * both, and the tests that pin it down cover everything.
 */
import { TooFewShardsError, assert, checkProfile } from '../core/index.js';
import type { Profile } from '../core/index.js';
import { type Matrix, parityMatrix, reconstructionMatrix } from './gf256.js';

/** The byte-crunching primitive a codec implementation supplies. */
export interface RowKernel {
  /**
   * outputs[r][x] = XOR over i of coefficients[r][i] * inputs[i][x], for x in [0, length).
   * All inputs and outputs have the same length; outputs are overwritten entirely and must not
   * alias inputs. Neither array is retained after the call returns.
   */
  mulRows(coefficients: Matrix, inputs: readonly Uint8Array[], outputs: readonly Uint8Array[]): void;
}

/** A synchronous K+M erasure codec over caller-owned shard buffers. */
export interface ErasureCodec extends Profile {
  /**
   * Computes the m parity shards of k data shards. Every shard has the same length (0 allowed).
   * `data` is only read; each `parity` buffer is overwritten. Nothing is retained.
   */
  encode(data: readonly Uint8Array[], parity: readonly Uint8Array[]): void;
  /**
   * Rebuilds shards in place. `shards` has k+m slots; null marks a missing (or corrupt) shard.
   * Every index in `wanted` (default: every missing one) is filled with a new buffer. Present
   * shards are only read. Throws TooFewShardsError when fewer than k shards are present.
   */
  reconstruct(shards: (Uint8Array | null)[], wanted?: readonly number[]): void;
}

/** What a reconstruction will do: which present shards feed which missing ones, and how. */
export interface ReconstructionPlan {
  readonly present: readonly number[];
  readonly wanted: readonly number[];
  readonly coefficients: Matrix;
  readonly shardBytes: number;
}

/**
 * Chooses k present shards (data shards first, which keeps the matrix close to the identity)
 * and the coefficients that rebuild `wanted` from them. Pure; shared by every codec.
 */
export function planReconstruction(
  profile: Profile,
  shards: readonly (Uint8Array | null)[],
  wanted?: readonly number[],
): ReconstructionPlan {
  const { k, m } = profile;
  assert(shards.length === k + m, `expected ${k + m} shard slots, got ${shards.length}`);
  const presentAll: number[] = [];
  let shardBytes = -1;
  shards.forEach((shard, i) => {
    if (shard === null) return;
    if (shardBytes === -1) shardBytes = shard.length;
    assert(shard.length === shardBytes, 'present shards differ in length');
    presentAll.push(i);
  });
  if (presentAll.length < k) throw new TooFewShardsError(k, presentAll.length);
  const want = wanted ?? shards.flatMap((s, i) => (s === null ? [i] : []));
  for (const w of want) assert(Number.isInteger(w) && w >= 0 && w < k + m, `shard index ${w} out of range`);
  const present = presentAll.slice(0, k);
  return { present, wanted: want, coefficients: reconstructionMatrix(k, m, present, want), shardBytes };
}

/** A systematic Reed-Solomon codec over any RowKernel. */
export class SystematicCodec implements ErasureCodec {
  readonly k: number;
  readonly m: number;
  private readonly parity: Matrix;

  constructor(
    profile: Profile,
    private readonly kernel: RowKernel,
  ) {
    const { k, m } = checkProfile(profile);
    this.k = k;
    this.m = m;
    this.parity = parityMatrix(k, m);
  }

  encode(data: readonly Uint8Array[], parity: readonly Uint8Array[]): void {
    assert(data.length === this.k, `encode needs ${this.k} data shards, got ${data.length}`);
    assert(parity.length === this.m, `encode needs ${this.m} parity buffers, got ${parity.length}`);
    const length = data[0]?.length ?? 0;
    for (const s of data) assert(s.length === length, 'data shards differ in length');
    for (const p of parity) assert(p.length === length, 'parity buffer length differs from data shards');
    if (this.m === 0) return;
    this.kernel.mulRows(this.parity, data, parity);
  }

  reconstruct(shards: (Uint8Array | null)[], wanted?: readonly number[]): void {
    const plan = planReconstruction(this, shards, wanted);
    if (plan.wanted.length === 0) return;
    const inputs = plan.present.map((i) => shards[i]!);
    const outputs = plan.wanted.map(() => new Uint8Array(plan.shardBytes));
    this.kernel.mulRows(plan.coefficients, inputs, outputs);
    plan.wanted.forEach((w, j) => {
      shards[w] = outputs[j]!;
    });
  }
}

/** Shard length for an extent of `extentBytes` split into k data shards: ceil(extentBytes / k). */
export function shardBytesFor(extentBytes: number, k: number): number {
  return Math.ceil(extentBytes / k);
}
