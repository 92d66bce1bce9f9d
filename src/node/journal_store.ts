/**
 * JournalStore: a storage node's journal segments on local disk, one directory per volume:
 *
 *   <dir>/<volume>/epoch                      the highest epoch seen, decimal, fsynced
 *   <dir>/<volume>/<segment, 16 digits>.log   a segment: records (record.ts) back to back from
 *                                              byte 0, then zeros to the preallocated end
 *
 * cairnd keeps `<dir>` at `<data dir>/journal~`: '~' is a character shard keys may not hold, so
 * the shard API can never address a journal file and the shard store skips the directory.
 *
 * What it keeps true:
 * - Durable before acknowledged: append() resolves only after its record's bytes (and every
 *   record before it in the segment) are fdatasync'd. Group commit: appends that arrive while a
 *   segment's fdatasync is in flight queue up and are written and fdatasync'd together next, so
 *   under concurrency there are fewer fdatasyncs than appends (stats().fsyncs).
 * - Preallocated: a segment is created full size by writing zeros (not ftruncate, which leaves a
 *   sparse file, nor fallocate, whose unwritten extents still need a metadata update on first
 *   write), fsynced and renamed into place; appends then overwrite zeros inside the file, so
 *   fdatasync has no file size or extent to commit and writes only data.
 * - Fenced: per volume the store keeps the highest epoch it has seen, durably, before anything
 *   that depends on it is acknowledged. An append or fence with a lower epoch is refused with
 *   JournalFencedError. fence() returns only after every lower-epoch append it let in has
 *   settled, so once it resolves no lower-epoch append is ever acknowledged.
 * - LSNs rise within a segment; a retry of the last record (same LSN, epoch and bytes) is
 *   acknowledged without writing it again.
 * - Torn tails are ignored: loading a segment keeps the records that decode (checksums, lengths,
 *   this volume, rising LSNs, non-decreasing epochs) up to the first that does not; bytes after
 *   it are never returned, and before the next append the store zeros the region a crash can
 *   have left half-written (journalBatchBytesMax + journalRecordBytesMax past the valid end).
 * - Reads return only durable records, verified again as they are read.
 * - Bounded: record size, segments per volume and per node, volumes, bytes queued for the disk,
 *   bytes per group commit, open files (idle segments are closed and reloaded on use).
 *
 * - Spare segments (spareSegments > 0): after its first create, the store zeros files of the
 *   segment size in the background, fsyncs them and keeps them in `<dir>/spare~/`; a create
 *   renames one into place instead of writing 64 MiB of zeros while a writer waits (measured
 *   on an idle disk: a create 78 ms zeroing, 1 ms taking a spare; the writer waits for it at
 *   attach and at each rotation).
 *   A spare is all zeros and durable, exactly what a fresh segment is, so a crash leaves it
 *   either a spare or an empty segment; half-written ones carry `.tmp` and are removed at open.
 *
 * What it leaves out: sealing one segment against further appends (a writer moves to a new
 * segment instead), checksumming the epoch file (it is written by rename, whole), and counting
 * journal bytes in the node's usedBytes (segments are bounded and listed by LIST instead).
 */
import { constants as fsConstants, writeSync, writevSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  CairnError,
  ChecksumMismatchError,
  DiskFullError,
  InlineIo,
  InvalidArgumentError,
  MiB,
  StorageIoError,
  UnavailableError,
  assert,
  errorMessage,
} from '../core/index.js';
import {
  JournalFencedError,
  JournalLsnError,
  JournalSegmentFullError,
  JournalSegmentNotFoundError,
  checkJournalVolumeId,
  decodePrefix,
  decodeRecord,
  decodeRecords,
  isJournalVolumeId,
  journalBatchBytesMax,
  journalEpochMax,
  journalSyncsInFlightMax,
  journalOpenSegmentsMax,
  journalQueuedBytesMax,
  journalReadBytesMax,
  journalRecordBytesMax,
  journalRecordPrefixBytes,
  journalSegmentBytesDefault,
  journalSegmentBytesMax,
  journalSegmentBytesMin,
  journalSegmentIdMax,
  journalSegmentsMax,
  journalSegmentsPerVolumeMax,
  journalVolumesMax,
  recordChecksum,
  type AppendRequest,
  type CreateRequest,
  type JournalListAnswer,
  type JournalSegmentInfo,
  type JournalVolumeInfo,
  type ReadAnswer,
  type ReadRequest,
  type SegmentSpace,
  type SegmentTail,
  type TrimRequest,
} from '../journal/index.js';

/** The journal directory's name inside a node's data directory (see the file comment). */
export const journalDirName = 'journal~';
/** Zeros written per call when a segment is preallocated or a torn tail is cleared. */
const zeroChunkBytes = 1 * MiB;
/** Bytes read per call when a segment is scanned at load. */
const scanChunkBytes = 1 * MiB;
/**
 * How far past a segment's valid end a crash can have left bytes: the rounds whose fdatasync
 * had not returned, plus the one being written. A round holds at most journalBatchBytesMax, or
 * one record when that record alone is larger. Loading looks for non-zero bytes there to tell a
 * clean end from a torn one, and the first append after a torn end zeros it.
 * Worked example, one fdatasync at a time: 2 rounds x max(4 MiB, 8 MiB + 65 KiB) = 16.1 MiB.
 */
function unsyncedReachBytes(syncsInFlightMax: number): number {
  return (syncsInFlightMax + 1) * Math.max(journalBatchBytesMax, journalRecordBytesMax);
}
const segmentFilePattern = /^(\d{16})\.log$/;
/** Where spare segments wait ('~' cannot be in a volume id, so no volume's directory has this name). */
const spareDirName = 'spare~';
const spareFilePattern = /^(\d{16})\.spare$/;
/**
 * A spare is zeroed in steps of this many bytes, each fdatasync'd, at most spareZeroBytesPerSecond:
 * background work that must not hold the disk long (one step's flush delays the appends queued
 * behind it) nor take its bandwidth from them.
 */
const spareStepBytes = 2 * MiB;
const spareZeroBytesPerSecond = 48 * MiB;
const epochFileName = 'epoch';

export interface JournalStoreOptions {
  /** How messages name the node: `node "b-1"`. */
  readonly description: string;
  /** Size of new segments, in bytes (default journalSegmentBytesDefault). */
  readonly segmentBytes?: number;
  /** One line per notable event (a torn tail found, a segment failed). */
  readonly log: (line: string) => void;
  /** fdatasyncs one segment may have running at once (default journalSyncsInFlightMax). */
  readonly syncsInFlightMax?: number;
  /**
   * How a round is made durable: 'dsync' (the default) opens segments with O_DSYNC, so a round's
   * write returns once its bytes are on stable storage, one call to the disk thread instead of a
   * write and an fdatasync; 'fdatasync' writes, then fdatasyncs (and lets syncsInFlightMax rounds
   * sync at once).
   */
  readonly durability?: 'dsync' | 'fdatasync';
  /**
   * Preallocated segments kept ready for creates (default 0: none), made in the background once
   * this store has created a segment (see the file comment).
   */
  readonly spareSegments?: number;
  /**
   * Write rounds of up to 128 KiB on the event loop's thread while they are fast (see InlineIo),
   * with 'dsync' only (default true). Measured (journal_bench.mjs, QD1 4 KiB appends, runs of a
   * noisy machine): 2600-2900 a second on the pool, 3700-4200 inline without the setImmediate
   * before each round, 3000-3050 with it (which group commit needs); nodes' CPU per commit on
   * the nbd commit job 0.78 -> 0.71 ms.
   */
  readonly inlineWrites?: boolean;
}

