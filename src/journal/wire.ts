/**
 * The journal wire protocol between a writer and a storage node's journal server: frames on one
 * persistent TCP connection, requests pipelined, answers in any order, matched by request id.
 * Pure: encoders and decoders only; the server (src/node/journal_server.ts) and the client
 * (src/shard/journal_client.ts) own the sockets. docs/journal.md describes the protocol for
 * people; this file is the reference.
 *
 *   frame = 16-byte header + payload (little-endian)
 *     [0, 4)   magic "CRJW"
 *     [4, 5)   op: 1 HELLO, 2 CREATE, 3 APPEND, 4 FENCE, 5 READ, 6 TRIM, 7 LIST, 8 STATS,
 *              9 SHARD_GET, 10 SHARD_PUT
 *     [5, 6)   status: 0 in a request; in an answer 0 ok, 1 error
 *     [6, 8)   zero
 *     [8, 12)  request id (u32), chosen by the client, echoed in the answer; clients never use 0,
 *              which the server uses for its last word on a frame whose id it could not read
 *     [12, 16) payload bytes (u32), at most journalRequestBytesMax / journalResponseBytesMax
 *
 *   payload fields: u8, u16, u32, u64 (a whole number below 2^53, else the frame is refused);
 *   str = u16 byte length + UTF-8 bytes. Per op (request -> ok answer):
 *     HELLO   u16 version, str client, str secret -> u16 version, str node, str zone,
 *             u64 segmentBytes, u32 recordBytesMax, u32 readBytesMax
 *     CREATE  str volume, u64 segment, u32 epoch -> u64 usedBytes, u64 capacityBytes
 *     APPEND  str volume, u64 segment, u32 epoch, u64 lsn, record bytes (the rest)
 *             -> u64 usedBytes, u64 capacityBytes
 *     FENCE   str volume, u32 epoch -> u32 epoch (the node's highest now)
 *     READ    str volume, u64 segment, u64 fromLsn, u32 maxBytes
 *             -> u8 tail (0 clean, 1 torn, 2 corrupt), u8 more, u16 0, u32 count, u64 nextLsn,
 *                records (the rest: whole records back to back, as on disk)
 *     TRIM    str volume, u8 mode (1 one segment, 2 every segment wholly below an LSN, 3 everything of
 *             a deleted volume: its segments, empty ones too, and its epoch; value 0), u64 value
 *             -> u32 segmentsDeleted
 *     LIST    str volume ('' for every volume) -> JSON (JournalListAnswer)
 *     STATS   (empty) -> JSON (JournalStats)
 *   and the shard ops, the node's shard store on the same connection (the HTTP API's GET and
 *   PUT without a request per shard):
 *     SHARD_GET  str key, u8 flags (bit 0: ranged; bit 1: send the seed), u64 offset, u64 length
 *                (both 0 when not ranged)
 *                -> u32 blockBytes, u64 dataBytes, u32 firstBlock, u64 start, u64 end,
 *                   u32 seed (only when asked: clients from before seeds do not ask),
 *                   the framed blocks [start, end) of the shard covering the range (the rest)
 *     SHARD_PUT  str key, the shard framed as on disk (the rest) -> (empty)
 *   error answer: str code, u8 retryable, u32 nodeEpoch (EFENCED: the node's epoch, else 0),
 *                 str message (at most journalErrorMessageBytesMax)
 *
 * What it keeps true: every decoder checks every length and value and throws a typed error
 * (InvalidArgumentError for a request, JournalProtocolError for an answer) on anything
 * malformed, never an untyped one; decodeFrameHeader() never throws. A wire u64 becomes a
 * number here, once.
 *
 * What it leaves out: TLS, and compression.
 */
