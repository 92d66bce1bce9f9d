/**
 * Bounds of the write-ahead journal, shared by the record format, the wire protocol, the node's
 * journal store and its clients. Each has its unit last and the reason for its value; the
 * relationships between them are checked when this module loads.
 */
import { assert, KiB, MiB } from '../core/index.js';

/**
 * Longest volume id a record may carry, in bytes. Cairn's volume ids are 16 hex characters; the
 * id also names a directory on the node, so it stays far below a file name's 255 bytes.
 */
export const journalVolumeIdBytesMax = 64;
/**
 * Data bytes one record may carry. A flush journals the dirty ranges of partly written extents
 * (whole extents skip the journal), and splits larger flushes into several records; 8 MiB keeps
 * one record's write and its CRC pass short while amortising the per-record overhead.
 */
export const journalRecordDataBytesMax = 8 * MiB;
/** Ranges one record may list: 4096 ranges of 16 bytes is a 64 KiB header at most. */
export const journalRecordRangesMax = 4096;
/** Fixed part of a record header (see record.ts), in bytes. */
export const journalRecordPrefixBytes = 36;
/** One range entry in a record header, in bytes. */
export const journalRangeEntryBytes = 16;
/** The record checksum that ends every record, in bytes. */
export const journalRecordTrailerBytes = 4;
/** The largest record: header with every range, the most data, the trailer. */
export const journalRecordBytesMax =
  journalRecordPrefixBytes +
  journalVolumeIdBytesMax +
  journalRecordRangesMax * journalRangeEntryBytes +
  journalRecordDataBytesMax +
  journalRecordTrailerBytes;

/**
 * Default size of one segment file, preallocated with zeros when the segment is created. 64 MiB
 * holds 16,000 records of 4 KiB; filling it with zeros takes a fraction of a second, off the
 * commit path when the writer creates its next segment ahead of need (CREATE).
 */
export const journalSegmentBytesDefault = 64 * MiB;
/** Smallest segment a node may be configured with: at least one largest record must fit. */
export const journalSegmentBytesMin = journalRecordBytesMax;
/** Largest segment: its index of records is held in memory while the segment is open. */
export const journalSegmentBytesMax = 1024 * MiB;
/** Segment ids are whole numbers below 2^53 (they name files, zero-padded to 16 digits). */
export const journalSegmentIdMax = Number.MAX_SAFE_INTEGER;
/** Epochs travel as u32: four billion takeovers of one volume. */
export const journalEpochMax = 0xffff_ffff;

/**
 * Bytes a READ may ask for in one answer. One record always fits, so a reader makes progress
 * whatever it asks; more than this it pages through with `fromLsn`.
 */
export const journalReadBytesMax = 16 * MiB;
/** Room for the fixed fields of a request or answer around a record or a READ's records. */
export const journalFrameOverheadBytes = 4 * KiB;
/** Largest request payload a node reads from a client: one APPEND of the largest record. */
export const journalRequestBytesMax = journalRecordBytesMax + journalFrameOverheadBytes;
/** Largest answer payload a client reads from a node: one READ of the most bytes. */
export const journalResponseBytesMax = journalReadBytesMax + journalFrameOverheadBytes;

/**
 * Bytes of requests one connection may have in flight on a node (payloads received and not yet
 * answered, plus answers not yet handed to the kernel). Past it the node stops reading from the
 * socket until answers go out, so a client that pipelines without reading answers holds at most
 * this much of the node's memory. One request of the largest size is always admitted.
 */
export const journalConnectionBytesInFlightMax = 64 * MiB;
/** Requests one connection may have in flight before the node stops reading from it. */
export const journalConnectionRequestsInFlightMax = 1024;
/**
 * READ and LIST answer bytes one node builds and sends at once, across connections. Appends are
 * bounded node-wide by journalQueuedBytesMax; without this, 1024 connections each within their
 * own budget could still hold 64 GiB of READ answers. Past it a READ is refused as retryable.
 */
export const journalServerAnswerBytesMax = 256 * MiB;
/** Connections one node's journal server accepts at once. */
export const journalConnectionsMax = 1024;
/** A connection that has not said HELLO within this is closed (slow or stray clients). */
export const journalHelloDeadlineMs = 10_000;

/**
 * Append bytes one node holds queued for its disks, across all segments. Past it an APPEND is
 * refused as retryable (EBUSY) rather than queued: the disk is the bottleneck, and a bounded
 * queue keeps commit latency bounded too.
 */
export const journalQueuedBytesMax = 256 * MiB;
/**
 * Bytes one group commit writes before its fdatasync (one record at least, whatever its size).
 * 4 MiB is a thousand 4 KiB records: more per fdatasync buys nothing, and the bound also limits
 * how far unsynced bytes can reach past a segment's durable end (the region a restart must
 * treat as possibly torn).
 */
export const journalBatchBytesMax = 4 * MiB;
/**
 * fdatasyncs one segment may have running at once. 1 is classic group commit: appends that
 * arrive while an fdatasync runs wait and share the next one. Overlapping up to 4 (writes still
 * one at a time, in order) measured no faster here for 4 KiB appends at QD32 (about 11,000 per
 * second either way on a loaded 2-core VM), so the simpler schedule stays; the store supports more.
 */
export const journalSyncsInFlightMax = 1;
/** Segments one volume may have on one node (a takeover or a replaced replica starts new ones). */
export const journalSegmentsPerVolumeMax = 1024;
/** Segments one node holds across all volumes: 4096 x 64 MiB = 256 GiB of journal at most. */
export const journalSegmentsMax = 4096;
/** Volumes one node keeps journal state (an epoch file, segments) for. */
export const journalVolumesMax = 16_384;
/** Segment files a node keeps open; idle ones beyond it are closed and reopened on use. */
export const journalOpenSegmentsMax = 256;

/** Longest client name a HELLO may carry (for the node's logs). */
export const journalClientNameBytesMax = 128;
/** Longest shared secret a HELLO may carry; the node's own secret is at most 4096 characters. */
export const journalSecretBytesMax = 4096;
/** Error messages on the wire are clipped to this many bytes. */
export const journalErrorMessageBytesMax = 1 * KiB;
/** Error codes on the wire ("EFENCED") are at most this long. */
export const journalErrorCodeBytesMax = 32;

assert(journalRecordBytesMax < 2 ** 32, 'a record length travels as u32');
assert(journalSegmentBytesMin <= journalSegmentBytesDefault && journalSegmentBytesDefault <= journalSegmentBytesMax);
assert(journalReadBytesMax >= journalRecordBytesMax, 'one record must fit one READ answer');
assert(journalRequestBytesMax < 2 ** 32 && journalResponseBytesMax < 2 ** 32, 'a frame length travels as u32');
assert(journalConnectionBytesInFlightMax >= journalRequestBytesMax, 'one largest request must fit the budget');
assert(journalServerAnswerBytesMax >= journalReadBytesMax, 'one largest READ answer must fit the node-wide budget');
assert(journalQueuedBytesMax >= journalBatchBytesMax && journalQueuedBytesMax >= journalRecordBytesMax);
assert(journalSyncsInFlightMax >= 1);
assert(journalSegmentsPerVolumeMax <= journalSegmentsMax);
assert(journalVolumeIdBytesMax < 256 && journalRecordRangesMax < 2 ** 16);
