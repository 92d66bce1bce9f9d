/**
 * Shared memory that SHARD_PUT payloads are received into, slot by slot.
 *
 * Why: a node received each shard into a new 1 MiB buffer and handed the shard writer's thread
 * a copy of it; with the thread-pool round trips gone, the garbage collector was 47 % of a
 * node's main-thread time on a sequential write, collecting those buffers (external memory
 * grows fast enough to force collections). A slot of a SharedArrayBuffer is written by the
 * socket reader and read by the writer thread in place: no allocation and no copy per shard.
 *
 * Rules: take() gives a view of a free slot (or undefined: the caller allocates as before); the
 * holder gives it back exactly once, after nothing reads it any more (the put settled, or the
 * connection died mid-frame).
 */
import { assert } from '../core/index.js';

/** Slots fit a framed 2 MiB shard and its request header (a 4 MiB extent at k = 2). */
export const payloadSlotBytesDefault = 2 * 1024 * 1024 + 64 * 1024;
/** Slots: as many shard PUTs as a node takes in at once before frames fall back to the heap. */
export const payloadSlotsDefault = 32;

export class PayloadSlabs {
  private readonly memory: SharedArrayBuffer;
  private readonly free: number[] = [];
  private readonly busy = new Set<number>();

  constructor(
    readonly slotBytes = payloadSlotBytesDefault,
    readonly slots = payloadSlotsDefault,
  ) {
    assert(Number.isSafeInteger(slotBytes) && slotBytes > 0 && Number.isSafeInteger(slots) && slots > 0, 'slab shape');
    // Pages are touched only as slots are used; the most recently freed slot is taken first.
    this.memory = new SharedArrayBuffer(slotBytes * slots);
    for (let i = slots - 1; i >= 0; i--) this.free.push(i);
  }

  /** A view of `bytes` at the start of a free slot, or undefined when none is free or it is too big. */
  take(bytes: number): Uint8Array | undefined {
    if (bytes > this.slotBytes) return undefined;
    const slot = this.free.pop();
    if (slot === undefined) return undefined;
    this.busy.add(slot);
    return new Uint8Array(this.memory, slot * this.slotBytes, bytes);
  }

  /** True when `view` is one of this slab's slots. */
  owns(view: Uint8Array): boolean {
    return view.buffer === this.memory;
  }

  /** Gives back a view from take(). */
  give(view: Uint8Array): void {
    assert(this.owns(view), 'a payload given back to a slab it does not come from');
    const slot = view.byteOffset / this.slotBytes;
    assert(this.busy.delete(slot), `payload slot ${slot} given back twice`);
    this.free.push(slot);
  }

  /** Slots in use. */
  get inUse(): number {
    return this.busy.size;
  }
}