import {
  AuthRejectedError,
  CairnError,
  ChecksumMismatchError,
  DiskFullError,
  InvalidArgumentError,
  RangeOutsideError,
  ShardExistsError,
  ShardNotFoundError,
  StorageIoError,
  UnavailableError,
  assert,
  BinaryReader as Reader,
  BinaryWriter as Writer,
} from '../core/index.js';
import {
  JournalFencedError,
  JournalLsnError,
  JournalProtocolError,
  JournalSegmentFullError,
  JournalSegmentNotFoundError,
} from './errors.js';
import {
  journalClientNameBytesMax,
  journalEpochMax,
  journalErrorCodeBytesMax,
  journalErrorMessageBytesMax,
  journalSecretBytesMax,
  journalSegmentIdMax,
  journalVolumeIdBytesMax,
} from './limits.js';
import { checkJournalVolumeId, isJournalVolumeId } from './record.js';

export const journalWireMagic = 0x574a5243; // "CRJW" read as a little-endian u32
export const journalProtocolVersion = 1;
export const journalFrameHeaderBytes = 16;

export const journalOps = {
  hello: 1,
  create: 2,
  append: 3,
  fence: 4,
  read: 5,
  trim: 6,
  list: 7,
  stats: 8,
  shardGet: 9,
  shardPut: 10,
} as const;
export type JournalOpName = keyof typeof journalOps;
const opNames = new Map<number, JournalOpName>(
  (Object.entries(journalOps) as [JournalOpName, number][]).map(([name, code]) => [code, name]),
);

/** How an op is named in messages and logs: `APPEND`, `SHARD_PUT`. */
export function opLabel(op: JournalOpName): string {
  return op.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase();
}

/** The name of op code `op`, or undefined for a code the protocol does not have. */
export function journalOpName(op: number): JournalOpName | undefined {
  return opNames.get(op);
}

export const frameStatus = { request: 0, ok: 0, error: 1 } as const;

export interface JournalFrameHeader {
  readonly op: number;
  readonly status: number;
  readonly requestId: number;
  readonly payloadBytes: number;
}

/** The 16-byte header of a frame. */
export function encodeFrameHeader(header: JournalFrameHeader): Uint8Array {
  assert(Number.isInteger(header.requestId) && header.requestId >= 0 && header.requestId <= 0xffff_ffff);
  assert(Number.isInteger(header.payloadBytes) && header.payloadBytes >= 0 && header.payloadBytes <= 0xffff_ffff);
  const out = new Uint8Array(journalFrameHeaderBytes);
  const view = new DataView(out.buffer);
  view.setUint32(0, journalWireMagic, true);
  view.setUint8(4, header.op);
  view.setUint8(5, header.status);
  view.setUint32(8, header.requestId, true);
  view.setUint32(12, header.payloadBytes, true);
  return out;
}

/**
 * Decodes a frame header from the first 16 bytes of `bytes`. Never throws: a header that cannot
 * be trusted (bad magic, nonzero reserved bytes, a status out of range, a payload over
 * `payloadBytesMax`) comes back as `{ problem }`, with the request id when the magic was right,
 * so the answer can still name the request. After such a header the stream cannot be re-synced:
 * the connection must close.
 */
export function decodeFrameHeader(
  bytes: Uint8Array,
  payloadBytesMax: number,
): { readonly header: JournalFrameHeader } | { readonly problem: string; readonly requestId?: number } {
  assert(bytes.length >= journalFrameHeaderBytes, 'decodeFrameHeader needs 16 bytes');
  const view = new DataView(bytes.buffer, bytes.byteOffset, journalFrameHeaderBytes);
  if (view.getUint32(0, true) !== journalWireMagic) return { problem: 'bad frame magic (not the journal protocol)' };
  const requestId = view.getUint32(8, true);
  const header: JournalFrameHeader = {
    op: view.getUint8(4),
    status: view.getUint8(5),
    requestId,
    payloadBytes: view.getUint32(12, true),
  };
  if (view.getUint16(6, true) !== 0) return { problem: 'nonzero reserved bytes in a frame header', requestId };
  if (header.status > 1) return { problem: `frame status ${header.status} is not 0 or 1`, requestId };
  if (header.payloadBytes > payloadBytesMax)
    return {
      problem: `a frame of ${header.payloadBytes} payload bytes is larger than the ${payloadBytesMax}-byte limit`,
      requestId,
    };
  return { header };
}

