/**
 * The journal record: what a writer appends to a journal segment, byte for byte the same on the
 * wire and on disk. Pure: no I/O, no clocks.
 *
 *   record (little-endian, at any byte offset; no alignment or padding):
 *     [0, 4)    magic "CRNJ"
 *     [4, 6)    format version, 1
 *     [6, 8)    v = bytes of the volume id, 1..64
 *     [8, 12)   T = bytes of the whole record, header + data + trailer
 *     [12, 16)  epoch (u32): the writer's fencing epoch
 *     [16, 24)  lsn (u64, below 2^53): the record's log sequence number in its volume
 *     [24, 28)  n = number of ranges
 *     [28, 32)  d = data bytes
 *     [32, 36)  CRC-32 of bytes [0, 32): lets a reader trust T before it reads T bytes
 *     [36, 36 + v)            volume id, ASCII [A-Za-z0-9_-]
 *     n range entries of 16:  volume byte offset (u64), length (u32), kind (u8: 0 data, 1 zero), 3 zero bytes
 *     [H, H + d)              data: the bytes of the data ranges, concatenated in range order
 *     [H + d, T)              CRC-32 of bytes [0, H + d): the record checksum
 *   where H = 36 + v + 16 n and T = H + d + 4.
 *
 * Worked example: volume "0a1b2c3d4e5f6071" (v = 16), one 4096-byte data range: H = 36 + 16 + 16
 * = 68, T = 68 + 4096 + 4 = 4168 bytes, 72 bytes (1.8 %) of overhead.
 *
 * A zero range ("kind 1") says "these bytes are zero" without carrying them: WRITE_ZEROES and
 * TRIM of a large range cost 16 bytes, not the range. Ranges are applied in order; a later range
 * wins where two overlap.
 *
 * What it keeps true: decodeRecord() never throws on any input; it says `ok`, `end` (zeros: the
 * unwritten rest of a preallocated segment), `torn` (the bytes stop inside a record) or `corrupt`
 * (the bytes are all there but do not check), with the reason. Every field of an `ok` record has
 * been checked: CRCs, lengths that add up, ranges with safe offsets, the volume id's characters.
 * The CRC is CRC-32 (IEEE) from node:zlib, the same crc32Of() the shard format uses (about
 * 4-5 GB/s here); CRC-32C would need a native module for no gain that matters at this size.
 *
 * What it leaves out: what a range means to the volume (the frontend's replay applies them), and
 * which records a replay keeps (the highest epoch wins; that is the replay's rule, not the
 * format's).
 */
import { InvalidArgumentError, assert, crc32Of } from '../core/index.js';
import {
  journalEpochMax,
  journalRangeEntryBytes,
  journalRecordDataBytesMax,
  journalRecordPrefixBytes,
  journalRecordRangesMax,
  journalRecordTrailerBytes,
  journalVolumeIdBytesMax,
} from './limits.js';

export const journalRecordMagic = 0x4a4e5243; // "CRNJ" read as a little-endian u32
export const journalRecordVersion = 1;
/** Bytes of [0, 32) that the prefix CRC covers. */
const prefixCoveredBytes = 32;

/** What a range's bytes are after replay. */
export type JournalRangeKind = 'data' | 'zero';

/** A half-open range [offset, offset + length) of volume bytes, in bytes. */
export interface JournalRange {
  readonly offset: number;
  readonly length: number;
  /** Default 'data': the range's bytes follow in the record's data. */
  readonly kind?: JournalRangeKind;
}

/** A record as the writer builds it and as decodeRecord() returns it. */
export interface JournalRecord {
  /** The volume's id (VolumeRecord.id), not its name: a re-created name never sees old records. */
  readonly volume: string;
  readonly epoch: number;
  readonly lsn: number;
  readonly ranges: readonly JournalRange[];
  /**
   * The bytes of the data ranges, concatenated in range order; its length is the sum of their
   * lengths. A decoded record's data is a view into the decoded buffer (no copy): the caller
   * owns it as long as it owns that buffer.
   */
  readonly data: Uint8Array;
}

/** Why decoding stopped, for logs and for a reader that wants to know which it was. */
export type RecordDecode =
  /** A valid record of `bytes` bytes starts at the offset. */
  | { readonly kind: 'ok'; readonly record: JournalRecord; readonly bytes: number }
  /** Zeros (or nothing) where a record would start: the end of what was written. */
  | { readonly kind: 'end' }
  /** The buffer ends inside a record: `needBytes` from the offset would hold it (when known). */
  | { readonly kind: 'torn'; readonly reason: string; readonly needBytes?: number }
  /** The bytes are there but are not a valid record. */
  | { readonly kind: 'corrupt'; readonly reason: string };

