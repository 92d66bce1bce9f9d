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

/** The object is in a state that refuses the request (a snapshot with clones, say); it says what to do. */
export class PreconditionError extends CairnError {
  override readonly name = 'PreconditionError';
  constructor(message: string) {
    super('EPRECONDITION', message, { retryable: false });
  }
}

export { FencedError } from '../core/index.js';