// ---------------------------------------------------------------------------------------------
// Payload fields

const requestReader = (op: JournalOpName, bytes: Uint8Array): Reader =>
  new Reader(bytes, (reason) => new InvalidArgumentError(`Malformed ${opLabel(op)} request: ${reason}`));
const answerReader = (op: JournalOpName, bytes: Uint8Array): Reader =>
  new Reader(bytes, (reason) => new JournalProtocolError(`Malformed ${opLabel(op)} answer: ${reason}`));

/** The volume id field; InvalidArgumentError naming it when it is not a valid id. */
function volumeField(r: Reader, allowEmpty = false): string {
  const volume = r.str('volume', journalVolumeIdBytesMax);
  return allowEmpty && volume === '' ? volume : checkJournalVolumeId(volume);
}

function segmentField(r: Reader): number {
  const segment = r.u64('segment');
  assert(segment <= journalSegmentIdMax);
  return segment;
}

function epochField(r: Reader): number {
  const epoch = r.u32('epoch');
  assert(epoch <= journalEpochMax);
  return epoch;
}

// ---------------------------------------------------------------------------------------------
// Requests and answers, per op. Encoders return the payload as parts, so that a record or a
// READ's records go to the socket without being copied into one buffer.

export interface HelloRequest {
  readonly protocolVersion: number;
  /** Who is connecting, for the node's logs ("frontend pid 123 on host x"). */
  readonly clientName: string;
  /** The node's shared secret, or '' when the node needs none. */
  readonly secret: string;
}

export interface HelloAnswer {
  readonly protocolVersion: number;
  readonly node: string;
  readonly zone: string;
  /** Size of a new segment on this node, in bytes. */
  readonly segmentBytes: number;
  readonly recordBytesMax: number;
  readonly readBytesMax: number;
}

export function encodeHelloRequest(req: HelloRequest): Uint8Array[] {
  return [
    new Writer()
      .u16(req.protocolVersion)
      .str(req.clientName, journalClientNameBytesMax)
      .str(req.secret, journalSecretBytesMax)
      .done(),
  ];
}

export function decodeHelloRequest(bytes: Uint8Array): HelloRequest {
  const r = requestReader('hello', bytes);
  const req = {
    protocolVersion: r.u16('version'),
    clientName: r.str('client name', journalClientNameBytesMax),
    secret: r.str('secret', journalSecretBytesMax),
  };
  r.end();
  return req;
}

export function encodeHelloAnswer(answer: HelloAnswer): Uint8Array[] {
  return [
    new Writer()
      .u16(answer.protocolVersion)
      .str(answer.node, 255)
      .str(answer.zone, 255)
      .u64(answer.segmentBytes)
      .u32(answer.recordBytesMax)
      .u32(answer.readBytesMax)
      .done(),
  ];
}

export function decodeHelloAnswer(bytes: Uint8Array): HelloAnswer {
  const r = answerReader('hello', bytes);
  const answer = {
    protocolVersion: r.u16('version'),
    node: r.str('node', 255),
    zone: r.str('zone', 255),
    segmentBytes: r.u64('segment bytes'),
    recordBytesMax: r.u32('record bytes max'),
    readBytesMax: r.u32('read bytes max'),
  };
  r.end();
  return answer;
}

export interface CreateRequest {
  readonly volume: string;
  readonly segment: number;
  readonly epoch: number;
}

/** What CREATE and APPEND answer: how full the segment is now, in bytes. */
export interface SegmentSpace {
  readonly usedBytes: number;
  readonly capacityBytes: number;
}

export function encodeCreateRequest(req: CreateRequest): Uint8Array[] {
  return [new Writer().str(req.volume, journalVolumeIdBytesMax).u64(req.segment).u32(req.epoch).done()];
}

