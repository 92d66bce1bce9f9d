import { expect } from 'chai';
import fc from 'fast-check';
import { ChecksumMismatchError, crc32Of, shardSeed } from '../../../src/core/index.js';
import {
  dataBytesOfFramed,
  decodeFrame,
  decodeHeader,
  encodeFrame,
  encodeFrameInto,
  FrameBufferPool,
  framedBytes,
  framedSpan,
  unframeSpan,
} from '../../../src/shard/index.js';
import { seededBytes } from '../../support/bytes.js';

describe('shard framing', () => {
  it('has the worked example of its header comment right', () => {
    expect(framedBytes(10_000)).to.equal(10_044);
    const span = framedSpan({ offset: 5000, length: 100 }, 10_000);
    expect(span).to.deep.equal({ firstBlock: 1, start: 4132, end: 8232 });
  });

  it('round-trips any data and any range', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 20_000 }), fc.nat(), fc.nat(), fc.nat(), (size, a, b, seed) => {
        const data = seededBytes(size, size + 3);
        const framed = encodeFrame(data, seed);
        expect(dataBytesOfFramed(framed.length)).to.equal(size);
        expect(Buffer.from(decodeFrame(framed, 'x', { dataBytes: size, seed })).equals(Buffer.from(data))).to.equal(
          true,
        );
        const offset = size === 0 ? 0 : a % size;
        const length = size === 0 ? 0 : b % (size - offset + 1);
        const span = framedSpan({ offset, length }, size);
        const shape = { blockBytes: 4096, dataBytes: size, seed };
        const got = unframeSpan(framed.subarray(span.start, span.end), span, { offset, length }, shape, 'x');
        expect(Buffer.from(got).equals(Buffer.from(data.subarray(offset, offset + length)))).to.equal(true);
      }),
      { numRuns: 200 },
    );
  });

  it('finds a flipped bit in the header or any block', () => {
    const framed = encodeFrame(seededBytes(9000, 1));
    for (const at of [0, 13, 30, 32, 40, 4200, framed.length - 1]) {
      const bad = framed.slice();
      bad[at] = bad[at]! ^ 1;
      expect(() => decodeFrame(bad, 'shard 7'), `byte ${at}`).to.throw(ChecksumMismatchError, 'shard 7');
    }
  });

  it('ties every block to its seed: the same bytes under another seed, or another size, fail the check', () => {
    const data = seededBytes(9000, 2);
    const seed = shardSeed(0x12345678, 2, 9000);
    const framed = encodeFrame(data, seed);
    expect(decodeHeader(framed, 'x').seed).to.equal(seed);
    // The node's own check (the header's seed) passes; the record's expectation decides.
    expect(Buffer.from(decodeFrame(framed, 'x')).equals(Buffer.from(data))).to.equal(true);
    expect(() => decodeFrame(framed, 'x', { dataBytes: 9000, seed: seed ^ 1 })).to.throw(ChecksumMismatchError, /seed/);
    expect(() => decodeFrame(framed, 'x', { dataBytes: 9001, seed })).to.throw(ChecksumMismatchError, /9000 bytes/);
    // A range read checked with another seed fails on its block CRC, whatever the node says.
    const range = { offset: 5000, length: 100 };
    const span = framedSpan(range, 9000);
    const bytes = framed.subarray(span.start, span.end);
    expect(() => unframeSpan(bytes, span, range, { blockBytes: 4096, dataBytes: 9000, seed: 0 }, 'x')).to.throw(
      ChecksumMismatchError,
      /block 1/,
    );
    // Unseeded frames (written before seeds) keep the CRCs they always had.
    const plain = encodeFrame(data);
    expect(new DataView(plain.buffer).getUint32(32, true)).to.equal(crc32Of(data.subarray(0, 4096)));
  });

  it('frames into a reused buffer exactly as into a fresh one, whatever the buffer held', () => {
    const pool = new FrameBufferPool(3 * framedBytes(10_000));
    for (const [i, size] of [10_000, 10_000, 4096, 10_000].entries()) {
      const data = seededBytes(size, i + 1);
      const buffer = pool.take(framedBytes(size)).fill(0xa5); // stale bytes everywhere
      expect(Buffer.from(encodeFrameInto(buffer, data, 77)).equals(Buffer.from(encodeFrame(data, 77)))).to.equal(true);
      pool.give(buffer);
    }
    // Bounded: two 10 KB frames and the 4 KB one fit; a fourth is dropped. Views are never kept.
    const held = pool.bytes;
    expect(held).to.equal(framedBytes(10_000) + framedBytes(4096));
    pool.give(new Uint8Array(framedBytes(10_000)));
    pool.give(new Uint8Array(framedBytes(10_000)));
    expect(pool.bytes).to.equal(held + framedBytes(10_000));
    pool.give(new Uint8Array(framedBytes(10_000) + 8).subarray(8));
    expect(pool.bytes).to.equal(held + framedBytes(10_000));
    expect(pool.take(framedBytes(4096))).to.have.length(framedBytes(4096));
    expect(pool.bytes).to.equal(2 * framedBytes(10_000));
  });

  it('derives shard seeds as its worked example says, never 0, different per shard and size', () => {
    const bytes = Buffer.from('78563412' + '02000000' + '0000100000000000', 'hex');
    expect(shardSeed(0x12345678, 2, 1048576)).to.equal(crc32Of(bytes) || 1);
    const seen = new Set<number>();
    for (let shard = 0; shard < 6; shard++) for (const size of [4096, 1048576]) seen.add(shardSeed(7, shard, size));
    expect(seen.size).to.equal(12);
    expect(seen.has(0)).to.equal(false);
  });
});
