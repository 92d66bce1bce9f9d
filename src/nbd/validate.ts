/**
 * Validation of one transmission-phase request at the edge: a decoded header plus what was
 * negotiated becomes either a typed Command the device may safely be asked to run, or the errno
 * the protocol prescribes for it. Pure: no I/O, no state.
 *
 * What it keeps true: a Command's [offset, offset + length) lies inside the export, and its
 * length respects nbdRequestBytesMax where a payload is involved, so the device only has to
 * assert these facts. The number of payload bytes that follow the header (a WRITE's data) is
 * reported whether or not the request is valid, so the session can consume them and stay in step.
 *
 * Choices the protocol leaves open (see docs/nbd.md): checks run in the order unknown command,
 * read-only, not negotiated, bad flags, bad length, out of range. A READ longer than the maximum
 * payload is EOVERFLOW with structured replies, EINVAL without. Zero-length READ/WRITE/TRIM/
 * WRITE_ZEROES/CACHE succeed without touching the device; zero-length BLOCK_STATUS is EINVAL
 * (there is no descriptor we could send). FLUSH with a nonzero offset or length is EINVAL.
 */
import { nbdRequestBytesMax } from '../core/index.js';
import { commandFlag, commandType, nbdErrno, transmissionFlag, type RequestHeader } from './wire.js';

/** What the handshake settled that validation depends on. */
export interface TransmissionContext {
  readonly sizeBytes: number;
  /** Transmission flags sent to the client. */
  readonly flags: number;
  readonly structuredReplies: boolean;
  /** base:allocation was selected for this export, so BLOCK_STATUS is allowed. */
  readonly allocationContext: boolean;
}

export type Command =
  | { readonly type: 'read'; readonly offset: number; readonly length: number; readonly df: boolean }
  | { readonly type: 'write'; readonly offset: number; readonly length: number; readonly fua: boolean }
  | { readonly type: 'disc' }
  | { readonly type: 'flush' }
  | { readonly type: 'trim'; readonly offset: number; readonly length: number; readonly fua: boolean }
  | { readonly type: 'cache'; readonly offset: number; readonly length: number }
  | {
      readonly type: 'writeZeroes';
      readonly offset: number;
      readonly length: number;
      readonly fua: boolean;
      readonly noHole: boolean;
    }
  | { readonly type: 'blockStatus'; readonly offset: number; readonly length: number; readonly reqOne: boolean };

export type Checked =
  | { readonly ok: true; readonly command: Command; readonly payloadBytes: number }
  | { readonly ok: false; readonly errno: number; readonly message: string; readonly payloadBytes: number };

/** Protocol name of a command type for log lines: 0 -> "READ". */
export function commandName(type: number): string {
  switch (type) {
    case commandType.read:
      return 'READ';
    case commandType.write:
      return 'WRITE';
    case commandType.disc:
      return 'DISC';
    case commandType.flush:
      return 'FLUSH';
    case commandType.trim:
      return 'TRIM';
    case commandType.cache:
      return 'CACHE';
    case commandType.writeZeroes:
      return 'WRITE_ZEROES';
    case commandType.blockStatus:
      return 'BLOCK_STATUS';
    default:
      return `command ${type}`;
  }
}

/** Transmission flags for an export with these capabilities, after this negotiation. */
export function transmissionFlagsFor(options: {
  readonly readOnly: boolean;
  readonly flush: boolean;
  readonly fua: boolean;
  readonly trim: boolean;
  readonly writeZeroes: boolean;
  readonly multiConn: boolean;
  readonly structuredReplies: boolean;
}): number {
  let flags = transmissionFlag.hasFlags | transmissionFlag.sendCache;
  if (options.readOnly) flags |= transmissionFlag.readOnly;
  if (options.flush) flags |= transmissionFlag.sendFlush;
  if (options.fua) flags |= transmissionFlag.sendFua;
  // Trim and zeroing change data, so a read-only export does not offer them (writes get EPERM).
  if (options.trim && !options.readOnly) flags |= transmissionFlag.sendTrim;
  if (options.writeZeroes && !options.readOnly) flags |= transmissionFlag.sendWriteZeroes;
  if (options.multiConn) flags |= transmissionFlag.canMultiConn;
  // DF only means something for structured READ replies; the protocol forbids it without them.
  if (options.structuredReplies) flags |= transmissionFlag.sendDf;
  return flags;
}

