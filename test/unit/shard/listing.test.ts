/**
 * Listing a target's keys for gc and the census: a page that times out on a busy node is asked
 * for again; one that keeps failing, or fails for a reason retrying cannot help, ends the walk.
 */
import { expect } from 'chai';
import { InvalidArgumentError, UnavailableError, type ShardStore } from '../../../src/core/index.js';
import { MemoryShardStore } from '../../../src/shard/index.js';
import { listAttemptsMax, shardKeyPages } from '../../../src/shard/index.js';

/** A memory store whose next `failures` list calls fail with `err`. */
function flaky(failures: number, err: () => Error): { store: ShardStore; calls: () => number } {
  const inner = new MemoryShardStore('flaky');
  let left = failures;
  let calls = 0;
  const store = Object.assign(Object.create(inner) as ShardStore, {
    list: async (prefix: string, options?: { startAfter?: string; limit?: number }) => {
      calls += 1;
      if (left > 0) {
        left -= 1;
        throw err();
      }
      return inner.list(prefix, options);
    },
  });
  return { store, calls: () => calls };
}

async function all(store: ShardStore): Promise<string[]> {
  const out: string[] = [];
  for await (const page of shardKeyPages(store, 'v/')) out.push(...page);
  return out;
}

describe('shardKeyPages', () => {
  it('asks again for a page that timed out, and lists every key', async () => {
    const f = flaky(listAttemptsMax - 1, () => new UnavailableError('node "a-0": no answer within 10000 ms'));
    await f.store.put('v/1/1/0', new Uint8Array(1));
    expect(await all(f.store)).to.deep.equal(['v/1/1/0']);
    expect(f.calls()).to.equal(listAttemptsMax);
  });

  it('gives up after listAttemptsMax tries, and at once on an error retrying cannot help', async () => {
    const slow = flaky(listAttemptsMax, () => new UnavailableError('no answer within 10000 ms'));
    let failure: unknown;
    await all(slow.store).catch((err: unknown) => (failure = err));
    expect(failure).to.be.instanceOf(UnavailableError);
    expect(slow.calls()).to.equal(listAttemptsMax);
    const bad = flaky(1, () => new InvalidArgumentError('bad prefix'));
    failure = undefined;
    await all(bad.store).catch((err: unknown) => (failure = err));
    expect(failure).to.be.instanceOf(InvalidArgumentError);
    expect(bad.calls()).to.equal(1);
  });
});
