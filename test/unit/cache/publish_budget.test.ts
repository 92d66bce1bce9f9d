/**
 * The publish budget that every volume's cache shares (WriteBackCacheOptions.publishBudget): a
 * flush or fold takes its images' bytes before it builds them, so volumes publishing at once
 * cannot each hold their images, shards and framing in memory (60 volumes folding together took
 * a frontend from 184 to 971 MiB). A fake backend holds persists until the test lets them go.
 */
import { expect } from 'chai';
import { WaitingBudget } from '../../../src/core/index.js';
import { WriteBackCache, type CacheBackend } from '../../../src/cache/index.js';
import { waitFor } from '../../../src/dev/index.js';

const extentBytes = 64 * 1024;

/** A backend over holes whose persist() waits for `gate` and counts its calls. */
function heldBackend(gate: Promise<void>): { backend: CacheBackend; persists: () => number } {
  let persists = 0;
  return {
    backend: {
      geometry: { sizeBytes: 4 * extentBytes, extentBytes, k: 2 },
      isHole: () => true,
      versionOf: () => 0,
      readRange: (_e, _o, length) => Promise.resolve(new Uint8Array(length)),
      readWhole: () => Promise.resolve(new Uint8Array(extentBytes)),
      persist: async () => {
        persists += 1;
        await gate;
      },
    },
    persists: () => persists,
  };
}

describe('WriteBackCache publish budget shared by volumes', () => {
  it('makes a second volume wait to publish while the first holds the budget, then publishes it', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const budget = new WaitingBudget(extentBytes);
    const waits: number[] = [];
    const options = { flushCheckMs: 0, publishBudget: budget, onPublishWait: (b: number) => waits.push(b) };
    const a = heldBackend(gate);
    const b = heldBackend(gate);
    const cacheA = new WriteBackCache(a.backend, { ...options, dirtyBytesMax: 4 * extentBytes });
    const cacheB = new WriteBackCache(b.backend, { ...options, dirtyBytesMax: 4 * extentBytes });

    await cacheA.write(0, new Uint8Array(extentBytes).fill(1));
    await cacheB.write(0, new Uint8Array(extentBytes).fill(2));
    const flushA = cacheA.flush();
    await waitFor('volume A to publish', () => a.persists() === 1 || undefined, 5_000);
    expect(budget.inUse).to.equal(extentBytes);
    const flushB = cacheB.flush();
    await waitFor('volume B to wait for the publish budget', () => waits.length === 1 || undefined, 5_000);
    expect(waits).to.deep.equal([extentBytes]);
    expect(b.persists(), 'B builds nothing while A holds the budget').to.equal(0);

    release();
    await Promise.all([flushA, flushB]);
    expect(b.persists()).to.equal(1);
    expect(budget.inUse).to.equal(0);
    expect(Array.from(await cacheB.read(0, 4))).to.deep.equal([2, 2, 2, 2]);
    await Promise.all([cacheA.close(), cacheB.close()]);
  });
});
