/**
 * WriteBackCache.exclusive(): what a snapshot cuts under. Changes already taken finish before the
 * exclusive work starts; changes issued while it runs wait and land after it; reads go on.
 */
import { expect } from 'chai';
import { WriteBackCache, type CacheBackend } from '../../../src/cache/index.js';

const extentBytes = 64 * 1024;

function slowBackend(gate: { open: Promise<void> }): CacheBackend {
  return {
    geometry: { sizeBytes: 4 * extentBytes, extentBytes, k: 2 },
    isHole: () => false,
    // A write's lookup waits on the gate: the write is "in flight" until it opens.
    prepare: () => gate.open,
    versionOf: () => 0,
    readRange: (_e, _o, length) => Promise.resolve(new Uint8Array(length)),
    readWhole: () => Promise.resolve(new Uint8Array(extentBytes)),
    persist: async () => undefined,
  };
}

describe('WriteBackCache.exclusive', () => {
  it('waits for changes in flight, holds new ones until it is done, and lets reads through', async () => {
    let release!: () => void;
    const gate = { open: new Promise<void>((r) => (release = r)) };
    const cache = new WriteBackCache(slowBackend(gate), { flushCheckMs: 0, dirtyBytesMax: 4 * extentBytes });
    const events: string[] = [];
    const first = cache.write(0, new Uint8Array(10).fill(1)).then(() => events.push('first write done'));
    const cut = cache.exclusive(async () => {
      events.push('exclusive starts');
      // What the cut sees: the first write, not the second.
      const bytes = await cache.read(0, 1);
      events.push(`exclusive reads ${bytes[0]}`);
      return 'cut';
    });
    // Issued while the exclusive work waits or runs: lands after it.
    const second = Promise.resolve().then(() =>
      cache.write(0, new Uint8Array(10).fill(2)).then(() => events.push('second write done')),
    );
    await new Promise((r) => setImmediate(r));
    expect(events, 'nothing runs while the first write is in flight').to.deep.equal([]);
    release();
    expect(await cut).to.equal('cut');
    await Promise.all([first, second]);
    // The first write's promise settles in the same turn the cut starts; what matters is that
    // the cut saw its bytes and not the second write's.
    expect(events.filter((e) => e !== 'first write done')).to.deep.equal([
      'exclusive starts',
      'exclusive reads 1',
      'second write done',
    ]);
    expect(Array.from(await cache.read(0, 1))).to.deep.equal([2]);
    await cache.close();
  });

  it('lets changes through again when the exclusive work fails', async () => {
    const gate = { open: Promise.resolve() };
    const cache = new WriteBackCache(slowBackend(gate), { flushCheckMs: 0, dirtyBytesMax: 4 * extentBytes });
    const failed = await cache
      .exclusive(() => Promise.reject(new Error('no root')))
      .then(
        () => 'resolved',
        (err: Error) => err.message,
      );
    expect(failed).to.equal('no root');
    await cache.write(0, new Uint8Array(4).fill(9));
    expect(Array.from(await cache.read(0, 2))).to.deep.equal([9, 9]);
    await cache.close();
  });
});
