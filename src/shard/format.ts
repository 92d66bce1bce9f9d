/**
 * The on-disk and on-wire form of a shard: a 32-byte header, then each block of the shard's data
 * preceded by its CRC-32. Interleaving keeps a range read to one contiguous read (or one HTTP
 * Range request) that carries its own checksums, so every byte returned has been verified.
 *
 *   header (32 bytes, little-endian):
 *     [0, 4)   magic "CRNS"
 *     [4, 6)   format version, 1
 *     [6, 8)   reserved, 0
 *     [8, 12)  blockBytes
 *     [12, 20) dataBytes (u64)
 *     [20, 24) seed (u32): the starting value of every block CRC; 0 for a shard no record names
 *     [24, 28) reserved, 0
 *     [28, 32) CRC-32 of bytes [0, 28)
 *   block i: [CRC-32 of the block's data, started from seed (u32)][data bytes [i * blockBytes,
 *            min(dataBytes, (i + 1) * blockBytes))]
 *
 * Worked example, blockBytes 4096, dataBytes 10000: 3 blocks (4096, 4096, 1808 bytes), framed
 * size 32 + 3 * 4 + 10000 = 10044. Data range [5000, 5100) lies in block 1, which starts at
 * 32 + 1 * 4100 = 4132 and ends at 8232; its data begins 4 bytes in, so the range is framed bytes
 * [4132 + 4 + 904, 4132 + 4 + 1004).
 *
 * The seed is the end-to-end check. The writer of an extent draws a random seed for the extent,
 * records it in the extent record, and frames each shard with a seed derived from it, the
 * shard's index and its size (shardSeed() in core/extent_record.ts). A node verifies blocks with the seed in the header
 * it stores; a reader that has the record verifies them with the seed the record implies. So a
 * shard that a node holds intact but that is not the one the record names (a stale generation,
 * another extent's or shard's bytes, a PUT of other data under the key, which the node frames
 * with seed 0, a shard of another size) fails the reader's check although it passes the node's.
 * Version-1 shards written before seeds existed have 0 in these bytes, and their records no seed:
 * they verify exactly as they always did. CRCs are not a MAC: a writer who knows the seed can
 * forge a block (see docs/operations.md); the seed catches every mistake, not an attacker.
 *
 * Pure: no I/O. Stores (file, node, S3) decide how to read the framed bytes.
 */
import {
  ChecksumMismatchError,
  InvalidArgumentError,
  ShardMismatchError,
  assert,
  assertByteCount,
  checksumBlockBytes,
  crc32Of,
} from '../core/index.js';
import type { ByteRange, ShardExpectation } from '../core/index.js';

export const frameHeaderBytes = 32;
export const frameVersion = 1;
const magic = 0x534e5243; // "CRNS" read as a little-endian u32
const crcBytes = 4;

export interface FrameHeader {
  readonly blockBytes: number;
  readonly dataBytes: number;
  /** The starting value of every block CRC (0: none). */
  readonly seed: number;
}

export function blocksIn(dataBytes: number, blockBytes = checksumBlockBytes): number {
  return Math.ceil(dataBytes / blockBytes);
}

/** Total framed size of a shard holding `dataBytes` bytes. */
export function framedBytes(dataBytes: number, blockBytes = checksumBlockBytes): number {
  assertByteCount(dataBytes);
  return frameHeaderBytes + blocksIn(dataBytes, blockBytes) * crcBytes + dataBytes;
}

/** Inverse of framedBytes(): the data size of a framed object of `totalBytes`, or -1 if none fits. */
export function dataBytesOfFramed(totalBytes: number, blockBytes = checksumBlockBytes): number {
  const payload = totalBytes - frameHeaderBytes;
  if (payload < 0) return -1;
  // payload = d + 4 * ceil(d / b); d is at most payload, and the block count is close to
  // payload / (b + 4). Try the two neighbouring block counts.
  const approx = Math.floor(payload / (blockBytes + crcBytes));
  for (const n of [approx, approx + 1]) {
    const d = payload - n * crcBytes;
    if (d >= 0 && blocksIn(d, blockBytes) === n) return d;
  }
  return -1;
}

