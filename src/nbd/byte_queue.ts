/**
 * A FIFO of received bytes that the session parses from: chunks go in as the socket delivers them
 * (any split, down to one byte), fixed-size structures come out whole.
 *
 * What it keeps true: `length` is the number of bytes held; take(n) returns exactly n bytes in
 * arrival order (a view into one chunk when they lie in one, else a fresh copy); skip(n) drops at
 * most n bytes without copying, which is how oversized payloads are discarded in bounded memory.
 * Every operation is O(bytes moved), never O(chunks held): a client dribbling one-byte segments
 * into a 32 MiB WRITE must not make us quadratic, nor cost an object per byte, so small chunks
 * are copied into shared staging buffers.
 *
 * Large chunks are kept, not copied: the caller hands over ownership (a socket's 'data' buffers
 * are fresh for every read), which saves a copy of every WRITE payload.
 *
 * What it leaves out: limits. The session bounds what it holds by pausing the socket.
 */
import { assert, KiB } from '../core/index.js';

/** Chunks smaller than this are copied into a staging buffer instead of kept as objects. */
const smallChunkBytes = 4 * KiB;
/** Size of one staging buffer: 16 small chunks at least, so per-object overhead stays small. */
const stagingBytes = 64 * KiB;

export class ByteQueue {
  private chunks: Uint8Array[] = [];
  /** Index of the first live chunk; chunks before it are consumed (compacted now and then). */
  private first = 0;
  /** Bytes of chunks[first] already consumed. */
  private head = 0;
  private held = 0;
  /** Where small chunks are copied; a new one only when this one is full. */
  private staging: Uint8Array | null = null;
  private stagingUsed = 0;
  /**
   * Where in `staging` the last chunk starts when that chunk is a view of staging that the next
   * small chunk may widen; -1 when the next small chunk starts a new view (after a large chunk,
   * or once the view was consumed).
   */
  private stagingViewStart = -1;

  get length(): number {
    return this.held;
  }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.held += chunk.length;
    if (chunk.length >= smallChunkBytes) {
      // Later small chunks go after this one: in a new view of the same staging buffer (a new
      // buffer per small chunk after each large one was 64 KiB per 4 KiB WRITE + FLUSH, and the
      // garbage collector's busiest cause on the commit path).
      this.stagingViewStart = -1;
      this.chunks.push(chunk);
      return;
    }
    if (this.staging === null || this.stagingUsed + chunk.length > this.staging.length) {
      this.staging = new Uint8Array(stagingBytes);
      this.stagingUsed = 0;
      this.stagingViewStart = -1;
    }
    if (this.stagingViewStart < 0) {
      this.stagingViewStart = this.stagingUsed;
      this.chunks.push(this.staging.subarray(this.stagingUsed, this.stagingUsed));
    }
    this.staging.set(chunk, this.stagingUsed);
    this.stagingUsed += chunk.length;
    // The last chunk is the staging view; widen it. Its start does not move, so `head` stays valid.
    this.chunks[this.chunks.length - 1] = this.staging.subarray(this.stagingViewStart, this.stagingUsed);
  }

  /** Removes and returns the next `n` bytes; the caller checked `length >= n`. */
  take(n: number): Uint8Array {
    if (!(Number.isSafeInteger(n) && n >= 0 && n <= this.held))
      assert(false, `take(${n}) with ${this.held} bytes held`);
    if (n === 0) return new Uint8Array(0);
    const first = this.chunks[this.first];
    assert(first !== undefined);
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.advance(n);
      return out;
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[this.first];
      assert(chunk !== undefined);
      const count = Math.min(chunk.length - this.head, n - filled);
      out.set(chunk.subarray(this.head, this.head + count), filled);
      filled += count;
      this.advance(count);
    }
    return out;
  }

  /** Drops up to `n` bytes; returns how many were dropped. */
  skip(n: number): number {
    assert(Number.isSafeInteger(n) && n >= 0);
    let dropped = 0;
    while (dropped < n && this.held > 0) {
      const chunk = this.chunks[this.first];
      assert(chunk !== undefined);
      const count = Math.min(chunk.length - this.head, n - dropped);
      this.advance(count);
      dropped += count;
    }
    return dropped;
  }

  clear(): void {
    this.chunks = [];
    this.first = 0;
    this.head = 0;
    this.held = 0;
    this.staging = null;
    this.stagingViewStart = -1;
  }

  private advance(n: number): void {
    const chunk = this.chunks[this.first];
    assert(chunk !== undefined && this.head + n <= chunk.length);
    this.head += n;
    this.held -= n;
    if (this.head < chunk.length) return;
    // The chunk is used up. If it was the staging view, stop appending to it: new bytes would
    // widen a chunk we no longer look at.
    if (this.first === this.chunks.length - 1) this.stagingViewStart = -1;
    this.first += 1;
    this.head = 0;
    if (this.first >= 1024 && this.first * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.first);
      this.first = 0;
    }
  }
}
