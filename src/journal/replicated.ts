/**
 * ReplicatedJournal: one segment of a volume's journal, replicated on r journal replicas (nodes
 * in distinct zones, chosen by the caller). An append goes to every replica in parallel and
 * succeeds only when every one has fdatasync'd it, so a FLUSH answered after it survives the loss
 * of any r - 1 of them. Also: fencing every replica at a takeover, and reading a segment back
 * from one replica for replay.
 *
 * What it keeps true:
 * - append() resolves only after all r replicas acknowledged; when any did not, it rejects
 *   after all have answered (or timed out), naming which acknowledged and which failed and why,
 *   so the caller knows which copies exist when it replaces a replica.
 * - A replica that says EFENCED wins over every other failure: the caller must stop writing.
 * - The same encoded bytes go to every replica (one encode, one CRC).
 *
 * What it leaves out: choosing replicas and segment ids, the layout in etcd, re-appending to a
 * replacement replica, folding and replay (the frontend does those, on top of this), and
 * retries (the caller decides, from `retryable`).
 */
import { InvalidArgumentError, assert, errorMessage } from '../core/index.js';
import { JournalFencedError, JournalProtocolError, JournalReplicationError, type ReplicaFailure } from './errors.js';
import { journalReadBytesMax } from './limits.js';
import type { JournalReplica } from './ports.js';
import { checkJournalVolumeId, decodeRecords, encodeRecord, type JournalRange, type JournalRecord } from './record.js';
import type { SegmentSpace, SegmentTail } from './wire.js';

export interface ReplicatedJournalOptions {
  /** The volume's id (VolumeRecord.id). */
  readonly volume: string;
  /** The writer's fencing epoch (the volume lock's epoch). */
  readonly epoch: number;
  /** The segment id, the same on every replica. */
  readonly segment: number;
  /** The r replicas, distinct nodes. */
  readonly replicas: readonly JournalReplica[];
}

/** What a replicated append or create leaves behind. */
export interface ReplicatedAppend {
  readonly lsn: number;
  /** Bytes of the encoded record. */
  readonly recordBytes: number;
  /** Per replica, in the order given: how full the segment is there now. */
  readonly spaces: readonly SegmentSpace[];
  /**
   * The room left in the segment on its fullest replica, in bytes: once a record no longer fits,
   * appends fail with JournalSegmentFullError, so start the next segment before that.
   */
  readonly bytesLeft: number;
}

/** The fields of a record that the journal does not fill in itself. */
export interface RecordInput {
  readonly lsn: number;
  readonly ranges: readonly JournalRange[];
  readonly data: Uint8Array;
}

/**
 * @example
 * const journal = new ReplicatedJournal({ volume: vol.id, epoch: lock.epoch, segment: 7, replicas: [a, b, c] });
 * await journal.create(); // preallocate on all three, off the commit path
 * const ack = await journal.append({ lsn: 42, ranges: [{ offset: 8192, length: 4096 }], data });
 * // now answer the NBD FLUSH: all three nodes have fdatasync'd record 42
 */
export class ReplicatedJournal {
  readonly volume: string;
  readonly epoch: number;
  readonly segment: number;
  readonly replicas: readonly JournalReplica[];

  constructor(options: ReplicatedJournalOptions) {
    this.volume = checkJournalVolumeId(options.volume);
    if (options.replicas.length === 0)
      throw new InvalidArgumentError(`Cannot journal volume ${this.volume}: no journal replicas given`);
    const names = new Set(options.replicas.map((r) => r.name));
    if (names.size !== options.replicas.length)
      throw new InvalidArgumentError(
        `Cannot journal volume ${this.volume}: replicas must be distinct nodes, got ${options.replicas.map((r) => r.name).join(', ')}`,
      );
    if (!Number.isSafeInteger(options.segment) || options.segment < 0)
      throw new InvalidArgumentError(`Invalid journal segment id ${options.segment}`);
    this.epoch = options.epoch;
    this.segment = options.segment;
    this.replicas = [...options.replicas];
  }

  /** The same journal on another segment (and, optionally, other replicas). */
  withSegment(segment: number, replicas: readonly JournalReplica[] = this.replicas): ReplicatedJournal {
    return new ReplicatedJournal({ volume: this.volume, epoch: this.epoch, segment, replicas });
  }

  /** Preallocates the segment on every replica. Same failures as append(). */
  async create(): Promise<readonly SegmentSpace[]> {
    return this.onAll(`create journal segment ${this.segment} of volume ${this.volume}`, (replica) =>
      replica.create({ volume: this.volume, segment: this.segment, epoch: this.epoch }),
    );
  }

  /**
   * Encodes one record (this journal's volume and epoch) and appends it to every replica.
   * Resolves when all r have fdatasync'd it. Throws InvalidArgumentError for a bad record (before
   * sending anything), JournalFencedError when any replica has seen a higher epoch, and
   * JournalReplicationError otherwise when any replica failed.
   */
  async append(input: RecordInput): Promise<ReplicatedAppend> {
    const record: JournalRecord = { volume: this.volume, epoch: this.epoch, ...input };
    return this.appendEncoded(input.lsn, encodeRecord(record));
  }

  /**
   * Appends an already encoded record (record.ts) whose volume and epoch are this journal's and
   * whose LSN is `lsn`. The caller must not change `encoded` until this settles.
   */
  async appendEncoded(lsn: number, encoded: Uint8Array): Promise<ReplicatedAppend> {
    const spaces = await this.onAll(
      `append lsn ${lsn} to journal segment ${this.segment} of volume ${this.volume}`,
      (r) => r.append({ volume: this.volume, segment: this.segment, epoch: this.epoch, lsn, record: encoded }),
    );
    const bytesLeft = Math.min(...spaces.map((s) => s.capacityBytes - s.usedBytes));
    return { lsn, recordBytes: encoded.length, spaces, bytesLeft };
  }

