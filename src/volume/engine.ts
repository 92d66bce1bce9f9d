/**
 * The volume engine: reads and writes whole extents of one volume over shard stores, with the
 * extent map as the only truth of what is where.
 *
 * What it keeps true:
 * - Extent versions are immutable. persist() writes each extent as new shard objects under a new
 *   generation (epoch * 2^32 + a counter, so two writers, or one writer before and after a crash,
 *   never pick the same keys), then publishes the new records with one fenced commit. A crash at
 *   any point leaves each extent at its old or its new generation, never torn.
 * - A generation is published only when at least `durableShardsMin` of its k+m shards are stored
 *   (default all of them; never fewer than k+1). Otherwise that extent's persist fails and its old
 *   generation stays published.
 * - Reads take only the data-shard ranges they need. A missing, slow or corrupt shard makes the
 *   read fetch any k whole shards and decode; the extent is reported as degraded. Never-written
 *   extents read as zeros without touching any store.
 * - Given the frontend's zone, reads stay in it where they can: a range whose data shard is in
 *   another zone is decoded from the same range of k shards in the zone when the zone holds k
 *   shards of the extent, and degraded reads try shards in the zone first. Without a zone, reads
 *   are as if no target had one.
 * - Superseded shards are deleted after a grace period, so reads already in flight finish.
 *
 * What it leaves out: caching and request coalescing (cache/), repair (it only reports).
 */
import { randomBytes } from 'node:crypto';
import {
  CairnError,
  UnavailableError,
  assert,
  errorMessage,
  expectationOf,
  FencedError,
  publishedBefore,
  shardKey,
  shardSeed,
  type Clock,
  type Codec,
  type CodecBuffer,
  type ExtentRecord,
  type Profile,
  systemClock,
  zeroBlocksOf,
} from '../core/index.js';
import {
  extentCount,
  extentLength,
  shardBytesOf,
  splitByShard,
  type ExtentGeometry,
  type ShardPiece,
} from '../extent/index.js';
import { readAnyK, rebuildShards } from './degraded.js';
import { readShardBlocks, rebuildBadBlocks, shardWithNoGoodBlock, type BlockwiseShard } from './blockwise.js';
import type { ExtentCipher, ExtentMapStore, OnDemandExtentMap, ShardPlacer, TargetStores } from './ports.js';
import {
  degradedExtentsMax,
  oldShardGraceMsDefault,
  pendingDeletesMax,
  persistExtentsInFlightMax,
  shardReadHedgeMsDefault,
  zoneDecodesInFlightMax,
} from './limits.js';

/** Fewer than k shards of an extent could be read. */
export class ExtentUnreadableError extends CairnError {
  override readonly name: string = 'ExtentUnreadableError';
  constructor(message: string) {
    super('EIO', message, { retryable: true });
  }
}

/** Some extents of a persist() could not be stored or published; the rest were. */
export class PersistError extends CairnError {
  override readonly name: string = 'PersistError';
  constructor(
    message: string,
    /** Extents whose new generation is published. */
    readonly committed: readonly number[],
    /** Extents whose old generation stays published, with why. */
    readonly failed: ReadonlyMap<number, Error>,
    options: { cause?: unknown; retryable?: boolean } = {},
  ) {
    super('EFLUSH', message, { retryable: options.retryable ?? true, cause: options.cause });
  }
}

export interface EngineVolume extends ExtentGeometry {
  readonly id: string;
  readonly name: string;
  readonly profile: Profile;
}

export interface VolumeEngineOptions {
  readonly volume: EngineVolume;
  readonly map: ExtentMapStore;
  readonly targets: TargetStores;
  readonly placer: ShardPlacer;
  readonly pool: Codec;
  /** The writer's fencing epoch (0 for a read-only engine, which never persists). */
  readonly epoch: number;
  /**
   * The zone this engine's process runs in (`cairnctl nbd serve --zone`): reads prefer shards in
   * it, as targets.zoneOf() reports them. Absent: no preference, and no read counts as cross-zone.
   */
  readonly zone?: string;
  readonly durableShardsMin?: number;
  readonly shardReadHedgeMs?: number;
  readonly oldShardGraceMs?: number;
  readonly clock?: Clock;
  readonly log?: (line: string) => void;
  /** Draws extent seeds (u32, never 0); crypto-random by default, the simulator's rng in it. */
  readonly seedSource?: () => number;
  /**
   * Records some other map may still read (a snapshot's, a clone's parent's): when this writer
   * supersedes one, its shards are left for gc, which knows every root, instead of deleted after
   * the grace. Absent: none.
   */
  readonly retained?: (record: ExtentRecord) => boolean;
  /**
   * An encrypted volume's cipher: each generation is enciphered before it is encoded, and reads
   * are widened to whole units and deciphered. Absent: the volume is not encrypted.
   */
  readonly cipher?: ExtentCipher;
}

