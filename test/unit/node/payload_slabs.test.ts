import { expect } from 'chai';
import { AssertionError } from '../../../src/core/index.js';
import { PayloadSlabs } from '../../../src/node/payload_slabs.js';

describe('PayloadSlabs', () => {
  it('hands out distinct slots until none is free or a payload is too big, and takes each back once', () => {
    const slabs = new PayloadSlabs(1024, 2);
    const a = slabs.take(1000)!;
    const b = slabs.take(10)!;
    expect(a.buffer).to.be.instanceOf(SharedArrayBuffer);
    expect([a.length, b.length]).to.deep.equal([1000, 10]);
    expect(a.byteOffset).to.not.equal(b.byteOffset);
    expect(slabs.take(1), 'both slots busy').to.equal(undefined);
    expect(slabs.inUse).to.equal(2);
    slabs.give(a);
    expect(slabs.take(1025), 'larger than a slot').to.equal(undefined);
    const c = slabs.take(1024)!;
    expect(c.byteOffset, 'the slot just freed').to.equal(a.byteOffset);
    slabs.give(b);
    expect(() => slabs.give(b), 'a slot given back twice').to.throw(AssertionError);
    expect(() => slabs.give(new Uint8Array(10)), 'a view from elsewhere').to.throw(AssertionError);
    expect(slabs.owns(c) && !slabs.owns(new Uint8Array(1))).to.equal(true);
    expect(slabs.inUse).to.equal(1);
  });
});