const volumeIdPattern = /^[A-Za-z0-9_-]+$/;

/** True when `text` can be a journal volume id: 1-64 characters of [A-Za-z0-9_-]. */
export function isJournalVolumeId(text: string): boolean {
  return text.length >= 1 && text.length <= journalVolumeIdBytesMax && volumeIdPattern.test(text);
}

/** Returns `text` when it is a valid journal volume id; else throws InvalidArgumentError. */
export function checkJournalVolumeId(text: string): string {
  if (!isJournalVolumeId(text)) {
    throw new InvalidArgumentError(
      `Invalid journal volume id "${text.slice(0, 80)}": use 1-${journalVolumeIdBytesMax} characters of A-Z a-z 0-9 _ -`,
    );
  }
  return text;
}

/** Bytes of the record encodeRecord() would build. */
export function recordBytes(volumeIdBytes: number, rangeCount: number, dataBytes: number): number {
  return (
    journalRecordPrefixBytes +
    volumeIdBytes +
    rangeCount * journalRangeEntryBytes +
    dataBytes +
    journalRecordTrailerBytes
  );
}

/**
 * Throws InvalidArgumentError naming the first thing wrong with `record`: volume id, epoch
 * (u32), lsn (safe integer >= 0), range count, a range (offset and length safe integers, length
 * above 0, end below 2^53), data length (the sum of the data ranges, at most the limit).
 */
export function checkRecord(record: JournalRecord): void {
  const what = `Invalid journal record (lsn ${record.lsn})`;
  checkJournalVolumeId(record.volume);
  if (!Number.isInteger(record.epoch) || record.epoch < 0 || record.epoch > journalEpochMax)
    throw new InvalidArgumentError(`${what}: epoch ${record.epoch} is not a u32`);
  if (!Number.isSafeInteger(record.lsn) || record.lsn < 0)
    throw new InvalidArgumentError(`${what}: lsn must be a whole number from 0 to 2^53 - 1`);
  if (record.ranges.length > journalRecordRangesMax)
    throw new InvalidArgumentError(
      `${what}: ${record.ranges.length} ranges is more than the limit of ${journalRecordRangesMax}`,
    );
  let dataBytes = 0;
  for (const [i, range] of record.ranges.entries()) {
    const { offset, length } = range;
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(length) ||
      offset < 0 ||
      length <= 0 ||
      length > 0xffff_ffff ||
      !Number.isSafeInteger(offset + length)
    ) {
      throw new InvalidArgumentError(
        `${what}: range ${i} [${offset}, ${offset + length}) is not a non-empty range of volume bytes`,
      );
    }
    if (range.kind !== undefined && range.kind !== 'data' && range.kind !== 'zero')
      throw new InvalidArgumentError(`${what}: range ${i} has an unknown kind`);
    if ((range.kind ?? 'data') === 'data') dataBytes += length;
  }
  if (dataBytes !== record.data.length)
    throw new InvalidArgumentError(
      `${what}: its data ranges cover ${dataBytes} bytes but it carries ${record.data.length}`,
    );
  if (dataBytes > journalRecordDataBytesMax)
    throw new InvalidArgumentError(
      `${what}: ${dataBytes} data bytes is more than the limit of ${journalRecordDataBytesMax}`,
    );
}

/**
 * Encodes `record` into a new buffer (the data is copied once). Throws InvalidArgumentError when
 * the record is invalid (see checkRecord).
 * @example
 * const bytes = encodeRecord({ volume: 'a1b2', epoch: 3, lsn: 17, ranges: [{ offset: 8192, length: 4 }],
 *   data: new Uint8Array([1, 2, 3, 4]) });
 * decodeRecord(bytes).kind === 'ok';
 */