/** Counters since open(), for STATS. */
export interface JournalStoreStats {
  appends: number;
  appendedBytes: number;
  fsyncs: number;
  creates: number;
  fences: number;
  fencedRefusals: number;
  reads: number;
  trims: number;
  tornTails: number;
  /** Creates that took a spare segment instead of zeroing a new file. */
  sparesTaken: number;
}

/** One group commit: appends written together at [at, end), acknowledged by one fdatasync. */
interface Round {
  readonly batch: readonly PendingAppend[];
  readonly at: number;
  readonly end: number;
}

interface PendingAppend {
  readonly record: Uint8Array;
  readonly lsn: number;
  readonly epoch: number;
  readonly resolve: (space: SegmentSpace) => void;
  readonly reject: (err: unknown) => void;
}

/** A segment's records in memory while it is loaded: sorted LSNs and their file offsets. */
interface LoadedSegment {
  readonly file: FileHandle;
  readonly lsns: number[];
  readonly offsets: number[];
  /** Bytes to zero past durableEnd before the next write (a torn tail), 0 when clean. */
  tornBytes: number;
}

interface Segment {
  readonly id: number;
  readonly path: string;
  capacityBytes: number;
  /** Valid, fdatasync'd records end here. */
  durableEnd: number;
  /** Bytes written to the file, synced or not: durableEnd <= writtenEnd <= queuedEnd. */
  writtenEnd: number;
  /** durableEnd plus the bytes written or queued behind it. */
  queuedEnd: number;
  records: number;
  firstLsn: number | null;
  lastLsn: number | null;
  lastEpoch: number | null;
  tail: SegmentTail;
  /** The last record accepted (queued or durable), for the LSN rule and idempotent retries. */
  last: { lsn: number; epoch: number; checksum: number; bytes: number; done: Promise<SegmentSpace> } | undefined;
  loaded: LoadedSegment | undefined;
  loading: Promise<LoadedSegment> | undefined;
  /** True once a load has filled the fields above (LIST can answer without loading again). */
  known: boolean;
  queue: PendingAppend[];
  /** Batches written and waiting for an fdatasync, in file order. */
  rounds: Round[];
  /** True while the writer loop (commit) runs. */
  committing: boolean;
  /** fdatasyncs running on this segment's file. */
  syncsInFlight: number;
  /** Wakes the writer loop when an fdatasync finishes (it waits when journalSyncsInFlightMax run). */
  syncSlot: (() => void) | undefined;
  /** Operations using `loaded` right now; a pinned segment is never closed. */
  pins: number;
  lastUseTick: number;
  /** Set when a write or fdatasync failed: the file's tail is unknown until it is loaded again. */
  failed: Error | undefined;
  deleted: boolean;
  /** Told when the segment has no pins, no commit running and nothing queued (deleteSegment). */
  idleWaiters: (() => void)[];
}

interface InflightAppend {
  readonly epoch: number;
  readonly done: Promise<void>;
}

interface VolumeJournal {
  readonly volume: string;
  readonly dir: string;
  dirReady: Promise<void> | undefined;
  /** The highest epoch let in: appends and fences below it are refused. */
  promisedEpoch: number;
  /** The highest epoch in the epoch file, fsynced. */
  durableEpoch: number;
  epochWrites: Promise<void>;
  readonly segments: Map<number, Segment>;
  readonly inflight: Set<InflightAppend>;
  /** Per segment, the end of the last admission turn (see inTurn); absent when none is running. */
  readonly turns: Map<number, Promise<void>>;
}

export class JournalStore {
  readonly dir: string;
  readonly segmentBytes: number;
  private readonly syncsInFlightMax: number;
  private readonly dsync: boolean;
  private readonly description: string;
  private readonly log: (line: string) => void;
  private readonly volumes = new Map<string, VolumeJournal>();
  private readonly counters: JournalStoreStats = {
    appends: 0,
    appendedBytes: 0,
    fsyncs: 0,
    creates: 0,
    fences: 0,
    fencedRefusals: 0,
    reads: 0,
    trims: 0,
    tornTails: 0,
    sparesTaken: 0,
  };
  private readonly spareTarget: number;
  private readonly spareDir: string;
  /** Paths of spare segments ready to take. */
  private readonly spares: string[] = [];
  private spareSeq = 0;
  /** The background loop making spares, while it runs. */
  private refilling: Promise<void> | undefined;
  /** When write rounds run on this thread; undefined: always on the pool. */
  private readonly inlineWrites: InlineIo | undefined;
  private queuedBytesNow = 0;
  private segmentCount = 0;
  private openCount = 0;
  private tick = 0;
  private closed = false;

  private constructor(dir: string, options: JournalStoreOptions, segmentBytes: number) {
    this.dir = dir;
    this.description = options.description;
    this.log = options.log;
    this.segmentBytes = segmentBytes;
    this.syncsInFlightMax = options.syncsInFlightMax ?? journalSyncsInFlightMax;
    this.dsync = (options.durability ?? 'dsync') === 'dsync';
    this.spareTarget = options.spareSegments ?? 0;
    this.inlineWrites =
      this.dsync && options.inlineWrites !== false ? new InlineIo({ bytesMax: 128 * 1024, slowMs: 10 }) : undefined;
    this.spareDir = join(dir, spareDirName);
    assert(Number.isSafeInteger(this.spareTarget) && this.spareTarget >= 0, 'spare segments must be >= 0');
    assert(!this.dsync || this.syncsInFlightMax === 1, 'O_DSYNC rounds are durable as written, one at a time');
    assert(Number.isSafeInteger(this.syncsInFlightMax) && this.syncsInFlightMax >= 1);
  }