/** Frames `data` into a new buffer: header, then [crc, block] pairs, every CRC started from `seed`. */
export function encodeFrame(data: Uint8Array, seed = 0, blockBytes = checksumBlockBytes): Uint8Array {
  return encodeFrameInto(new Uint8Array(framedBytes(data.length, blockBytes)), data, seed, blockBytes);
}

/** encodeFrame() into `out`, which must be exactly framedBytes(data.length) long; returns it. */
export function encodeFrameInto(
  out: Uint8Array,
  data: Uint8Array,
  seed = 0,
  blockBytes = checksumBlockBytes,
): Uint8Array {
  assert(Number.isInteger(seed) && seed >= 0 && seed < 2 ** 32, `frame seed ${seed}`);
  assert(out.length === framedBytes(data.length, blockBytes), 'a frame buffer of the wrong size');
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  out.fill(0, 0, frameHeaderBytes); // reserved header bytes are zero (the buffer may be reused)
  writeHeader(view, { blockBytes, dataBytes: data.length, seed });
  const n = blocksIn(data.length, blockBytes);
  let at = frameHeaderBytes;
  for (let i = 0; i < n; i++) {
    const block = data.subarray(i * blockBytes, Math.min(data.length, (i + 1) * blockBytes));
    view.setUint32(at, crc32Of(block, seed), true);
    out.set(block, at + crcBytes);
    at += crcBytes + block.length;
  }
  assert(at === out.length, 'framing wrote a different size than it planned');
  return out;
}

function writeHeader(view: DataView, header: FrameHeader): void {
  view.setUint32(0, magic, true);
  view.setUint16(4, frameVersion, true);
  view.setUint32(8, header.blockBytes, true);
  view.setBigUint64(12, BigInt(header.dataBytes), true);
  view.setUint32(20, header.seed, true);
  view.setUint32(28, crc32Of(new Uint8Array(view.buffer, view.byteOffset, 28)), true);
}

/** Parses and checks a header; throws ChecksumMismatchError when it is damaged. */
export function decodeHeader(bytes: Uint8Array, what: string): FrameHeader {
  if (bytes.length < frameHeaderBytes)
    throw new ChecksumMismatchError(`${what}: shard header is truncated (${bytes.length} bytes)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, frameHeaderBytes);
  if (view.getUint32(0, true) !== magic) throw new ChecksumMismatchError(`${what}: not a Cairn shard (bad magic)`);
  if (view.getUint32(28, true) !== crc32Of(bytes.subarray(0, 28))) {
    throw new ChecksumMismatchError(`${what}: shard header checksum mismatch`);
  }
  const version = view.getUint16(4, true);
  if (version !== frameVersion) throw new ChecksumMismatchError(`${what}: unsupported shard format version ${version}`);
  const blockBytes = view.getUint32(8, true);
  const dataBytes = Number(view.getBigUint64(12, true));
  if (blockBytes === 0 || !Number.isSafeInteger(dataBytes))
    throw new ChecksumMismatchError(`${what}: shard header is inconsistent`);
  return { blockBytes, dataBytes, seed: view.getUint32(20, true) };
}

/** Where the blocks covering a data range sit in the framed object. */
export interface FramedSpan {
  /** Index of the first block covered. */
  readonly firstBlock: number;
  /** Framed byte range [start, end) holding those blocks, each with its CRC. */
  readonly start: number;
  readonly end: number;
}

/**
 * The framed bytes holding data `range` of a shard with `dataBytes` bytes. Throws
 * InvalidArgumentError when the range is not inside the shard.
 */
export function framedSpan(range: ByteRange, dataBytes: number, blockBytes = checksumBlockBytes): FramedSpan {
  checkRange(range, dataBytes);
  if (range.length === 0) return { firstBlock: 0, start: frameHeaderBytes, end: frameHeaderBytes };
  const firstBlock = Math.floor(range.offset / blockBytes);
  const lastBlock = Math.floor((range.offset + range.length - 1) / blockBytes);
  const start = frameHeaderBytes + firstBlock * (blockBytes + crcBytes);
  const lastLength = Math.min(blockBytes, dataBytes - lastBlock * blockBytes);
  const end = frameHeaderBytes + lastBlock * (blockBytes + crcBytes) + crcBytes + lastLength;
  return { firstBlock, start, end };
}

export function checkRange(range: ByteRange, dataBytes: number): void {
  const { offset, length } = range;
  if (
    !Number.isSafeInteger(offset) ||
    !Number.isSafeInteger(length) ||
    offset < 0 ||
    length < 0 ||
    offset + length > dataBytes
  ) {
    throw new InvalidArgumentError(`Range [${offset}, ${offset + length}) is outside the shard's ${dataBytes} bytes`);
  }
}