  /**
   * Raises every replica's epoch for the volume to this journal's epoch, so that the writer this
   * one takes over from can no longer gather r acknowledgements. One fenced replica already stops
   * it (it needs all r); fencing all that answer also stops its appends from filling them.
   * Resolves with the replicas fenced and the failures; throws JournalFencedError when any
   * replica has seen a higher epoch (a newer writer exists), and JournalReplicationError when no
   * replica could be fenced.
   */
  async fence(): Promise<{ readonly fenced: readonly string[]; readonly failures: readonly ReplicaFailure[] }> {
    const what = `fence volume ${this.volume} at epoch ${this.epoch}`;
    const settled = await Promise.allSettled(this.replicas.map((r) => r.fence(this.volume, this.epoch)));
    const { acked, failures } = split(this.replicas, settled);
    throwIfFenced(what, failures, this.epoch);
    if (acked.length === 0) throw replicationError(what, acked, failures);
    return { fenced: acked, failures };
  }

  private async onAll<T>(what: string, call: (replica: JournalReplica) => Promise<T>): Promise<T[]> {
    const settled = await Promise.allSettled(this.replicas.map((r) => call(r)));
    const { acked, failures } = split(this.replicas, settled);
    if (failures.length === 0) return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
    throwIfFenced(what, failures, this.epoch);
    throw replicationError(what, acked, failures);
  }
}

function split<T>(
  replicas: readonly JournalReplica[],
  settled: readonly PromiseSettledResult<T>[],
): { acked: string[]; failures: ReplicaFailure[] } {
  assert(replicas.length === settled.length);
  const acked: string[] = [];
  const failures: ReplicaFailure[] = [];
  settled.forEach((s, i) => {
    const replica = replicas[i]!.name;
    if (s.status === 'fulfilled') acked.push(replica);
    else failures.push({ replica, error: s.reason });
  });
  return { acked, failures };
}

function throwIfFenced(what: string, failures: readonly ReplicaFailure[], epoch: number): void {
  const fenced = failures.filter((f) => f.error instanceof JournalFencedError);
  if (fenced.length === 0) return;
  const nodeEpoch = Math.max(...fenced.map((f) => (f.error as JournalFencedError).nodeEpoch));
  throw new JournalFencedError(
    `Cannot ${what}: fenced by node${fenced.length > 1 ? 's' : ''} ${fenced.map((f) => `"${f.replica}"`).join(', ')}, which ${fenced.length > 1 ? 'have' : 'has'} seen epoch ${nodeEpoch}`,
    epoch,
    nodeEpoch,
    { cause: fenced[0]!.error },
  );
}

function replicationError(what: string, acked: readonly string[], failures: readonly ReplicaFailure[]): Error {
  const reasons = failures.map((f) => `node "${f.replica}": ${errorMessage(f.error)}`).join('; ');
  const ackedText =
    acked.length === 0 ? 'none acknowledged' : `acknowledged by ${acked.map((a) => `"${a}"`).join(', ')}`;
  const retryable = failures.every((f) => (f.error as { retryable?: unknown }).retryable === true);
  return new JournalReplicationError(
    `Cannot ${what}: ${failures.length} of ${acked.length + failures.length} replicas failed (${ackedText}): ${reasons}`,
    acked,
    failures,
    { retryable, cause: failures[0]?.error },
  );
}

/** What readSegment() saw. */
export interface SegmentReadSummary {
  readonly records: number;
  /** One above the last LSN visited, or fromLsn when none was. */
  readonly nextLsn: number;
  readonly tail: SegmentTail;
}

/**
 * Reads every record of one segment on one replica with LSN >= fromLsn, in LSN order, page by
 * page (READ answers of at most `pageBytes`), and hands each to `visit` (awaited before the next).
 * Checks what the node sent: every record decodes with its checksum, belongs to the volume, and
 * LSNs rise. A record that fails those is a JournalProtocolError (the node or the wire broke it:
 * read another replica). `tail` says how the segment ended on that node.
 */
export async function readSegment(
  replica: JournalReplica,
  request: { readonly volume: string; readonly segment: number; readonly fromLsn: number; readonly pageBytes?: number },
  visit: (record: JournalRecord) => void | Promise<void>,
): Promise<SegmentReadSummary> {
  let fromLsn = request.fromLsn;
  let records = 0;
  const what = `Cannot read journal segment ${request.segment} of volume ${request.volume} from node "${replica.name}"`;
  for (;;) {
    const answer = await replica.read({
      volume: request.volume,
      segment: request.segment,
      fromLsn,
      maxBytes: request.pageBytes ?? journalReadBytesMax,
    });
    const decoded = decodeRecords(answer.records);
    if (decoded.stop.kind !== 'end' || decoded.records.length !== answer.count)
      throw new JournalProtocolError(
        `${what}: the node sent ${answer.count} records but ${decoded.records.length} decode (${decoded.stop.kind === 'end' ? 'count mismatch' : decoded.stop.reason})`,
      );
    let last = fromLsn - 1;
    for (const record of decoded.records) {
      if (record.volume !== request.volume || record.lsn <= last || record.lsn < request.fromLsn)
        throw new JournalProtocolError(
          `${what}: the node sent record lsn ${record.lsn} out of order or of another volume`,
        );
      last = record.lsn;
      await visit(record);
      records += 1;
    }
    fromLsn = decoded.records.length > 0 ? last + 1 : fromLsn;
    if (!answer.more || decoded.records.length === 0) return { records, nextLsn: fromLsn, tail: answer.tail };
  }
}
