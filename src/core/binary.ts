/**
 * Little-endian binary fields, written and read in order: the journal's wire payloads and the
 * extent map's pages are both built from them.
 */
import { assert } from './assert.js';

/** Builds bytes from fields; grows as needed. */
export class BinaryWriter {
  private bytes = new Uint8Array(128);
  private view = new DataView(this.bytes.buffer);
  private at = 0;

  u8(value: number): this {
    this.room(1);
    this.view.setUint8(this.at, value);
    this.at += 1;
    return this;
  }
  u16(value: number): this {
    this.room(2);
    this.view.setUint16(this.at, value, true);
    this.at += 2;
    return this;
  }
  u32(value: number): this {
    assert(Number.isInteger(value) && value >= 0 && value <= 0xffff_ffff, `u32 out of range: ${value}`);
    this.room(4);
    this.view.setUint32(this.at, value, true);
    this.at += 4;
    return this;
  }
  u64(value: number): this {
    assert(Number.isSafeInteger(value) && value >= 0, `u64 field must be a safe whole number: ${value}`);
    this.room(8);
    this.view.setBigUint64(this.at, BigInt(value), true);
    this.at += 8;
    return this;
  }
  /** A u16 byte length, then the UTF-8 bytes (at most `bytesMax`, and at most 65535). */
  str(value: string, bytesMax: number): this {
    const encoded = Buffer.from(value, 'utf8');
    assert(encoded.length <= bytesMax && encoded.length <= 0xffff, `string field longer than ${bytesMax} bytes`);
    this.u16(encoded.length);
    return this.raw(encoded);
  }
  /** Bytes as they are, no length. */
  raw(value: Uint8Array): this {
    this.room(value.length);
    this.bytes.set(value, this.at);
    this.at += value.length;
    return this;
  }
  /** What was written: a view of the writer's buffer (slice() it to keep it long). */
  done(): Uint8Array {
    return this.bytes.subarray(0, this.at);
  }
  private room(n: number): void {
    if (this.at + n <= this.bytes.length) return;
    const grown = new Uint8Array(Math.max(this.bytes.length * 2, this.at + n));
    grown.set(this.bytes.subarray(0, this.at));
    this.bytes = grown;
    this.view = new DataView(grown.buffer);
  }
}

/** Reads fields in order; any overrun or bad value throws `fail(reason)`. */
export class BinaryReader {
  private readonly view: DataView;
  /** The next byte to read (a reader may move it to a field it found earlier). */
  at = 0;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly fail: (reason: string) => Error,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  u8(field: string): number {
    this.need(1, field);
    const value = this.view.getUint8(this.at);
    this.at += 1;
    return value;
  }
  u16(field: string): number {
    this.need(2, field);
    const value = this.view.getUint16(this.at, true);
    this.at += 2;
    return value;
  }
  u32(field: string): number {
    this.need(4, field);
    const value = this.view.getUint32(this.at, true);
    this.at += 4;
    return value;
  }
  u64(field: string): number {
    this.need(8, field);
    const value = this.view.getBigUint64(this.at, true);
    this.at += 8;
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw this.fail(`${field} is above 2^53 - 1`);
    return Number(value);
  }
  str(field: string, bytesMax: number): string {
    const length = this.u16(`${field} length`);
    if (length > bytesMax) throw this.fail(`${field} is ${length} bytes, more than ${bytesMax}`);
    this.need(length, field);
    const text = Buffer.from(this.bytes.buffer, this.bytes.byteOffset + this.at, length).toString('utf8');
    this.at += length;
    return text;
  }
  /** The next `n` bytes (a view, no copy). */
  raw(n: number, field: string): Uint8Array {
    this.need(n, field);
    const out = this.bytes.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }
  /** Everything left (a view, no copy). */
  rest(): Uint8Array {
    const out = this.bytes.subarray(this.at);
    this.at = this.bytes.length;
    return out;
  }
  end(): void {
    if (this.at !== this.bytes.length) throw this.fail(`${this.bytes.length - this.at} unexpected trailing bytes`);
  }
  private need(n: number, field: string): void {
    if (this.at + n > this.bytes.length) throw this.fail(`the payload ends before ${field}`);
  }
}
