/**
 * Bugs planted on purpose, to prove the checker can fail: a simulator that never reports
 * anything proves nothing. As BlockDevice wrappers around the cache:
 *
 * - 'flip-read-byte': the first non-empty read after `afterReads` reads returns one flipped byte.
 * - 'skip-flush': FLUSH resolves at once without publishing anything (a cache that lies about
 *   durability); caught when a crash or a probe looks at what was published.
 *
 * Below the cache, in the simulated targets (faulty_store.ts):
 * - 'skip-end-to-end-check': reads do not pass the extent record's size and seed to the store, so
 *   a shard is checked only against itself, as readers did before records carried a seed. Caught
 *   when a seed replaces a shard by other bytes its target accepts (a 'wrong shard' fault) and a
 *   read returns them.
 *
 * Of snapshots (simulation.ts and world.ts):
 * - 'snapshot-not-retained': the writer deletes a superseded generation's shards after the grace
 *   even when a snapshot still reaches them (gc ignoring snapshots). Caught when the snapshot is
 *   read, or at the next heal, which finds a shard a snapshot holds gone from its target.
 * - 'snapshot-skips-fold': a snapshot saves the published map without flushing and folding under
 *   the cache's gate first, so writes acknowledged before it (in the cache, or only in the
 *   journal) are not in it. Caught when the snapshot is read against what was acknowledged.
 *
 * And in the simulated journal (sim_journal.ts), for seeds with one:
 * - 'ack-after-r-minus-1': an append resolves once all replicas but one have it. A FLUSH is then
 *   answered while one replica lacks the record (down, partitioned, crashed before its fsync);
 *   caught when an attach or a probe reads that replica before the record is folded.
 * - 'replay-without-epoch-check': attach neither fences the replicas (so the writer it replaces
 *   can still gather acknowledgements after the new one read the journal) nor applies the seal
 *   (a record of a sealed segment at or past the next segment's first LSN is replayed, the first
 *   one read for an LSN winning). Caught when a takeover lets the old writer's flush succeed with
 *   records the new writer never read. The seal alone is not observable here: the journal never
 *   hands out a failed append's LSN again, so a record past its seal is a copy of the one that
 *   redid it; with 'reuse-failed-lsn' it would shadow a newer record.
 * - 'reuse-failed-lsn': the LSN of an append try that failed is handed out again, as
 *   frontend/journal.ts did until this simulator caught it. When no new segment could be
 *   started, the failed record stays in the current segment on the replicas that took it, and a
 *   whole-extent write published after it carries journalLsn = nextLsn - 1, below it: replay lays
 *   the stale record over the newer generation.
 * - 'attach-reuses-published-lsn': attach starts the next LSN above the LSNs it replays only, as
 *   frontend/journal.ts's open() does, not above the LSNs published generations hold. A failed
 *   try's LSN that landed on no replica read may be the journalLsn of a generation published
 *   after it; the new writer hands that LSN out again, and the next replay skips its record for
 *   that extent (the generation already "holds" it): an acknowledged write is lost.
 * - 'attach-keeps-old-segments': attach keeps the segments it read in the layout and starts its
 *   own after them, copying nothing, as frontend/journal.ts's open() does. A record a dead writer
 *   got onto some replicas only (its append failed) is replayed and served when the attach reads
 *   one of those; a later attach reading another replica of that segment finds it gone, and
 *   bytes the volume already returned vanish.
 *
 * What it keeps true: with no bug named, or a bug below the cache, the device is the cache itself
 * (no wrapper at all).
 * What it leaves out: other bugs below the cache (each needs a hook in the engine's ports).
 */
import type { BlockDevice, BlockDeviceCapabilities, BlockStatusRun, WriteOptions } from '../core/index.js';
import type { JournalBug } from './sim_journal.js';

export type PlantedBug =
  | 'flip-read-byte'
  | 'skip-flush'
  | 'skip-end-to-end-check'
  | 'snapshot-not-retained'
  | 'snapshot-skips-fold'
  | JournalBug;

export const plantedBugs: readonly PlantedBug[] = [
  'flip-read-byte',
  'skip-flush',
  'skip-end-to-end-check',
  'snapshot-not-retained',
  'snapshot-skips-fold',
  'ack-after-r-minus-1',
  'replay-without-epoch-check',
  'reuse-failed-lsn',
  'attach-reuses-published-lsn',
  'attach-keeps-old-segments',
];

/** The bug when it is one of the journal's (planted in the world, not around the device). */
export function journalBugOf(bug: PlantedBug | undefined): JournalBug | undefined {
  return bug === 'ack-after-r-minus-1' ||
    bug === 'replay-without-epoch-check' ||
    bug === 'reuse-failed-lsn' ||
    bug === 'attach-reuses-published-lsn' ||
    bug === 'attach-keeps-old-segments'
    ? bug
    : undefined;
}

class BuggyDevice implements BlockDevice {
  readonly sizeBytes: number;
  private reads = 0;
  private flipped = false;

  constructor(
    private readonly inner: BlockDevice,
    private readonly bug: PlantedBug,
    private readonly afterReads: number,
  ) {
    this.sizeBytes = inner.sizeBytes;
  }

  capabilities(): BlockDeviceCapabilities {
    return this.inner.capabilities();
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const out = await this.inner.read(offset, length);
    if (this.bug === 'flip-read-byte' && length > 0 && !this.flipped && this.reads++ >= this.afterReads) {
      this.flipped = true;
      out[length >> 1] = out[length >> 1]! ^ 0x10;
    }
    return out;
  }

  write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    return this.inner.write(offset, data, options);
  }

  async flush(): Promise<void> {
    if (this.bug === 'skip-flush') return;
    return this.inner.flush();
  }

  trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    return this.inner.trim(offset, length, options);
  }

  writeZeroes(offset: number, length: number, options?: WriteOptions & { readonly noHole?: boolean }): Promise<void> {
    return this.inner.writeZeroes(offset, length, options);
  }

  blockStatus(offset: number, length: number): Promise<BlockStatusRun[]> {
    return this.inner.blockStatus(offset, length);
  }
}

/** `device` with `bug` planted, or `device` itself when there is no bug or it lives below the cache. */
export function plantBug(device: BlockDevice, bug: PlantedBug | undefined, afterReads = 3): BlockDevice {
  if (bug === undefined || bug === 'skip-end-to-end-check' || journalBugOf(bug) !== undefined) return device;
  return new BuggyDevice(device, bug, afterReads);
}
