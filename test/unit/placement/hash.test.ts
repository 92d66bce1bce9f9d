import { expect } from 'chai';
import { draw, drawPurpose, extentKey, hashText, type Key64 } from '../../../src/placement/hash.js';

function popcount32(x: number): number {
  let v = x >>> 0;
  let n = 0;
  while (v !== 0) {
    v &= v - 1;
    n++;
  }
  return n;
}

function bitsDiffering(a: Key64, b: Key64): number {
  return popcount32(a.hi ^ b.hi) + popcount32(a.lo ^ b.lo);
}

describe('placement hash', () => {
  // Every placement in every cluster is a function of these numbers: a change here moves data.
  // If this test fails, the change must come with a migration plan, not a new golden value.
  it('keeps its golden values', () => {
    expect(hashText('a-1')).to.deep.equal({ hi: 1398209489, lo: 4098513081 });
    expect(hashText('')).to.deep.equal({ hi: 880253783, lo: 1179104813 });
    expect(extentKey('pg-data', 0)).to.deep.equal({ hi: 93130754, lo: 1278676167 });
    expect(extentKey('pg-data', 2 ** 32)).to.deep.equal({ hi: 1921172413, lo: 3453161342 });
    const key = extentKey('pg-data', 17);
    expect(draw(key, drawPurpose.shardTarget, 3, hashText('b-2'))).to.equal(0.733248162299972);
    expect(draw(key, drawPurpose.zoneSlot, 0, hashText('a'))).to.equal(0.29527199207138216);
  });

  it('tells apart extents 2^32 apart and volumes whose names differ in one character', () => {
    expect(extentKey('v', 1)).to.not.deep.equal(extentKey('v', 1 + 2 ** 32));
    expect(extentKey('vol-a', 0)).to.not.deep.equal(extentKey('vol-b', 0));
    expect(hashText('ab')).to.not.deep.equal(hashText('ba'));
  });

  it('avalanches: one extent more changes about half of the 64 bits', () => {
    let total = 0;
    const samples = 2000;
    for (let e = 0; e < samples; e++) total += bitsDiffering(extentKey('vol', e), extentKey('vol', e + 1));
    const mean = total / samples;
    expect(mean).to.be.within(31, 33);
  });

  it('draws uniformly in (0, 1): no 0 or 1, flat buckets, exponential mean of -ln u near 1', () => {
    const buckets = new Array<number>(20).fill(0);
    const samples = 100_000;
    let sumExp = 0;
    const item = hashText('t');
    for (let e = 0; e < samples; e++) {
      const u = draw(extentKey('vol', e), drawPurpose.shardTarget, e % 12, item);
      expect(u > 0 && u < 1).to.equal(true);
      const b = Math.floor(u * 20);
      buckets[b] = (buckets[b] ?? 0) + 1;
      sumExp += -Math.log(u);
    }
    const expected = samples / 20;
    const chiSquare = buckets.reduce((acc, n) => acc + (n - expected) ** 2 / expected, 0);
    // 19 degrees of freedom: chi-square above 43.8 has probability 0.001 for a uniform source.
    expect(chiSquare).to.be.below(43.8);
    expect(sumExp / samples).to.be.within(0.98, 1.02);
  });

  it('draws independently for different purposes and indices of one extent', () => {
    const item = hashText('t');
    const n = 20_000;
    let sx = 0;
    let sy = 0;
    let sxy = 0;
    let sxx = 0;
    let syy = 0;
    for (let e = 0; e < n; e++) {
      const key = extentKey('vol', e);
      const x = draw(key, drawPurpose.shardTarget, 0, item);
      const y = draw(key, e % 2 === 0 ? drawPurpose.shardZone : drawPurpose.shardTarget, e % 2 === 0 ? 0 : 1, item);
      sx += x;
      sy += y;
      sxy += x * y;
      sxx += x * x;
      syy += y * y;
    }
    const cov = sxy / n - (sx / n) * (sy / n);
    const corr = cov / Math.sqrt((sxx / n - (sx / n) ** 2) * (syy / n - (sy / n) ** 2));
    expect(Math.abs(corr)).to.be.below(0.03);
  });
});
