/**
 * Errors of the write-ahead journal, shared by the node that keeps journal segments and the
 * clients that append to them. Each has a stable `code` (the same on the wire) and `retryable`.
 *
 * JournalFencedError uses the code EFENCED, like the metadata layer's FencedError: both say the
 * writer's epoch is no longer the volume's, and the writer must stop and re-attach. (When the
 * fencing vocabulary moves to core/, this becomes a subclass of that one error.)
 */
import { CairnError, type CairnErrorOptions } from '../core/index.js';

/**
 * A node refused an append or a fence because it has seen a higher epoch for the volume: another
 * writer took the volume over. Never retryable.
 */
export class JournalFencedError extends CairnError {
  override readonly name: string = 'JournalFencedError';
  /**
   * @param epoch the epoch the caller sent
   * @param nodeEpoch the highest epoch the node has seen for the volume (0 when unknown)
   */
  constructor(
    message: string,
    readonly epoch: number,
    readonly nodeEpoch: number,
    options: CairnErrorOptions = {},
  ) {
    super('EFENCED', message, { ...options, retryable: false });
  }
}

/**
 * An append whose LSN is not above the segment's last one, and is not a retry of that last
 * record (same LSN, epoch and bytes). A writer after a takeover starts new segments.
 */
export class JournalLsnError extends CairnError {
  override readonly name: string = 'JournalLsnError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('ELSN', message, { ...options, retryable: false });
  }
}

/** The record does not fit in what is left of the segment: the writer starts a new segment. */
export class JournalSegmentFullError extends CairnError {
  override readonly name: string = 'JournalSegmentFullError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('ESEGMENTFULL', message, { ...options, retryable: false });
  }
}

/** READ of a segment the node does not have (never created, or trimmed). */
export class JournalSegmentNotFoundError extends CairnError {
  override readonly name: string = 'JournalSegmentNotFoundError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('ENOSEGMENT', message, { ...options, retryable: false });
  }
}

/**
 * The peer broke the wire protocol (bad magic, oversized frame, a frame that does not parse).
 * Not retryable: the two sides do not speak the same protocol, or one has a bug.
 */
export class JournalProtocolError extends CairnError {
  override readonly name: string = 'JournalProtocolError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('EPROTO', message, { ...options, retryable: false });
  }
}

/** One replica's failure inside a replicated append. */
export interface ReplicaFailure {
  /** The replica's name (the node's name). */
  readonly replica: string;
  readonly error: unknown;
}

/**
 * A replicated append (or fence) that did not reach every replica it needed. `acked` names the
 * replicas that did acknowledge, `failures` the ones that did not and why. Retryable only when
 * every failure is retryable (a node restarting, a timeout); a full segment or a bad record is
 * not, and a fenced replica is reported as JournalFencedError instead.
 */
export class JournalReplicationError extends CairnError {
  override readonly name: string = 'JournalReplicationError';
  constructor(
    message: string,
    readonly acked: readonly string[],
    readonly failures: readonly ReplicaFailure[],
    options: CairnErrorOptions = {},
  ) {
    super('EREPLICA', message, options);
  }
}