/**
 * Verifies the framed blocks in `framed` (exactly the span framedSpan() named) against `shape`
 * (the shard's size, block size and seed) and returns the data `range` as a new array. Throws
 * ChecksumMismatchError naming the first bad block.
 */
export function unframeSpan(
  framed: Uint8Array,
  span: FramedSpan,
  range: ByteRange,
  shape: FrameHeader,
  what: string,
): Uint8Array {
  const out = new Uint8Array(range.length);
  unframeSpanInto(framed, span, range, shape, what, out, 0);
  return out;
}

/** unframeSpan() into `out` at `at` (range.length bytes), for a caller that has the buffer. */
export function unframeSpanInto(
  framed: Uint8Array,
  span: FramedSpan,
  range: ByteRange,
  shape: FrameHeader,
  what: string,
  out: Uint8Array,
  at: number,
): void {
  assert(at >= 0 && at + range.length <= out.length, 'unframeSpanInto: the range does not fit the buffer');
  let written = at;
  eachVerifiedBlock(framed, span, range, shape, what, (data, blockStart) => {
    const from = Math.max(range.offset, blockStart) - blockStart;
    const to = Math.min(range.offset + range.length, blockStart + data.length) - blockStart;
    out.set(data.subarray(from, to), written);
    written += to - from;
  });
}

/** Like unframeSpan(), without copying the data out: for a server that sends the blocks on. */
export function verifySpan(
  framed: Uint8Array,
  span: FramedSpan,
  range: ByteRange,
  shape: FrameHeader,
  what: string,
): void {
  eachVerifiedBlock(framed, span, range, shape, what, () => undefined);
}

/** The shape a framed shard must have to meet `expect`: its size and seed, blocks as stored. */
export function expectedShape(stored: FrameHeader, expect: ShardExpectation | undefined): FrameHeader {
  return expect === undefined
    ? stored
    : { blockBytes: stored.blockBytes, dataBytes: expect.dataBytes, seed: expect.seed };
}

/**
 * Throws ChecksumMismatchError when a shard's stored size or seed is not what its record says:
 * the node holds a shard intact, but not the one the reader's record names.
 */
export function checkExpectation(stored: FrameHeader, expect: ShardExpectation | undefined, what: string): void {
  if (expect === undefined) return;
  checkExpectedSize(stored.dataBytes, expect, what);
  if (stored.seed !== expect.seed) {
    throw new ShardMismatchError(
      `${what}: the shard was framed with seed ${hex(stored.seed)}, its extent record implies ${hex(expect.seed)} (not the shard the record names)`,
    );
  }
}

/** The size half of checkExpectation(), for a store that learns the size before the seed. */
export function checkExpectedSize(dataBytes: number, expect: ShardExpectation | undefined, what: string): void {
  if (expect === undefined || dataBytes === expect.dataBytes) return;
  throw new ShardMismatchError(
    `${what}: the shard holds ${dataBytes} bytes, its extent record says ${expect.dataBytes} (not the shard the record names)`,
  );
}

const hex = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;