  /**
   * Opens (creating if needed) the journal at `dir`: reads every volume's epoch and lists its
   * segments (their records are read when first used), and removes temp files a crash left.
   * Throws StorageIoError when the directory or an epoch file cannot be read.
   */
  static async open(dir: string, options: JournalStoreOptions): Promise<JournalStore> {
    const segmentBytes = options.segmentBytes ?? journalSegmentBytesDefault;
    if (
      !Number.isSafeInteger(segmentBytes) ||
      segmentBytes < journalSegmentBytesMin ||
      segmentBytes > journalSegmentBytesMax
    )
      throw new InvalidArgumentError(
        `Invalid journal segment size ${segmentBytes}: must be from ${journalSegmentBytesMin} to ${journalSegmentBytesMax} bytes`,
      );
    const store = new JournalStore(dir, options, segmentBytes);
    const what = `Cannot open the journal directory ${dir} of ${options.description}`;
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      for (const entry of await readdir(dir, { withFileTypes: true })) {
        if (!entry.isDirectory() || !isJournalVolumeId(entry.name)) continue;
        await store.loadVolume(entry.name);
      }
      await store.loadSpares();
    } catch (err) {
      if (err instanceof CairnError) throw err;
      throw new StorageIoError(`${what}: ${errorMessage(err)}`, { cause: err });
    }
    return store;
  }

  /** Counters since open(), and the bytes queued now. */
  stats(): JournalStoreStats & { queuedBytes: number; spares: number } {
    return { ...this.counters, queuedBytes: this.queuedBytesNow, spares: this.spares.length };
  }

  /** Creates and preallocates a segment if it does not exist. Fenced like append(). */
  async create(req: CreateRequest): Promise<SegmentSpace> {
    this.checkOpen();
    checkIds(req.volume, req.segment, req.epoch);
    const vol = this.volumeFor(req.volume, true);
    return this.inTurn(vol, req.segment, async () => {
      const entry = await this.admit(vol, req.epoch, `create journal segment ${req.segment} of volume ${req.volume}`);
      try {
        const seg = await this.segmentFor(vol, req.segment, true);
        return { usedBytes: seg.queuedEnd, capacityBytes: seg.capacityBytes };
      } finally {
        this.release(vol, entry);
      }
    });
  }

  /**
   * Appends one encoded record to a segment (created if needed). Resolves once it is fdatasync'd.
   * Appends to one segment are taken in the order of the calls (a writer pipelines rising LSNs).
   * Throws InvalidArgumentError (the record's fields disagree with the request, or it is not a
   * record), ChecksumMismatchError (it was damaged on the way), JournalFencedError,
   * JournalLsnError, JournalSegmentFullError, UnavailableError (too much queued: retry),
   * DiskFullError and StorageIoError.
   */
  async append(req: AppendRequest): Promise<SegmentSpace> {
    this.checkOpen();
    checkIds(req.volume, req.segment, req.epoch);
    const what = `Cannot append lsn ${req.lsn} to journal segment ${req.segment} of volume ${req.volume} on ${this.description}`;
    checkRecordOf(req, what);
    if (this.queuedBytesNow + req.record.length > journalQueuedBytesMax)
      throw new UnavailableError(`${what}: ${this.queuedBytesNow} bytes are already queued for the disk; retry`);
    const vol = this.volumeFor(req.volume, true);
    // Admission (epoch, LSN rule, room, queueing) in call order; the wait for the disk outside it.
    const { entry, done } = await this.inTurn(vol, req.segment, async () => {
      const entry = await this.admit(vol, req.epoch, what);
      try {
        const seg = await this.segmentFor(vol, req.segment, true);
        if (seg.failed !== undefined)
          throw new StorageIoError(`${what}: the segment failed earlier (${seg.failed.message}); use a new segment`);
        const checksum = recordChecksum(req.record);
        const last = seg.last;
        if (last !== undefined && req.lsn <= last.lsn) {
          const retry =
            req.lsn === last.lsn &&
            req.epoch === last.epoch &&
            checksum === last.checksum &&
            req.record.length === last.bytes;
          // A retry of the last record gets that record's own outcome.
          if (retry) return { entry, done: last.done };
          throw new JournalLsnError(`${what}: the segment's last lsn is ${last.lsn}; lsns must rise within a segment`);
        }
        if (seg.queuedEnd + req.record.length > seg.capacityBytes)
          throw new JournalSegmentFullError(
            `${what}: ${req.record.length} bytes do not fit; ${seg.capacityBytes - seg.queuedEnd} of ${seg.capacityBytes} left`,
          );
        const done = new Promise<SegmentSpace>((resolve, reject) => {
          seg.queue.push({ record: req.record, lsn: req.lsn, epoch: req.epoch, resolve, reject });
        });
        done.catch(() => undefined); // every waiter handles it; never unhandled
        seg.last = { lsn: req.lsn, epoch: req.epoch, checksum, bytes: req.record.length, done };
        seg.queuedEnd += req.record.length;
        this.queuedBytesNow += req.record.length;
        void this.commit(vol, seg);
        return { entry, done };
      } catch (err) {
        this.release(vol, entry);
        throw err;
      }
    });
    try {
      return await done;
    } finally {
      this.release(vol, entry);
    }
  }

  /**
   * Runs `fn` once every earlier call for the same segment has finished its turn, so appends to
   * one segment are admitted in the order they arrived, whatever each one awaits (a segment
   * being created, an epoch being written). Segments do not wait for each other.
   */
  private async inTurn<T>(vol: VolumeJournal, segment: number, fn: () => Promise<T>): Promise<T> {
    const previous = vol.turns.get(segment);
    let finish: () => void = () => undefined;
    const mine = new Promise<void>((resolve) => (finish = resolve));
    vol.turns.set(segment, mine);
    try {
      if (previous !== undefined) await previous;
      return await fn();
    } finally {
      finish();
      if (vol.turns.get(segment) === mine) vol.turns.delete(segment);
    }
  }

  /**
   * Raises the volume's epoch to `epoch`, durably, and waits until every append of a lower epoch
   * that was let in has settled. Resolves with the volume's epoch now. Throws JournalFencedError
   * when the volume already has a higher epoch.
   */
  async fence(volume: string, epoch: number): Promise<number> {
    this.checkOpen();
    checkIds(volume, 0, epoch);
    const vol = this.volumeFor(volume, true);
    this.counters.fences += 1;
    if (epoch < vol.promisedEpoch) {
      this.counters.fencedRefusals += 1;
      throw fencedError(`Cannot fence volume ${volume} at epoch ${epoch} on ${this.description}`, epoch, vol);
    }
    // Synchronously after the check: raise the epoch in memory (appends below it are refused from
    // now on), then collect the lower-epoch appends already let in, and wait for both.
    const raised = this.raiseEpoch(vol, epoch);
    const draining = [...vol.inflight].filter((a) => a.epoch < epoch).map((a) => a.done);
    await raised;
    await Promise.all(draining);
    return vol.promisedEpoch;
  }

  /** A segment's durable records from `fromLsn`, up to `maxBytes` (one at least). */
  async read(req: ReadRequest): Promise<ReadAnswer> {
    this.checkOpen();
    checkIds(req.volume, req.segment, 0);
    const what = `Cannot read journal segment ${req.segment} of volume ${req.volume} on ${this.description}`;
    if (!Number.isSafeInteger(req.fromLsn) || req.fromLsn < 0)
      throw new InvalidArgumentError(`${what}: fromLsn must be a whole number >= 0`);
    if (!Number.isSafeInteger(req.maxBytes) || req.maxBytes < 1 || req.maxBytes > journalReadBytesMax)
      throw new InvalidArgumentError(`${what}: maxBytes must be from 1 to ${journalReadBytesMax}`);
    const vol = this.volumeFor(req.volume, false);
    const seg = vol?.segments.get(req.segment);
    if (vol === undefined || seg === undefined) throw new JournalSegmentNotFoundError(`${what}: no such segment`);
    this.counters.reads += 1;
    const loaded = await this.pin(vol, seg);
    try {
      const { lsns, offsets } = loaded;
      const first = lowerBound(lsns, req.fromLsn);
      if (first === lsns.length)
        return { tail: seg.tail, more: false, nextLsn: req.fromLsn, count: 0, records: new Uint8Array(0) };
      // Records lie back to back: take whole records while they fit in maxBytes (at least one).
      const endOf = (i: number): number => (i + 1 < offsets.length ? offsets[i + 1]! : seg.durableEnd);
      let last = first;
      while (last + 1 < lsns.length && endOf(last + 1) - offsets[first]! <= req.maxBytes) last += 1;
      const start = offsets[first]!;
      const bytes = await readExactly(loaded.file, start, endOf(last) - start, what);
      const decoded = decodeRecords(bytes);
      const wanted = last - first + 1;
      if (decoded.records.length < wanted) {
        // Checked at load, bad now: the disk changed it. Send what still checks, say so.
        this.log(
          `${what}: record lsn ${lsns[first + decoded.records.length]} no longer checks (${describe(decoded.stop)})`,
        );
        const sent = decoded.records.length;
        return {
          tail: 'corrupt',
          more: false,
          nextLsn: sent === 0 ? req.fromLsn : lsns[first + sent - 1]! + 1,
          count: sent,
          records: bytes.subarray(0, decoded.bytes),
        };
      }
      return {
        tail: seg.tail,
        more: last + 1 < lsns.length,
        nextLsn: lsns[last]! + 1,
        count: wanted,
        records: bytes,
      };
    } finally {
      this.unpin(seg);
    }
  }

  /**
   * Deletes one segment, or every segment of the volume whose records all lie below `belowLsn`
   * (segments without records are kept). Resolves with how many were deleted. The epoch stays,
   * and so does the volume's directory (a few bytes; removing it would race a new segment).
   */
  async trim(req: TrimRequest): Promise<number> {
    this.checkOpen();
    checkIds(req.volume, 'segment' in req ? req.segment : 0, 0);
    const vol = this.volumeFor(req.volume, false);
    if (vol === undefined) return 0;
    this.counters.trims += 1;
    if ('segment' in req) {
      const seg = vol.segments.get(req.segment);
      return seg === undefined ? 0 : (await this.deleteSegment(vol, seg)) ? 1 : 0;
    }
    if ('deleted' in req) return this.forget(vol);
    if (!Number.isSafeInteger(req.belowLsn) || req.belowLsn < 0)
      throw new InvalidArgumentError(
        `Cannot trim the journal of volume ${req.volume}: belowLsn must be a whole number >= 0`,
      );
    let deleted = 0;
    for (const seg of [...vol.segments.values()].sort((a, b) => a.id - b.id)) {
      if (!seg.known) {
        await this.pin(vol, seg);
        this.unpin(seg);
      }
      if (seg.lastLsn !== null && seg.lastLsn < req.belowLsn && seg.queue.length === 0 && seg.last?.lsn === seg.lastLsn)
        if (await this.deleteSegment(vol, seg)) deleted += 1;
    }
    return deleted;
  }

  /** Every volume's journal (or one volume's), with each segment's records and tail. */
  async list(volume?: string): Promise<JournalListAnswer> {
    this.checkOpen();
    if (volume !== undefined) checkJournalVolumeId(volume);
    const names = volume === undefined ? [...this.volumes.keys()].sort() : [volume];
    const volumes: JournalVolumeInfo[] = [];
    for (const name of names) {
      const vol = this.volumes.get(name);
      if (vol === undefined) continue;
      const segments: JournalSegmentInfo[] = [];
      for (const seg of [...vol.segments.values()].sort((a, b) => a.id - b.id)) {
        if (!seg.known) {
          try {
            await this.pin(vol, seg);
            this.unpin(seg);
          } catch (err) {
            this.log(`cannot load journal segment ${seg.id} of volume ${name} for LIST: ${errorMessage(err)}`);
            continue;
          }
        }
        segments.push(infoOf(seg));
      }
      volumes.push({ volume: name, epoch: vol.promisedEpoch, segments });
    }
    return { volumes };
  }

  /**
   * Stops taking requests, waits for queued appends to be written (they were let in; a clean
   * stop still makes them durable), and closes every file.
   */
  async close(): Promise<void> {
    this.closed = true;
    await this.refilling;
    for (const vol of this.volumes.values()) {
      await Promise.all([...vol.inflight].map((a) => a.done));
      for (const seg of vol.segments.values()) {
        if (seg.loading !== undefined) await seg.loading.catch(() => undefined);
        await this.unload(seg);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Volumes and epochs

  private checkOpen(): void {
    if (this.closed) throw new UnavailableError(`The journal of ${this.description} is shutting down`);
  }

  private async loadVolume(volume: string): Promise<VolumeJournal> {
    const dir = join(this.dir, volume);
    let epoch = 0;
    const epochPath = join(dir, epochFileName);
    try {
      const text = await readFile(epochPath, 'utf8');
      if (!/^\d{1,10}\n?$/.test(text) || Number(text) > journalEpochMax)
        throw new StorageIoError(
          `Cannot open the journal of volume ${volume} on ${this.description}: ${epochPath} does not hold an epoch (damaged disk?); until it is restored the node cannot tell which writer is current`,
        );
      epoch = Number(text);
    } catch (err) {
      if (err instanceof StorageIoError) throw err;
      if ((err as { code?: unknown }).code !== 'ENOENT') throw err;
    }
    const vol: VolumeJournal = {
      volume,
      dir,
      dirReady: Promise.resolve(),
      promisedEpoch: epoch,
      durableEpoch: epoch,
      epochWrites: Promise.resolve(),
      segments: new Map(),
      inflight: new Set(),
      turns: new Map(),
    };
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (!entry.isFile()) continue;
      if (entry.name.endsWith('.tmp')) {
        await unlink(join(dir, entry.name)).catch(() => undefined);
        continue;
      }
      const match = segmentFilePattern.exec(entry.name);
      if (match === null) continue;
      const id = Number(match[1]);
      if (!Number.isSafeInteger(id)) continue;
      vol.segments.set(id, newSegment(id, join(dir, entry.name)));
      this.segmentCount += 1;
    }
    this.volumes.set(volume, vol);
    return vol;
  }

  private volumeFor(volume: string, create: true): VolumeJournal;
  private volumeFor(volume: string, create: false): VolumeJournal | undefined;
  private volumeFor(volume: string, create: boolean): VolumeJournal | undefined {
    const known = this.volumes.get(volume);
    if (known !== undefined || !create) return known;
    if (this.volumes.size >= journalVolumesMax)
      throw new CairnError(
        'ELIMIT',
        `Cannot start a journal for volume ${volume} on ${this.description}: it already keeps ${journalVolumesMax} volumes' journals`,
      );
    const vol: VolumeJournal = {
      volume,
      dir: join(this.dir, volume),
      dirReady: undefined,
      promisedEpoch: 0,
      durableEpoch: 0,
      epochWrites: Promise.resolve(),
      segments: new Map(),
      inflight: new Set(),
      turns: new Map(),
    };
    this.volumes.set(volume, vol);
    return vol;
  }

  /** Creates the volume's directory once, and makes its name durable in the journal directory. */
  private ensureDir(vol: VolumeJournal): Promise<void> {
    vol.dirReady ??= (async () => {
      await mkdir(vol.dir, { recursive: true, mode: 0o700 });
      await fsyncDir(this.dir);
    })();
    vol.dirReady.catch(() => (vol.dirReady = undefined)); // a failure is retried by the next caller
    return vol.dirReady;
  }

  /**
   * Lets an operation of `epoch` in, or refuses it as fenced. An epoch above the durable one is
   * made durable first (re-checked after, as a fence may have come meanwhile). The returned
   * entry stays in `vol.inflight` until release(), so fence() can wait for it.
   */
  private async admit(
    vol: VolumeJournal,
    epoch: number,
    what: string,
  ): Promise<{ entry: InflightAppend; settle: () => void }> {
    if (epoch > vol.durableEpoch && epoch >= vol.promisedEpoch) await this.raiseEpoch(vol, epoch);
    if (epoch < vol.promisedEpoch) {
      this.counters.fencedRefusals += 1;
      throw fencedError(what, epoch, vol);
    }
    // No await between the check above and this: a fence either sees this entry or refuses it.
    let settle: () => void = () => undefined;
    const entry: InflightAppend = { epoch, done: new Promise<void>((resolve) => (settle = resolve)) };
    vol.inflight.add(entry);
    return { entry, settle };
  }

  private release(vol: VolumeJournal, admitted: { entry: InflightAppend; settle: () => void }): void {
    vol.inflight.delete(admitted.entry);
    admitted.settle();
  }

  /**
   * Raises the in-memory epoch to `epoch` at once (synchronously), and resolves once the epoch
   * file holds at least `epoch`. Writes are chained, so the file only ever grows.
   */
  private raiseEpoch(vol: VolumeJournal, epoch: number): Promise<void> {
    if (epoch > vol.promisedEpoch) vol.promisedEpoch = epoch;
    if (vol.durableEpoch >= epoch) return Promise.resolve();
    const write = vol.epochWrites
      .catch(() => undefined)
      .then(async () => {
        if (vol.durableEpoch >= epoch) return;
        const value = vol.promisedEpoch;
        await this.ensureDir(vol);
        const path = join(vol.dir, epochFileName);
        await writeFileDurably(path, `${value}\n`);
        vol.durableEpoch = Math.max(vol.durableEpoch, value);
      })
      .catch((err: unknown) => {
        throw ioError(`Cannot record epoch ${epoch} of volume ${vol.volume} on ${this.description}`, err);
      });
    vol.epochWrites = write;
    return write;
  }

  // ---------------------------------------------------------------------------------------------
  // Segments

  /** The segment, loaded and pinned-free; created (preallocated) when `create` and absent. */
  private async segmentFor(vol: VolumeJournal, id: number, create: boolean): Promise<Segment> {
    let seg = vol.segments.get(id);
    if (seg === undefined) {
      if (!create) throw new JournalSegmentNotFoundError(`No journal segment ${id} of volume ${vol.volume}`);
      if (vol.segments.size >= journalSegmentsPerVolumeMax || this.segmentCount >= journalSegmentsMax)
        throw new CairnError(
          'ELIMIT',
          `Cannot create journal segment ${id} of volume ${vol.volume} on ${this.description}: ${vol.segments.size >= journalSegmentsPerVolumeMax ? `the volume has ${journalSegmentsPerVolumeMax} segments here` : `the node holds ${journalSegmentsMax} segments`}; trim folded segments first`,
        );
      seg = newSegment(id, join(vol.dir, segmentFileName(id)));
      vol.segments.set(id, seg);
      this.segmentCount += 1;
      const created = seg;
      created.loading = this.createFile(vol, created).then(
        (loaded) => {
          created.loading = undefined;
          created.loaded = loaded;
          return loaded;
        },
        (err: unknown) => {
          created.loading = undefined;
          if (vol.segments.get(id) === created) {
            vol.segments.delete(id);
            this.segmentCount -= 1;
          }
          throw err;
        },
      );
    }
    await this.pin(vol, seg);
    this.unpin(seg);
    return seg;
  }

  /** Loads the segment if needed and pins it; every pin() is paired with unpin(). */
  private async pin(vol: VolumeJournal, seg: Segment): Promise<LoadedSegment> {
    seg.pins += 1;
    try {
      for (;;) {
        if (seg.deleted)
          throw new JournalSegmentNotFoundError(`Journal segment ${seg.id} of volume ${vol.volume} was trimmed`);
        if (seg.loaded !== undefined) {
          seg.lastUseTick = ++this.tick;
          return seg.loaded;
        }
        if (seg.loading === undefined) {
          const loading = this.loadFile(vol, seg);
          seg.loading = loading;
          loading.then(
            (loaded) => {
              if (seg.loading === loading) seg.loading = undefined;
              seg.loaded = loaded;
            },
            () => {
              if (seg.loading === loading) seg.loading = undefined;
            },
          );
        }
        await seg.loading;
      }
    } catch (err) {
      seg.pins -= 1;
      throw err;
    }
  }

  private unpin(seg: Segment): void {
    assert(seg.pins > 0, 'unpin without pin');
    seg.pins -= 1;
    notifyIfIdle(seg);
  }

  /**
   * Puts a new segment file in place, all zeros and durable: a spare renamed in when there is
   * one, else one zeroed now while the writer waits; then opens it for appends.
   */
  private async createFile(vol: VolumeJournal, seg: Segment): Promise<LoadedSegment> {
    const what = `Cannot create journal segment ${seg.id} of volume ${vol.volume} on ${this.description}`;
    try {
      await this.ensureDir(vol);
    } catch (err) {
      throw ioError(what, err);
    }
    const tookSpare = await this.takeSpare(seg.path, what);
    this.refillSpares();
    let file: FileHandle;
    try {
      if (tookSpare) await fsyncDir(this.spareDir);
      else await this.zeroFile(`${seg.path}.tmp`, seg.path, false);
      await fsyncDir(vol.dir);
      await this.makeRoomForFile();
      // O_DSYNC: every write of a round returns once it is durable (see JournalStoreOptions.durability).
      file = await open(seg.path, fsConstants.O_RDWR | (this.dsync ? fsConstants.O_DSYNC : 0));
      this.openCount += 1;
    } catch (err) {
      await unlink(seg.path).catch(() => undefined);
      throw ioError(what, err);
    }
    seg.capacityBytes = this.segmentBytes;
    seg.known = true;
    this.counters.creates += 1;
    if (tookSpare) this.counters.sparesTaken += 1;
    return { file, lsns: [], offsets: [], tornBytes: 0 };
  }

  /** Renames a spare segment to `path`; false when there is none (or it could not be taken). */
  private async takeSpare(path: string, what: string): Promise<boolean> {
    const spare = this.spares.pop();
    if (spare === undefined) return false;
    try {
      await rename(spare, path);
      return true;
    } catch (err) {
      this.log(`${what}: cannot take spare ${spare} (${errorMessage(err)}); zeroing a new file`);
      await unlink(spare).catch(() => undefined);
      return false;
    }
  }

  /**
   * Writes a file of the segment size full of zeros at `temp`, fsyncs it and renames it to
   * `path` (the caller fsyncs the directory). `paced`: in fdatasync'd steps at most
   * spareZeroBytesPerSecond, giving up (false) once the store closes. A failure removes `temp`.
   */
  private async zeroFile(temp: string, path: string, paced: boolean): Promise<boolean> {
    const file = await open(temp, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_TRUNC, 0o600);
    let done = false;
    try {
      if (paced) {
        const started = performance.now();
        for (let at = 0; at < this.segmentBytes; at += spareStepBytes) {
          if (this.closed) return false;
          await writeZeros(file, at, Math.min(spareStepBytes, this.segmentBytes - at));
          await file.datasync();
          const due = started + ((at + spareStepBytes) / spareZeroBytesPerSecond) * 1000 - performance.now();
          if (due > 0) await new Promise((resolve) => setTimeout(resolve, due));
        }
      } else {
        await writeZeros(file, 0, this.segmentBytes);
      }
      await file.sync();
      await rename(temp, path);
      done = true;
      return true;
    } finally {
      await file.close().catch(() => undefined);
      if (!done) await unlink(temp).catch(() => undefined);
    }
  }

  /** Finds the spares a previous run left (right size, complete), removes the rest. */
  private async loadSpares(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.spareDir);
    } catch (err) {
      if ((err as { code?: unknown }).code === 'ENOENT') return;
      throw err;
    }
    for (const name of names.sort()) {
      const path = join(this.spareDir, name);
      const match = spareFilePattern.exec(name);
      const size = match === null ? -1 : (await stat(path)).size;
      if (match === null || size !== this.segmentBytes || this.spares.length >= this.spareTarget) {
        await unlink(path).catch(() => undefined);
        continue;
      }
      this.spares.push(path);
      this.spareSeq = Math.max(this.spareSeq, Number(match[1]));
    }
  }

  /** Write rounds done on this thread, and how many were slow; undefined when none run here. */
  get inlineWriteStats(): { readonly inline: number; readonly slow: number } | undefined {
    return this.inlineWrites === undefined ? undefined : { ...this.inlineWrites.stats };
  }

  /** Starts the background loop that makes spares up to the target, unless it runs already. */
  private refillSpares(): void {
    if (this.refilling !== undefined || this.closed || this.spares.length >= this.spareTarget) return;
    const run = (async () => {
      await mkdir(this.spareDir, { recursive: true, mode: 0o700 });
      while (!this.closed && this.spares.length < this.spareTarget) await this.makeSpare();
    })()
      .catch((err: unknown) =>
        this.log(`cannot preallocate a spare journal segment on ${this.description}: ${errorMessage(err)}`),
      )
      .finally(() => {
        if (this.refilling === run) this.refilling = undefined;
      });
    this.refilling = run;
  }

  /** Zeros one spare in the background (see zeroFile) and keeps it. */
  private async makeSpare(): Promise<void> {
    this.spareSeq += 1;
    const path = join(this.spareDir, `${String(this.spareSeq).padStart(16, '0')}.spare`);
    if (!(await this.zeroFile(`${path}.tmp`, path, true))) return;
    await fsyncDir(this.spareDir);
    this.spares.push(path);
  }

  /**
   * Opens a segment file and scans it: keeps the records that decode and follow the segment's
   * rules, stops at the first that does not, and tells a clean end (zeros all the way through
   * the reach of an unsynced write) from a torn one.
   */
  private async loadFile(vol: VolumeJournal, seg: Segment): Promise<LoadedSegment> {
    const what = `Cannot load journal segment ${seg.id} of volume ${vol.volume} on ${this.description}`;
    await this.makeRoomForFile();
    let file: FileHandle;
    try {
      // O_DSYNC: every write of a round returns once it is durable (see JournalStoreOptions.durability).
      file = await open(seg.path, fsConstants.O_RDWR | (this.dsync ? fsConstants.O_DSYNC : 0));
    } catch (err) {
      if ((err as { code?: unknown }).code === 'ENOENT')
        throw new JournalSegmentNotFoundError(`${what}: its file is gone`, { cause: err });
      throw ioError(what, err);
    }
    this.openCount += 1;
    try {
      const size = (await file.stat()).size;
      const scan = await scanSegment(file, size, vol.volume, what, unsyncedReachBytes(this.syncsInFlightMax));
      const wasKnown = seg.known;
      if (wasKnown && scan.end !== seg.durableEnd)
        this.log(`${what}: reloaded with ${scan.end} valid bytes where ${seg.durableEnd} were durable before`);
      seg.capacityBytes = size;
      seg.durableEnd = scan.end;
      seg.writtenEnd = scan.end;
      seg.queuedEnd = scan.end;
      seg.records = scan.lsns.length;
      seg.firstLsn = scan.lsns[0] ?? null;
      seg.lastLsn = scan.lsns.at(-1) ?? null;
      seg.lastEpoch = scan.lastEpoch;
      seg.tail = scan.tornBytes > 0 ? 'torn' : 'clean';
      seg.failed = undefined;
      seg.known = true;
      seg.last = scan.last === undefined ? undefined : { ...scan.last, done: Promise.resolve(spaceOf(seg)) };
      if (scan.tornBytes > 0 && !wasKnown) {
        this.counters.tornTails += 1;
        this.log(
          `journal segment ${seg.id} of volume ${vol.volume}: torn tail after ${scan.lsns.length} valid records at byte ${scan.end} (${scan.stopReason}); ignored`,
        );
      }
      return { file, lsns: scan.lsns, offsets: scan.offsets, tornBytes: scan.tornBytes };
    } catch (err) {
      await file.close().catch(() => undefined);
      this.openCount -= 1;
      throw err instanceof CairnError ? err : ioError(what, err);
    }
  }

  /** Closes the least recently used idle segment when the open-file bound is reached. */
  private async makeRoomForFile(): Promise<void> {
    if (this.openCount < journalOpenSegmentsMax) return;
    let victim: Segment | undefined;
    for (const vol of this.volumes.values())
      for (const seg of vol.segments.values())
        if (seg.loaded !== undefined && isIdle(seg) && (victim === undefined || seg.lastUseTick < victim.lastUseTick))
          victim = seg;
    // Every open segment busy: go over the bound for now; it is bounded by the segments in use.
    if (victim !== undefined) await this.unload(victim);
  }

  /** Closes a segment's file and forgets its record index; its summary stays for LIST. */
  private async unload(seg: Segment): Promise<void> {
    const loaded = seg.loaded;
    if (loaded === undefined) return;
    seg.loaded = undefined;
    this.openCount -= 1;
    await loaded.file.close().catch((err: unknown) => this.log(`closing ${seg.path}: ${errorMessage(err)}`));
  }

  /**
   * Group commit, the writer side: while the queue has appends, take as many as fit in one batch
   * (a round), write them after what was written before, and start one fdatasync for them; then
   * take the next batch. Appends that arrive while an fdatasync runs share the next round. Writes
   * are one at a time and in order; at most syncsInFlightMax fdatasyncs run at once (1, the default:
   * the next round is written once the previous one is durable). sync() does the acknowledging.
   * A failed write fails the segment (see fail()).
   */
  private async commit(vol: VolumeJournal, seg: Segment): Promise<void> {
    if (seg.committing) return;
    seg.committing = true;
    let loaded: LoadedSegment | undefined;
    try {
      loaded = await this.pin(vol, seg);
      while (seg.queue.length > 0 && seg.failed === undefined) {
        if (seg.syncsInFlight >= this.syncsInFlightMax) {
          await new Promise<void>((resolve) => (seg.syncSlot = resolve));
          continue;
        }
        if (this.inlineWrites !== undefined) {
          // An inline write blocks the loop, so appends cannot queue behind it as they do behind
          // a write on the pool: let the loop read what the sockets hold first (group commit).
          await new Promise<void>((resolve) => setImmediate(resolve));
          if (seg.queue.length === 0 || seg.failed !== undefined) break;
        }
        const batch: PendingAppend[] = [];
        let batchBytes = 0;
        while (seg.queue.length > 0) {
          const next = seg.queue[0]!;
          if (batch.length > 0 && batchBytes + next.record.length > journalBatchBytesMax) break;
          batch.push(seg.queue.shift()!);
          batchBytes += next.record.length;
        }
        const round: Round = { batch, at: seg.writtenEnd, end: seg.writtenEnd + batchBytes };
        seg.rounds.push(round); // from here fail() answers for it
        seg.writtenEnd = round.end;
        try {
          if (loaded.tornBytes > 0) {
            await writeZeros(loaded.file, round.at, Math.min(loaded.tornBytes, seg.capacityBytes - round.at));
            loaded.tornBytes = 0;
          }
          const parts = batch.map((p) => p.record);
          const file = loaded.file;
          if (this.inlineWrites?.use(batchBytes) === true)
            this.inlineWrites.run(() => writeAllAtSync(file.fd, parts, round.at));
          else await writeAllAt(file, parts, round.at);
        } catch (err) {
          this.fail(seg, ioError(this.appendWhat(vol, seg), err));
          return;
        }
        if (seg.failed !== undefined) return; // an fdatasync failed meanwhile; this round failed with it
        seg.syncsInFlight += 1;
        void this.sync(vol, seg, loaded, round);
      }
    } catch (err) {
      // pin() failed (the segment was trimmed, or its file could not be loaded).
      this.fail(seg, err instanceof Error ? err : new Error(String(err)));
    } finally {
      seg.committing = false;
      if (loaded !== undefined) this.unpin(seg);
      else notifyIfIdle(seg);
    }
  }

  /**
   * Group commit, the acknowledging side: one fdatasync for `round`. It began after the writes of
   * `round` and of every round before it had finished, so when it returns all of them are
   * durable: they are added to the index and acknowledged, in file order.
   */
  private async sync(vol: VolumeJournal, seg: Segment, loaded: LoadedSegment, round: Round): Promise<void> {
    try {
      // With O_DSYNC the round's write already returned durable: no await, acknowledged at once.
      if (!this.dsync) await loaded.file.datasync();
      this.counters.fsyncs += 1;
    } catch (err) {
      this.fail(seg, ioError(this.appendWhat(vol, seg), err));
    } finally {
      seg.syncsInFlight -= 1;
      const wake = seg.syncSlot;
      seg.syncSlot = undefined;
      wake?.();
    }
    while (seg.failed === undefined && seg.rounds.length > 0 && seg.rounds[0]!.at <= round.at) {
      const done = seg.rounds.shift()!;
      assert(done.at === seg.durableEnd, 'journal rounds must be acknowledged in file order');
      let offset = done.at;
      for (const p of done.batch) {
        loaded.lsns.push(p.lsn);
        loaded.offsets.push(offset);
        offset += p.record.length;
      }
      const bytes = done.end - done.at;
      seg.durableEnd = done.end;
      seg.records += done.batch.length;
      seg.firstLsn ??= done.batch[0]!.lsn;
      seg.lastLsn = done.batch.at(-1)!.lsn;
      seg.lastEpoch = done.batch.at(-1)!.epoch;
      this.queuedBytesNow -= bytes;
      this.counters.appends += done.batch.length;
      this.counters.appendedBytes += bytes;
      const space = spaceOf(seg);
      for (const p of done.batch) p.resolve(space);
    }
    notifyIfIdle(seg);
  }

  private appendWhat(vol: VolumeJournal, seg: Segment): string {
    return `Cannot append to journal segment ${seg.id} of volume ${vol.volume} on ${this.description}`;
  }

  /**
   * A write or an fdatasync failed: what reached the disk is unknown until the segment is loaded
   * again, so every append not yet acknowledged fails, and so does every later one (the writer
   * moves to a new segment).
   */
  private fail(seg: Segment, failure: Error): void {
    if (seg.failed !== undefined) return;
    const all = [...seg.rounds.splice(0).flatMap((r) => r.batch), ...seg.queue.splice(0)];
    for (const p of all) {
      this.queuedBytesNow -= p.record.length;
      p.reject(failure);
    }
    seg.failed = failure;
    seg.writtenEnd = seg.durableEnd;
    seg.queuedEnd = seg.durableEnd;
    seg.last = undefined;
    this.log(`journal segment ${seg.id}: ${failure.message}; ${all.length} appends failed`);
  }

  /** Removes a segment: waits for its commits, closes it, unlinks the file. */
  /**
   * Deletes everything kept of a volume that no longer exists (gc): every segment, empty ones
   * too, its epoch and its directory; returns the segments deleted. A writer still appending for
   * it (fenced in etcd already) finds its segment gone.
   */
  private async forget(vol: VolumeJournal): Promise<number> {
    let deleted = 0;
    for (const seg of [...vol.segments.values()]) if (await this.deleteSegment(vol, seg)) deleted += 1;
    await vol.epochWrites.catch(() => undefined);
    if (this.volumes.get(vol.volume) === vol) this.volumes.delete(vol.volume);
    try {
      await rm(vol.dir, { recursive: true, force: true });
      await fsyncDir(this.dir);
    } catch (err) {
      throw ioError(`Cannot delete the journal of volume ${vol.volume} on ${this.description}`, err);
    }
    return deleted;
  }

  private async deleteSegment(vol: VolumeJournal, seg: Segment): Promise<boolean> {
    if (vol.segments.get(seg.id) !== seg) return false;
    vol.segments.delete(seg.id);
    this.segmentCount -= 1;
    seg.deleted = true;
    if (seg.loading !== undefined) await seg.loading.catch(() => undefined);
    // Appends already queued were let in before the trim; let them finish (into the file that is
    // about to go), rather than fail appends the writer may still be waiting for.
    await whenIdle(seg);
    await this.unload(seg);
    try {
      await unlink(seg.path);
      await fsyncDir(vol.dir);
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'ENOENT')
        throw ioError(`Cannot delete journal segment ${seg.id} of volume ${vol.volume} on ${this.description}`, err);
    }
    return true;
  }
}

