/**
 * The write-back cache's bounds and timings, with units and reasons. The CLI's defaults for
 * `nbd serve` are these constants, so each default lives here only.
 */
import { MiB, assert, nbdRequestBytesMax } from '../core/index.js';

/** Dirty bytes one volume may hold before writers wait for a flush (back-pressure). */
export const dirtyBytesMaxDefault = 256 * MiB;
/** Clean and dirty bytes one volume's cache may hold. */
export const cacheBytesMaxDefault = 512 * MiB;
/**
 * Extent image bytes being built, encoded and stored at once across every volume of a frontend
 * (`nbd serve --publish-budget`); flushes and folds past it wait their turn. Publishing a 4 MiB
 * extent with 4+2 holds about 13 MiB (the image, the published bytes under it, six 1 MiB shards
 * and their framed copies), measured: 60 volumes folding at once took a frontend from 180 to
 * 969 MiB, and with this budget from 228 to 564 MiB (about 5x the budget in RSS, garbage
 * included). 64 MiB is one full fold batch (foldExtentsMax extents of 4 MiB), so one volume alone
 * publishes as fast as before.
 */
export const publishBytesMaxDefault = 64 * MiB;
/**
 * Clean cache bytes (bases: whole extents read, read ahead or just published) all volumes of a
 * frontend hold together (`nbd serve --cache-budget`); past it the least recently used are
 * dropped, from whichever volume. Without it the clean cache could reach --cache-size (512 MiB)
 * per attached volume. 1 GiB: two volumes at their full --cache-size, or 256 extents of 4 MiB.
 */
export const cacheBudgetBytesDefault = 1024 * MiB;
/** Dirty data older than this is flushed by the background flusher. */
export const flushAgeMsDefault = 5_000;
/** How often the background flusher looks for old dirty data. */
export const flushCheckMsDefault = 500;
/** Long enough for the topology to be re-read (2 s) and an etcd leader election (about 1-2 s). */
export const flushRetryMsDefault = 10_000;
/**
 * Journaled data older than this is folded into erasure-coded generations in the background, even
 * without memory pressure, so the journal (and what an attach must replay) stays short. Folding
 * sooner costs write amplification: a fold rewrites the whole extent (k+m shards) for whatever
 * small writes it holds. Measured with 4 KiB random writes over 1 GiB: folding every 2 s wrote
 * 865 bytes to the nodes' disks per byte written.
 */
export const foldAgeMsDefault = 30_000;
/**
 * Extent image bytes per second folds by age may re-encode (`--fold-rate`): 16 extents of 4 MiB
 * a second, about what one core encodes and sends with room to spare for the workload.
 */
export const foldBytesPerSecondDefault = 64 * 1024 * 1024;
/**
 * Journaled bytes, as a fraction of cacheBytesMax (which bounds dirty plus journaled bytes), above
 * which the background folds the extents that hold the most journaled bytes (the best bytes
 * folded per byte rewritten).
 */
export const foldPressureFraction = 0.5;
/** Extents one fold publishes at once: bounds its memory (one image each) and its burst of shard writes. */
export const foldExtentsMax = 16;
/** Extents loaded ahead of a sequential reader (fewer when the cache holds fewer). */
export const readAheadExtentsMax = 4;
/** Read misses at least this large load the whole extent into the cache. */
export const readWholeExtentMinBytes = 64 * 1024;
/** Reads retried when a flush replaced the extent under them; more means a bug. */
export const readRetriesMax = 8;

assert(nbdRequestBytesMax <= dirtyBytesMaxDefault, 'one NBD write must fit in the dirty budget');
assert(dirtyBytesMaxDefault <= cacheBytesMaxDefault, 'dirty bytes are part of the cache');
assert(flushCheckMsDefault < flushAgeMsDefault);
assert(
  publishBytesMaxDefault >= foldExtentsMax * 4 * MiB,
  'one fold batch of 4 MiB extents must fit the publish budget',
);
assert(cacheBytesMaxDefault <= cacheBudgetBytesDefault, 'one volume at its full cache must fit the shared budget');