/** A crypto-random u32 that is not 0. */
function randomSeed(): number {
  return randomBytes(4).readUInt32LE(0) || 1;
}

/** The full bytes of an extent to publish, or null to make it a hole. */
export interface ExtentImage {
  readonly extent: number;
  readonly data: Uint8Array | null;
  /** The highest journal LSN this image holds for the extent (recorded in the published record). */
  readonly journalLsn?: number;
}

export interface EngineStats {
  /** Shard reads started: ranges and whole shards, direct, decoded in the zone, and degraded. */
  shardReads: number;
  /** Of shardReads, those from a target outside the engine's zone (0 without a zone). */
  crossZoneShardReads: number;
  /** Range reads answered by decoding shards in the engine's zone instead of reading another zone. */
  zoneDecodedReads: number;
  degradedReads: number;
  shardReadFailures: number;
  extentsPersisted: number;
  shardsWritten: number;
  shardWriteFailures: number;
}

class SlowReadError extends Error {}

/** The shards one direct read failed on, and those it still waits for (a hedge calls them slow). */
class ShardReadLog {
  readonly failed = new Set<number>();
  /** Reads in flight per shard: a decode in the zone may read two windows of one shard. */
  private readonly inFlight = new Map<number, number>();

  start(i: number): void {
    this.inFlight.set(i, (this.inFlight.get(i) ?? 0) + 1);
  }

  end(i: number, ok: boolean): void {
    const left = (this.inFlight.get(i) ?? 0) - 1;
    assert(left >= 0, `shard ${i} read ended more often than it started`);
    if (left === 0) this.inFlight.delete(i);
    else this.inFlight.set(i, left);
    if (!ok) this.failed.add(i);
  }

  /** Shards with a read still in flight. */
  get waiting(): number[] {
    return [...this.inFlight.keys()];
  }
}

export class VolumeEngine {
  readonly volume: EngineVolume;
  readonly shardBytes: number;
  readonly stats: EngineStats = {
    shardReads: 0,
    crossZoneShardReads: 0,
    zoneDecodedReads: 0,
    degradedReads: 0,
    shardReadFailures: 0,
    extentsPersisted: 0,
    shardsWritten: 0,
    shardWriteFailures: 0,
  };
  /** Extents a read found degraded (a shard missing, slow or corrupt), for repair. */
  readonly degraded = new Set<number>();
  /**
   * Published records this engine knows: every one when the map store loads them all; with a
   * store read on demand (the map tree), those of the extents looked up (`looked`) or committed.
   */
  private readonly records: Map<number, ExtentRecord>;
  private readonly onDemand: OnDemandExtentMap | undefined;
  private readonly looked = new Set<number>();
  private readonly durableShardsMin: number;
  private readonly log: (line: string) => void;
  private sequence = 0;
  private zoneDecodesInFlight = 0;
  private readonly changes = new Map<number, number>();
  /**
   * Extents whose last commit failed without being refused (a timeout): it may have landed, so
   * their published record is unknown and they are not known holes. Cleared by their next commit.
   */
  private readonly uncertain = new Set<number>();
  private pendingDeletes: { dueMs: number; target: string; key: string }[] = [];
  private readonly stopDeleter: () => void;
  private closed = false;

  private constructor(
    private readonly options: VolumeEngineOptions,
    records: Map<number, ExtentRecord>,
  ) {
    const { k, m } = options.volume.profile;
    this.volume = options.volume;
    this.records = records;
    this.onDemand = options.map.onDemand;
    this.onDemand?.onRootMoved((changed) => void this.rereadRecords(changed));
    this.shardBytes = shardBytesOf(options.volume);
    const min = options.durableShardsMin ?? k + m;
    assert(
      Number.isSafeInteger(min) && min >= Math.min(k + 1, k + m) && min <= k + m,
      `durableShardsMin ${min} outside [min(k+1, k+m), k+m]`,
    );
    this.durableShardsMin = min;
    assert(
      Number.isSafeInteger(options.epoch) && options.epoch >= 0 && options.epoch < 2 ** 21,
      `epoch ${options.epoch} out of range`,
    );
    this.log = options.log ?? (() => undefined);
    const clock = options.clock ?? systemClock;
    this.stopDeleter = clock.every(1000, () => void this.deleteDue(clock.now()));
  }

