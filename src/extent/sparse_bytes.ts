/**
 * SparseBytes: the bytes written to parts of one extent, as sorted, disjoint chunks. The write-back
 * cache keeps what a client wrote this way, so a 4 KiB write to a 4 MiB extent holds 4 KiB of
 * memory, not the extent.
 *
 * What it keeps true: chunks are sorted by start and never overlap; a later write wins where it
 * overlaps an earlier one; `bytes` is the sum of chunk lengths. Overlapped chunks are trimmed by
 * taking views of them (no copy), so a write never copies bytes other than its own.
 * What it leaves out: merging adjacent chunks (a run of sequential 4 KiB writes stays 4 KiB
 * chunks; merging would copy the growing run at every write, quadratic in the extent).
 */
import { assert } from '../core/index.js';

export interface Chunk {
  /** Offset of data[0] within the extent. */
  readonly start: number;
  readonly data: Uint8Array;
}

export class SparseBytes {
  private chunks: Chunk[] = [];
  private total = 0;

  /** Bytes held. */
  get bytes(): number {
    return this.total;
  }

  get size(): number {
    return this.chunks.length;
  }

  /** The chunks, in order. The caller must not change them. */
  list(): readonly Chunk[] {
    return this.chunks;
  }

  /** Index of the first chunk whose end is after `offset`. */
  private firstEndingAfter(offset: number): number {
    let lo = 0;
    let hi = this.chunks.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const c = this.chunks[mid]!;
      if (c.start + c.data.length <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * Takes `data` (owned from now on: the caller must not change it) as the bytes of
   * [start, start + data.length).
   */
  write(start: number, data: Uint8Array): void {
    assert(Number.isSafeInteger(start) && start >= 0, 'bad chunk start');
    if (data.length === 0) return;
    const end = start + data.length;
    const first = this.firstEndingAfter(start);
    let last = first;
    const keep: Chunk[] = [];
    while (last < this.chunks.length && this.chunks[last]!.start < end) {
      const c = this.chunks[last]!;
      const cEnd = c.start + c.data.length;
      this.total -= c.data.length;
      if (c.start < start) keep.push({ start: c.start, data: c.data.subarray(0, start - c.start) });
      if (cEnd > end) keep.push({ start: end, data: c.data.subarray(end - c.start) });
      last++;
    }
    const head = keep.filter((k) => k.start < start);
    const tail = keep.filter((k) => k.start >= end);
    const inserted = [...head, { start, data }, ...tail];
    for (const k of inserted) this.total += k.data.length;
    this.chunks.splice(first, last - first, ...inserted);
  }

  /** Writes every chunk of `other` over this one (other's bytes win), taking them. */
  writeAll(other: SparseBytes): void {
    for (const c of other.chunks) this.write(c.start, c.data);
  }

  /** True when every byte of [start, end) is held. */
  covers(start: number, end: number): boolean {
    if (start >= end) return true;
    let at = start;
    for (let i = this.firstEndingAfter(start); i < this.chunks.length && at < end; i++) {
      const c = this.chunks[i]!;
      if (c.start > at) return false;
      at = c.start + c.data.length;
    }
    return at >= end;
  }

  /** True when any byte of [start, end) is held. */
  intersects(start: number, end: number): boolean {
    if (start >= end) return false;
    const i = this.firstEndingAfter(start);
    return i < this.chunks.length && this.chunks[i]!.start < end;
  }

  /** Copies the held bytes of [start, end) into `out` at `at + (byte - start)`; leaves the rest. */
  copyInto(start: number, end: number, out: Uint8Array, at: number): void {
    for (let i = this.firstEndingAfter(start); i < this.chunks.length; i++) {
      const c = this.chunks[i]!;
      if (c.start >= end) break;
      const from = Math.max(start, c.start);
      const to = Math.min(end, c.start + c.data.length);
      out.set(c.data.subarray(from - c.start, to - c.start), at + from - start);
    }
  }

  /** Removes every chunk, returning them as a new SparseBytes (a snapshot that owns them). */
  detach(): SparseBytes {
    const out = new SparseBytes();
    out.chunks = this.chunks;
    out.total = this.total;
    this.chunks = [];
    this.total = 0;
    return out;
  }
}