export function decodeCreateRequest(bytes: Uint8Array): CreateRequest {
  const r = requestReader('create', bytes);
  const req = { volume: volumeField(r), segment: segmentField(r), epoch: epochField(r) };
  r.end();
  return req;
}

export function encodeSegmentSpace(space: SegmentSpace): Uint8Array[] {
  return [new Writer().u64(space.usedBytes).u64(space.capacityBytes).done()];
}

export function decodeSegmentSpace(op: 'create' | 'append', bytes: Uint8Array): SegmentSpace {
  const r = answerReader(op, bytes);
  const space = { usedBytes: r.u64('used bytes'), capacityBytes: r.u64('capacity bytes') };
  r.end();
  return space;
}

export interface AppendRequest {
  readonly volume: string;
  readonly segment: number;
  readonly epoch: number;
  readonly lsn: number;
  /** One encoded record (record.ts) whose volume, epoch and lsn are the fields above. */
  readonly record: Uint8Array;
}

export function encodeAppendRequest(req: AppendRequest): Uint8Array[] {
  return [
    new Writer().str(req.volume, journalVolumeIdBytesMax).u64(req.segment).u32(req.epoch).u64(req.lsn).done(),
    req.record,
  ];
}

/** The record is a view into `bytes`. */
export function decodeAppendRequest(bytes: Uint8Array): AppendRequest {
  const r = requestReader('append', bytes);
  return {
    volume: volumeField(r),
    segment: segmentField(r),
    epoch: epochField(r),
    lsn: r.u64('lsn'),
    record: r.rest(),
  };
}

export interface FenceRequest {
  readonly volume: string;
  readonly epoch: number;
}

export function encodeFenceRequest(req: FenceRequest): Uint8Array[] {
  return [new Writer().str(req.volume, journalVolumeIdBytesMax).u32(req.epoch).done()];
}

export function decodeFenceRequest(bytes: Uint8Array): FenceRequest {
  const r = requestReader('fence', bytes);
  const req = { volume: volumeField(r), epoch: epochField(r) };
  r.end();
  return req;
}

export function encodeFenceAnswer(epoch: number): Uint8Array[] {
  return [new Writer().u32(epoch).done()];
}

export function decodeFenceAnswer(bytes: Uint8Array): number {
  const r = answerReader('fence', bytes);
  const epoch = r.u32('epoch');
  r.end();
  return epoch;
}

export interface ReadRequest {
  readonly volume: string;
  readonly segment: number;
  /** The first LSN wanted: records below it are skipped. */
  readonly fromLsn: number;
  /** Bytes of records wanted at most; one record is sent even when it alone is larger. */
  readonly maxBytes: number;
}

/**
 * How a segment's log ends after its valid records: `clean` (zeros: nothing more was written),
 * `torn` (bytes that are not a record: a write cut short by a crash, ignored), or, in a READ
 * answer only, `corrupt` (a record that checked when the node loaded the segment no longer does:
 * the disk changed it; what follows it is not sent, read another replica).
 */
export type SegmentTail = 'clean' | 'torn' | 'corrupt';
const tailCodes: readonly SegmentTail[] = ['clean', 'torn', 'corrupt'];

export interface ReadAnswer {
  readonly tail: SegmentTail;
  /** True when records at or above nextLsn remain: ask again from nextLsn. */
  readonly more: boolean;
  /** The LSN to ask from next (one above the last record sent, or fromLsn when none was). */
  readonly nextLsn: number;
  readonly count: number;
  /** `count` whole encoded records, back to back, in LSN order. */
  readonly records: Uint8Array;
}

export function encodeReadRequest(req: ReadRequest): Uint8Array[] {
  return [
    new Writer().str(req.volume, journalVolumeIdBytesMax).u64(req.segment).u64(req.fromLsn).u32(req.maxBytes).done(),
  ];
}

