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
  override readonly name = 'InvalidArgumentError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('EINVAL', message, { ...options, retryable: false });
  }
}

/** Fewer than k usable shards: the data cannot be rebuilt from what is present. */
export class TooFewShardsError extends CairnError {
  override readonly name = 'TooFewShardsError';
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
  override readonly name = 'ChecksumMismatchError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('ECHECKSUM', message, { ...options, retryable: false });
  }
}

/** A local file or directory operation failed (missing file, full disk, permissions). */
export class StorageIoError extends CairnError {
  override readonly name = 'StorageIoError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('EIO', message, options);
  }
}

/** A dependency (etcd, a node, S3) did not answer in time or refused the connection. */
export class UnavailableError extends CairnError {
  override readonly name = 'UnavailableError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('EUNAVAILABLE', message, { retryable: true, ...options });
  }
}

/** Short human text for any thrown value, for one-line CLI errors and logs. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
