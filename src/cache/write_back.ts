/**
 * The write-back cache of one volume: a BlockDevice shared by every connection to the volume, so
 * advertising NBD multi-conn is honest (a FLUSH on any connection covers writes on all).
 *
 * An entry per extent holds only what it must: the bytes clients wrote since the last flush
 * (`dirty`, sparse), the bytes a flush made durable in the journal but not yet folded into an
 * erasure-coded generation (`journaled`, sparse chunks tagged with their journal LSN), and, when
 * the extent was read whole, its published bytes (`base`, a read cache). A 4 KiB write to a 4 MiB
 * extent holds 4 KiB.
 *
 * With a journal (CacheJournal), FLUSH appends the dirty ranges of partly written extents to it
 * and is answered when every replica has them; extents written whole (and whole-extent trims) go
 * straight to new erasure-coded generations. In the background, and under memory pressure, the
 * fold turns journaled extents into new generations (read the published bytes, lay the journaled
 * chunks over them, persist with the highest LSN folded) and tells the journal what it may trim.
 * Without a journal, FLUSH publishes every dirty extent as a new generation (read-modify-write
 * when an extent is only partly dirty).
 *
 * What it keeps true:
 * - FLUSH persists every write acknowledged before it was called; FUA persists that write (its
 *   extents) before the reply. Flushes run one at a time, so a flush also waits for one already in
 *   flight that carries earlier writes.
 * - A failed flush loses nothing: the bytes it could not make durable are dirty again, under any
 *   written since (newer bytes win).
 * - One publish of an extent at a time (a fold and a direct persist never race on one extent), so
 *   generations are published in the order their bytes were written.
 * - A published generation carries the highest journal LSN whose bytes it includes; replay skips
 *   older records for that extent.
 * - Memory is bounded twice: dirty bytes (not yet durable) by dirtyBytesMax, and dirty plus
 *   journaled bytes (durable in the journal, held for reads and folds) by cacheBytesMax. A writer
 *   that would exceed either waits for a flush (dirty to journaled) or a fold (journaled to a
 *   generation). Journaled bytes may so use the whole cache, not only the dirty budget: the more
 *   they are, the more writes each fold of an extent carries. Clean bases are a read cache,
 *   evicted least-recently-used beyond cacheBytesMax.
 * - Once a commit or an append is fenced (another writer took the volume), every later write and
 *   flush fails.
 *
 * What it leaves out: sub-extent holes (block status is per extent), and persistence of dirty
 * data across a crash of this process (that is what FLUSH is for).
 */
import {
  CairnError,
  FencedError,
  InvalidArgumentError,
  assert,
  errorMessage,
  isZeroBlock,
  sleepOn,
  systemClock,
  type BlockDevice,
  type BlockDeviceCapabilities,
  type BlockStatusRun,
  type Clock,
  type WaitingBudget,
  type WriteOptions,
  zeroBlockBytes,
} from '../core/index.js';
import type { CleanCacheHolder, SharedCacheBudget } from './shared_budget.js';
import {
  cacheBytesMaxDefault,
  dirtyBytesMaxDefault,
  flushAgeMsDefault,
  flushCheckMsDefault,
  flushRetryMsDefault,
  foldAgeMsDefault,
  foldExtentsMax,
  foldPressureFraction,
  readAheadExtentsMax,
  readRetriesMax,
  readWholeExtentMinBytes,
} from './limits.js';
import {
  ByteRanges,
  SparseBytes,
  extentCount,
  extentLength,
  splitByExtent,
  type ExtentGeometry,
  type ExtentPiece,
} from '../extent/index.js';
import { PersistError, type ExtentImage } from '../volume/index.js';

/** One range of a journal record: bytes at a volume offset. */
export interface JournalWrite {
  /** Byte offset in the volume. */
  readonly offset: number;
  readonly data: Uint8Array;
}

/**
 * The volume's write-ahead journal, as the cache uses it. The frontend implements it over the
 * replicated journal on storage nodes; tests and the simulator over memory.
 */
export interface CacheJournal {
  /**
   * Appends one record with `writes` and resolves with its LSN when it is durable on every
   * replica. LSNs increase by one per record, in call order; `nextLsn` is the one the next call
   * gets. Rejects with FencedError when a newer writer fenced this one (nothing of it counts), or
   * a retryable CairnError when a replica failed (the journal may replace it; the caller retries).
   */
  append(writes: readonly JournalWrite[]): Promise<number>;
  /** The LSN the next append will get. */
  readonly nextLsn: number;
  /**
   * Every record up to `lsn` is folded into published generations: the journal may trim them.
   * Never throws; trimming failures are the journal's to log and retry.
   */
  folded(lsn: number): void;
}

/** What the cache needs from the volume engine. */
export interface CacheBackend {
  readonly geometry: ExtentGeometry;
  /**
   * True for an extent known to have no published data. May say false for an extent whose
   * record was not looked up yet (a map read on demand): prepare() makes the answer exact.
   */
  isHole(e: number): boolean;
  /**
   * Looks up the published records of `extents` so isHole() and publishedLsn() answer exactly;
   * undefined (no promise, no wait) when every one is known already: it runs on every write.
   */
  prepare?(extents: Iterable<number>): Promise<void> | undefined;
  /** A token that changes whenever extent e's published generation changes. */
  versionOf(e: number): number;
  readRange(e: number, offset: number, length: number): Promise<Uint8Array>;
  readWhole(e: number): Promise<Uint8Array>;
  persist(images: readonly ExtentImage[]): Promise<void>;
  /** The volume's journal; without one, every flush publishes generations directly. */
  readonly journal?: CacheJournal;
  /** The journal LSN the published generation of extent e holds (its record's journalLsn), if any. */
  publishedLsn?(e: number): number | undefined;
  /** The 4 KiB blocks of the published generation of extent e that read as zeros (a bitmap), if any. */
  zeroBlocks?(e: number): Uint8Array | undefined;
}

export interface WriteBackCacheOptions {
  readonly readOnly?: boolean;
  readonly dirtyBytesMax?: number;
  readonly cacheBytesMax?: number;
  /** Dirty data older than this is flushed by the background flusher. */
  readonly flushAgeMs?: number;
  /** How long a flush keeps retrying extents that failed for retryable reasons. */
  readonly flushRetryMs?: number;
  /** How often the background flusher looks. 0 turns it off (tests drive flush() by hand). */
  readonly flushCheckMs?: number;
  /** Journaled data older than this is folded in the background. */
  readonly foldAgeMs?: number;
  /**
   * Bytes of extent images per second that folds by age may re-encode (0 or absent: no limit),
   * so background folding leaves the disks and cores to the workload. Folds under memory
   * pressure are not limited: writers wait for them.
   */
  readonly foldBytesPerSecond?: number;
  /**
   * Extent image bytes being built, encoded and stored at once, shared by every volume of the
   * frontend (publishBytesMax): a flush or fold takes its images' bytes before it builds them
   * and waits while others hold the budget. Each 4 MiB image costs about 13 MiB while it is
   * published (the image, the bytes it was laid over, k+m shards, their framing), so without it
   * 60 volumes folding at once took a frontend from 184 to 971 MiB. Absent: no shared bound.
   */
  readonly publishBudget?: WaitingBudget;
  /** Told when a flush or fold has to wait for the publish budget, with the bytes it asked for. */
  readonly onPublishWait?: (bytes: number) => void;
  /**
   * The clean read cache of every volume, bounded together (cacheBudgetBytes): this cache's
   * bases count against it and may be dropped for another volume's. Absent: only cacheBytesMax.
   */
  readonly sharedCache?: SharedCacheBudget;
  readonly clock?: Clock;
  readonly log?: (line: string) => void;
}

