/**
 * Walking a target's shard keys page by page, as gc and the shard census do: each page is at
 * most shardKeyPageKeys keys, sorted, the next one starting after the last key of the one before.
 */
import type { ShardStore } from '../core/index.js';

/** Keys asked for per list call (the stores' listLimitMax). */
export const shardKeyPageKeys = 1000;

/** The keys under `prefix` on `store`, a page at a time; ends after the first short page. */
export async function* shardKeyPages(store: ShardStore, prefix: string): AsyncGenerator<string[]> {
  let startAfter: string | undefined;
  for (;;) {
    const page = await store.list(prefix, {
      limit: shardKeyPageKeys,
      ...(startAfter === undefined ? {} : { startAfter }),
    });
    if (page.length > 0) yield page;
    if (page.length < shardKeyPageKeys) return;
    startAfter = page.at(-1);
  }
}
