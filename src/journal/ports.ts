/**
 * The journal layer's one port: a journal replica, that is, one storage node's journal as a
 * writer sees it. JournalNodeClient (src/shard/journal_client.ts) implements it over the wire
 * protocol; tests and the simulator can implement it in memory.
 *
 * Contracts shared by every method: volumes are volume ids (VolumeRecord.id), segments whole
 * numbers below 2^53, epochs u32, LSNs whole numbers below 2^53. Errors are typed CairnErrors:
 * UnavailableError (retryable) when the node cannot be reached or does not answer in time,
 * JournalFencedError when the node has seen a higher epoch for the volume, and the others named
 * per method. Nothing is retried inside: the caller decides.
 */
import type {
  AppendRequest,
  CreateRequest,
  JournalListAnswer,
  ReadAnswer,
  ReadRequest,
  SegmentSpace,
  TrimRequest,
} from './wire.js';

export interface JournalReplica {
  /** The node's name, for messages: `node "b-1"` is `b-1`. */
  readonly name: string;

  /**
   * Creates segment `segment` of `volume`, preallocated, so that the first APPEND does not pay
   * for it. Idempotent: an existing segment is left as it is. Fenced like an append.
   */
  create(request: CreateRequest): Promise<SegmentSpace>;

  /**
   * Appends one encoded record (record.ts) to a segment, creating the segment if needed.
   * Resolves once the record's bytes are fdatasync'd on the node (and every record before it in
   * the segment). Idempotent for a retry of the segment's last record (same LSN, epoch, bytes).
   * Appends made through one replica to one segment reach it in the order of the calls, so a
   * writer may pipeline records of rising LSNs without waiting for each. The caller keeps ownership of `record` but must not change it until this settles.
   * Throws JournalFencedError, JournalLsnError (LSN not above the segment's last),
   * JournalSegmentFullError, InvalidArgumentError / ChecksumMismatchError (a bad record),
   * DiskFullError, StorageIoError.
   */
  append(request: AppendRequest): Promise<SegmentSpace>;

  /**
   * Raises the node's epoch for `volume` to `epoch` (durably) without appending, and resolves
   * once every append of a lower epoch that the node had accepted is settled: after it, no
   * append of a lower epoch is ever acknowledged. Resolves with the node's epoch (>= `epoch`).
   * Idempotent. Throws JournalFencedError when the node has already seen a higher epoch.
   */
  fence(volume: string, epoch: number): Promise<number>;

  /**
   * Reads a segment's valid, durable records with LSN >= fromLsn, at most maxBytes of them (at
   * least one when there is one). A torn tail is never returned. Throws
   * JournalSegmentNotFoundError. The answer's buffers belong to the caller.
   */
  read(request: ReadRequest): Promise<ReadAnswer>;

  /**
   * Deletes one segment, or every segment whose records all lie below an LSN (empty segments
   * are kept). Resolves with the number deleted; deleting what is not there is not an error.
   * The volume's epoch is kept.
   */
  trim(request: TrimRequest): Promise<number>;

  /** The node's journal segments for one volume, or for every volume. */
  list(volume?: string): Promise<JournalListAnswer>;
}