// -----------------------------------------------------------------------------------------------

function newSegment(id: number, path: string): Segment {
  return {
    id,
    path,
    capacityBytes: 0,
    durableEnd: 0,
    writtenEnd: 0,
    queuedEnd: 0,
    records: 0,
    firstLsn: null,
    lastLsn: null,
    lastEpoch: null,
    tail: 'clean',
    last: undefined,
    loaded: undefined,
    loading: undefined,
    known: false,
    queue: [],
    rounds: [],
    committing: false,
    syncsInFlight: 0,
    syncSlot: undefined,
    pins: 0,
    lastUseTick: 0,
    failed: undefined,
    deleted: false,
    idleWaiters: [],
  };
}

function isIdle(seg: Segment): boolean {
  return seg.pins === 0 && !seg.committing && seg.queue.length === 0 && seg.syncsInFlight === 0;
}

function notifyIfIdle(seg: Segment): void {
  if (!isIdle(seg) || seg.idleWaiters.length === 0) return;
  for (const wake of seg.idleWaiters.splice(0)) wake();
}

function whenIdle(seg: Segment): Promise<void> {
  if (isIdle(seg)) return Promise.resolve();
  return new Promise((resolve) => seg.idleWaiters.push(resolve));
}

/** `<segment id, 16 digits>.log`: file names sort in segment order. */
export function segmentFileName(id: number): string {
  assert(Number.isSafeInteger(id) && id >= 0 && id <= journalSegmentIdMax);
  return `${String(id).padStart(16, '0')}.log`;
}