  static async open(options: VolumeEngineOptions): Promise<VolumeEngine> {
    return new VolumeEngine(options, await options.map.load());
  }

  get geometry(): ExtentGeometry {
    return this.volume;
  }

  /**
   * The published record of extent `e`, or undefined for a hole, or for an extent not looked up
   * yet when the map is read on demand (prepare() first).
   */
  record(e: number): ExtentRecord | undefined {
    return this.records.get(e);
  }

  /** True for a known hole; false for data, or for an extent not looked up yet (prepare() first). */
  isHole(e: number): boolean {
    if (this.uncertain.has(e) || !this.knows(e)) return false;
    const rec = this.records.get(e);
    return rec === undefined || rec.shards.length === 0;
  }

  /** True when extent e's published record (or that it has none) is known without I/O. */
  knows(e: number): boolean {
    return this.onDemand === undefined || this.looked.has(e);
  }

  /**
   * Looks up the published records of `extents` that are not known yet (a map read on demand
   * reads the pages on their paths); undefined, without a promise, when all are known (the cache
   * calls it on every write, before the synchronous record()/isHole() of the extents it touches).
   */
  prepare(extents: Iterable<number>): Promise<void> | undefined {
    if (this.onDemand === undefined) return undefined;
    let wanted: number[] | undefined;
    for (const e of extents) if (!this.looked.has(e)) (wanted ??= []).push(e);
    return wanted === undefined ? undefined : this.lookUp(this.onDemand, [...new Set(wanted)]);
  }

  private async lookUp(map: OnDemandExtentMap, wanted: readonly number[]): Promise<void> {
    const versions = wanted.map((e) => this.versionOf(e));
    const found = await map.lookup(wanted);
    wanted.forEach((e, i) => {
      // A commit of this writer that landed meanwhile is newer than what the lookup read.
      if (this.looked.has(e) || this.versionOf(e) !== versions[i]) return;
      const rec = found[i];
      if (rec !== undefined) this.records.set(e, rec);
      this.looked.add(e);
    });
  }

  /** The published records known without I/O (every one unless the map is read on demand), in extent order. */
  *knownRecords(): Generator<[number, ExtentRecord]> {
    const known = [...this.records.keys()].sort((a, b) => a - b);
    for (const e of known) {
      const rec = this.records.get(e);
      if (rec !== undefined && rec.shards.length > 0) yield [e, rec];
    }
  }

  /**
   * Someone else published the map (a repair moved shards): re-reads the records held of the
   * extents that changed (all held, when that is not known).
   */
  private async rereadRecords(changed: readonly number[] | undefined): Promise<void> {
    const held = changed === undefined ? [...this.records.keys()] : changed.filter((e) => this.records.has(e));
    if (held.length === 0 || this.onDemand === undefined) return;
    try {
      const found = await this.onDemand.lookup(held);
      held.forEach((e, i) => {
        const rec = found[i];
        if (rec !== undefined) this.adoptRepaired(e, rec);
      });
    } catch (err) {
      this.log(`cannot re-read the map of volume "${this.volume.name}" after a repair: ${errorMessage(err)}`);
    }
  }

  /**
   * Takes a record that repair or scrub published for the SAME generation (shards moved to new
   * targets), so reads go to the new locations and superseded-shard deletion later removes the
   * right objects. A record of another generation is ignored: this writer's own commits decide.
   */
  adoptRepaired(e: number, rec: ExtentRecord): boolean {
    const current = this.records.get(e);
    if (current === undefined || current.generation !== rec.generation || rec.shards.length !== current.shards.length)
      return false;
    // The watch also reports this writer's own commits: only a changed location is news.
    if (rec.shards.every((s, i) => s.target === current.shards[i]!.target && s.key === current.shards[i]!.key))
      return false;
    this.records.set(e, rec);
    return true;
  }

  /** Changes whenever extent e's published record changes (a counter, so hole-data-hole differs). */
  versionOf(e: number): number {
    return this.changes.get(e) ?? 0;
  }

  /** The highest journal LSN a published generation holds (0 when none records one). */
  get highestJournalLsn(): number {
    if (this.onDemand !== undefined) return this.onDemand.highestJournalLsn;
    let lsn = 0;
    for (const rec of this.records.values()) lsn = Math.max(lsn, rec.journalLsn ?? 0);
    return lsn;
  }

  /** Extents with a published generation holding data (hole records left out). */
  get writtenExtents(): number {
    if (this.onDemand !== undefined) return this.onDemand.writtenExtents;
    let n = 0;
    for (const rec of this.records.values()) if (rec.shards.length > 0) n += 1;
    return n;
  }

