/**
 * The frontend's bounds and timings, each with its unit and why it has its value. The CLI reads
 * its defaults from here, so a default lives in one place.
 */
import { assert } from '../core/index.js';
import { journalRecordBytesMax } from '../journal/index.js';
import { lockTtlSecondsDefault } from '../meta/index.js';

/** How often targets and topology are re-read from etcd. */
export const topologyRefreshMs = 2_000;
/**
 * How long a volume stays attached after its last connection closes. Clients such as nbdcopy
 * and qemu-img open several connections one after another; re-attaching for each (lock, map
 * load) would be slow, and the lock would bounce between them.
 */
export const detachLingerMs = 1_500;
/**
 * How long a target that refused a shard put (507 disk full, or unreachable) is left out of this
 * frontend's placement. Longer than a flush's retry window (10 s), so the retry goes elsewhere.
 */
export const refusedTargetAvoidMs = 30_000;
/** How long an attach waits for another frontend's lock: its lease TTL (10 s) and some margin. */
export const lockWaitMsDefault = 12_000;
/**
 * A journal segment with less room than this left after an append is rotated at once: the next
 * record (up to journalRecordBytesMax) may not fit, and a full segment would fail a FLUSH.
 */
export const journalRotateBytesLeftMin = journalRecordBytesMax;
/** Node choices tried when creating a journal segment fails on some of them. */
export const journalCreateAttemptsMax = 3;
/** Folds within this long of each other share one etcd write of the journal layout. */
export const journalTrimDelayMs = 200;
/**
 * Volumes one frontend keeps attached at once (`nbd serve --max-volumes`); an attach past it is
 * refused with NBD_REP_ERR_POLICY and a log line. Each attached volume costs about 1 MiB idle
 * (engine, extent map, two etcd watches, a journal connection per replica) plus what its cache
 * holds (up to --cache-size), so this, with the shared publish budget, bounds the frontend's
 * memory. 256 leaves room for a node full of small VMs; lower it with a larger --cache-size.
 */
export const attachedVolumesMaxDefault = 256;
/** Lines a biting limit logs per this many ms; the rest are counted in the next line. */
export const frontendLimitLogIntervalMs = 10_000;
/** How often a waiting attach asks for the lock again. */
export const lockPollMs = 250;
/**
 * How long a volume whose last client left keeps retrying its final flush before the writes that
 * are still not durable are dropped (`--final-flush-retry`). Meanwhile it stays attached (lock
 * held, cache kept), so a client that reconnects gets its data. Two minutes ride out an overload
 * or a node restart (about 10 s), and bound how long a SIGTERM waits.
 */
export const finalFlushRetryMsDefault = 120_000;
/** The first wait between final flush attempts; each failure doubles it, up to the maximum. */
export const finalFlushBackoffMinMs = 250;
export const finalFlushBackoffMaxMs = 5_000;

assert(lockWaitMsDefault > lockTtlSecondsDefault * 1000, 'an attach must outwait a dead holder lease');
assert(lockPollMs < lockWaitMsDefault);
assert(0 < finalFlushBackoffMinMs && finalFlushBackoffMinMs <= finalFlushBackoffMaxMs);
assert(finalFlushBackoffMaxMs < finalFlushRetryMsDefault, 'the default bound must allow several attempts');
