/**
 * Volume offsets to extents to shard ranges: pure arithmetic, no I/O.
 *
 * A volume of `sizeBytes` is cut into extents of `extentBytes`; extent e covers volume bytes
 * [e * extentBytes, min(sizeBytes, (e + 1) * extentBytes)). An extent is coded as k data shards
 * of shardBytes = ceil(extentBytes / k); data shard i holds extent bytes [i * shardBytes,
 * (i + 1) * shardBytes), so a small read touches one range of one data shard.
 *
 * Worked example: extentBytes 4 MiB, k 4, so shardBytes 1 MiB. A 8 KiB read at volume offset
 * 4 MiB + 1 MiB - 4 KiB is in extent 1 at [1 MiB - 4 KiB, 1 MiB + 4 KiB): the last 4 KiB of data
 * shard 0 and the first 4 KiB of data shard 1.
 */
import { assert, assertByteCount } from '../core/index.js';

export interface ExtentGeometry {
  readonly sizeBytes: number;
  readonly extentBytes: number;
  /** Data shards per extent. */
  readonly k: number;
}

/** A piece of a volume request that lies inside one extent. */
export interface ExtentPiece {
  readonly extent: number;
  /** Offset inside the extent. */
  readonly offset: number;
  readonly length: number;
  /** Offset of this piece inside the caller's buffer. */
  readonly bufferOffset: number;
}

/** A piece of an extent range that lies inside one data shard. */
export interface ShardPiece {
  readonly shard: number;
  readonly offset: number;
  readonly length: number;
  /** Offset of this piece inside the extent range's buffer. */
  readonly bufferOffset: number;
}

export function extentCount(g: Pick<ExtentGeometry, 'sizeBytes' | 'extentBytes'>): number {
  return Math.ceil(g.sizeBytes / g.extentBytes);
}

export function shardBytesOf(g: ExtentGeometry): number {
  return Math.ceil(g.extentBytes / g.k);
}

/** Bytes of extent `e` inside the volume (the last extent may be short). */
export function extentLength(g: ExtentGeometry, e: number): number {
  return Math.min(g.extentBytes, g.sizeBytes - e * g.extentBytes);
}

/** Splits the volume range [offset, offset + length) into per-extent pieces, in order. */
export function splitByExtent(g: ExtentGeometry, offset: number, length: number): ExtentPiece[] {
  assertByteCount(offset, 'offset');
  assertByteCount(length, 'length');
  assert(offset + length <= g.sizeBytes, `range [${offset}, ${offset + length}) is past the volume end ${g.sizeBytes}`);
  const pieces: ExtentPiece[] = [];
  let at = offset;
  while (at < offset + length) {
    const extent = Math.floor(at / g.extentBytes);
    const inExtent = at - extent * g.extentBytes;
    const take = Math.min(g.extentBytes - inExtent, offset + length - at);
    pieces.push({ extent, offset: inExtent, length: take, bufferOffset: at - offset });
    at += take;
  }
  return pieces;
}

/** Splits the extent range [offset, offset + length) into per-data-shard pieces, in order. */
export function splitByShard(shardBytes: number, offset: number, length: number): ShardPiece[] {
  const pieces: ShardPiece[] = [];
  let at = offset;
  while (at < offset + length) {
    const shard = Math.floor(at / shardBytes);
    const inShard = at - shard * shardBytes;
    const take = Math.min(shardBytes - inShard, offset + length - at);
    pieces.push({ shard, offset: inShard, length: take, bufferOffset: at - offset });
    at += take;
  }
  return pieces;
}

/**
 * A set of disjoint, sorted half-open byte ranges: the dirty parts of an extent. Adding merges
 * overlapping and touching ranges, so the set stays minimal and `covers` is a binary search.
 */
export class RangeSet {
  private starts: number[] = [];
  private ends: number[] = [];

  get size(): number {
    return this.starts.length;
  }

  /** Total bytes covered. */
  get bytes(): number {
    let total = 0;
    for (let i = 0; i < this.starts.length; i++) total += this.ends[i]! - this.starts[i]!;
    return total;
  }

  add(start: number, end: number): void {
    assert(start <= end, 'range ends before it starts');
    if (start === end) return;
    const starts: number[] = [];
    const ends: number[] = [];
    let s = start;
    let e = end;
    let placed = false;
    for (let i = 0; i < this.starts.length; i++) {
      const a = this.starts[i]!;
      const b = this.ends[i]!;
      if (b < s) {
        starts.push(a);
        ends.push(b);
      } else if (a > e) {
        if (!placed) {
          starts.push(s);
          ends.push(e);
          placed = true;
        }
        starts.push(a);
        ends.push(b);
      } else {
        s = Math.min(s, a);
        e = Math.max(e, b);
      }
    }
    if (!placed) {
      starts.push(s);
      ends.push(e);
    }
    this.starts = starts;
    this.ends = ends;
  }

  /** Removes [start, end) from the set. */
  remove(start: number, end: number): void {
    assert(start <= end, 'range ends before it starts');
    // An empty range removes nothing: cutting at it would split one range into two that touch.
    if (start === end) return;
    const starts: number[] = [];
    const ends: number[] = [];
    for (let i = 0; i < this.starts.length; i++) {
      const a = this.starts[i]!;
      const b = this.ends[i]!;
      if (b <= start || a >= end) {
        starts.push(a);
        ends.push(b);
        continue;
      }
      if (a < start) {
        starts.push(a);
        ends.push(start);
      }
      if (b > end) {
        starts.push(end);
        ends.push(b);
      }
    }
    this.starts = starts;
    this.ends = ends;
  }

  /** True when [start, end) lies entirely inside the set. */
  covers(start: number, end: number): boolean {
    if (start === end) return true;
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.ends[mid]! <= start) lo = mid + 1;
      else if (this.starts[mid]! > start) hi = mid - 1;
      else return this.ends[mid]! >= end;
    }
    return false;
  }

  /** True when any byte of [start, end) is in the set. */
  intersects(start: number, end: number): boolean {
    if (start >= end) return false;
    for (let i = 0; i < this.starts.length; i++) if (this.starts[i]! < end && this.ends[i]! > start) return true;
    return false;
  }

  ranges(): [number, number][] {
    return this.starts.map((s, i) => [s, this.ends[i]!]);
  }

  clear(): void {
    this.starts = [];
    this.ends = [];
  }

  clone(): RangeSet {
    const copy = new RangeSet();
    copy.starts = [...this.starts];
    copy.ends = [...this.ends];
    return copy;
  }
}