/** Journaled bytes of one extent, not yet in a published generation. */
interface JournaledChunk {
  readonly start: number;
  readonly data: Uint8Array;
  readonly lsn: number;
}

interface Entry {
  readonly extent: number;
  /** extentLength of the extent. */
  readonly length: number;
  /** The published bytes of the whole extent, when read (a read cache; any version check is the caller's). */
  base: Uint8Array | undefined;
  /** Bytes written since the last flush took them. */
  dirty: SparseBytes;
  /** Durable in the journal, not yet folded, in LSN order (later chunks win where they overlap). */
  journaled: JournaledChunk[];
  journaledBytes: number;
  /** The offsets `journaled` covers (kept with it: addJournaled, keepJournaledAfter). */
  journaledCover: ByteRanges;
  /** A whole-extent trim not yet published: the extent is to become a hole. */
  hole: boolean;
  /**
   * What a flush took from `dirty` and `hole` and has not made durable yet: still read (under
   * `dirty`), until the flush journals or publishes it, or gives it back.
   */
  inflight: { readonly dirty: SparseBytes; readonly hole: boolean } | undefined;
  dirtySinceMs: number;
  journaledSinceMs: number;
  lastUsed: number;
  /** Being published (direct persist or fold): the tail of the extent's publish chain. */
  publishing: Promise<void> | undefined;
  /** Being flushed directly: block status says data even if the map still says hole. */
  flushing: boolean;
}

export interface CacheStats {
  readHits: number;
  readMisses: number;
  flushes: number;
  flushedExtents: number;
  readModifyWrites: number;
  backPressureWaits: number;
  journalAppends: number;
  journaledBytes: number;
  folds: number;
  /** Bytes of extent images folds re-encoded. */
  foldedBytes: number;
  foldedExtents: number;
  readAheads: number;
}

/**
 * What a WriteBackCache can do, known before one exists: the frontend answers NBD_OPT_INFO with
 * it without attaching the volume.
 */
export function cacheCapabilities(readOnly: boolean): BlockDeviceCapabilities {
  const rw = !readOnly;
  return { readOnly: !rw, flush: rw, fua: rw, trim: rw, writeZeroes: rw, multiConn: true };
}

export class WriteBackCache implements BlockDevice, CleanCacheHolder {
  readonly sizeBytes: number;
  readonly stats: CacheStats = {
    readHits: 0,
    readMisses: 0,
    flushes: 0,
    flushedExtents: 0,
    readModifyWrites: 0,
    backPressureWaits: 0,
    journalAppends: 0,
    journaledBytes: 0,
    folds: 0,
    foldedBytes: 0,
    foldedExtents: 0,
    readAheads: 0,
  };
  private g: ExtentGeometry;
  private readonly entries = new Map<number, Entry>();
  private readonly loading = new Map<number, Promise<Uint8Array | undefined>>();
  private readonly clock: Clock;
  private readonly dirtyBytesMax: number;
  private readonly cacheBytesMax: number;
  private readonly flushAgeMs: number;
  private readonly foldAgeMs: number;
  private readonly foldBytesPerSecond: number;
  /** Folds by age wait until then (the fold rate limit); see foldBytesPerSecond. */
  private foldNotBeforeMs = 0;
  private readonly log: (line: string) => void;
  private readonly stopFlusher: () => void;
  private flushChain: Promise<void> = Promise.resolve();
  private foldRun: Promise<void> | undefined;
  /** LSNs of journal appends in flight: not yet in any entry, not foldable. */
  private readonly appending = new Set<number>();
  private useCounter = 0;
  private fenced: Error | undefined;
  /** Set by markStale(): every request fails with it. */
  private stale: Error | undefined;
  /** Where the last uncached read ended (extent * extentBytes + offset): one starting there is sequential. */
  private lastReadEnd = -1;
  private closed = false;

  constructor(
    private readonly backend: CacheBackend,
    private readonly options: WriteBackCacheOptions = {},
  ) {
    this.g = backend.geometry;
    this.sizeBytes = this.g.sizeBytes;
    this.clock = options.clock ?? systemClock;
    this.dirtyBytesMax = options.dirtyBytesMax ?? dirtyBytesMaxDefault;
    this.cacheBytesMax = Math.max(options.cacheBytesMax ?? cacheBytesMaxDefault, this.dirtyBytesMax);
    assert(this.dirtyBytesMax >= this.g.extentBytes, 'the cache must hold at least one dirty extent');
    this.flushAgeMs = options.flushAgeMs ?? flushAgeMsDefault;
    this.foldAgeMs = options.foldAgeMs ?? foldAgeMsDefault;
    this.foldBytesPerSecond = options.foldBytesPerSecond ?? 0;
    assert(Number.isFinite(this.foldBytesPerSecond) && this.foldBytesPerSecond >= 0, 'fold rate must be >= 0');
    this.log = options.log ?? (() => undefined);
    const checkMs = options.flushCheckMs ?? flushCheckMsDefault;
    this.stopFlusher = checkMs > 0 ? this.clock.every(checkMs, () => this.background()) : () => undefined;
  }

  /** Set while exclusive() runs: changes wait for it. */
  private gate: Promise<void> | undefined;
  /** Changes past the gate and not yet done; exclusive() waits for them. */
  private mutating = 0;
  private readonly drained: (() => void)[] = [];

  capabilities(): BlockDeviceCapabilities {
    return cacheCapabilities(this.options.readOnly === true);
  }

  /** Why this writer was fenced (another took the volume over), once it was: nothing can flush after. */
  get fencedBy(): Error | undefined {
    return this.fenced;
  }

  /** Bytes written and not yet durable: dirty, and taken by a flush still in flight. */
  get dirtyBytes(): number {
    let total = 0;
    for (const e of this.entries.values()) total += e.dirty.bytes + (e.inflight?.dirty.bytes ?? 0);
    return total;
  }

  /** Bytes held that no published generation has: dirty and journaled. Bounded by cacheBytesMax. */
  get unpublishedBytes(): number {
    return this.dirtyBytes + this.journaledBytes;
  }