/** Checks each block's CRC of the span covering `range`, handing every verified block to `visit`. */
function eachVerifiedBlock(
  framed: Uint8Array,
  span: FramedSpan,
  range: ByteRange,
  shape: FrameHeader,
  what: string,
  visit: (data: Uint8Array, blockStart: number) => void,
): void {
  if (framed.length !== span.end - span.start) {
    throw new ChecksumMismatchError(`${what}: expected ${span.end - span.start} framed bytes, got ${framed.length}`);
  }
  if (range.length === 0) return;
  const { blockBytes, dataBytes, seed } = shape;
  const view = new DataView(framed.buffer, framed.byteOffset, framed.byteLength);
  let at = 0;
  let block = span.firstBlock;
  for (let blockStart = block * blockBytes; blockStart < range.offset + range.length; blockStart = block * blockBytes) {
    const length = Math.min(blockBytes, dataBytes - blockStart);
    assert(length > 0 && at + crcBytes + length <= framed.length, 'framed span shorter than the range');
    const data = framed.subarray(at + crcBytes, at + crcBytes + length);
    if (view.getUint32(at, true) !== crc32Of(data, seed)) {
      throw new ChecksumMismatchError(
        `${what}: checksum mismatch in block ${block} (bytes [${blockStart}, ${blockStart + length}))`,
      );
    }
    visit(data, blockStart);
    at += crcBytes + length;
    block += 1;
  }
}

/**
 * Checks a whole framed shard (header, size, every block) without copying it; returns its
 * header. A node takes a shard its client framed this way and stores the bytes as they came.
 */
export function verifyFrame(framed: Uint8Array, what: string, expect?: ShardExpectation): FrameHeader {
  return wholeFrame(framed, what, expect, verifySpan).header;
}

/** Verifies a whole framed shard (against `expect` when given) and returns its data. */
export function decodeFrame(framed: Uint8Array, what: string, expect?: ShardExpectation): Uint8Array {
  return wholeFrame(framed, what, expect, unframeSpan).out;
}

/** Checks a whole shard's header and size, then runs `check` (verifySpan or unframeSpan) over its blocks. */
function wholeFrame<T>(
  framed: Uint8Array,
  what: string,
  expect: ShardExpectation | undefined,
  check: (f: Uint8Array, s: FramedSpan, r: ByteRange, shape: FrameHeader, w: string) => T,
): { header: FrameHeader; out: T } {
  const header = decodeHeader(framed, what);
  checkExpectation(header, expect, what);
  if (framed.length !== framedBytes(header.dataBytes, header.blockBytes)) {
    throw new ChecksumMismatchError(
      `${what}: shard is ${framed.length} bytes, its header implies ${framedBytes(header.dataBytes, header.blockBytes)}`,
    );
  }
  const range = { offset: 0, length: header.dataBytes };
  const span = framedSpan(range, header.dataBytes, header.blockBytes);
  const out = check(framed.subarray(span.start, span.end), span, range, header, what);
  return { header, out };
}

/**
 * Frame buffers to reuse, by size: framing a 1 MiB shard into a fresh buffer cost more than its
 * CRCs (allocation, first-touch page faults, and garbage collections that external memory
 * triggers; encodeFrame was 15 % of a frontend's busy time writing 1 MiB blocks sequentially).
 * A buffer goes back only when its writer knows nothing refers to it any more.
 */
export class FrameBufferPool {
  private readonly free = new Map<number, Uint8Array[]>();
  private heldBytes = 0;

  constructor(private readonly maxBytes: number) {}

  /** A buffer of `size` bytes, reused or new; its contents are unspecified. */
  take(size: number): Uint8Array {
    const reused = this.free.get(size)?.pop();
    if (reused !== undefined) {
      this.heldBytes -= size;
      return reused;
    }
    return new Uint8Array(size);
  }

  /** Keeps `buffer` for a later take(), unless the pool already holds its bound. */
  give(buffer: Uint8Array): void {
    if (buffer.byteOffset !== 0 || buffer.byteLength !== buffer.buffer.byteLength) return;
    if (this.heldBytes + buffer.length > this.maxBytes) return;
    const list = this.free.get(buffer.length);
    if (list === undefined) this.free.set(buffer.length, [buffer]);
    else list.push(buffer);
    this.heldBytes += buffer.length;
  }

  /** Bytes held for reuse. */
  get bytes(): number {
    return this.heldBytes;
  }
}