function spaceOf(seg: Segment): SegmentSpace {
  return { usedBytes: seg.durableEnd, capacityBytes: seg.capacityBytes };
}

function infoOf(seg: Segment): JournalSegmentInfo {
  return {
    segment: seg.id,
    capacityBytes: seg.capacityBytes,
    usedBytes: seg.durableEnd,
    records: seg.records,
    firstLsn: seg.firstLsn,
    lastLsn: seg.lastLsn,
    lastEpoch: seg.lastEpoch,
    tail: seg.tail,
  };
}

function checkIds(volume: string, segment: number, epoch: number): void {
  checkJournalVolumeId(volume);
  if (!Number.isSafeInteger(segment) || segment < 0)
    throw new InvalidArgumentError(`Invalid journal segment id ${segment}: must be a whole number from 0 to 2^53 - 1`);
  if (!Number.isInteger(epoch) || epoch < 0 || epoch > journalEpochMax)
    throw new InvalidArgumentError(`Invalid epoch ${epoch}: must be a whole number from 0 to ${journalEpochMax}`);
}

/** The request's record must be exactly one valid record with the request's volume, epoch, lsn. */
function checkRecordOf(req: AppendRequest, what: string): void {
  if (!Number.isSafeInteger(req.lsn) || req.lsn < 0)
    throw new InvalidArgumentError(`${what}: lsn must be a whole number from 0 to 2^53 - 1`);
  if (req.record.length > journalRecordBytesMax)
    throw new InvalidArgumentError(
      `${what}: ${req.record.length} bytes is more than the ${journalRecordBytesMax}-byte record limit`,
    );
  const decoded = decodeRecord(req.record);
  if (decoded.kind === 'corrupt' && decoded.reason === 'record checksum mismatch')
    throw new ChecksumMismatchError(
      `${what}: the record does not match its checksum (damaged in transit); nothing stored`,
    );
  if (decoded.kind !== 'ok') throw new InvalidArgumentError(`${what}: not a journal record (${describe(decoded)})`);
  if (decoded.bytes !== req.record.length)
    throw new InvalidArgumentError(`${what}: ${req.record.length - decoded.bytes} bytes follow the record`);
  const { record } = decoded;
  if (record.volume !== req.volume || record.epoch !== req.epoch || record.lsn !== req.lsn)
    throw new InvalidArgumentError(
      `${what}: the record says volume ${record.volume}, epoch ${record.epoch}, lsn ${record.lsn}`,
    );
}

