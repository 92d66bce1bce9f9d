/**
 * The one place that turns a thrown value into what an NBD client is told: an errno for the
 * transmission phase and an NBD_REP_ERR_* for the handshake. Validation of client requests does
 * not come through here (validate.ts picks its errno directly, as the protocol prescribes);
 * this maps failures of the layers below: the export provider and the block device.
 *
 * What it keeps true: every CairnError code maps to exactly one row (docs/nbd.md shows the table);
 * anything that is not a CairnError, and every AssertionError, is a bug: EIO for the request,
 * `bug: true` so the session logs it loudly. It never throws.
 */
import { AssertionError, CairnError } from '../core/index.js';
import { nbdErrno, optionReplyCode } from './wire.js';

export interface NbdErrorMapping {
  /** Error value for a transmission-phase reply. */
  readonly errno: number;
  /** NBD_REP_ERR_* for a handshake option that failed this way (opening an export). */
  readonly optionReply: number;
  /** A programming error below us, not an operating failure: log it with its stack. */
  readonly bug: boolean;
}

const mapping = (errno: number, optionReply: number, bug = false): NbdErrorMapping => ({ errno, optionReply, bug });

/**
 * Maps an error from a provider or device call. Codes come from src/core/errors.ts (and the
 * subclasses there); ENOTFOUND is the code ExportProvider.open() throws for a missing export.
 * @example nbdErrorOf(new DiskFullError('full')).errno === nbdErrno.enospc
 */
export function nbdErrorOf(err: unknown): NbdErrorMapping {
  if (err instanceof AssertionError) return mapping(nbdErrno.eio, optionReplyCode.errUnknown, true);
  if (!(err instanceof CairnError)) return mapping(nbdErrno.eio, optionReplyCode.errUnknown, true);
  switch (err.code) {
    // A request the layer below found invalid that our edge checks let through.
    case 'EINVAL':
    case 'ERANGE':
      return mapping(nbdErrno.einval, optionReplyCode.errUnknown);
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return mapping(nbdErrno.enospc, optionReplyCode.errUnknown);
    // Writes to something read-only, or credentials refused: not permitted, do not retry.
    case 'EPERM':
    case 'EROFS':
    case 'EAUTH':
      return mapping(nbdErrno.eperm, optionReplyCode.errPolicy);
    // The volume is attached for writing by another frontend: refused by policy, not missing
    // (ERR_UNKNOWN would make clients report "no export named ...").
    case 'ELOCKED':
      return mapping(nbdErrno.eperm, optionReplyCode.errPolicy);
    // A limit of this server (too many volumes attached): refused by policy, for now.
    case 'ELIMIT':
      return mapping(nbdErrno.enomem, optionReplyCode.errPolicy);
    case 'EOVERFLOW':
      return mapping(nbdErrno.eoverflow, optionReplyCode.errTooBig);
    case 'ENOTSUP':
      return mapping(nbdErrno.enotsup, optionReplyCode.errUnsup);
    case 'ESHUTDOWN':
      return mapping(nbdErrno.eshutdown, optionReplyCode.errShutdown);
    case 'ENOTFOUND':
      return mapping(nbdErrno.eio, optionReplyCode.errUnknown);
    // Storage failures: the bytes could not be read or written now. NBD has no "try again"
    // errno, so retryable ones (EUNAVAILABLE) are EIO too; the client's own retry policy decides.
    case 'EIO':
    case 'ECHECKSUM':
    case 'ETOOFEWSHARDS':
    case 'EUNAVAILABLE':
    case 'EPLACEMENT':
    case 'ENOENT':
    case 'EEXIST':
    default:
      return mapping(nbdErrno.eio, optionReplyCode.errUnknown);
  }
}

/** Name of an NBD errno for log lines: 22 -> "EINVAL". */
export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(nbdErrno)) if (value === errno) return name.toUpperCase();
  return `errno ${errno}`;
}
