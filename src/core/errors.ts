/**
 * Typed operating errors. Every failure that is not a bug is a CairnError with a stable `code`,
 * a `retryable` flag that retry loops look at (and nothing else), and an optional `cause`.
 * Messages name the action and the object: "Cannot decode extent: 3 of 8 shards present".
 */

export interface CairnErrorOptions {
  readonly retryable?: boolean;
  readonly cause?: unknown;
}

export class CairnError extends Error {
  override readonly name: string = 'CairnError';
  readonly code: string;
  readonly retryable: boolean;

  constructor(code: string, message: string, options: CairnErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
  }
}

/** A caller (CLI user, API client) passed something invalid. Never retryable. */
export class InvalidArgumentError extends CairnError {
  override readonly name: string = 'InvalidArgumentError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('EINVAL', message, { ...options, retryable: false });
  }
}

/** Fewer than k usable shards: the data cannot be rebuilt from what is present. */
export class TooFewShardsError extends CairnError {
  override readonly name: string = 'TooFewShardsError';
  readonly needed: number;
  readonly present: number;
  constructor(needed: number, present: number, context = 'reconstruct') {
    super('ETOOFEWSHARDS', `Cannot ${context}: ${needed} shards needed, ${present} present`, { retryable: false });
    this.needed = needed;
    this.present = present;
  }
}

/** Stored bytes do not match their checksum. The copy is treated as missing. */
export class ChecksumMismatchError extends CairnError {
  override readonly name: string = 'ChecksumMismatchError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('ECHECKSUM', message, { ...options, retryable: false });
  }
}

/**
 * A shard is intact but is not the one its extent record names: another size, or framed with
 * another seed (a stale generation, another shard's bytes, data PUT under its key). Every block
 * of it is wrong for the reader.
 */
export class ShardMismatchError extends ChecksumMismatchError {
  override readonly name: string = 'ShardMismatchError';
}

/** A local file or directory operation failed (missing file, full disk, permissions). */
export class StorageIoError extends CairnError {
  override readonly name: string = 'StorageIoError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('EIO', message, options);
  }
}

/** A dependency (etcd, a node, S3) did not answer in time or refused the connection. */
export class UnavailableError extends CairnError {
  override readonly name: string = 'UnavailableError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('EUNAVAILABLE', message, { retryable: true, ...options });
  }
}

/**
 * A server limit refused the action (the frontend's --max-volumes, say): retryable, as the limit
 * frees when others finish. The message names the limit and the flag that sets it.
 */
export class LimitExceededError extends CairnError {
  override readonly name: string = 'LimitExceededError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('ELIMIT', message, { retryable: true, ...options });
  }
}

/** Short human text for any thrown value, for one-line CLI errors and logs. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** put() of a key that already exists. */
export class ShardExistsError extends CairnError {
  override readonly name: string = 'ShardExistsError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('EEXIST', message, { ...options, retryable: false });
  }
}

/** get() of a key that does not exist. */
export class ShardNotFoundError extends CairnError {
  override readonly name: string = 'ShardNotFoundError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('ENOENT', message, { ...options, retryable: false });
  }
}

/** A volume's policy cannot be met by the current topology. */
export class PlacementError extends CairnError {
  override readonly name: string = 'PlacementError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('EPLACEMENT', message, { ...options, retryable: false });
  }
}

/** The disk (or a configured capacity) is full. Not retryable on this target. */
export class DiskFullError extends StorageIoError {
  override readonly name: string = 'DiskFullError';
  override readonly code: string = 'ENOSPC';
}

/** A read range lies outside the shard (HTTP 416). A bad request like any other. */
export class RangeOutsideError extends InvalidArgumentError {
  override readonly name: string = 'RangeOutsideError';
  override readonly code: string = 'ERANGE';
}

/** A target (node or S3) refused our credentials. Not retryable: the configuration is wrong. */
export class AuthRejectedError extends CairnError {
  override readonly name: string = 'AuthRejectedError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('EAUTH', message, { ...options, retryable: false });
  }
}

/**
 * A commit, or a journal append, was refused because the writer no longer holds the volume's lock
 * at its epoch: the lock expired or another writer took it over. Never retryable: the writer must
 * stop and re-attach. Raised by the metadata adapters and the storage nodes; the engine, the
 * cache and the simulator act on it, so it belongs to the shared vocabulary.
 */
export class FencedError extends CairnError {
  override readonly name = 'FencedError';
  /**
   * Extents whose new records a multi-batch commit did publish before the batch that was refused
   * (ExtentMapStore.commit). Empty for a refusal of a whole commit, or of a journal append.
   */
  readonly published: readonly number[];
  constructor(message: string, options: { published?: readonly number[] } = {}) {
    super('EFENCED', message, { retryable: false });
    this.published = options.published ?? [];
  }
}

/**
 * A volume's map root changed between reading it and swapping it, by someone allowed to change
 * it while the writer holds the volume (a repair or scrub moving shards of one generation): the
 * commit can be rebuilt on the new root and retried. Not fencing: the writer still holds the lock.
 */
export class MapRootMovedError extends CairnError {
  override readonly name = 'MapRootMovedError';
  constructor(message: string) {
    super('EMOVED', message, { retryable: true });
  }
}

/**
 * A multi-batch extent-map commit failed part-way for a reason other than fencing (etcd did not
 * answer): the batches before it are published, the failing batch may or may not be, the rest
 * are not. Retryable as its cause is.
 */
export class PartialCommitError extends CairnError {
  override readonly name = 'PartialCommitError';
  constructor(
    message: string,
    /** Extents whose new records are known to be published. */
    readonly published: readonly number[],
    cause: unknown,
  ) {
    super(cause instanceof CairnError ? cause.code : 'EUNAVAILABLE', message, {
      retryable: cause instanceof CairnError ? cause.retryable : true,
      cause,
    });
  }
}

/** The extents a failed extent-map commit is known to have published (none for other errors). */
export function publishedBefore(err: unknown): readonly number[] {
  return err instanceof FencedError || err instanceof PartialCommitError ? err.published : [];
}
