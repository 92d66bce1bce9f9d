/**
 * VolumeCipher: one encrypted volume's keys at work. The frontend builds one from the unwrapped
 * data key and hands it to the volume engine (extent units, VolumeEngine's ExtentCipher port) and
 * to the journal (records). Nothing below the frontend ever sees a key or a plaintext byte of an
 * encrypted volume: shards, journal segments and S3 objects hold ciphertext only.
 */
import { assert } from '../core/index.js';
import type { CryptPool } from './pool.js';
import { ctrRecord, cryptUnitBytes, dataKeyBytes, journalKeyOf } from './units.js';

export class VolumeCipher {
  readonly unitBytes = cryptUnitBytes;
  private readonly journalKey: Buffer;

  constructor(
    private readonly dataKey: Buffer,
    private readonly pool: CryptPool,
  ) {
    assert(dataKey.length === dataKeyBytes, `a data key has ${dataKeyBytes} bytes, not ${dataKey.length}`);
    this.journalKey = journalKeyOf(dataKey);
  }

  /** Enciphers `bytes` in place: bytes [offset, offset + length) of extent `extent` in `generation`. */
  encrypt(bytes: Uint8Array, at: { extent: number; generation: number; offset: number }): Promise<void> {
    return this.pool.xts('encrypt', this.dataKey, bytes, this.unitsAt(at));
  }

  /** Deciphers `bytes` in place (as encrypt). */
  decrypt(bytes: Uint8Array, at: { extent: number; generation: number; offset: number }): Promise<void> {
    return this.pool.xts('decrypt', this.dataKey, bytes, this.unitsAt(at));
  }

  /** A journal record's bytes, enciphered (or deciphered: the same) in place for (epoch, lsn). */
  sealRecord(bytes: Uint8Array, epoch: number, lsn: number): Promise<void> {
    return this.pool.ctr(this.journalKey, bytes, epoch, lsn);
  }

  /** As sealRecord, on this thread: replay reads records in a synchronous callback. */
  openRecordSync(bytes: Uint8Array, epoch: number, lsn: number): void {
    bytes.set(ctrRecord(this.journalKey, bytes, epoch, lsn));
  }

  private unitsAt(at: { extent: number; generation: number; offset: number }) {
    assert(at.offset % cryptUnitBytes === 0, `offset ${at.offset} is not on a ${cryptUnitBytes}-byte unit`);
    return { extent: at.extent, generation: at.generation, unit: at.offset / cryptUnitBytes };
  }
}