export function decodeReadRequest(bytes: Uint8Array): ReadRequest {
  const r = requestReader('read', bytes);
  const req = {
    volume: volumeField(r),
    segment: segmentField(r),
    fromLsn: r.u64('fromLsn'),
    maxBytes: r.u32('maxBytes'),
  };
  r.end();
  return req;
}

export function encodeReadAnswer(answer: ReadAnswer): Uint8Array[] {
  return [
    new Writer()
      .u8(tailCodes.indexOf(answer.tail))
      .u8(answer.more ? 1 : 0)
      .u16(0)
      .u32(answer.count)
      .u64(answer.nextLsn)
      .done(),
    answer.records,
  ];
}

export function decodeReadAnswer(bytes: Uint8Array): ReadAnswer {
  const r = answerReader('read', bytes);
  const tail = tailCodes[r.u8('tail')];
  const more = r.u8('more');
  r.u16('reserved');
  const count = r.u32('count');
  const nextLsn = r.u64('nextLsn');
  if (tail === undefined || more > 1) throw new JournalProtocolError('Malformed READ answer: bad tail or more flag');
  return { tail, more: more === 1, nextLsn, count, records: r.rest() };
}

/** Longest shard key on the wire (the shard layer checks the key itself). */
export const journalShardKeyBytesMax = 1024;

export interface ShardGetRequest {
  readonly key: string;
  /** Data bytes wanted; the whole shard when absent. */
  readonly range?: { readonly offset: number; readonly length: number };
  /** The answer carries the shard's seed (every client since seeds asks; older ones did not). */
  readonly withSeed?: boolean;
}

const shardGetRanged = 1;
const shardGetWithSeed = 2;

export interface ShardGetAnswer {
  readonly blockBytes: number;
  readonly dataBytes: number;
  readonly firstBlock: number;
  /** Where `framed` sits in the shard's framed form. */
  readonly start: number;
  readonly end: number;
  /** The seed the node's stored header says the block CRCs start from. */
  readonly seed: number;
  readonly framed: Uint8Array;
}

export function encodeShardGetRequest(req: ShardGetRequest): Uint8Array[] {
  const flags = (req.range === undefined ? 0 : shardGetRanged) | (req.withSeed === true ? shardGetWithSeed : 0);
  const w = new Writer().str(req.key, journalShardKeyBytesMax).u8(flags);
  return [
    w
      .u64(req.range?.offset ?? 0)
      .u64(req.range?.length ?? 0)
      .done(),
  ];
}

export function decodeShardGetRequest(bytes: Uint8Array): ShardGetRequest {
  const r = requestReader('shardGet', bytes);
  const key = r.str('key', journalShardKeyBytesMax);
  const flags = r.u8('flags');
  const offset = r.u64('offset');
  const length = r.u64('length');
  r.end();
  if (flags > (shardGetRanged | shardGetWithSeed))
    throw new InvalidArgumentError(`Malformed SHARD_GET request: unknown flags ${flags}`);
  return {
    key,
    ...((flags & shardGetRanged) !== 0 ? { range: { offset, length } } : {}),
    ...((flags & shardGetWithSeed) !== 0 ? { withSeed: true } : {}),
  };
}

/** The answer to a SHARD_GET; with the seed only when the request asked for it. */
export function encodeShardGetAnswer(a: ShardGetAnswer, withSeed: boolean): Uint8Array[] {
  const w = new Writer().u32(a.blockBytes).u64(a.dataBytes).u32(a.firstBlock).u64(a.start).u64(a.end);
  return [(withSeed ? w.u32(a.seed) : w).done(), a.framed];
}

