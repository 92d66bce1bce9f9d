/**
 * Zero blocks: which 4 KiB blocks of an extent image read as zeros, kept in its record so block
 * status can report a trim inside a written extent as a hole.
 */
import { expect } from 'chai';
import { isZeroBlock, zeroBlockBytes, zeroBlocksOf } from '../../../src/core/index.js';

describe('zeroBlocksOf', () => {
  it('marks exactly the all-zero 4 KiB blocks, including a short last block', () => {
    const data = new Uint8Array(10 * zeroBlockBytes + 100).fill(7);
    data.fill(0, 2 * zeroBlockBytes, 4 * zeroBlockBytes); // blocks 2 and 3
    data.fill(0, 9 * zeroBlockBytes + 1, 10 * zeroBlockBytes); // block 9 keeps one byte
    data.fill(0, 10 * zeroBlockBytes); // the short last block
    const bits = Buffer.from(zeroBlocksOf(data)!, 'base64');
    const zero = Array.from({ length: 11 }, (_, b) => b).filter((b) => isZeroBlock(bits, b));
    expect(zero).to.deep.equal([2, 3, 10]);
  });

  it('says nothing for data without zero blocks, or with nothing but zeros', () => {
    expect(zeroBlocksOf(new Uint8Array(3 * zeroBlockBytes).fill(1))).to.equal(undefined);
    expect(zeroBlocksOf(new Uint8Array(3 * zeroBlockBytes))).to.equal(undefined);
  });

  it('reads views at any byte offset alike', () => {
    const backing = new Uint8Array(4 * zeroBlockBytes + 3).fill(9);
    const view = backing.subarray(3);
    view.fill(0, zeroBlockBytes, 2 * zeroBlockBytes);
    const bits = Buffer.from(zeroBlocksOf(view)!, 'base64');
    expect([0, 1, 2, 3].map((b) => isZeroBlock(bits, b))).to.deep.equal([false, true, false, false]);
  });
});