  /** Bytes journaled and not yet folded into generations. */
  get journaledBytes(): number {
    let total = 0;
    for (const e of this.entries.values()) total += e.journaledBytes;
    return total;
  }

  get cachedBytes(): number {
    let total = 0;
    for (const e of this.entries.values()) total += e.dirty.bytes + e.journaledBytes + (e.base?.length ?? 0);
    return total;
  }

  private isDirty(e: Entry): boolean {
    return e.dirty.size > 0 || e.hole;
  }

  private isClean(e: Entry): boolean {
    return (
      !this.isDirty(e) &&
      e.journaled.length === 0 &&
      e.inflight === undefined &&
      e.publishing === undefined &&
      !e.flushing
    );
  }

  private checkRange(offset: number, length: number): void {
    assert(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0, 'bad range');
    assert(offset + length <= this.sizeBytes, `range [${offset}, ${offset + length}) past the end ${this.sizeBytes}`);
  }

  private checkWritable(): void {
    if (this.stale !== undefined) throw this.stale;
    if (this.options.readOnly) throw new InvalidArgumentError('The volume is attached read-only');
    if (this.fenced !== undefined) throw this.fenced;
    assert(!this.closed, 'write after close()');
  }

  private touch(e: Entry): void {
    e.lastUsed = this.options.sharedCache?.nextUse() ?? ++this.useCounter;
  }

  /** Bytes of bases (published bytes of whole extents) held: the read cache. */
  get baseBytes(): number {
    let total = 0;
    for (const e of this.entries.values()) total += e.base?.length ?? 0;
    return total;
  }

  private droppableBases(): Entry[] {
    return [...this.entries.values()].filter((e) => e.base !== undefined && e.publishing === undefined && !e.flushing);
  }

  oldestBaseUse(): number | undefined {
    let oldest: number | undefined;
    for (const e of this.droppableBases()) if (oldest === undefined || e.lastUsed < oldest) oldest = e.lastUsed;
    return oldest;
  }

  dropOldestBase(): number {
    const [oldest] = this.droppableBases().sort((a, b) => a.lastUsed - b.lastUsed);
    if (oldest === undefined) return 0;
    return this.dropBase(oldest);
  }

  /** Forgets an entry's base (a clean entry altogether); returns the bytes freed. */
  private dropBase(e: Entry): number {
    const bytes = e.base?.length ?? 0;
    e.base = undefined;
    if (this.isClean(e)) this.entries.delete(e.extent);
    return bytes;
  }

  /** The entry of extent e, created empty if absent. */
  private entryFor(extent: number): Entry {
    let entry = this.entries.get(extent);
    if (entry === undefined) {
      entry = {
        extent,
        length: extentLength(this.g, extent),
        base: undefined,
        dirty: new SparseBytes(),
        journaled: [],
        journaledBytes: 0,
        journaledCover: new ByteRanges(),
        hole: false,
        inflight: undefined,
        dirtySinceMs: 0,
        journaledSinceMs: 0,
        lastUsed: 0,
        publishing: undefined,
        flushing: false,
      };
      this.entries.set(extent, entry);
    }
    this.touch(entry);
    return entry;
  }

  /** Adds a chunk durable in the journal to the entry (its bytes and the offsets it covers). */
  private addJournaled(e: Entry, chunk: JournaledChunk): void {
    e.journaled.push(chunk);
    e.journaledBytes += chunk.data.length;
    e.journaledCover.add(chunk.start, chunk.start + chunk.data.length);
  }

  /** Drops the entry's journaled chunks up to `lsn` (a published generation holds them). */
  private keepJournaledAfter(e: Entry, lsn: number): void {
    e.journaled = e.journaled.filter((j) => j.lsn > lsn);
    e.journaledBytes = 0;
    e.journaledCover = new ByteRanges();
    for (const j of e.journaled) {
      e.journaledBytes += j.data.length;
      e.journaledCover.add(j.start, j.start + j.data.length);
    }
  }

  /** Takes `data` as the entry's bytes at `start`. Over a pending hole, the rest stays zeros. */
  private markDirty(entry: Entry, start: number, data: Uint8Array): void {
    if (!this.isDirty(entry)) entry.dirtySinceMs = this.clock.now();
    entry.dirty.write(start, data);
  }

  /**
   * Waits (flushing, then folding) until `bytes` more dirty bytes fit under dirtyBytesMax and as
   * many more unpublished bytes (dirty and journaled) under cacheBytesMax.
   */
  private async makeRoom(bytes: number): Promise<void> {
    for (let round = 0; ; round++) {
      // A request larger than a budget goes through once nothing else holds that budget.
      // Each getter walks every entry, and this runs on every write: once each.
      const dirty = this.dirtyBytes;
      const unpublished = dirty + this.journaledBytes;
      const dirtyFits = dirty === 0 || dirty + bytes <= this.dirtyBytesMax;
      if (dirtyFits && (unpublished === 0 || unpublished + bytes <= this.cacheBytesMax)) return;
      this.stats.backPressureWaits += 1;
      // Flush first: it frees whole-extent writes, and their journaled chunks too (the new
      // generation supersedes them); partly written extents move to the journal. Then, when
      // journaled bytes still hold most of the budget, fold the extents that hold the most.
      // (A flush in flight holds bytes too: flush() waits for it.)
      if (this.hasDirty() || this.dirtyBytes > 0) {
        const whole = this.wholeDirtyExtents();
        if (whole !== undefined) await this.flush(whole);
        if (this.dirtyBytes + bytes > this.dirtyBytesMax || this.unpublishedBytes + bytes > this.cacheBytesMax)
          await this.flush();
      }
      if (
        this.backend.journal !== undefined &&
        this.unpublishedBytes + bytes > this.cacheBytesMax &&
        this.journaledBytes >= this.unpublishedBytes / 2
      ) {
        const before = this.journaledBytes;
        await this.fold('fullest');
        if (this.journaledBytes >= before) {
          // Nothing foldable now: wait for the publishes in flight (they supersede chunks).
          const busy = [...this.entries.values()].filter((e) => e.publishing !== undefined).map((e) => e.publishing!);
          if (busy.length > 0) await Promise.all(busy);
        }
      }
      assert(round < 1000, 'back-pressure never made room');
    }
  }

  /**
   * The one path every change takes: check the range and that writing is allowed, wait for room
   * under dirtyBytesMax (the check again after the wait: a flush may have been fenced meanwhile),
   * apply `change` to each extent's entry, and for FUA flush the extents touched.
   */
  private async mutate(
    offset: number,
    length: number,
    options: WriteOptions,
    change: (entry: Entry, piece: ExtentPiece) => void,
  ): Promise<void> {
    this.checkRange(offset, length);
    this.checkWritable();
    while (this.gate !== undefined) await this.gate;
    this.mutating += 1;
    try {
      await this.mutateNow(offset, length, options, change);
    } finally {
      this.mutating -= 1;
      if (this.mutating === 0) for (const wake of this.drained.splice(0)) wake();
    }
  }

