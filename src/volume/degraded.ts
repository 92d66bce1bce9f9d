/**
 * Degraded reads, shared by the engine (a read that lost a shard) and repair (rebuilding lost
 * shards): read any k verified shards of a generation, then rebuild the ones wanted from them.
 *
 * What it keeps true: a shard counts only when its store verified it and it has exactly the
 * record's shardBytes; at most `concurrency` reads are in flight, and never more than k minus the
 * shards in hand, so no shard (parity above all) is read unless a read before it failed; no more
 * than k shards are kept; the codec buffer is always released. What it leaves out: choosing
 * which shards are lost (the caller passes `skip`) and publishing anything.
 */
import { assert, errorMessage, expectationOf, type Codec, type ExtentRecord, type Profile } from '../core/index.js';
import type { TargetStores } from './ports.js';

export interface ReadAnyKOptions {
  /** Shard indexes not to read (known lost or being replaced). */
  readonly skip?: ReadonlySet<number>;
  /** The order to try shards in; default shardReadOrder() for `zone`, then the shards in `last`. */
  readonly order?: readonly number[];
  /** The reader's zone, for the default order: shards in it first of their kind. */
  readonly zone?: string;
  /**
   * Shards the default order tries after all others: a shard a read just found failing or slow.
   * Still tried (a failure may be passing), but only when the others cannot make k.
   */
  readonly last?: ReadonlySet<number>;
  /** Reads in flight at once; default k. Never more than k: a read starts only to replace a failed one. */
  readonly concurrency?: number;
  /** Told of every read attempt, with its target and whether it succeeded, for statistics. */
  readonly onRead?: (ok: boolean, target: string) => void;
}

/**
 * The order a reader in `zone` tries the shards of `rec`: data shards in its zone, the other data
 * shards, parity in its zone, the other parity, each group in shard order. Without a zone it is
 * data shards then parity, 0 to k+m-1. Read k at a time, as readAnyK does by default, the first
 * k reads are the data shards, so parity is read only after a data shard failed.
 *
 * @example
 * // 2+1 with shard 0 in zone b and shards 1, 2 in zone a, read from zone a:
 * shardReadOrder(rec, 2, 'a', zoneOf); // [1, 0, 2]
 */
export function shardReadOrder(
  rec: ExtentRecord,
  k: number,
  zone: string | undefined,
  zoneOf: (target: string) => string | undefined,
): number[] {
  const all = rec.shards.map((_, i) => i);
  if (zone === undefined) return all;
  const local = all.map((i) => zoneOf(rec.shards[i]!.target) === zone);
  const group = (data: boolean, inZone: boolean) => all.filter((i) => i < k === data && local[i] === inZone);
  return [...group(true, true), ...group(true, false), ...group(false, true), ...group(false, false)];
}

function defaultOrder(targets: TargetStores, rec: ExtentRecord, k: number, options: ReadAnyKOptions): number[] {
  const order = shardReadOrder(rec, k, options.zone, (t) => targets.zoneOf(t));
  const last = options.last;
  if (last === undefined || last.size === 0) return order;
  return [...order.filter((i) => !last.has(i)), ...order.filter((i) => last.has(i))];
}

/**
 * Reads whole shards of `rec` until k verified ones are in hand or none are left to try.
 * Never throws for a shard that fails: it is listed in `failures` as `shard i on T: why`.
 */
export async function readAnyK(
  targets: TargetStores,
  rec: ExtentRecord,
  k: number,
  options: ReadAnyKOptions = {},
): Promise<{ shards: Map<number, Uint8Array>; failures: string[] }> {
  const order = (options.order ?? defaultOrder(targets, rec, k, options)).filter(
    (i) => !(options.skip?.has(i) ?? false),
  );
  const shards = new Map<number, Uint8Array>();
  const failures: string[] = [];
  let next = 0;
  // A reader starts another read only while the shards in hand and in flight are fewer than k:
  // one that is still in flight may yet succeed, and a reader whose read failed replaces it itself.
  let inFlight = 0;
  const reader = async (): Promise<void> => {
    while (shards.size + inFlight < k && next < order.length) {
      const i = order[next++]!;
      const ref = rec.shards[i];
      assert(ref !== undefined, `record has no shard ${i}`);
      inFlight += 1;
      try {
        const bytes = await targets.store(ref.target).get(ref.key, undefined, expectationOf(rec, i));
        if (bytes.length !== rec.shardBytes) throw new Error(`has ${bytes.length} bytes, expected ${rec.shardBytes}`);
        options.onRead?.(true, ref.target);
        if (shards.size < k) shards.set(i, bytes);
      } catch (err) {
        options.onRead?.(false, ref.target);
        failures.push(`shard ${i} on ${ref.target}: ${errorMessage(err)}`);
      } finally {
        inFlight -= 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.concurrency ?? k) }, reader));
  return { shards, failures };
}

/**
 * The shards `wanted` of an extent, rebuilt on `codec` from `sources` (at least k shards when any
 * wanted shard is missing from them). Returned arrays belong to the caller.
 */
export async function rebuildShards(
  codec: Codec,
  profile: Profile,
  shardBytes: number,
  sources: ReadonlyMap<number, Uint8Array>,
  wanted: readonly number[],
): Promise<Map<number, Uint8Array>> {
  const { k, m } = profile;
  const out = new Map<number, Uint8Array>();
  const toDecode = wanted.filter((i) => {
    const have = sources.get(i);
    if (have !== undefined) out.set(i, have);
    return have === undefined;
  });
  if (toDecode.length === 0) return out;
  assert(sources.size >= k, `rebuild needs ${k} sources, has ${sources.size}`);
  const buf = codec.allocate(profile, shardBytes);
  try {
    const present = Array.from({ length: k + m }, (_, i) => sources.has(i));
    for (const [i, bytes] of sources) buf.shard(i).set(bytes);
    await codec.reconstruct(buf, present, toDecode);
    for (const i of toDecode) out.set(i, buf.shard(i).slice());
  } finally {
    codec.release(buf);
  }
  return out;
}