function describe(stop: { kind: string; reason?: string }): string {
  return stop.reason === undefined ? stop.kind : `${stop.kind}: ${stop.reason}`;
}

function fencedError(what: string, epoch: number, vol: VolumeJournal): JournalFencedError {
  return new JournalFencedError(
    `${what}: fenced, epoch ${epoch} is below epoch ${vol.promisedEpoch} already seen for the volume (another writer took it over)`,
    epoch,
    vol.promisedEpoch,
  );
}

function ioError(what: string, err: unknown): CairnError {
  if (err instanceof CairnError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new DiskFullError(`${what}: disk full (${code})`, { cause: err });
  return new StorageIoError(`${what}: ${errorMessage(err)}`, { cause: err });
}

/** First index whose value is >= `value` in ascending `sorted`. */
function lowerBound(sorted: readonly number[], value: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

interface ScanResult {
  readonly lsns: number[];
  readonly offsets: number[];
  /** Valid records end here. */
  readonly end: number;
  readonly lastEpoch: number | null;
  readonly last: { lsn: number; epoch: number; checksum: number; bytes: number } | undefined;
  /** Bytes past `end` to zero before the next write; 0 when the end is clean. */
  readonly tornBytes: number;
  readonly stopReason: string;
}

async function scanSegment(
  file: FileHandle,
  size: number,
  volume: string,
  what: string,
  reachBytes: number,
): Promise<ScanResult> {
  const lsns: number[] = [];
  const offsets: number[] = [];
  let window: Uint8Array = new Uint8Array(0);
  let windowAt = 0;
  /** Makes `window` cover [at, at + need) or up to the end of the file. */
  const cover = async (at: number, need: number): Promise<void> => {
    if (at >= windowAt && at + need <= windowAt + window.length) return;
    window = await readExactly(file, at, Math.min(size - at, Math.max(need, scanChunkBytes)), what);
    windowAt = at;
  };
  let at = 0;
  let lastEpoch: number | null = null;
  let last: ScanResult['last'];
  let stopReason = 'end';
  while (at < size) {
    await cover(at, journalRecordPrefixBytes);
    const head = decodePrefix(window, at - windowAt);
    if (head.kind !== 'prefix') {
      stopReason = describe(head);
      break;
    }
    if (head.prefix.totalBytes > size - at) {
      stopReason = 'a record runs past the end of the file';
      break;
    }
    await cover(at, head.prefix.totalBytes);
    const decoded = decodeRecord(window, at - windowAt);
    if (decoded.kind !== 'ok') {
      stopReason = describe(decoded);
      break;
    }
    const { record } = decoded;
    if (record.volume !== volume) {
      stopReason = `a record of volume ${record.volume}`;
      break;
    }
    if (last !== undefined && record.lsn <= last.lsn) {
      stopReason = `lsn ${record.lsn} after lsn ${last.lsn}`;
      break;
    }
    if (lastEpoch !== null && record.epoch < lastEpoch) {
      stopReason = `epoch ${record.epoch} after epoch ${lastEpoch}`;
      break;
    }
    const bytes = window.subarray(at - windowAt, at - windowAt + decoded.bytes);
    lsns.push(record.lsn);
    offsets.push(at);
    lastEpoch = record.epoch;
    last = { lsn: record.lsn, epoch: record.epoch, checksum: recordChecksum(bytes), bytes: decoded.bytes };
    at += decoded.bytes;
  }
  // Clean only when everything an unsynced write can have reached past the valid end is zero.
  const reach = Math.min(size - at, reachBytes);
  let dirty = stopReason !== 'end';
  for (let from = at; !dirty && from < at + reach; from += scanChunkBytes) {
    const chunk = await readExactly(file, from, Math.min(scanChunkBytes, at + reach - from), what);
    dirty = !isZero(chunk);
  }
  return { lsns, offsets, end: at, lastEpoch, last, tornBytes: dirty ? reach : 0, stopReason };
}

async function readExactly(file: FileHandle, position: number, length: number, what: string): Promise<Uint8Array> {
  const buffer = Buffer.allocUnsafe(length);
  let got = 0;
  try {
    while (got < length) {
      const { bytesRead } = await file.read(buffer, got, length - got, position + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
  } catch (err) {
    throw ioError(what, err);
  }
  if (got < length) throw new StorageIoError(`${what}: the file ended after ${position + got} bytes`);
  return buffer;
}

let zeroChunk: Uint8Array | undefined;

/** True when every byte is zero (a memcmp against a zero buffer, not a loop in JavaScript). */
function isZero(bytes: Uint8Array): boolean {
  zeroChunk ??= new Uint8Array(zeroChunkBytes);
  for (let at = 0; at < bytes.length; at += zeroChunkBytes) {
    const part = bytes.subarray(at, Math.min(bytes.length, at + zeroChunkBytes));
    if (Buffer.compare(part, zeroChunk.subarray(0, part.length)) !== 0) return false;
  }
  return true;
}

async function writeZeros(file: FileHandle, position: number, length: number): Promise<void> {
  zeroChunk ??= new Uint8Array(zeroChunkBytes);
  for (let at = 0; at < length; at += zeroChunkBytes)
    await writeAllAt(file, [zeroChunk.subarray(0, Math.min(zeroChunkBytes, length - at))], position + at);
}

/** Writes `parts` back to back at `position` (one writev when it completes, as it does on files). */
async function writeAllAt(file: FileHandle, parts: readonly Uint8Array[], position: number): Promise<void> {
  const { bytesWritten } = await file.writev(parts as Uint8Array[], position);
  for (const left of unwritten(parts, position, bytesWritten)) {
    let { offset, at } = left;
    while (offset < left.part.length) {
      const { bytesWritten: n } = await file.write(left.part, offset, left.part.length - offset, at);
      assert(n > 0, 'write() made no progress without an error');
      offset += n;
      at += n;
    }
  }
}

/** writeAllAt() on this thread: `parts` back to back at `position`. */
function writeAllAtSync(fd: number, parts: readonly Uint8Array[], position: number): void {
  const written = writevSync(fd, parts as Uint8Array[], position);
  for (const left of unwritten(parts, position, written)) {
    let { offset, at } = left;
    while (offset < left.part.length) {
      const n = writeSync(fd, left.part, offset, left.part.length - offset, at);
      assert(n > 0, 'write() made no progress without an error');
      offset += n;
      at += n;
    }
  }
}

/**
 * What a short writev of `parts` at `position` left to write: each part with bytes left, from
 * `offset`, which goes to file position `at`. Nothing when all `written` bytes were.
 */
function* unwritten(
  parts: readonly Uint8Array[],
  position: number,
  written: number,
): Generator<{ part: Uint8Array; offset: number; at: number }> {
  let before = 0;
  for (const part of parts) {
    const offset = Math.max(0, written - before);
    if (offset < part.length) yield { part, offset, at: position + before + offset };
    before += part.length;
  }
}

/** Writes `text` to `path` by temp file, fsync and rename, then fsyncs the directory. */
async function writeFileDurably(path: string, text: string): Promise<void> {
  const temp = `${path}.tmp`;
  const file = await open(temp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC, 0o600);
  try {
    await file.writeFile(text, 'utf8');
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(temp, path);
  await fsyncDir(dirname(path));
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