  /** Bytes [offset, offset + length) of extent `e`; zeros for a hole. */
  async readRange(e: number, offset: number, length: number): Promise<Uint8Array> {
    assert(offset >= 0 && length >= 0 && offset + length <= extentLength(this.volume, e), `range outside extent ${e}`);
    if (!this.knows(e)) await this.prepare([e]);
    for (let attempt = 0; ; attempt++) {
      const rec = this.records.get(e);
      if (rec === undefined || rec.shards.length === 0) return new Uint8Array(length);
      try {
        if (this.options.cipher !== undefined)
          return await this.readDeciphered(this.options.cipher, e, rec, offset, length);
        return await this.readRangeOf(e, rec, offset, length);
      } catch (err) {
        // A flush may have replaced the generation (and its shards) while we read: try the new one.
        if (attempt < 2 && this.records.get(e) !== rec) continue;
        throw err;
      }
    }
  }

  /**
   * Bytes [offset, offset + length) of extent `e` of an encrypted volume: the whole units around
   * them read and deciphered with the generation of `rec`, the record the bytes were read from.
   */
  private async readDeciphered(
    cipher: ExtentCipher,
    e: number,
    rec: ExtentRecord,
    offset: number,
    length: number,
  ): Promise<Uint8Array> {
    const unit = cipher.unitBytes;
    const start = Math.floor(offset / unit) * unit;
    const end = Math.min(extentLength(this.volume, e), Math.ceil((offset + length) / unit) * unit);
    const bytes = await this.readRangeOf(e, rec, start, end - start);
    await cipher.decrypt(bytes, { extent: e, generation: rec.generation, offset: start });
    return start === offset && end - start === length ? bytes : bytes.subarray(offset - start, offset - start + length);
  }

  /** The whole extent `e` (extentLength bytes); zeros for a hole. */
  readWhole(e: number): Promise<Uint8Array> {
    return this.readRange(e, 0, extentLength(this.volume, e));
  }

  private async readRangeOf(e: number, rec: ExtentRecord, offset: number, length: number): Promise<Uint8Array> {
    if (length === 0) return new Uint8Array(0);
    const log = new ShardReadLog();
    const direct = this.readDirect(e, rec, offset, length, log);
    // The hedge runs on the injected clock, not setTimeout, so tests and the simulator drive it.
    let stopHedge: (() => void) | undefined;
    const slow = new Promise<never>((_, reject) => {
      stopHedge = (this.options.clock ?? systemClock).every(
        this.options.shardReadHedgeMs ?? shardReadHedgeMsDefault,
        () => {
          stopHedge?.();
          reject(new SlowReadError());
        },
      );
    });
    try {
      return await Promise.race([direct, slow]);
    } catch (err) {
      direct.catch(() => undefined);
      const hedged = err instanceof SlowReadError;
      this.noteDegraded(e, hedged ? 'slow shard' : errorMessage(err));
      // The shards that failed, and on a hedge those still being read, are tried last: k others
      // may answer at once, while a slow one would hold its reader's place until it is done.
      const last = new Set(hedged ? [...log.failed, ...log.waiting] : log.failed);
      const whole = await this.readDegraded(e, rec, last);
      return whole.slice(offset, offset + length);
    } finally {
      stopHedge?.();
    }
  }

  private async readDirect(
    e: number,
    rec: ExtentRecord,
    offset: number,
    length: number,
    log: ShardReadLog,
  ): Promise<Uint8Array> {
    const pieces = splitByShard(rec.shardBytes, offset, length);
    const sources = this.zoneSources(rec, pieces);
    if (sources !== undefined) return this.readDecodedInZone(e, rec, pieces, sources, length, log);
    const out = new Uint8Array(length);
    await Promise.all(
      pieces.map((p) =>
        this.readShardRange(e, rec, p.shard, { offset: p.offset, length: p.length }, log, out, p.bufferOffset),
      ),
    );
    return out;
  }

  /**
   * Bytes [range.offset, range.offset + range.length) of shard i of `rec`, counted in the stats
   * and `log`: returned, or written into `out` at `at` when given (then returns `out`).
   */
  private async readShardRange(
    e: number,
    rec: ExtentRecord,
    i: number,
    range: { readonly offset: number; readonly length: number },
    log: ShardReadLog,
    out?: Uint8Array,
    at = 0,
  ): Promise<Uint8Array> {
    const ref = rec.shards[i];
    assert(ref !== undefined, `extent ${e} has no shard ${i}`);
    this.countShardRead(ref.target);
    log.start(i);
    let ok = false;
    try {
      const store = this.options.targets.store(ref.target);
      // Every block is checked against this record (size and seed), not only the node's header.
      const expect = expectationOf(rec, i);
      if (out !== undefined && store.getInto !== undefined && range.length > 0) {
        await store.getInto(ref.key, range, out, at, expect);
        ok = true;
        return out;
      }
      const bytes = await store.get(ref.key, range, expect);
      assert(bytes.length === range.length, 'store returned a different length than asked');
      if (out !== undefined) out.set(bytes, at);
      ok = true;
      return out ?? bytes;
    } finally {
      log.end(i, ok);
    }
  }