/** Decodes the answer to a SHARD_GET that asked for the seed (`withSeed`) or not (seed 0). */
export function decodeShardGetAnswer(bytes: Uint8Array, withSeed = true): ShardGetAnswer {
  const r = answerReader('shardGet', bytes);
  const answer = {
    blockBytes: r.u32('blockBytes'),
    dataBytes: r.u64('dataBytes'),
    firstBlock: r.u32('firstBlock'),
    start: r.u64('start'),
    end: r.u64('end'),
    seed: withSeed ? r.u32('seed') : 0,
    framed: r.rest(),
  };
  if (answer.end < answer.start || answer.framed.length !== answer.end - answer.start)
    throw new JournalProtocolError(
      `Malformed SHARD_GET answer: ${answer.framed.length} framed bytes for the span [${answer.start}, ${answer.end})`,
    );
  return answer;
}

export function encodeShardPutRequest(key: string, framed: Uint8Array): Uint8Array[] {
  return [new Writer().str(key, journalShardKeyBytesMax).done(), framed];
}

export function decodeShardPutRequest(bytes: Uint8Array): { key: string; framed: Uint8Array } {
  const r = requestReader('shardPut', bytes);
  return { key: r.str('key', journalShardKeyBytesMax), framed: r.rest() };
}

/**
 * One segment; every segment wholly below an LSN; or (`deleted`) everything the node keeps of a
 * volume that no longer exists: every segment, empty ones too, and its epoch.
 */
export type TrimRequest =
  | { readonly volume: string; readonly segment: number }
  | { readonly volume: string; readonly belowLsn: number }
  | { readonly volume: string; readonly deleted: true };

export function encodeTrimRequest(req: TrimRequest): Uint8Array[] {
  const w = new Writer().str(req.volume, journalVolumeIdBytesMax);
  if ('segment' in req) w.u8(1).u64(req.segment);
  else if ('belowLsn' in req) w.u8(2).u64(req.belowLsn);
  else w.u8(3).u64(0);
  return [w.done()];
}

export function decodeTrimRequest(bytes: Uint8Array): TrimRequest {
  const r = requestReader('trim', bytes);
  const volume = volumeField(r);
  const mode = r.u8('mode');
  const value = r.u64(mode === 1 ? 'segment' : mode === 2 ? 'belowLsn' : 'value');
  r.end();
  if (mode === 1) return { volume, segment: value };
  if (mode === 2) return { volume, belowLsn: value };
  if (mode === 3 && value === 0) return { volume, deleted: true };
  throw new InvalidArgumentError(
    `Malformed TRIM request: mode ${mode} is not 1 (segment), 2 (below an LSN) or 3 (a deleted volume, value 0)`,
  );
}

export function encodeCountAnswer(count: number): Uint8Array[] {
  return [new Writer().u32(count).done()];
}

export function decodeCountAnswer(op: JournalOpName, bytes: Uint8Array): number {
  const r = answerReader(op, bytes);
  const count = r.u32('count');
  r.end();
  return count;
}

export function encodeListRequest(volume: string | undefined): Uint8Array[] {
  return [new Writer().str(volume ?? '', journalVolumeIdBytesMax).done()];
}

/** The volume, or undefined for every volume. */
export function decodeListRequest(bytes: Uint8Array): string | undefined {
  const r = requestReader('list', bytes);
  const volume = volumeField(r, true);
  r.end();
  return volume === '' ? undefined : volume;
}

/** One segment of one volume on one node, as LIST shows it. */
export interface JournalSegmentInfo {
  readonly segment: number;
  readonly capacityBytes: number;
  /** Bytes of valid records, from the start of the file: where the next record goes. */
  readonly usedBytes: number;
  readonly records: number;
  /** LSN of the first and last valid record; null when the segment holds none. */
  readonly firstLsn: number | null;
  readonly lastLsn: number | null;
  /** Epoch of the last valid record; null when the segment holds none. */
  readonly lastEpoch: number | null;
  readonly tail: SegmentTail;
}

export interface JournalVolumeInfo {
  readonly volume: string;
  /** The highest epoch the node has seen for the volume (0: none yet). */
  readonly epoch: number;
  /** In segment id order. */
  readonly segments: readonly JournalSegmentInfo[];
}

export interface JournalListAnswer {
  readonly volumes: readonly JournalVolumeInfo[];
}

