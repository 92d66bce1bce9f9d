import { expect } from 'chai';
import fc from 'fast-check';
import { TooFewShardsError } from '../../../src/core/index.js';
import { referenceCodec } from '../../../src/codec/reference.js';
import { encodingMatrix, identity, invert, multiply, mul, div } from '../../../src/codec/gf256.js';
import { subspaceParity } from '../../support/subspace.js';
import { combinations, shardsOf } from '../../support/bytes.js';

describe('gf256', () => {
  it('has a multiplicative inverse for every non-zero element', () => {
    for (let a = 1; a < 256; a++) expect(mul(a, div(1, a))).to.equal(1);
  });

  it('builds a systematic encoding matrix whose top k rows are the identity', () => {
    const e = encodingMatrix(5, 3);
    expect(Array.from(e.data.subarray(0, 25))).to.deep.equal(Array.from(identity(5).data));
  });

  it('inverts matrices: A * A^-1 = I', () => {
    const e = encodingMatrix(4, 4);
    const rows = { rows: 4, cols: 4, data: e.data.slice(16, 32) };
    expect(Array.from(multiply(rows, invert(rows)).data)).to.deep.equal(Array.from(identity(4).data));
  });
});

describe('referenceCodec', () => {
  // @subspace (like the Rust crate) refuses m = 0, so the comparison starts at one parity shard.
  it('matches @subspace/reed-solomon-erasure.wasm parity byte for byte', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 300 }),
        fc.integer(),
        (k, m, shardBytes, seed) => {
          const data = shardsOf(k, shardBytes, seed);
          const parity = Array.from({ length: m }, () => new Uint8Array(shardBytes));
          referenceCodec({ k, m }).encode(data, parity);
          expect(parity).to.deep.equal(subspaceParity(data, m));
        },
      ),
      { numRuns: 60 },
    );
  });

  it('matches @subspace at the largest profile, 200+55', () => {
    const data = shardsOf(200, 3, 7);
    const parity = Array.from({ length: 55 }, () => new Uint8Array(3));
    referenceCodec({ k: 200, m: 55 }).encode(data, parity);
    expect(parity).to.deep.equal(subspaceParity(data, 55));
  });

  it('reconstructs every erasure pattern of up to m shards for 4+3', () => {
    const k = 4;
    const m = 3;
    const codec = referenceCodec({ k, m });
    const data = shardsOf(k, 33, 3);
    const parity = Array.from({ length: m }, () => new Uint8Array(33));
    codec.encode(data, parity);
    const all = [...data, ...parity];
    for (let lost = 1; lost <= m; lost++) {
      for (const erased of combinations(k + m, lost)) {
        const shards: (Uint8Array | null)[] = all.map((s, i) => (erased.includes(i) ? null : s));
        codec.reconstruct(shards);
        expect(shards, `erased ${erased.join(',')}`).to.deep.equal(all);
      }
    }
  });

  it('refuses to reconstruct with m+1 shards lost, saying how many were needed and present', () => {
    const codec = referenceCodec({ k: 4, m: 2 });
    const shards: (Uint8Array | null)[] = [null, null, null, new Uint8Array(4), new Uint8Array(4), new Uint8Array(4)];
    expect(() => codec.reconstruct(shards))
      .to.throw(TooFewShardsError)
      .with.property('message', 'Cannot reconstruct: 4 shards needed, 3 present');
    expect(shards.filter((s) => s === null)).to.have.length(3);
  });

  it('encodes zero-length shards and m = 0 without error', () => {
    referenceCodec({ k: 3, m: 2 }).encode(
      [new Uint8Array(0), new Uint8Array(0), new Uint8Array(0)],
      [new Uint8Array(0), new Uint8Array(0)],
    );
    referenceCodec({ k: 2, m: 0 }).encode([new Uint8Array(4), new Uint8Array(4)], []);
  });
});