export function encodeRecord(record: JournalRecord): Uint8Array {
  checkRecord(record);
  const v = record.volume.length;
  const n = record.ranges.length;
  const d = record.data.length;
  const total = recordBytes(v, n, d);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  view.setUint32(0, journalRecordMagic, true);
  view.setUint16(4, journalRecordVersion, true);
  view.setUint16(6, v, true);
  view.setUint32(8, total, true);
  view.setUint32(12, record.epoch, true);
  view.setBigUint64(16, BigInt(record.lsn), true);
  view.setUint32(24, n, true);
  view.setUint32(28, d, true);
  view.setUint32(32, crc32Of(out.subarray(0, prefixCoveredBytes)), true);
  let at = journalRecordPrefixBytes;
  for (let i = 0; i < v; i++) out[at + i] = record.volume.charCodeAt(i);
  at += v;
  for (const range of record.ranges) {
    view.setBigUint64(at, BigInt(range.offset), true);
    view.setUint32(at + 8, range.length, true);
    view.setUint8(at + 12, range.kind === 'zero' ? 1 : 0);
    at += journalRangeEntryBytes;
  }
  out.set(record.data, at);
  at += d;
  view.setUint32(at, crc32Of(out.subarray(0, at)), true);
  assert(at + journalRecordTrailerBytes === total, 'record encoding wrote a different size than it planned');
  return out;
}

/** The fields of a record's fixed prefix, once its CRC has been checked. */
export interface RecordPrefix {
  readonly volumeIdBytes: number;
  readonly totalBytes: number;
  readonly epoch: number;
  readonly lsn: number;
  readonly rangeCount: number;
  readonly dataBytes: number;
}

/**
 * Reads the fixed prefix of the record at `at`: enough to know how many bytes the record needs
 * before reading them. Returns `end`, `torn` (fewer than 36 bytes, not all zero) or `corrupt`
 * like decodeRecord(), or the prefix.
 */
export function decodePrefix(
  bytes: Uint8Array,
  at = 0,
): { readonly kind: 'prefix'; readonly prefix: RecordPrefix } | Exclude<RecordDecode, { kind: 'ok' }> {
  assert(Number.isSafeInteger(at) && at >= 0 && at <= bytes.length, 'decode offset outside the buffer');
  const available = bytes.length - at;
  const head = bytes.subarray(at, at + Math.min(available, journalRecordPrefixBytes));
  if (isAllZero(head)) return { kind: 'end' };
  if (available < journalRecordPrefixBytes)
    return { kind: 'torn', reason: `only ${available} bytes of a record's ${journalRecordPrefixBytes}-byte prefix` };
  const view = new DataView(bytes.buffer, bytes.byteOffset + at, journalRecordPrefixBytes);
  if (view.getUint32(0, true) !== journalRecordMagic) return { kind: 'corrupt', reason: 'no record magic' };
  if (view.getUint32(32, true) !== crc32Of(head.subarray(0, prefixCoveredBytes)))
    return { kind: 'corrupt', reason: 'record prefix checksum mismatch' };
  const version = view.getUint16(4, true);
  if (version !== journalRecordVersion) return { kind: 'corrupt', reason: `unsupported record version ${version}` };
  const volumeIdBytes = view.getUint16(6, true);
  const totalBytes = view.getUint32(8, true);
  const lsnBig = view.getBigUint64(16, true);
  const rangeCount = view.getUint32(24, true);
  const dataBytes = view.getUint32(28, true);
  if (volumeIdBytes < 1 || volumeIdBytes > journalVolumeIdBytesMax)
    return { kind: 'corrupt', reason: `volume id of ${volumeIdBytes} bytes` };
  if (rangeCount > journalRecordRangesMax) return { kind: 'corrupt', reason: `${rangeCount} ranges` };
  if (dataBytes > journalRecordDataBytesMax) return { kind: 'corrupt', reason: `${dataBytes} data bytes` };
  if (lsnBig > BigInt(Number.MAX_SAFE_INTEGER)) return { kind: 'corrupt', reason: 'lsn above 2^53 - 1' };
  if (totalBytes !== recordBytes(volumeIdBytes, rangeCount, dataBytes))
    return { kind: 'corrupt', reason: `record length ${totalBytes} does not match its fields` };
  return {
    kind: 'prefix',
    prefix: { volumeIdBytes, totalBytes, epoch: view.getUint32(12, true), lsn: Number(lsnBig), rangeCount, dataBytes },
  };
}

/**
 * Decodes the record at `at` in `bytes`. Never throws on any content (only on an `at` outside
 * the buffer, a caller's bug). See RecordDecode for the four answers.
 */