/** Counters since the node started, for tests, benchmarks and operators. */
export interface JournalStats {
  readonly appends: number;
  readonly appendedBytes: number;
  /** fdatasync calls on segment files (group commit makes this fewer than appends). */
  readonly fsyncs: number;
  readonly creates: number;
  readonly fences: number;
  /** Appends and fences refused because the node had seen a higher epoch. */
  readonly fencedRefusals: number;
  readonly reads: number;
  readonly trims: number;
  /** Segments whose tail was torn when they were loaded. */
  readonly tornTails: number;
  /** Append bytes queued for the disk right now. */
  readonly queuedBytes: number;
  readonly connections: number;
  /** Frames answered with EPROTO or EINVAL, and connections closed for bad framing. */
  readonly badFrames: number;
  /** Spare segments ready for creates, and creates that took one (absent from older nodes). */
  readonly spares?: number;
  readonly sparesTaken?: number;
}

const statsFields: readonly (keyof JournalStats)[] = [
  'appends',
  'appendedBytes',
  'fsyncs',
  'creates',
  'fences',
  'fencedRefusals',
  'reads',
  'trims',
  'tornTails',
  'queuedBytes',
  'connections',
  'badFrames',
];
const optionalStatsFields: readonly (keyof JournalStats)[] = ['spares', 'sparesTaken'];

