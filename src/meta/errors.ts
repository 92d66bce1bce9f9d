/** Errors of the metadata layer. Each says what was asked and about which object. */
import { CairnError } from '../core/index.js';

export class NotFoundError extends CairnError {
  override readonly name = 'NotFoundError';
  constructor(message: string) {
    super('ENOTFOUND', message, { retryable: false });
  }
}

export class AlreadyExistsError extends CairnError {
  override readonly name = 'AlreadyExistsError';
  constructor(message: string) {
    super('EEXIST', message, { retryable: false });
  }
}

/** Another writer holds the volume's lock. Retryable: the lock may be released or expire. */
export class VolumeLockedError extends CairnError {
  override readonly name = 'VolumeLockedError';
  constructor(
    message: string,
    readonly owner: string,
    readonly epoch: number,
  ) {
    super('ELOCKED', message, { retryable: true });
  }
}

/**
 * A commit was refused because the writer no longer holds the lock at its epoch: the lock expired
 * or another writer took it over. Never retryable: the writer must stop and re-attach.
 */
export class FencedError extends CairnError {
  override readonly name = 'FencedError';
  constructor(message: string) {
    super('EFENCED', message, { retryable: false });
  }
}
