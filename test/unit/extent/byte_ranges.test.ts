/**
 * ByteRanges: merged [start, end) ranges against a byte-per-offset model, on seeded random adds,
 * and the cases a cover question turns on (touching ranges, one byte short).
 */
import { expect } from 'chai';
import { ByteRanges } from '../../../src/extent/index.js';

describe('ByteRanges', () => {
  it('merges touching and overlapping ranges, and covers only what was added', () => {
    const r = new ByteRanges();
    r.add(4096, 8192);
    r.add(0, 4096); // touches: one range
    expect(r.count).to.equal(1);
    expect(r.covers(0, 8192)).to.equal(true);
    expect(r.covers(0, 8193), 'one byte past').to.equal(false);
    r.add(12288, 16384);
    expect(r.count).to.equal(2);
    expect(r.covers(4096, 16384), 'a gap in the middle').to.equal(false);
    r.add(8000, 12300); // bridges the gap
    expect(r.count).to.equal(1);
    expect(r.covers(0, 16384)).to.equal(true);
    expect(r.covers(5, 5), 'an empty range is covered').to.equal(true);
  });

  it('agrees with a byte model on seeded random adds, and a clone is independent', () => {
    let seed = 7;
    const random = (n: number) => (seed = (seed * 1103515245 + 12345) % 2147483648) % n;
    for (let round = 0; round < 50; round++) {
      const size = 256;
      const model = new Uint8Array(size);
      const r = new ByteRanges();
      for (let i = 0; i < 20; i++) {
        const start = random(size);
        const end = Math.min(size, start + 1 + random(24));
        r.add(start, end);
        model.fill(1, start, end);
        const from = random(size);
        const to = from + random(size - from + 1);
        expect(r.covers(from, to), `round ${round} add ${i}: covers(${from}, ${to})`).to.equal(
          model.subarray(from, to).every((b) => b === 1),
        );
      }
      let runs = 0;
      for (let at = 0; at < size; at++) if (model[at] === 1 && (at === 0 || model[at - 1] === 0)) runs++;
      expect(r.count, `round ${round}: one range per run`).to.equal(runs);
      const copy = r.clone();
      copy.add(0, size);
      expect(copy.covers(0, size)).to.equal(true);
      expect(r.covers(0, size)).to.equal(model.every((b) => b === 1));
    }
  });
});
