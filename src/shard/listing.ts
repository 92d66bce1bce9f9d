/**
 * Walking a target's keys page by page, as gc, the shard census and map-page repair do: each page is at
 * most shardKeyPageKeys keys, sorted, the next one starting after the last key of the one before.
 * A page that fails for a retryable reason (a node too busy to answer in time: its disk threads
 * taken by a frontend's flush) is asked for again, up to listAttemptsMax times.
 */
import { CairnError, type ShardStore } from '../core/index.js';

/** Keys asked for per list call (the stores' listLimitMax). */
export const shardKeyPageKeys = 1000;

/** Tries of one page before its error ends the walk. */
export const listAttemptsMax = 3;

/** The keys under `prefix` on `store`, a page at a time; ends after the first short page. */
export async function* shardKeyPages(store: ShardStore, prefix: string): AsyncGenerator<string[]> {
  let startAfter: string | undefined;
  for (;;) {
    const page = await listPage(store, prefix, startAfter);
    if (page.length > 0) yield page;
    if (page.length < shardKeyPageKeys) return;
    startAfter = page.at(-1);
  }
}

async function listPage(store: ShardStore, prefix: string, startAfter: string | undefined): Promise<string[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await store.list(prefix, {
        limit: shardKeyPageKeys,
        ...(startAfter === undefined ? {} : { startAfter }),
      });
    } catch (err) {
      if (attempt >= listAttemptsMax || !(err instanceof CairnError && err.retryable)) throw err;
    }
  }
}

/**
 * Every key under `prefix` on any of `stores`, with the names of the stores that hold it (in
 * `stores`' order). A store whose listing fails makes the whole call fail: a caller that deletes
 * or adds copies must not judge from a partial count.
 */
export async function keyHolders(
  stores: Iterable<readonly [string, ShardStore]>,
  prefix: string,
): Promise<Map<string, string[]>> {
  const holders = new Map<string, string[]>();
  for (const [name, store] of stores)
    for await (const page of shardKeyPages(store, prefix))
      for (const key of page) {
        const on = holders.get(key);
        if (on === undefined) holders.set(key, [name]);
        else on.push(name);
      }
  return holders;
}
