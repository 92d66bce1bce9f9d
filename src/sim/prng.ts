/**
 * The simulator's only source of randomness: xoshiro128** seeded through splitmix32, our own so
 * that a seed means the same schedule on every Node version and machine.
 *
 * What it keeps true: the same seed gives the same sequence; fork(label) derives an independent
 * stream from this one and a label, so the workload, the faults and the stores each draw from
 * their own stream and a change in how often one of them draws does not reshuffle the others.
 * What it leaves out: cryptographic quality (none is needed) and 64-bit output.
 */
import { assert } from '../core/index.js';

/** splitmix32 step: a well-mixed 32-bit value from a 32-bit state; used for seeding only. */
function splitmix32(state: number): number {
  let z = (state + 0x9e3779b9) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** FNV-1a over a string: turns fork labels into seed material. */
function hashLabel(label: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < label.length; i++) h = Math.imul(h ^ label.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export class Prng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /** `seed` is any safe non-negative integer; both its low and high 32 bits are used. */
  constructor(seed: number, label = '') {
    assert(Number.isSafeInteger(seed) && seed >= 0, `seed must be a safe non-negative integer, got ${seed}`);
    let x = (seed % 2 ** 32) ^ hashLabel(label);
    const high = Math.floor(seed / 2 ** 32);
    x = splitmix32(x ^ splitmix32(high));
    this.s0 = x = splitmix32(x);
    this.s1 = x = splitmix32(x);
    this.s2 = x = splitmix32(x);
    this.s3 = x = splitmix32(x);
    // xoshiro's one forbidden state; splitmix32 never yields four zeros, but say so.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** The next 32 random bits as an unsigned integer. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextU32() / 2 ** 32;
  }

  /** Uniform integer in [0, n), n >= 1. */
  int(n: number): number {
    assert(Number.isSafeInteger(n) && n >= 1 && n <= 2 ** 32, `int(n) needs 1 <= n <= 2^32, got ${n}`);
    return Math.floor(this.next() * n);
  }

  /** Uniform integer in [lo, hi], both inclusive. */
  range(lo: number, hi: number): number {
    assert(hi >= lo, `range(${lo}, ${hi}) is empty`);
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    assert(items.length > 0, 'pick() from an empty list');
    return items[this.int(items.length)]!;
  }

  /** One of `choices` with probability proportional to its weight. */
  weighted<T>(choices: readonly (readonly [T, number])[]): T {
    let total = 0;
    for (const [, w] of choices) total += w;
    assert(total > 0, 'weighted() with no weight');
    let x = this.next() * total;
    for (const [value, w] of choices) {
      if (x < w) return value;
      x -= w;
    }
    return choices[choices.length - 1]![0];
  }

  /** `length` random bytes. */
  bytes(length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i += 4) {
      const v = this.nextU32();
      out[i] = v & 0xff;
      if (i + 1 < length) out[i + 1] = (v >>> 8) & 0xff;
      if (i + 2 < length) out[i + 2] = (v >>> 16) & 0xff;
      if (i + 3 < length) out[i + 3] = v >>> 24;
    }
    return out;
  }

  /** An independent stream named `label`, derived from (and advancing) this one. */
  fork(label: string): Prng {
    return new Prng(this.nextU32() * 2 ** 16 + (this.nextU32() >>> 16), label);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