  /**
   * The volume was resized (under exclusive(), after a flush and a fold): the cache serves
   * `geometry` from now on. Entries of the last extent before and after, and of every extent past
   * the new end, are dropped (their lengths change or they are gone); they must be clean.
   */
  resize(geometry: ExtentGeometry): void {
    assert(this.dirtyBytes === 0 && this.journaledBytes === 0, 'resize of a cache holding unpublished writes');
    const keep = Math.min(extentCount(this.g), extentCount(geometry)) - 1;
    for (const [e, entry] of [...this.entries]) {
      if (e < keep) continue;
      assert(this.isClean(entry) && entry.publishing === undefined && !entry.flushing, `extent ${e} is busy`);
      this.entries.delete(e);
    }
    this.g = geometry;
    (this as { sizeBytes: number }).sizeBytes = geometry.sizeBytes;
  }

  /**
   * Runs `fn` with no change in flight: changes already taken finish first, and new ones wait
   * until `fn` settles (reads, flushes and folds go on). A snapshot runs its flush and fold this
   * way, so what it saves is a cut no later write crosses: every write acknowledged before it and
   * none issued after it began.
   */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    while (this.gate !== undefined) await this.gate;
    let open!: () => void;
    this.gate = new Promise<void>((resolve) => (open = resolve));
    try {
      while (this.mutating > 0) await new Promise<void>((resolve) => this.drained.push(resolve));
      return await fn();
    } finally {
      this.gate = undefined;
      open();
    }
  }

  private async mutateNow(
    offset: number,
    length: number,
    options: WriteOptions,
    change: (entry: Entry, piece: ExtentPiece) => void,
  ): Promise<void> {
    const pieces = splitByExtent(this.g, offset, length);
    // Best effort: a write is taken even when the records cannot be looked up now (their pages'
    // targets down); isHole() then says false, which costs at most a needless hole publish.
    const lookup = this.backend.prepare?.(pieces.map((p) => p.extent));
    if (lookup !== undefined) await lookup.catch(() => undefined);
    await this.makeRoom(length);
    this.checkWritable();
    for (const p of pieces) change(this.entryFor(p.extent), p);
    this.evictClean();
    if (options.fua) await this.flush(new Set(pieces.map((p) => p.extent)));
  }

  write(offset: number, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    return this.mutate(offset, data.length, options, (entry, p) => {
      // A copy, since the caller may reuse its buffer once the promise resolves; unless the caller
      // gave it up and it is most of its backing memory (a small view would pin a large buffer).
      const piece = data.subarray(p.bufferOffset, p.bufferOffset + p.length);
      const keep = options.adopt === true && data.byteLength * 2 >= data.buffer.byteLength;
      this.markDirty(entry, p.offset, keep ? piece : piece.slice());
    });
  }

  async writeZeroes(offset: number, length: number, options: WriteOptions & { noHole?: boolean } = {}): Promise<void> {
    if (!options.noHole) return this.trim(offset, length, options);
    return this.mutate(offset, length, options, (entry, p) => {
      this.markDirty(entry, p.offset, new Uint8Array(p.length));
    });
  }

  /** Whole extents become holes; partial ones are written with zeros. */
  trim(offset: number, length: number, options: WriteOptions = {}): Promise<void> {
    return this.mutate(offset, length, options, (entry, p) => {
      if (p.length === entry.length) {
        entry.dirty = new SparseBytes();
        entry.base = undefined;
        // A hole already published (with nothing journaled over it) needs nothing; otherwise the
        // flush publishes the hole. While a publish of this extent is in flight, isHole()
        // describes the generation before it, and that publish may be about to write data: publish
        // the hole after it, to be sure.
        entry.hole =
          entry.flushing ||
          entry.publishing !== undefined ||
          entry.journaled.length > 0 ||
          !this.backend.isHole(p.extent);
        if (entry.hole) entry.dirtySinceMs = this.clock.now();
      } else {
        this.markDirty(entry, p.offset, new Uint8Array(p.length));
      }
    });
  }

  /**
   * Makes every later request fail with `err`: the frontend calls it when what this cache serves
   * can no longer be trusted (a read-only view whose volume a writer attached). Idempotent.
   */
  markStale(err: Error): void {
    this.stale ??= err;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (this.stale !== undefined) throw this.stale;
    this.checkRange(offset, length);
    const clean = this.cleanCachedView(offset, length);
    if (clean !== undefined) return clean;
    const out = new Uint8Array(length);
    await Promise.all(
      splitByExtent(this.g, offset, length).map((p) =>
        this.readPiece(p.extent, p.offset, p.length, out, p.bufferOffset),
      ),
    );
    return out;
  }

  /**
   * A read inside one extent whose cached published bytes nothing unpublished overlaps: a view of
   * them, without a copy (bases are never changed in place, only replaced). Else undefined.
   */
  private cleanCachedView(offset: number, length: number): Uint8Array | undefined {
    const extent = Math.floor(offset / this.g.extentBytes);
    const start = offset - extent * this.g.extentBytes;
    const end = start + length;
    const entry = this.entries.get(extent);
    if (entry?.base === undefined || end > entry.base.length || length === 0 || this.zeroBased(entry)) return undefined;
    if (entry.dirty.intersects(start, end) || entry.inflight?.dirty.intersects(start, end) === true) return undefined;
    for (const c of entry.journaled) if (c.start < end && c.start + c.data.length > start) return undefined;
    this.stats.readHits += 1;
    this.touch(entry);
    return entry.base.subarray(start, end);
  }

  /** True when the published bytes do not show through: a pending hole, in flight or not. */
  private zeroBased(entry: Entry): boolean {
    return entry.hole || entry.inflight?.hole === true;
  }

  /**
   * Lays an entry's unpublished bytes of [offset, end) over `out` (at `at`), oldest first:
   * journaled chunks (unless a hole supersedes them), the flush in flight, then dirty.
   */
  private overlay(entry: Entry, offset: number, end: number, out: Uint8Array, at: number): void {
    if (!entry.hole) {
      if (entry.inflight?.hole !== true) {
        for (const c of entry.journaled) {
          const from = Math.max(offset, c.start);
          const to = Math.min(end, c.start + c.data.length);
          if (from < to) out.set(c.data.subarray(from - c.start, to - c.start), at + from - offset);
        }
      }
      entry.inflight?.dirty.copyInto(offset, end, out, at);
    }
    entry.dirty.copyInto(offset, end, out, at);
  }

  /** True when the entry's unpublished bytes alone decide [offset, end) (or it is a pending hole). */
  private unpublishedCovers(entry: Entry, offset: number, end: number): boolean {
    if (this.zeroBased(entry)) return true;
    if (entry.dirty.covers(offset, end)) return true;
    if (entry.journaled.length === 0 && entry.inflight === undefined) return false;
    return this.layersCover(entry, [entry.inflight?.dirty, entry.dirty], offset, end);
  }

  /**
   * True when the entry's journaled chunks, with `layers` (dirty sets) laid over them, hold every
   * byte of [start, end). Returns at once when they hold too few bytes (it runs on read misses).
   */
  private layersCover(e: Entry, layers: readonly (SparseBytes | undefined)[], start: number, end: number): boolean {
    let held = e.journaledBytes;
    for (const l of layers) held += l?.bytes ?? 0;
    if (held < end - start) return false;
    if (e.journaledCover.covers(start, end)) return true;
    const all = e.journaledCover.clone();
    for (const l of layers) for (const c of l?.list() ?? []) all.add(c.start, c.start + c.data.length);
    return all.covers(start, end);
  }

  private async readPiece(extent: number, offset: number, length: number, out: Uint8Array, at: number): Promise<void> {
    const end = offset + length;
    for (let attempt = 0; attempt < readRetriesMax; attempt++) {
      const entry = this.entries.get(extent);
      if (entry !== undefined) {
        if (this.zeroBased(entry)) {
          // A pending whole-extent trim, with any writes since laid over zeros.
          out.fill(0, at, at + length);
          this.overlay(entry, offset, end, out, at);
          this.stats.readHits += 1;
          return;
        }
        if (entry.base !== undefined || this.unpublishedCovers(entry, offset, end)) {
          this.stats.readHits += 1;
          this.touch(entry);
          if (entry.base !== undefined) out.set(entry.base.subarray(offset, end), at);
          else out.fill(0, at, at + length);
          this.overlay(entry, offset, end, out, at);
          return;
        }
      }
      if (entry === undefined && this.backend.isHole(extent)) {
        out.fill(0, at, at + length);
        return;
      }
      this.stats.readMisses += 1;
      const sequential = extent * this.g.extentBytes + offset === this.lastReadEnd;
      this.lastReadEnd = extent * this.g.extentBytes + end;
      const version = this.backend.versionOf(extent);
      if (sequential) this.readAhead(extent);
      if (length >= readWholeExtentMinBytes || sequential) {
        // Large or sequential: read the whole extent once and keep it, so the next reads (and a
        // later fold's read of the published bytes) need no store round trip.
        const whole = await this.load(extent);
        if (whole === undefined || this.backend.versionOf(extent) !== version) continue;
        out.set(whole.subarray(offset, end), at);
      } else {
        // A small random read: fetch just its range. Loading 4 MiB for 4 KiB cost 1000x the
        // store traffic (measured: 52 -> 1968 IOPS on 4k random reads through to the store).
        const base = await this.backend.readRange(extent, offset, length);
        if (this.backend.versionOf(extent) !== version) continue;
        out.set(base, at);
      }
      // Lay over whatever was written or journaled meanwhile (or before, for a partly dirty extent).
      const now = this.entries.get(extent);
      if (now !== undefined) {
        if (this.zeroBased(now)) continue;
        this.overlay(now, offset, end, out, at);
      }
      return;
    }
    throw new Error(`Cannot read extent ${extent}: it kept changing under the read`);
  }

  /**
   * A sequential reader will want the next extents: start loading them now (in the background,
   * coalesced with any load already running), as many as the cache can hold beside the current
   * one, at most readAheadExtentsMax. Holes and extents already cached are skipped.
   */
  private readAhead(extent: number): void {
    const count = extentCount(this.g);
    const room = Math.floor(this.cacheBytesMax / this.g.extentBytes) - 1;
    const ahead = Math.min(readAheadExtentsMax, room);
    for (let e = extent + 1; e <= extent + ahead && e < count; e++) {
      const entry = this.entries.get(e);
      if (entry?.base !== undefined || this.loading.has(e) || (entry === undefined && this.backend.isHole(e))) continue;
      this.stats.readAheads += 1;
      this.load(e).catch((err: unknown) => this.log(`read-ahead of extent ${e} failed: ${errorMessage(err)}`));
    }
  }

  /**
   * Loads the published bytes of an extent as its entry's base (coalescing concurrent loads).
   * Resolves to the bytes read, or undefined when a publish replaced the generation meanwhile.
   */
  private load(extent: number): Promise<Uint8Array | undefined> {
    let pending = this.loading.get(extent);
    if (pending === undefined) {
      pending = (async () => {
        const version = this.backend.versionOf(extent);
        const whole = await this.backend.readWhole(extent);
        if (this.backend.versionOf(extent) !== version) return undefined; // replaced meanwhile: caller retries
        const entry = this.entryFor(extent);
        if (!entry.hole) entry.base = whole;
        this.evictClean();
        return whole;
      })().finally(() => this.loading.delete(extent));
      this.loading.set(extent, pending);
    }
    return pending;
  }

  /** Drops bases (least recently used first) while the cache holds more than cacheBytesMax; forgets clean entries. */
  private evictClean(): void {
    let total = this.cachedBytes;
    if (total > this.cacheBytesMax) {
      const withBase = this.droppableBases().sort((a, b) => a.lastUsed - b.lastUsed);
      for (const e of withBase) {
        if (total <= this.cacheBytesMax) break;
        total -= this.dropBase(e);
      }
    }
    // Then the frontend's budget for every volume's clean cache. A cache joins it once it holds
    // a base (this is called after every base is set), and leaves it when closed.
    const shared = this.options.sharedCache;
    if (shared !== undefined && !this.closed) {
      shared.register(this);
      shared.trim();
    }
  }

  /**
   * Hole/data runs per extent. An extent being published is data even before its generation is:
   * clients such as nbdcopy skip holes, and would read zeros where data is in flight.
   */
  async blockStatus(offset: number, length: number): Promise<BlockStatusRun[]> {
    if (this.stale !== undefined) throw this.stale;
    this.checkRange(offset, length);
    const runs: BlockStatusRun[] = [];
    const pieces = splitByExtent(this.g, offset, length);
    // Best effort: an extent whose record cannot be looked up now is reported as data.
    const lookup = this.backend.prepare?.(pieces.map((p) => p.extent));
    if (lookup !== undefined) await lookup.catch(() => undefined);
    const add = (at: number, len: number, hole: boolean): void => {
      const last = runs.at(-1);
      if (last !== undefined && last.hole === hole) runs[runs.length - 1] = { ...last, length: last.length + len };
      else runs.push({ offset: at, length: len, hole, zero: hole });
    };
    for (const p of pieces) {
      const entry = this.entries.get(p.extent);
      const published =
        entry === undefined ||
        (!entry.hole &&
          entry.dirty.size === 0 &&
          entry.journaled.length === 0 &&
          entry.inflight === undefined &&
          !entry.flushing &&
          entry.publishing === undefined);
      const hole = entry?.hole === true ? entry.dirty.size === 0 : published && this.backend.isHole(p.extent);
      const at = offset + p.bufferOffset;
      // A published generation with some zero blocks (a trim inside it): those blocks are holes.
      const zeros = !hole && published ? this.backend.zeroBlocks?.(p.extent) : undefined;
      if (zeros === undefined) {
        add(at, p.length, hole);
        continue;
      }
      for (let o = p.offset; o < p.offset + p.length;) {
        const block = Math.floor(o / zeroBlockBytes);
        const end = Math.min(p.offset + p.length, (block + 1) * zeroBlockBytes);
        add(at + (o - p.offset), end - o, isZeroBlock(zeros, block));
        o = end;
      }
    }
    if (runs.length === 0) runs.push({ offset, length: 0, hole: false, zero: false });
    return runs;
  }

  /**
   * Makes every dirty extent (or those in `only`) durable: journaled, or published as a new
   * generation. Resolves when every write acknowledged before the call, to those extents, is
   * durable. Rejects, leaving the data dirty, on failure.
   */
  flush(only?: ReadonlySet<number>): Promise<void> {
    if (this.options.readOnly) return Promise.resolve();
    const run = this.flushChain.then(() => this.flushNow(only));
    this.flushChain = run.catch(() => undefined);
    return run;
  }

  /**
   * Runs `work` as the next publish of every entry in `entries`, after any publish of them in
   * flight: one persist (one commit) for all of them, and never two publishes of one extent at once.
   */
  private publishing<T>(entries: readonly Entry[], work: () => Promise<T>, imageBytes = 0): Promise<T> {
    const before = Promise.all(entries.map((e) => e.publishing ?? Promise.resolve()));
    const run = before.then(() => this.withPublishBudget(imageBytes, work));
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    for (const e of entries) e.publishing = tail;
    void tail.then(() => {
      for (const e of entries) if (e.publishing === tail) e.publishing = undefined;
    });
    return run;
  }

  /**
   * Runs `work`, which builds and publishes `imageBytes` of extent images, holding that much of
   * the frontend's shared publish budget (waiting for it first, in turn with other volumes).
   */
  private async withPublishBudget<T>(imageBytes: number, work: () => Promise<T>): Promise<T> {
    const budget = this.options.publishBudget;
    if (budget === undefined || imageBytes === 0) return work();
    const release = await budget.take(imageBytes, () => this.options.onPublishWait?.(imageBytes));
    try {
      return await work();
    } finally {
      release();
    }
  }

  private async flushNow(only?: ReadonlySet<number>): Promise<void> {
    if (this.fenced !== undefined) throw this.fenced;
    const candidates = [...this.entries.values()].filter(
      (e) => this.isDirty(e) && (only === undefined || only.has(e.extent)),
    );
    if (candidates.length === 0) return;
    this.stats.flushes += 1;
    const journal = this.backend.journal;
    // Whole-extent writes and trims skip the journal: they are already the extent's new image.
    const direct = candidates.filter((c) => journal === undefined || c.hole || this.wholeImage(c));
    const viaJournal = candidates.filter((c) => !direct.includes(c));
    // The snapshot: from here on, later writes go to fresh dirty sets and into a later flush.
    const snaps = new Map(
      candidates.map((c) => {
        const snap = { dirty: c.dirty.detach(), hole: c.hole, since: c.dirtySinceMs };
        c.inflight = snap;
        c.hole = false;
        c.dirtySinceMs = 0;
        return [c, snap] as const;
      }),
    );
    const restore = (c: Entry): void => {
      const s = snaps.get(c)!;
      c.inflight = undefined;
      // A whole-extent trim while the flush ran supersedes what it took: keep only what came after.
      if (!c.hole) {
        const newer = c.dirty.detach();
        s.dirty.writeAll(newer);
        c.dirty = s.dirty;
        c.hole = s.hole;
      }
      c.dirtySinceMs = c.dirtySinceMs === 0 ? s.since || this.clock.now() : Math.min(c.dirtySinceMs, s.since);
    };
    const results = await Promise.allSettled([
      viaJournal.length > 0 ? this.journalFlush(viaJournal, snaps, restore) : Promise.resolve(),
      direct.length > 0 ? this.directFlush(direct, snaps, restore) : Promise.resolve(),
    ]);
    this.evictClean();
    for (const r of results) {
      if (r.status === 'rejected') {
        const err: unknown = r.reason;
        const cause = err instanceof PersistError ? [...err.failed.values()][0] : err;
        if (cause instanceof FencedError || err instanceof FencedError) {
          this.fenced = cause instanceof FencedError ? cause : (err as FencedError);
          this.log(`volume fenced: ${errorMessage(this.fenced)}; writes will fail from now on`);
        }
      }
    }
    const failed = results.find((r) => r.status === 'rejected');
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
  }

  /** Appends the snapshot's dirty ranges of `entries` as one journal record. */
  private async journalFlush(
    entries: readonly Entry[],
    snaps: ReadonlyMap<Entry, { dirty: SparseBytes }>,
    restore: (c: Entry) => void,
  ): Promise<void> {
    const journal = this.backend.journal!;
    const writes: JournalWrite[] = [];
    for (const c of entries) {
      for (const chunk of snaps.get(c)!.dirty.list()) {
        writes.push({ offset: c.extent * this.g.extentBytes + chunk.start, data: chunk.data });
      }
    }
    // Every LSN this append may get (a retry may get a later one) is at least this one.
    const lowest = journal.nextLsn;
    this.appending.add(lowest);
    let lsn: number;
    try {
      lsn = await this.withRetry('journal append', () => journal.append(writes));
      assert(lsn >= lowest, `journal gave LSN ${lsn}, below ${lowest}`);
    } catch (err) {
      for (const c of entries) restore(c);
      throw err;
    } finally {
      this.appending.delete(lowest);
    }
    const now = this.clock.now();
    for (const c of entries) {
      const snap = snaps.get(c)!.dirty;
      c.inflight = undefined;
      if (c.journaled.length === 0) c.journaledSinceMs = now;
      for (const chunk of snap.list()) this.addJournaled(c, { start: chunk.start, data: chunk.data, lsn });
    }
    this.stats.journalAppends += 1;
    this.stats.journaledBytes += writes.reduce((s, w) => s + w.data.length, 0);
  }

  /** Publishes `entries` as new generations: whole-extent images, holes, or (without a journal) read-modify-write. */
  private async directFlush(
    entries: readonly Entry[],
    snaps: ReadonlyMap<Entry, { dirty: SparseBytes; hole: boolean }>,
    restore: (c: Entry) => void,
  ): Promise<void> {
    // Every record up to the last appended one is superseded for these extents: their images
    // hold everything ever written to them (journaled chunks are laid under the dirty bytes).
    const journalLsn = this.backend.journal === undefined ? undefined : this.backend.journal.nextLsn - 1;
    let done = new Set<number>();
    // Whole-extent trims publish no image; everything else builds one of the extent's length.
    const imageBytes = entries.reduce((sum, c) => {
      const snap = snaps.get(c)!;
      return snap.hole && snap.dirty.size === 0 ? sum : sum + c.length;
    }, 0);
    try {
      await this.publishing(
        entries,
        async () => {
          for (const c of entries) c.flushing = true;
          try {
            const images = await Promise.all(
              entries.map(async (c): Promise<ExtentImage> => {
                const snap = snaps.get(c)!;
                // A hole; zeros with writes over them; or the writes over the published bytes.
                let data: Uint8Array | null = null;
                if (!snap.hole || snap.dirty.size > 0) {
                  data = new Uint8Array(c.length);
                  if (!snap.hole && !snap.dirty.covers(0, c.length)) {
                    // Journaled chunks that, with the dirty bytes, cover the extent need no read.
                    if (!this.wholeImage(c, snap.dirty)) data.set(await this.publishedBytes(c));
                    for (const j of c.journaled) data.set(j.data, j.start);
                  }
                  snap.dirty.copyInto(0, c.length, data, 0);
                }
                return { extent: c.extent, data, ...(journalLsn === undefined ? {} : { journalLsn }) };
              }),
            );
            const byExtent = new Map(images.map((i) => [i.extent, i.data]));
            try {
              await this.persistWithRetry(images);
              done = new Set(entries.map((c) => c.extent));
            } catch (err) {
              if (err instanceof PersistError) done = new Set(err.committed);
              throw err;
            } finally {
              for (const c of entries) {
                if (!done.has(c.extent)) continue;
                c.base = byExtent.get(c.extent) ?? undefined;
                c.inflight = undefined;
                this.keepJournaledAfter(c, journalLsn ?? Number.POSITIVE_INFINITY);
                this.stats.flushedExtents += 1;
              }
            }
          } finally {
            for (const c of entries) c.flushing = false;
          }
        },
        imageBytes,
      );
    } catch (err) {
      for (const c of entries) if (!done.has(c.extent)) restore(c);
      throw err;
    }
  }

  /** The published bytes of the entry's extent (zeros for a hole), from its base or the store. */
  private async publishedBytes(c: Entry): Promise<Uint8Array> {
    if (c.base !== undefined) return c.base;
    this.stats.readModifyWrites += 1;
    if (this.backend.isHole(c.extent)) return new Uint8Array(c.length);
    return this.backend.readWhole(c.extent);
  }

  /**
   * Folds journaled extents into new generations, oldest first, at most foldExtentsMax per call,
   * then tells the journal what it may trim. One fold runs at a time; a call during one waits for
   * it and returns.
   */
  fold(order: 'oldest' | 'fullest' = 'oldest'): Promise<void> {
    if (this.foldRun !== undefined) return this.foldRun;
    const run = this.foldNow(order).finally(() => {
      if (this.foldRun === run) this.foldRun = undefined;
    });
    this.foldRun = run;
    return run;
  }

  private async foldNow(order: 'oldest' | 'fullest'): Promise<void> {
    const journal = this.backend.journal;
    if (journal === undefined || this.fenced !== undefined) return;
    // Not under a pending whole-extent trim: the flush publishing the hole supersedes those chunks.
    const picked = [...this.entries.values()]
      .filter((e) => e.journaled.length > 0 && e.publishing === undefined && !this.zeroBased(e))
      .sort((a, b) =>
        order === 'oldest' ? a.journaled[0]!.lsn - b.journaled[0]!.lsn : b.journaledBytes - a.journaledBytes,
      )
      .slice(0, foldExtentsMax);
    if (picked.length === 0) {
      this.reportFolded();
      return;
    }
    this.stats.folds += 1;
    let failure: unknown;
    try {
      await this.publishing(
        picked,
        async () => {
          const work = picked
            .map((c) => ({ c, chunks: c.journaled.slice() }))
            .filter((w) => w.chunks.length > 0 && !w.c.hole && w.c.inflight?.hole !== true);
          if (work.length === 0) return;
          const images = await Promise.all(
            work.map(async ({ c, chunks }): Promise<ExtentImage> => {
              const data = new Uint8Array(c.length);
              data.set(await this.publishedBytes(c));
              for (const j of chunks) data.set(j.data, j.start);
              return { extent: c.extent, data, journalLsn: chunks.at(-1)!.lsn };
            }),
          );
          for (const { c } of work) c.flushing = true;
          let done = new Set<number>();
          try {
            await this.persistWithRetry(images);
            done = new Set(work.map((w) => w.c.extent));
          } catch (err) {
            if (err instanceof PersistError) done = new Set(err.committed);
            throw err;
          } finally {
            work.forEach(({ c }, i) => {
              c.flushing = false;
              if (!done.has(c.extent)) return;
              const lsn = images[i]!.journalLsn!;
              c.base = images[i]!.data!;
              this.keepJournaledAfter(c, lsn);
              if (c.journaled.length > 0) c.journaledSinceMs = this.clock.now();
              this.stats.foldedExtents += 1;
              this.stats.foldedBytes += images[i]!.data!.length;
            });
          }
        },
        picked.reduce((sum, c) => sum + c.length, 0),
      );
    } catch (err) {
      failure = err;
      const cause = err instanceof PersistError ? [...err.failed.values()][0] : err;
      if (cause instanceof FencedError) {
        this.fenced ??= cause;
        this.log(`volume fenced during a fold: ${errorMessage(cause)}; writes will fail from now on`);
      }
    }
    this.evictClean();
    this.reportFolded();
    if (failure !== undefined) throw failure;
  }
  /** Tells the journal the highest LSN below which every record is folded. */
  private reportFolded(): void {
    const journal = this.backend.journal;
    if (journal === undefined) return;
    let lowest = journal.nextLsn;
    for (const lsn of this.appending) lowest = Math.min(lowest, lsn);
    for (const e of this.entries.values()) for (const j of e.journaled) lowest = Math.min(lowest, j.lsn);
    journal.folded(lowest - 1);
  }

  /**
   * Folds until nothing foldable is journaled (detach, shutdown, a journal replica lost). Extents
   * being published meanwhile (a direct flush supersedes their chunks) are waited for; chunks
   * under a pending whole-extent trim are left to the flush that publishes the hole.
   */
  async foldAll(): Promise<void> {
    for (let round = 0; this.journaledBytes > 0 && this.fenced === undefined; round++) {
      const before = this.journaledBytes;
      await this.fold();
      if (this.journaledBytes < before) continue;
      const busy = [...this.entries.values()]
        .filter((e) => e.journaled.length > 0 && e.publishing !== undefined)
        .map((e) => e.publishing!);
      if (busy.length === 0) return;
      await Promise.all(busy);
      assert(round < 100_000, 'foldAll made no progress');
    }
  }

  /** True when some extent has writes or a trim not yet flushed. */
  /**
   * True when the entry's dirty bytes, with its journaled chunks under them, are the whole extent:
   * it can be published as a new generation without reading the published one.
   */
  private wholeImage(e: Entry, dirty: SparseBytes = e.dirty): boolean {
    if (dirty.covers(0, e.length)) return true;
    return e.journaled.length > 0 && this.layersCover(e, [dirty], 0, e.length);
  }

  /**
   * The dirty extents a flush that only makes room should take: those whose image is whole (they
   * publish without a read and free their journaled chunks too). A partly written extent, such
   * as the one a sequential writer is filling, stays dirty until FLUSH, its age, or a cache with
   * nothing whole to flush: journaling it now would write it twice (journal, then fold).
   * Undefined when there is none (the caller flushes everything).
   */
  private wholeDirtyExtents(): Set<number> | undefined {
    const whole = new Set<number>();
    for (const e of this.entries.values()) if (this.isDirty(e) && (e.hole || this.wholeImage(e))) whole.add(e.extent);
    return whole.size > 0 ? whole : undefined;
  }

  private hasDirty(): boolean {
    for (const e of this.entries.values()) if (this.isDirty(e)) return true;
    return false;
  }

  /**
   * Retries `work` on retryable failures (a target that just died and is still in the placement,
   * an etcd leader change, a journal replica being replaced) with backoff, for up to
   * flushRetryMs. A fenced writer, or any failure that is not retryable, ends the retries at once.
   */
  private async withRetry<T>(what: string, work: () => Promise<T>): Promise<T> {
    const deadline = this.clock.now() + (this.options.flushRetryMs ?? flushRetryMsDefault);
    let backoffMs = 100;
    for (;;) {
      try {
        return await work();
      } catch (err) {
        const causes = err instanceof PersistError ? [...err.failed.values()] : [err];
        const retryable = causes.every((c) => c instanceof CairnError && c.retryable && !(c instanceof FencedError));
        if (!retryable || this.clock.now() + backoffMs > deadline) throw err;
        this.log(`${what}: failed (${errorMessage(causes[0])}); retrying in ${backoffMs} ms`);
        // On the injected clock, not setTimeout: tests and the simulator drive time by hand.
        await sleepOn(this.clock, backoffMs);
        backoffMs = Math.min(backoffMs * 2, 2_000);
      }
    }
  }

  private persistWithRetry(images: readonly ExtentImage[]): Promise<void> {
    let pending = images;
    return this.withRetry('flush', async () => {
      try {
        await this.backend.persist(pending);
      } catch (err) {
        if (err instanceof PersistError) pending = pending.filter((i) => err.failed.has(i.extent));
        throw err;
      }
    });
  }

  private background(): void {
    if (this.closed || this.fenced !== undefined) return;
    const now = this.clock.now();
    const full = this.dirtyBytes > this.dirtyBytesMax / 2;
    const pressure = this.journaledBytes > this.cacheBytesMax * foldPressureFraction;
    let old = false;
    let aged = false;
    for (const e of this.entries.values()) {
      if (this.isDirty(e) && now - e.dirtySinceMs >= this.flushAgeMs) old = true;
      if (e.journaled.length > 0 && now - e.journaledSinceMs >= this.foldAgeMs) aged = true;
    }
    // A cache half full of dirty bytes flushes its whole extents first; age flushes everything.
    if (full || old) {
      const only = old ? undefined : this.wholeDirtyExtents();
      this.flush(only).catch((err: unknown) => this.log(`background flush failed: ${errorMessage(err)}`));
    }
    const limited = !pressure && now < this.foldNotBeforeMs;
    if ((pressure || aged) && !limited && this.backend.journal !== undefined && this.foldRun === undefined) {
      const before = this.stats.foldedBytes;
      this.fold(pressure ? 'fullest' : 'oldest').then(
        () => {
          // Under the rate limit, the next fold by age waits as long as this one's bytes take.
          if (this.foldBytesPerSecond > 0)
            this.foldNotBeforeMs =
              this.clock.now() + ((this.stats.foldedBytes - before) / this.foldBytesPerSecond) * 1000;
        },
        (err: unknown) => this.log(`background fold failed: ${errorMessage(err)}`),
      );
    }
  }

  /**
   * replayed() for each of `records` (in LSN order), once the published records of the extents
   * they touch are looked up: replay skips what a published generation holds, so it must know
   * them exactly (a lookup that fails fails the replay). Returns the bytes taken.
   */
  async replayAll(
    records: readonly { readonly lsn: number; readonly writes: readonly JournalWrite[] }[],
  ): Promise<number> {
    const extents = new Set<number>();
    for (const r of records)
      for (const w of r.writes) for (const p of splitByExtent(this.g, w.offset, w.data.length)) extents.add(p.extent);
    await this.backend.prepare?.(extents);
    let taken = 0;
    for (const r of records) taken += this.replayed(r.lsn, r.writes);
    return taken;
  }

  /**
   * Takes a record replayed from the journal at attach, in LSN order: its bytes are durable in the
   * journal at `lsn`. The parts on extents whose published generation already holds `lsn` are
   * skipped; the rest are read like journaled bytes and folded like them. Returns the bytes taken.
   */
  replayed(lsn: number, writes: readonly JournalWrite[]): number {
    const now = this.clock.now();
    let taken = 0;
    for (const w of writes) {
      for (const p of splitByExtent(this.g, w.offset, w.data.length)) {
        if ((this.backend.publishedLsn?.(p.extent) ?? -1) >= lsn) continue;
        taken += p.length;
        const entry = this.entryFor(p.extent);
        if (entry.journaled.length === 0) entry.journaledSinceMs = now;
        this.addJournaled(entry, {
          start: p.offset,
          data: w.data.subarray(p.bufferOffset, p.bufferOffset + p.length),
          lsn,
        });
      }
    }
    return taken;
  }

  /**
   * Stops the background work and lets go of the shared clean-cache budget without flushing or
   * folding: for a cache whose volume never finished attaching (nothing was acknowledged through
   * it; what it replayed stays in the journal for the next attach).
   */
  abandon(): void {
    if (this.closed) return;
    this.stopFlusher();
    this.closed = true;
    this.options.sharedCache?.unregister(this);
  }

  /** Flushes what is dirty, folds what is journaled, and stops the background work. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.stopFlusher();
    try {
      if (!this.options.readOnly && this.fenced === undefined) {
        await this.flush();
        await this.foldRun?.catch(() => undefined);
        await this.foldAll();
      }
    } finally {
      this.closed = true;
      this.options.sharedCache?.unregister(this);
    }
  }
}