export function validateRequest(header: RequestHeader, context: TransmissionContext): Checked {
  // Called for every request: plain branches, no closures or lookup objects on the way to "ok".
  const type = header.type;
  const flags = context.flags;
  const payloadBytes = type === commandType.write ? header.length : 0;

  if (type === commandType.disc) return { ok: true, command: { type: 'disc' }, payloadBytes: 0 };
  if (type > commandType.blockStatus) return refuse(nbdErrno.einval, `unknown command ${type}`, payloadBytes);

  const changesData = type === commandType.write || type === commandType.trim || type === commandType.writeZeroes;
  if (changesData && (flags & transmissionFlag.readOnly) !== 0) {
    return refuse(nbdErrno.eperm, 'the export is read-only', payloadBytes);
  }
  const negotiated =
    type === commandType.flush
      ? (flags & transmissionFlag.sendFlush) !== 0
      : type === commandType.trim
        ? (flags & transmissionFlag.sendTrim) !== 0
        : type === commandType.writeZeroes
          ? (flags & transmissionFlag.sendWriteZeroes) !== 0
          : type === commandType.blockStatus
            ? context.structuredReplies && context.allocationContext
            : true;
  if (!negotiated)
    return refuse(nbdErrno.einval, `${commandName(type)} was not negotiated for this export`, payloadBytes);

  // Flags each command accepts. FUA is valid on every command once SEND_FUA was offered.
  let allowed = (flags & transmissionFlag.sendFua) !== 0 ? commandFlag.fua : 0;
  if (type === commandType.writeZeroes) allowed |= commandFlag.noHole;
  if (type === commandType.read && (flags & transmissionFlag.sendDf) !== 0) allowed |= commandFlag.df;
  if (type === commandType.blockStatus) allowed |= commandFlag.reqOne;
  const stray = header.flags & ~allowed;
  if (stray !== 0) {
    return refuse(nbdErrno.einval, `flags 0x${stray.toString(16)} are not valid on ${commandName(type)}`, payloadBytes);
  }
  const fua = (header.flags & commandFlag.fua) !== 0;

  if (type === commandType.flush) {
    if (header.offset !== 0 || header.length !== 0) {
      return refuse(nbdErrno.einval, 'FLUSH needs offset and length 0', payloadBytes);
    }
    return { ok: true, command: { type: 'flush' }, payloadBytes };
  }

  const length = header.length;
  if ((type === commandType.read || type === commandType.write) && length > nbdRequestBytesMax) {
    // The client chose a length over the advertised maximum payload. For a structured READ the
    // protocol names EOVERFLOW ("try smaller"); otherwise it is simply an invalid request.
    const errno = type === commandType.read && context.structuredReplies ? nbdErrno.eoverflow : nbdErrno.einval;
    return refuse(errno, `length ${length} exceeds the maximum payload of ${nbdRequestBytesMax} bytes`, payloadBytes);
  }

  const size = context.sizeBytes;
  const offset = header.offset;
  if (offset === null || offset > size || length > size - offset) {
    // Writing past the end is "no space" in the protocol; reading or trimming there is invalid.
    const errno = type === commandType.write || type === commandType.writeZeroes ? nbdErrno.enospc : nbdErrno.einval;
    const where = offset === null ? 'an offset above 2^53 - 1' : `[${offset}, ${offset + length})`;
    return refuse(errno, `${where} is beyond the export size of ${size} bytes`, payloadBytes);
  }

  switch (type) {
    case commandType.read:
      return {
        ok: true,
        command: { type: 'read', offset, length, df: (header.flags & commandFlag.df) !== 0 },
        payloadBytes,
      };
    case commandType.write:
      return { ok: true, command: { type: 'write', offset, length, fua }, payloadBytes };
    case commandType.trim:
      return { ok: true, command: { type: 'trim', offset, length, fua }, payloadBytes };
    case commandType.cache:
      return { ok: true, command: { type: 'cache', offset, length }, payloadBytes };
    case commandType.writeZeroes:
      return {
        ok: true,
        command: { type: 'writeZeroes', offset, length, fua, noHole: (header.flags & commandFlag.noHole) !== 0 },
        payloadBytes,
      };
    case commandType.blockStatus:
      if (length === 0) return refuse(nbdErrno.einval, 'BLOCK_STATUS needs a nonzero length', payloadBytes);
      return {
        ok: true,
        command: { type: 'blockStatus', offset, length, reqOne: (header.flags & commandFlag.reqOne) !== 0 },
        payloadBytes,
      };
    default:
      return refuse(nbdErrno.einval, `unknown command ${type}`, payloadBytes);
  }
}

function refuse(errno: number, message: string, payloadBytes: number): Checked {
  return { ok: false, errno, message, payloadBytes };
}
