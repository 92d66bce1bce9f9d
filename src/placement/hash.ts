/**
 * The hash behind placement: a small 64-bit hash built from two 32-bit lanes (MurmurHash3's
 * mixing steps, with the lanes fed into each other), and the "draw" that turns it into a number
 * u in the open interval (0, 1) for one (extent, purpose, shard, target or zone).
 *
 * Keeps true: the output depends only on the bytes hashed, never on the platform, the process or
 * the order of calls; u is never 0 or 1, so -ln(u) is finite and positive.
 * Leaves out: cryptographic strength (no adversary chooses target names to skew placement; an
 * operator who could would simply set the weights), and BigInt (ten times slower on this path).
 *
 * Changing anything here moves data: every placement in every cluster is a function of these
 * numbers. The golden values in test/unit/placement/hash.test.ts pin them.
 */
import { assert } from '../core/index.js';

/** A 64-bit hash value as two unsigned 32-bit halves. */
export interface Key64 {
  readonly hi: number;
  readonly lo: number;
}

/**
 * What a draw is for. Each purpose hashes with its own tag, so the draw that allots slots to a
 * zone is independent of the draw that sends shard 3 to that zone.
 */
export const drawPurpose = {
  /** Weighted lot that decides how many of an extent's shards each zone holds. */
  zoneSlot: 0x51,
  /** Unweighted rank that decides which shard indices go to which zone. */
  shardZone: 0x52,
  /** Weighted rendezvous score of a target for one shard inside its zone. */
  shardTarget: 0x53,
} as const;
export type DrawPurpose = (typeof drawPurpose)[keyof typeof drawPurpose];

const seedExtent = 0x2f1e3a7b;
/** Seed for hashing a target's or a zone's name into its Key64. */
export const seedName = 0x6c8e9cf5;

const c1 = 0xcc9e2d51;
const c2 = 0x1b873593;
const two32 = 4294967296;
const two21 = 2097152;
const two53 = 9007199254740992;

// The running state. Module-level so that hashing allocates nothing; every public function below
// runs begin() .. finish() without yielding, so calls never interleave.
let lane1 = 0;
let lane2 = 0;

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

/** MurmurHash3's finaliser: every input bit affects every output bit with probability ~1/2. */
function fmix32(input: number): number {
  let h = input;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h;
}

function begin(seed: number): void {
  lane1 = seed ^ 0x9e3779b9;
  lane2 = seed ^ 0x7f4a7c15;
}

/** Mixes one 32-bit word into both lanes, each with its own constants, then lane into lane. */
function feed(word: number): void {
  let k1 = Math.imul(word, c1);
  k1 = rotl(k1, 15);
  k1 = Math.imul(k1, c2);
  lane1 ^= k1;
  lane1 = rotl(lane1, 13);
  lane1 = (Math.imul(lane1, 5) + 0xe6546b64) | 0;

  let k2 = Math.imul(word, c2);
  k2 = rotl(k2, 17);
  k2 = Math.imul(k2, c1);
  lane2 ^= k2;
  lane2 = rotl(lane2, 15);
  lane2 = (Math.imul(lane2, 5) + 0x38495ab5) | 0;

  lane1 = (lane1 + lane2) | 0;
  lane2 = (lane2 + lane1) | 0;
}

function finish(length: number): void {
  lane1 ^= length;
  lane2 ^= length;
  lane1 = (lane1 + lane2) | 0;
  lane2 = (lane2 + lane1) | 0;
  lane1 = fmix32(lane1);
  lane2 = fmix32(lane2);
  lane1 = (lane1 + lane2) | 0;
  lane2 = (lane2 + lane1) | 0;
}

function feedText(text: string): void {
  // UTF-16 code units, two per word. Names are ASCII in practice (ids.ts), but any string hashes.
  let i = 0;
  for (; i + 1 < text.length; i += 2) feed(text.charCodeAt(i) | (text.charCodeAt(i + 1) << 16));
  if (i < text.length) feed(text.charCodeAt(i));
}

/** Hashes a name (a target id, a zone id) once; placement keeps the result per target and zone. */
export function hashText(text: string, seed: number = seedName): Key64 {
  begin(seed);
  feedText(text);
  finish(text.length);
  return { hi: lane1 >>> 0, lo: lane2 >>> 0 };
}

/**
 * The key of one extent of one volume, computed once per placement. `extent` is split into two
 * 32-bit words so extents beyond 2^32 (a 64 PiB volume of 16 MiB extents) still hash apart.
 */
export function extentKey(volume: string, extent: number): Key64 {
  assert(Number.isSafeInteger(extent) && extent >= 0, `extent must be a safe non-negative integer, got ${extent}`);
  begin(seedExtent);
  feedText(volume);
  feed(volume.length);
  feed(extent >>> 0);
  feed(Math.floor(extent / two32));
  finish(volume.length + 8);
  return { hi: lane1 >>> 0, lo: lane2 >>> 0 };
}

/**
 * The part of a draw shared by every item (target or zone) a shard or slot is scored against:
 * hashing it once per shard instead of once per (shard, item) halves the cost of a placement.
 */
export interface DrawPrefix {
  readonly lane1: number;
  readonly lane2: number;
}

/** Starts the draws of one (extent, purpose, index); finish each with drawFor(). */
export function drawPrefix(extent: Key64, purpose: DrawPurpose, index: number): DrawPrefix {
  begin(purpose);
  feed(extent.hi);
  feed(extent.lo);
  feed(index);
  return { lane1, lane2 };
}

/**
 * A uniform number in (0, 1) for (extent, purpose, index, item): 53 bits from the 64-bit hash,
 * offset by half a step so that neither 0 nor 1 can come out.
 *
 * Example: lanes 0x80000000 and 0x00000000 give (2^31 * 2^21 + 0 + 0.5) / 2^53 = 0.5 + 2^-54.
 */
export function drawFor(prefix: DrawPrefix, item: Key64): number {
  lane1 = prefix.lane1;
  lane2 = prefix.lane2;
  feed(item.hi);
  feed(item.lo);
  finish(20);
  return ((lane1 >>> 0) * two21 + (lane2 >>> 11) + 0.5) / two53;
}

/** drawFor(drawPrefix(extent, purpose, index), item): one draw, for explanations and tests. */
export function draw(extent: Key64, purpose: DrawPurpose, index: number, item: Key64): number {
  return drawFor(drawPrefix(extent, purpose, index), item);
}
