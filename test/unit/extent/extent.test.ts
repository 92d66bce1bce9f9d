import { expect } from 'chai';
import fc from 'fast-check';
import { RangeSet, splitByExtent, splitByShard, extentLength } from '../../../src/extent/index.js';

const MiB = 1 << 20;

describe('splitByExtent()', () => {
  const g = { sizeBytes: 10 * MiB + 512, extentBytes: 4 * MiB, k: 4 };

  it('splits an unaligned read into head, body and tail pieces', () => {
    expect(splitByExtent(g, 4 * MiB - 10, 4 * MiB + 20)).to.deep.equal([
      { extent: 0, offset: 4 * MiB - 10, length: 10, bufferOffset: 0 },
      { extent: 1, offset: 0, length: 4 * MiB, bufferOffset: 10 },
      { extent: 2, offset: 0, length: 10, bufferOffset: 4 * MiB + 10 },
    ]);
  });

  it('handles zero length, the last byte, and refuses one past the end', () => {
    expect(splitByExtent(g, 5, 0)).to.deep.equal([]);
    expect(splitByExtent(g, g.sizeBytes - 1, 1)).to.deep.equal([
      { extent: 2, offset: 2 * MiB + 511, length: 1, bufferOffset: 0 },
    ]);
    expect(() => splitByExtent(g, g.sizeBytes - 1, 2)).to.throw('past the volume end');
    expect(extentLength(g, 2)).to.equal(2 * MiB + 512);
  });
});

describe('splitByShard()', () => {
  it('has the worked example of its header comment right', () => {
    expect(splitByShard(MiB, MiB - 4096, 8192)).to.deep.equal([
      { shard: 0, offset: MiB - 4096, length: 4096, bufferOffset: 0 },
      { shard: 1, offset: 0, length: 4096, bufferOffset: 4096 },
    ]);
  });
});

describe('RangeSet', () => {
  it('merges overlapping and touching ranges and answers covers()', () => {
    const s = new RangeSet();
    s.add(10, 20);
    s.add(30, 40);
    s.add(20, 30);
    expect(s.ranges()).to.deep.equal([[10, 40]]);
    expect(s.covers(10, 40)).to.equal(true);
    expect(s.covers(9, 11)).to.equal(false);
    s.remove(15, 25);
    expect(s.ranges()).to.deep.equal([
      [10, 15],
      [25, 40],
    ]);
    expect(s.bytes).to.equal(20);
  });

  it('removes nothing for an empty range (it split [10, 40) into two touching ranges, and covers(14, 16) said no)', () => {
    const s = new RangeSet();
    s.add(10, 40);
    s.remove(15, 15);
    expect(s.ranges()).to.deep.equal([[10, 40]]);
    expect(s.covers(14, 16)).to.equal(true);
  });

  it('agrees with a bitmap model under random adds and removes', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.boolean(), fc.nat(200), fc.nat(50))), fc.nat(200), fc.nat(60), (ops, qs, ql) => {
        const set = new RangeSet();
        const model = new Uint8Array(300);
        for (const [add, start, len] of ops) {
          if (add) set.add(start, start + len);
          else set.remove(start, start + len);
          model.fill(add ? 1 : 0, start, start + len);
        }
        const covered = model.subarray(qs, qs + ql).every((b) => b === 1);
        expect(set.covers(qs, qs + ql)).to.equal(covered);
        expect(set.intersects(qs, qs + ql)).to.equal(model.subarray(qs, qs + ql).some((b) => b === 1));
        expect(set.bytes).to.equal(model.reduce((a, b) => a + b, 0));
      }),
      { numRuns: 300 },
    );
  });
});