  private countShardRead(target: string): void {
    this.stats.shardReads += 1;
    if (!this.inZone(target)) this.stats.crossZoneShardReads += 1;
  }

  /** True when there is no zone to prefer, or `target` is in it. */
  private inZone(target: string): boolean {
    return this.options.zone === undefined || this.options.targets.zoneOf(target) === this.options.zone;
  }

  /**
   * The k shards in the engine's zone to decode `pieces` from, or undefined to read the pieces
   * directly: when there is no zone, every piece's data shard is in it already, the zone holds
   * fewer than k shards of the extent, or zoneDecodesInFlightMax decodes are running. Data shards
   * first: their bytes need no decoding.
   */
  private zoneSources(rec: ExtentRecord, pieces: readonly ShardPiece[]): number[] | undefined {
    const { k } = this.volume.profile;
    if (this.options.zone === undefined || this.zoneDecodesInFlight >= zoneDecodesInFlightMax) return undefined;
    if (pieces.every((p) => this.inZone(rec.shards[p.shard]!.target))) return undefined;
    const local = rec.shards.map((_, i) => i).filter((i) => this.inZone(rec.shards[i]!.target));
    return local.length >= k ? local.slice(0, k) : undefined;
  }

  /**
   * Reads `pieces` by decoding: Reed-Solomon codes each byte position on its own, so bytes
   * [a, b) of any k shards decode to bytes [a, b) of the others. The pieces' positions within
   * their shards are merged into windows; each window is read from the k `sources` (one range
   * read each) and the missing data shards' bytes of it decoded. Worked example, a 4+2 extent of
   * 1 MiB (256 KiB shards) and 8 KiB read at 252 KiB: pieces shard 0 [252, 256) KiB and shard 1
   * [0, 4) KiB give two windows of 4 KiB, so 2 x 4 reads of 4 KiB; a read covering a whole shard
   * gives one window, the whole shard, read from each of the 4 sources.
   */
  private async readDecodedInZone(
    e: number,
    rec: ExtentRecord,
    pieces: readonly ShardPiece[],
    sources: readonly number[],
    length: number,
    log: ShardReadLog,
  ): Promise<Uint8Array> {
    const { k } = this.volume.profile;
    assert(sources.length === k, `decoding needs ${k} sources, given ${sources.length}`);
    this.stats.zoneDecodedReads += 1;
    this.zoneDecodesInFlight += 1;
    try {
      return await this.decodeWindows(e, rec, pieces, sources, length, log);
    } finally {
      this.zoneDecodesInFlight -= 1;
    }
  }