export function decodeRecord(bytes: Uint8Array, at = 0): RecordDecode {
  const head = decodePrefix(bytes, at);
  if (head.kind !== 'prefix') return head;
  const { prefix } = head;
  const available = bytes.length - at;
  if (available < prefix.totalBytes)
    return {
      kind: 'torn',
      reason: `only ${available} of the record's ${prefix.totalBytes} bytes`,
      needBytes: prefix.totalBytes,
    };
  const body = bytes.subarray(at, at + prefix.totalBytes);
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const crcAt = prefix.totalBytes - journalRecordTrailerBytes;
  if (view.getUint32(crcAt, true) !== crc32Of(body.subarray(0, crcAt)))
    return { kind: 'corrupt', reason: 'record checksum mismatch' };
  let cursor = journalRecordPrefixBytes;
  let volume = '';
  for (let i = 0; i < prefix.volumeIdBytes; i++) volume += String.fromCharCode(body[cursor + i]!);
  if (!isJournalVolumeId(volume)) return { kind: 'corrupt', reason: 'volume id with invalid characters' };
  cursor += prefix.volumeIdBytes;
  const ranges: JournalRange[] = [];
  let dataBytes = 0;
  for (let i = 0; i < prefix.rangeCount; i++) {
    const offsetBig = view.getBigUint64(cursor, true);
    const length = view.getUint32(cursor + 8, true);
    const kindByte = view.getUint8(cursor + 12);
    const reserved = view.getUint8(cursor + 13) | view.getUint8(cursor + 14) | view.getUint8(cursor + 15);
    cursor += journalRangeEntryBytes;
    if (kindByte > 1 || reserved !== 0) return { kind: 'corrupt', reason: `range ${i} has an unknown kind` };
    if (length === 0 || offsetBig + BigInt(length) > BigInt(Number.MAX_SAFE_INTEGER))
      return { kind: 'corrupt', reason: `range ${i} is empty or ends above 2^53 - 1` };
    const kind: JournalRangeKind = kindByte === 0 ? 'data' : 'zero';
    if (kind === 'data') dataBytes += length;
    ranges.push({ offset: Number(offsetBig), length, kind });
  }
  if (dataBytes !== prefix.dataBytes)
    return { kind: 'corrupt', reason: `data ranges cover ${dataBytes} bytes, the record carries ${prefix.dataBytes}` };
  const record: JournalRecord = {
    volume,
    epoch: prefix.epoch,
    lsn: prefix.lsn,
    ranges,
    data: body.subarray(cursor, cursor + prefix.dataBytes),
  };
  return { kind: 'ok', record, bytes: prefix.totalBytes };
}

/**
 * Decodes every record in `bytes`, which must hold whole records back to back (as a READ answer
 * does). Stops at the first that does not decode and says why in `stop` (`end` when the buffer
 * was used up exactly).
 */
export function decodeRecords(bytes: Uint8Array): {
  readonly records: JournalRecord[];
  readonly stop: Exclude<RecordDecode, { kind: 'ok' }>;
  readonly bytes: number;
} {
  const records: JournalRecord[] = [];
  let at = 0;
  for (;;) {
    if (at === bytes.length) return { records, stop: { kind: 'end' }, bytes: at };
    const decoded = decodeRecord(bytes, at);
    if (decoded.kind !== 'ok') return { records, stop: decoded, bytes: at };
    records.push(decoded.record);
    at += decoded.bytes;
  }
}

/** The record checksum of an encoded record: its last four bytes. */
export function recordChecksum(encoded: Uint8Array): number {
  assert(encoded.length >= journalRecordPrefixBytes + journalRecordTrailerBytes, 'not an encoded record');
  return new DataView(encoded.buffer, encoded.byteOffset, encoded.byteLength).getUint32(
    encoded.length - journalRecordTrailerBytes,
    true,
  );
}

function isAllZero(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

/**
 * What a decoded record writes, range by range: data ranges as views of its data (no copy), zero
 * ranges as new zero-filled arrays. Replay hands these to the cache in LSN order.
 */
export function writesOfRecord(record: JournalRecord): { readonly offset: number; readonly data: Uint8Array }[] {
  const out: { offset: number; data: Uint8Array }[] = [];
  let at = 0;
  for (const r of record.ranges) {
    if (r.kind === 'zero') {
      out.push({ offset: r.offset, data: new Uint8Array(r.length) });
      continue;
    }
    out.push({ offset: r.offset, data: record.data.subarray(at, at + r.length) });
    at += r.length;
  }
  return out;
}
