/**
 * The clean read cache of every volume of a frontend, bounded together (`nbd serve
 * --cache-budget`): each volume's cache keeps its own bound (--cache-size), and when the clean
 * bases of all of them pass the shared budget, the least recently used ones are dropped, whichever
 * volume holds them. Without it a frontend's clean cache grew to --cache-size times the attached
 * volumes (60 x 512 MiB), and a volume read once and left idle kept its bases for good.
 *
 * What it keeps true: one use counter for all volumes, so "least recently used" compares across
 * them; only bases a cache may drop (not being published or flushed) are offered; dirty and
 * journaled bytes are never touched (they are bounded per volume by --dirty-max, and dropping
 * them would lose writes).
 * What it leaves out: fairness beyond recency (a busy volume may hold most of the budget).
 */
import { assert } from '../core/index.js';

/** What the shared budget asks of each volume's cache. */
export interface CleanCacheHolder {
  /** Bytes of clean bases held (the droppable read cache). */
  readonly baseBytes: number;
  /** The use stamp of the least recently used droppable base, or undefined when none. */
  oldestBaseUse(): number | undefined;
  /** Drops the least recently used droppable base; returns the bytes freed (0 if none). */
  dropOldestBase(): number;
}

export class SharedCacheBudget {
  private readonly holders = new Set<CleanCacheHolder>();
  private uses = 0;

  /** @param maxBytes clean base bytes all volumes may hold together. */
  constructor(
    readonly maxBytes: number,
    /** Told when the budget dropped bases of some volume to make room (a log line, a metric). */
    private readonly onTrim?: (bytesDropped: number, bytesHeld: number) => void,
  ) {
    assert(Number.isSafeInteger(maxBytes) && maxBytes > 0, 'a cache budget needs a positive size');
  }

  register(holder: CleanCacheHolder): void {
    this.holders.add(holder);
  }

  unregister(holder: CleanCacheHolder): void {
    this.holders.delete(holder);
  }

  /** The next use stamp: later uses get larger stamps, across every volume. */
  nextUse(): number {
    return ++this.uses;
  }

  /** Clean base bytes held across volumes now. */
  get heldBytes(): number {
    let total = 0;
    for (const h of this.holders) total += h.baseBytes;
    return total;
  }

  /** Drops least recently used bases, across volumes, while their total passes maxBytes. */
  trim(): void {
    let held = this.heldBytes;
    let dropped = 0;
    while (held > this.maxBytes) {
      let oldest: { holder: CleanCacheHolder; use: number } | undefined;
      for (const holder of this.holders) {
        const use = holder.oldestBaseUse();
        if (use !== undefined && (oldest === undefined || use < oldest.use)) oldest = { holder, use };
      }
      if (oldest === undefined) break; // everything held is being published: it frees soon
      const freed = oldest.holder.dropOldestBase();
      assert(freed > 0, 'a cache offered a base it could not drop');
      held -= freed;
      dropped += freed;
    }
    if (dropped > 0) this.onTrim?.(dropped, held);
  }
}