  private async decodeWindows(
    e: number,
    rec: ExtentRecord,
    pieces: readonly ShardPiece[],
    sources: readonly number[],
    length: number,
    log: ShardReadLog,
  ): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    await Promise.all(
      positionWindows(pieces).map(async (w) => {
        const read = new Map<number, Uint8Array>();
        await Promise.all(sources.map(async (i) => read.set(i, await this.readShardRange(e, rec, i, w, log))));
        const inWindow = pieces.filter((p) => p.offset >= w.offset && p.offset + p.length <= w.offset + w.length);
        const wanted = [...new Set(inWindow.map((p) => p.shard))];
        const decoded = await rebuildShards(this.options.pool, this.volume.profile, w.length, read, wanted);
        for (const p of inWindow) {
          const bytes = decoded.get(p.shard);
          assert(bytes !== undefined && bytes.length === w.length, `shard ${p.shard} of extent ${e} not decoded`);
          out.set(bytes.subarray(p.offset - w.offset, p.offset - w.offset + p.length), p.bufferOffset);
        }
      }),
    );
    return out;
  }

  private noteDegraded(e: number, why: string): void {
    this.stats.degradedReads += 1;
    if (this.degraded.size < degradedExtentsMax) this.degraded.add(e);
    this.log(
      `volume ${this.volume.name}: extent ${e} read degraded (${why}); decoding from any ${this.volume.profile.k} shards`,
    );
  }

  /**
   * Reads any k whole shards of the extent (data shards first, those in the engine's zone first
   * of each kind, the shards in `last` after all others) and rebuilds its bytes.
   */
  private async readDegraded(e: number, rec: ExtentRecord, last: ReadonlySet<number>): Promise<Uint8Array> {
    const { k } = this.volume.profile;
    const { shards, failures } = await readAnyK(this.options.targets, rec, k, {
      ...(this.options.zone === undefined ? {} : { zone: this.options.zone }),
      last,
      onRead: (ok, target) => {
        this.countShardRead(target);
        if (!ok) this.stats.shardReadFailures += 1;
      },
    });
    const length = extentLength(this.volume, e);
    const dataShards = Array.from({ length: k }, (_, i) => i).filter((i) => i * rec.shardBytes < length);
    const data =
      shards.size >= k
        ? await rebuildShards(this.options.pool, this.volume.profile, rec.shardBytes, shards, dataShards)
        : await this.readBlockwise(e, rec, shards, failures);
    const out = new Uint8Array(length);
    for (const i of dataShards) {
      out.set(data.get(i)!.subarray(0, Math.min(rec.shardBytes, length - i * rec.shardBytes)), i * rec.shardBytes);
    }
    return out;
  }

  /**
   * The data shards of `rec` when fewer than k shards read whole (`whole`): the others are read
   * again block by block, and each bad block of a data shard is rebuilt from k good blocks of its
   * position. Throws ExtentUnreadableError when some position has fewer than k good blocks.
   */
  private async readBlockwise(
    e: number,
    rec: ExtentRecord,
    whole: ReadonlyMap<number, Uint8Array>,
    failures: readonly string[],
  ): Promise<Map<number, Uint8Array>> {
    const { k } = this.volume.profile;
    const reads = new Map<number, BlockwiseShard>();
    await Promise.all(
      rec.shards.map(async (ref, i) => {
        const got = whole.get(i);
        if (got !== undefined) {
          reads.set(i, { bytes: got, bad: new Set(), state: 'good' });
          return;
        }
        this.countShardRead(ref.target);
        const read = await readShardBlocks(this.options.targets.store(ref.target), rec, i).catch(() => undefined);
        if (read !== undefined) reads.set(i, read);
        // A data shard that cannot be reached at all is rebuilt everywhere.
        else if (i < k) reads.set(i, shardWithNoGoodBlock(rec.shardBytes, 'missing'));
      }),
    );
    const result = await rebuildBadBlocks(this.options.pool, this.volume.profile, rec.shardBytes, reads, (i) => i < k);
    if (result.unfixable.length > 0) {
      const [worst] = result.unfixable;
      throw new ExtentUnreadableError(
        `Cannot read extent ${e} of volume "${this.volume.name}": ${whole.size} of ${k} needed shards read whole, and block ${worst!.block} is good on ${worst!.good} shards (${failures.join('; ')})`,
      );
    }
    this.log(
      `volume ${this.volume.name}: extent ${e} read block by block: ${result.blocksRebuilt} blocks of data shards rebuilt from the good blocks of their position`,
    );
    const out = new Map<number, Uint8Array>();
    for (let i = 0; i < k; i++) out.set(i, reads.get(i)!.bytes);
    return out;
  }

  /**
   * Publishes new generations of the given extents (null data: make it a hole). Each extent is
   * encoded and its shards stored on the targets placement chooses; then all extents whose
   * shards reached durableShardsMin targets are committed with one fenced commit. Throws
   * PersistError listing what was and was not published when any extent failed.
   */
  async persist(images: readonly ExtentImage[]): Promise<void> {
    assert(!this.closed, 'persist() after close()');
    // The records being replaced: their shards are deleted after the grace.
    await this.prepare(images.map((i) => i.extent));
    const stored = new Map<number, ExtentRecord | null>();
    const failed = new Map<number, Error>();
    const queue = [...images];
    const worker = async (): Promise<void> => {
      for (let image = queue.shift(); image !== undefined; image = queue.shift()) {
        if (image.data === null) {
          // A hole. With a journal it stays a record (no shards) carrying the LSN, so replay
          // knows the journal's older bytes for this extent are gone; without one, the key goes.
          stored.set(
            image.extent,
            image.journalLsn === undefined
              ? null
              : { generation: this.nextGeneration(), shardBytes: 0, shards: [], journalLsn: image.journalLsn },
          );
          continue;
        }
        try {
          stored.set(image.extent, await this.storeGeneration(image.extent, image.data, image.journalLsn));
        } catch (err) {
          failed.set(image.extent, err instanceof Error ? err : new Error(String(err)));
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(persistExtentsInFlightMax, images.length) }, worker));

    const updates = [...stored].map(([index, record]) => ({ index, record }));
    if (updates.length > 0) {
      try {
        await this.options.map.commit(updates);
      } catch (err) {
        // A commit may land in batches: the extents it says were published are published, and
        // their shards are live whatever happened to the rest (a new owner reads them). Of the
        // rest, only a refused (fenced) batch and those after it are known unpublished; after a
        // timeout the batch may have landed, so its shards must stay (at worst they are garbage).
        const published = new Set(publishedBefore(err));
        const committed: number[] = [];
        for (const u of updates) {
          if (published.has(u.index)) {
            this.adopt(u.index, u.record);
            committed.push(u.index);
            continue;
          }
          if (err instanceof FencedError) {
            if (u.record !== null) this.scheduleDelete(u.record, 0);
          } else {
            this.uncertain.add(u.index);
          }
          failed.set(u.index, err instanceof Error ? err : new Error(String(err)));
        }
        throw new PersistError(
          `Cannot publish ${updates.length - committed.length} of ${updates.length} extents of volume "${this.volume.name}": ${errorMessage(err)}`,
          committed,
          failed,
          {
            cause: err,
            retryable: err instanceof CairnError ? err.retryable : false,
          },
        );
      }
      for (const u of updates) this.adopt(u.index, u.record);
    }
    if (failed.size > 0) {
      const [first] = failed;
      throw new PersistError(
        `Cannot persist ${failed.size} of ${images.length} extents of volume "${this.volume.name}"; first, extent ${first![0]}: ${errorMessage(first![1])}`,
        updates.map((u) => u.index),
        failed,
      );
    }
  }

  /** Takes a record this writer published as the extent's current one; the old one's shards go after the grace. */
  private adopt(index: number, record: ExtentRecord | null): void {
    this.uncertain.delete(index);
    this.looked.add(index);
    const old = this.records.get(index);
    if (record === null) this.records.delete(index);
    else this.records.set(index, record);
    this.changes.set(index, (this.changes.get(index) ?? 0) + 1);
    if (old !== undefined && this.options.retained?.(old) !== true)
      this.scheduleDelete(old, this.options.oldShardGraceMs ?? oldShardGraceMsDefault);
    this.stats.extentsPersisted += 1;
  }

  /**
   * A new extent seed (random, never 0): two generations of one extent, even two writers', do
   * not share a seed, so a shard of one fails the reader's check of the other.
   */
  private nextSeed(): number {
    return (this.options.seedSource ?? randomSeed)();
  }

  /**
   * The volume's new size, after the resize was published (VolumeFrontend.resize): extents past
   * the new end are forgotten (their records were dropped before); shard size and placement do
   * not depend on the size.
   */
  resize(sizeBytes: number): void {
    const next: EngineVolume = { ...this.volume, sizeBytes };
    (this as { volume: EngineVolume }).volume = next;
    const count = extentCount(next);
    for (const e of [...this.records.keys()]) if (e >= count) this.records.delete(e);
    for (const e of [...this.looked]) if (e >= count) this.looked.delete(e);
  }

  /**
   * The 4 KiB blocks of extent `e` that read as zeros, by its record (ExtentRecord.zeroBlocks), or
   * undefined when the record says none (or is not known yet).
   */
  zeroBlocks(e: number): Uint8Array | undefined {
    const bits = this.records.get(e)?.zeroBlocks;
    return bits === undefined ? undefined : Buffer.from(bits, 'base64');
  }

  /** The last generation this writer handed out (every record it published is at or below it). */
  get generationMark(): number {
    return this.options.epoch * 2 ** 32 + this.sequence;
  }

  private nextGeneration(): number {
    this.sequence += 1;
    assert(this.sequence < 2 ** 32, 'generation counter exhausted');
    return this.options.epoch * 2 ** 32 + this.sequence;
  }

  /** Encodes `data` (the extent's bytes) and stores its k+m shards; returns the record to publish. */
  private async storeGeneration(e: number, data: Uint8Array, journalLsn: number | undefined): Promise<ExtentRecord> {
    const { k, m } = this.volume.profile;
    assert(data.length === extentLength(this.volume, e), `extent ${e} image has ${data.length} bytes`);
    const targets = this.options.placer.place(e);
    assert(targets.length === k + m, `placement gave ${targets.length} targets for ${k + m} shards`);
    const generation = this.nextGeneration();
    const keys = targets.map((_, i) => shardKey(this.volume.id, e, generation, i));
    const seed = this.nextSeed();
    // The shards go to the stores as views of codec memory (a copy of each cost 6 % of the
    // frontend's CPU on a sequential write: every store frames its own copy anyway); the buffer
    // returns to the pool once every put has settled (a store keeps no view after that).
    // Which 4 KiB blocks read as zeros (a trim inside the extent): block status reports them.
    const zeroBlocks = zeroBlocksOf(data);
    const buf: CodecBuffer = this.options.pool.allocate(this.volume.profile, this.shardBytes);
    let results: PromiseSettledResult<void>[];
    try {
      const region = buf.data();
      region.set(data);
      region.fill(0, data.length); // the padding of the last data shard: the buffer may be reused
      // Enciphered in codec memory, after the zero blocks were found: the code sees ciphertext only.
      await this.options.cipher?.encrypt(region.subarray(0, data.length), { extent: e, generation, offset: 0 });
      await this.options.pool.encode(buf);
      results = await Promise.allSettled(
        // async: a target store() cannot name throws into its own result, not past the others.
        keys.map(async (key, i) =>
          this.options.targets.store(targets[i]!).put(key, buf.shard(i), { seed: shardSeed(seed, i, this.shardBytes) }),
        ),
      );
    } finally {
      this.options.pool.release(buf);
    }
    results.forEach((r, i) => {
      if (r.status === 'rejected') this.options.placer.refused?.(targets[i]!, r.reason);
    });
    const stored = results.filter((r) => r.status === 'fulfilled').length;
    this.stats.shardsWritten += stored;
    this.stats.shardWriteFailures += results.length - stored;
    if (stored < this.durableShardsMin) {
      const why = results
        .map((r, i) => (r.status === 'rejected' ? `shard ${i} on ${targets[i]}: ${errorMessage(r.reason)}` : ''))
        .filter((s) => s !== '');
      // The shards that did land are garbage now: the old generation stays published.
      results.forEach((r, i) => {
        if (r.status === 'fulfilled') this.enqueueDelete(targets[i]!, keys[i]!, 0);
      });
      throw new UnavailableError(
        `Cannot store extent ${e} of volume "${this.volume.name}": ${stored} of ${k + m} shards stored, ${this.durableShardsMin} required (${why.join('; ')})`,
      );
    }
    return {
      generation,
      shardBytes: this.shardBytes,
      shards: targets.map((target, i) => ({ target, key: keys[i]! })),
      ...(journalLsn === undefined ? {} : { journalLsn }),
      seed,
      ...(zeroBlocks === undefined ? {} : { zeroBlocks }),
    };
  }

  private scheduleDelete(rec: ExtentRecord, delayMs: number): void {
    for (const s of rec.shards) this.enqueueDelete(s.target, s.key, delayMs);
  }

  private enqueueDelete(target: string, key: string, delayMs: number): void {
    if (this.pendingDeletes.length >= pendingDeletesMax) return; // left for gc
    const clock = this.options.clock ?? systemClock;
    this.pendingDeletes.push({ dueMs: clock.now() + delayMs, target, key });
  }

  private async deleteDue(nowMs: number): Promise<void> {
    const due = this.pendingDeletes.filter((d) => d.dueMs <= nowMs);
    if (due.length === 0) return;
    this.pendingDeletes = this.pendingDeletes.filter((d) => d.dueMs > nowMs);
    await Promise.allSettled(due.map((d) => this.options.targets.store(d.target).delete(d.key)));
  }

  /** Number of superseded shards still waiting for deletion. */
  get pendingDeleteCount(): number {
    return this.pendingDeletes.length;
  }

  /** Stops the deleter after deleting what is due now plus everything whose grace has passed. */
  async close(options: { deletePendingNow?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopDeleter();
    await this.deleteDue(
      options.deletePendingNow ? Number.POSITIVE_INFINITY : (this.options.clock ?? systemClock).now(),
    );
  }
}

/**
 * The byte positions `pieces` cover within their shards, merged: sorted, disjoint, touching
 * windows joined. Pieces of one range are consecutive in the extent, so at most two windows come
 * out, and a window holds each piece it overlaps whole.
 */
function positionWindows(pieces: readonly ShardPiece[]): { offset: number; length: number }[] {
  const sorted = [...pieces].sort((a, b) => a.offset - b.offset);
  const windows: { offset: number; length: number }[] = [];
  for (const p of sorted) {
    const last = windows.at(-1);
    if (last !== undefined && p.offset <= last.offset + last.length)
      last.length = Math.max(last.length, p.offset + p.length - last.offset);
    else windows.push({ offset: p.offset, length: p.length });
  }
  return windows;
}
