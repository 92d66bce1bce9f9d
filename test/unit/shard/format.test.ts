import { expect } from 'chai';
import fc from 'fast-check';
import { ChecksumMismatchError } from '../../../src/core/index.js';
import {
  dataBytesOfFramed,
  decodeFrame,
  encodeFrame,
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
      fc.property(fc.integer({ min: 0, max: 20_000 }), fc.nat(), fc.nat(), (size, a, b) => {
        const data = seededBytes(size, size + 3);
        const framed = encodeFrame(data);
        expect(dataBytesOfFramed(framed.length)).to.equal(size);
        expect(Buffer.from(decodeFrame(framed, 'x')).equals(Buffer.from(data))).to.equal(true);
        const offset = size === 0 ? 0 : a % size;
        const length = size === 0 ? 0 : b % (size - offset + 1);
        const span = framedSpan({ offset, length }, size);
        const got = unframeSpan(framed.subarray(span.start, span.end), span, { offset, length }, size, 'x');
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
});
