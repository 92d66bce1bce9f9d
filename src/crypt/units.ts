/**
 * The byte work of volume encryption, synchronous and pure of I/O: AES-256-XTS over 4 KiB units of
 * an extent, and AES-256-CTR over journal records. Run on the main thread for small jobs and in
 * the crypto pool's workers (worker.ts) for large ones; both call these functions, so the two
 * paths cannot disagree.
 *
 * Extent units. Unit u of extent e in generation g is enciphered under the volume's 512-bit XTS
 * key with the 16-byte tweak [g as u64 LE | e as u32 LE | u as u32 LE]. Every (generation,
 * extent, unit) is written once (a generation is never reused, docs/security.md), so the same
 * plaintext at the same place in two generations or two snapshots gives unrelated ciphertext,
 * and a block moved to another place does not decrypt there.
 *
 * Journal records. A record's bytes are enciphered with AES-256-CTR under a key derived from the
 * data key, the counter block starting at [epoch as u32 BE | lsn as u64 BE | 0 as u32]: a writer
 * never appends two records under one (epoch, LSN) (journal.ts gives every try a new LSN, and a
 * new writer a new epoch), so no counter block is ever used twice.
 */
import { createCipheriv, createDecipheriv, createHmac } from 'node:crypto';

/** Bytes of one encryption unit: the block status and zero-block granularity too. */
export const cryptUnitBytes = 4096;
/** Bytes of a volume data key: two AES-256 keys (XTS). */
export const dataKeyBytes = 64;

/** Where a run of units sits: its extent, the generation it is written in, and the first unit. */
export interface UnitPosition {
  readonly extent: number;
  readonly generation: number;
  /** Index of the first unit of the run within its extent (byte offset / cryptUnitBytes). */
  readonly unit: number;
}

/** The XTS tweak of one unit. */
export function unitTweak(at: UnitPosition, i: number, out: Buffer = Buffer.alloc(16)): Buffer {
  out.writeUInt32LE(at.generation % 2 ** 32, 0);
  out.writeUInt32LE(Math.floor(at.generation / 2 ** 32), 4);
  out.writeUInt32LE(at.extent, 8);
  out.writeUInt32LE(at.unit + i, 12);
  return out;
}

/**
 * Enciphers (or deciphers) `bytes` in place: consecutive units starting at `at`. The length must
 * be a whole number of units (the caller aligns reads and sizes).
 */
export function xtsUnits(key: Uint8Array, bytes: Uint8Array, at: UnitPosition, encrypt: boolean): void {
  if (bytes.length % cryptUnitBytes !== 0) throw new RangeError(`${bytes.length} bytes is not a whole number of units`);
  const tweak = Buffer.alloc(16);
  for (let i = 0, off = 0; off < bytes.length; i++, off += cryptUnitBytes) {
    unitTweak(at, i, tweak);
    const c = encrypt ? createCipheriv('aes-256-xts', key, tweak) : createDecipheriv('aes-256-xts', key, tweak);
    const unit = bytes.subarray(off, off + cryptUnitBytes);
    const out = c.update(unit);
    c.final();
    unit.set(out);
  }
}

/** The CTR key for journal records, derived from the data key so one wrapped key covers both. */
export function journalKeyOf(dataKey: Uint8Array): Buffer {
  return createHmac('sha256', dataKey).update('cairn journal record key v1').digest();
}

/** The first counter block of record (epoch, lsn). */
export function recordCounter(epoch: number, lsn: number): Buffer {
  const iv = Buffer.alloc(16);
  iv.writeUInt32BE(epoch, 0);
  iv.writeUInt32BE(Math.floor(lsn / 2 ** 32), 4);
  iv.writeUInt32BE(lsn % 2 ** 32, 8);
  return iv;
}

/** Enciphers or deciphers (the same operation in CTR) a journal record's bytes, into a new array. */
export function ctrRecord(journalKey: Uint8Array, bytes: Uint8Array, epoch: number, lsn: number): Uint8Array {
  const c = createCipheriv('aes-256-ctr', journalKey, recordCounter(epoch, lsn));
  const out = c.update(bytes);
  c.final();
  return out;
}