export function encodeJsonAnswer(value: JournalListAnswer | JournalStats): Uint8Array[] {
  return [Buffer.from(JSON.stringify(value), 'utf8')];
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isCountOrNull = (v: unknown): v is number | null => v === null || isCount(v);

function parseJsonAnswer(op: JournalOpName, bytes: Uint8Array): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch {
    throw new JournalProtocolError(`Malformed ${opLabel(op)} answer: not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new JournalProtocolError(`Malformed ${opLabel(op)} answer: not an object`);
  return value as Record<string, unknown>;
}

export function decodeStatsAnswer(bytes: Uint8Array): JournalStats {
  const o = parseJsonAnswer('stats', bytes);
  const out: Record<string, number> = {};
  for (const field of statsFields) {
    const v = o[field];
    if (!isCount(v)) throw new JournalProtocolError(`Malformed STATS answer: "${field}" is not a count`);
    out[field] = v;
  }
  for (const field of optionalStatsFields) {
    const v = o[field];
    if (v === undefined) continue;
    if (!isCount(v)) throw new JournalProtocolError(`Malformed STATS answer: "${field}" is not a count`);
    out[field] = v;
  }
  return out as unknown as JournalStats;
}

export function decodeListAnswer(bytes: Uint8Array): JournalListAnswer {
  const bad = (why: string): JournalProtocolError => new JournalProtocolError(`Malformed LIST answer: ${why}`);
  const o = parseJsonAnswer('list', bytes);
  if (!Array.isArray(o.volumes)) throw bad('"volumes" is not a list');
  const volumes = o.volumes.map((v: unknown): JournalVolumeInfo => {
    const e = (typeof v === 'object' && v !== null ? v : {}) as Record<string, unknown>;
    if (typeof e.volume !== 'string' || !isJournalVolumeId(e.volume) || !isCount(e.epoch) || !Array.isArray(e.segments))
      throw bad('a volume entry lacks volume, epoch or segments');
    const segments = e.segments.map((s: unknown): JournalSegmentInfo => {
      const g = (typeof s === 'object' && s !== null ? s : {}) as Record<string, unknown>;
      const tail = g.tail as SegmentTail;
      if (
        !isCount(g.segment) ||
        !isCount(g.capacityBytes) ||
        !isCount(g.usedBytes) ||
        !isCount(g.records) ||
        !isCountOrNull(g.firstLsn) ||
        !isCountOrNull(g.lastLsn) ||
        !isCountOrNull(g.lastEpoch) ||
        !tailCodes.includes(tail)
      )
        throw bad(`a segment entry of volume ${e.volume} is malformed`);
      return {
        segment: g.segment,
        capacityBytes: g.capacityBytes,
        usedBytes: g.usedBytes,
        records: g.records,
        firstLsn: g.firstLsn,
        lastLsn: g.lastLsn,
        lastEpoch: g.lastEpoch,
        tail,
      };
    });
    return { volume: e.volume, epoch: e.epoch, segments };
  });
  return { volumes };
}

// ---------------------------------------------------------------------------------------------
// Errors

export interface WireError {
  readonly code: string;
  readonly retryable: boolean;
  readonly message: string;
  /** EFENCED: the highest epoch the node has seen; else 0. */
  readonly nodeEpoch: number;
}

/** The one mapping from a thrown error to what the node sends. Non-Cairn errors are EINTERNAL. */
export function wireErrorOf(err: unknown): WireError {
  if (err instanceof CairnError) {
    return {
      code: /^[A-Z0-9_]{1,32}$/.test(err.code) ? err.code : 'EINTERNAL',
      retryable: err.retryable,
      message: err.message,
      nodeEpoch: err instanceof JournalFencedError ? err.nodeEpoch : 0,
    };
  }
  return {
    code: 'EINTERNAL',
    retryable: false,
    message: err instanceof Error ? err.message : String(err),
    nodeEpoch: 0,
  };
}

export function encodeErrorAnswer(error: WireError): Uint8Array[] {
  // Clip by bytes; a UTF-8 sequence cut in two decodes as U+FFFD, which the loop drops again.
  let text = error.message;
  if (Buffer.byteLength(text) > journalErrorMessageBytesMax) {
    text = Buffer.from(text, 'utf8').subarray(0, journalErrorMessageBytesMax).toString('utf8');
    while (Buffer.byteLength(text) > journalErrorMessageBytesMax) text = text.slice(0, -1);
  }
  return [
    new Writer()
      .str(error.code, journalErrorCodeBytesMax)
      .u8(error.retryable ? 1 : 0)
      .u32(error.nodeEpoch)
      .str(text, journalErrorMessageBytesMax)
      .done(),
  ];
}

export function decodeErrorAnswer(op: JournalOpName, bytes: Uint8Array): WireError {
  const r = answerReader(op, bytes);
  const error = {
    code: r.str('code', journalErrorCodeBytesMax),
    retryable: r.u8('retryable') === 1,
    nodeEpoch: r.u32('node epoch'),
    message: r.str('message', journalErrorMessageBytesMax),
  };
  r.end();
  return error;
}

/**
 * The one mapping from an error answer back to a typed error. `epoch` is the epoch the request
 * carried (for JournalFencedError); `message` already names the node and the object.
 */
export function errorFromWire(error: WireError, epoch = 0): CairnError {
  const { code, message, retryable } = error;
  switch (code) {
    case 'EFENCED':
      return new JournalFencedError(message, epoch, error.nodeEpoch);
    case 'ELSN':
      return new JournalLsnError(message);
    case 'ESEGMENTFULL':
      return new JournalSegmentFullError(message);
    case 'ENOSEGMENT':
      return new JournalSegmentNotFoundError(message);
    case 'EPROTO':
      return new JournalProtocolError(message);
    case 'EINVAL':
      return new InvalidArgumentError(message);
    case 'EAUTH':
      return new AuthRejectedError(message);
    case 'ENOSPC':
      return new DiskFullError(message);
    case 'ECHECKSUM':
      return new ChecksumMismatchError(message);
    case 'ENOENT':
      return new ShardNotFoundError(message);
    case 'EEXIST':
      return new ShardExistsError(message);
    case 'ERANGE':
      return new RangeOutsideError(message);
    case 'EIO':
      return new StorageIoError(message, { retryable });
    case 'EUNAVAILABLE':
    case 'EBUSY':
      return new UnavailableError(message);
    default:
      return new CairnError(code, message, { retryable });
  }
}
