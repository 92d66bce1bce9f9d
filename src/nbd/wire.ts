/**
 * The NBD wire format: constants, and pure encoders and decoders for every structure of the
 * fixed-newstyle handshake and the transmission phase, in both directions (the client side is
 * here so tests and the raw test client speak the same bytes the server does).
 *
 * What it keeps true: every decoder checks every length it reads against the bytes it was given
 * and returns `{ ok: false, error }` for bad client input instead of throwing; encoders assert
 * their arguments (a bad argument there is our bug). A wire u64 offset becomes a JavaScript
 * number here, once: values above 2^53 - 1 decode as `null` so the session can refuse them.
 * Strings are UTF-8 without NUL, at most stringBytesMax bytes, as the protocol requires.
 *
 * What it leaves out: I/O, state, validation against an export (see validate.ts), TLS, the
 * oldstyle handshake and the experimental extended headers.
 */
import { assert, AssertionError } from '../core/index.js';

/**
 * Throws AssertionError. Hot paths write `if (!ok) fail(\`...\`)` instead of
 * `assert(ok, \`...\`)`, because a template-literal message is built on every call even when
 * the assertion holds, and that cost more than the encoding itself (measured).
 */
function fail(message: string): never {
  throw new AssertionError(message);
}

// ---------------------------------------------------------------------------------------------
// Constants (values from the protocol; names are ours, camelCase).

/** 'NBDMAGIC': the first 8 bytes the server sends. */
export const nbdMagic = 0x4e42444d41474943n;
/** 'IHAVEOPT': sent by the server after nbdMagic, and by the client before every option. */
export const optionMagic = 0x49484156454f5054n;
export const optionReplyMagic = 0x3e889045565a9n;
export const requestMagic = 0x25609513;
export const simpleReplyMagic = 0x67446698;
export const structuredReplyMagic = 0x668e33ef;

export const handshakeFlag = { fixedNewstyle: 1 << 0, noZeroes: 1 << 1 } as const;
export const clientFlag = { fixedNewstyle: 1 << 0, noZeroes: 1 << 1 } as const;

export const optionCode = {
  exportName: 1,
  abort: 2,
  list: 3,
  peekExport: 4,
  startTls: 5,
  info: 6,
  go: 7,
  structuredReply: 8,
  listMetaContext: 9,
  setMetaContext: 10,
  extendedHeaders: 11,
} as const;

/** Protocol name of an option for log lines: 7 -> "NBD_OPT_GO". */
export function optionName(option: number): string {
  for (const [name, value] of Object.entries(optionCode)) {
    if (value === option) return `NBD_OPT_${name.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
  }
  return `option ${option}`;
}

const replyErrorBit = 0x80000000;
export const optionReplyCode = {
  ack: 1,
  server: 2,
  info: 3,
  metaContext: 4,
  errUnsup: replyErrorBit + 1,
  errPolicy: replyErrorBit + 2,
  errInvalid: replyErrorBit + 3,
  errPlatform: replyErrorBit + 4,
  errTlsReqd: replyErrorBit + 5,
  errUnknown: replyErrorBit + 6,
  errShutdown: replyErrorBit + 7,
  errBlockSizeReqd: replyErrorBit + 8,
  errTooBig: replyErrorBit + 9,
} as const;

/** True for the NBD_REP_ERR_* reply types (bit 31 set). */
export function isOptionReplyError(replyType: number): boolean {
  return replyType >= replyErrorBit;
}

export const infoType = { export: 0, name: 1, description: 2, blockSize: 3 } as const;

export const transmissionFlag = {
  hasFlags: 1 << 0,
  readOnly: 1 << 1,
  sendFlush: 1 << 2,
  sendFua: 1 << 3,
  rotational: 1 << 4,
  sendTrim: 1 << 5,
  sendWriteZeroes: 1 << 6,
  sendDf: 1 << 7,
  canMultiConn: 1 << 8,
  sendResize: 1 << 9,
  sendCache: 1 << 10,
  sendFastZero: 1 << 11,
} as const;

export const commandType = {
  read: 0,
  write: 1,
  disc: 2,
  flush: 3,
  trim: 4,
  cache: 5,
  writeZeroes: 6,
  blockStatus: 7,
} as const;

export const commandFlag = {
  fua: 1 << 0,
  noHole: 1 << 1,
  df: 1 << 2,
  reqOne: 1 << 3,
  fastZero: 1 << 4,
  payloadLen: 1 << 5,
} as const;

export const chunkFlag = { done: 1 << 0 } as const;

export const chunkType = {
  none: 0,
  offsetData: 1,
  offsetHole: 2,
  blockStatus: 5,
  error: 0x8000 + 1,
  errorOffset: 0x8000 + 2,
} as const;

/** Error values of the transmission phase (the protocol's own numbering, not the host's errno). */
export const nbdErrno = {
  ok: 0,
  eperm: 1,
  eio: 5,
  enomem: 12,
  einval: 22,
  enospc: 28,
  eoverflow: 75,
  enotsup: 95,
  eshutdown: 108,
} as const;

/** Flags of a base:allocation block status descriptor. */
export const allocationFlag = { hole: 1 << 0, zero: 1 << 1 } as const;

/** The protocol caps every string (export names, messages, context names) at 4096 bytes. */
export const stringBytesMax = 4096;

/** Fixed sizes of the structures below, in bytes. */
export const serverGreetingBytes = 18;
export const clientFlagsBytes = 4;
export const optionHeaderBytes = 16;
export const optionReplyHeaderBytes = 20;
/** NBD_OPT_EXPORT_NAME's reply: size, flags, then 124 zero bytes unless NO_ZEROES was agreed. */
export const exportNameReplyBytes = 134;
export const exportNameReplyBytesNoZeroes = 10;
export const requestHeaderBytes = 28;
export const simpleReplyBytes = 16;
export const chunkHeaderBytes = 20;
/** A block status descriptor: 32-bit length then 32-bit flags. */
export const blockStatusDescriptorBytes = 8;

const u32Max = 0xffffffff;

// ---------------------------------------------------------------------------------------------
// Small helpers.

export type Decoded<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: string };

function ok<T>(value: T): Decoded<T> {
  return { ok: true, value };
}
function bad<T>(error: string): Decoded<T> {
  return { ok: false, error };
}

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

// Byte-level access for the four per-request hot paths (request header, simple reply, chunk
// header, OFFSET_DATA head): a DataView costs more than the rest of the encoding. Each caller
// either allocated `bytes` at the exact size itself or checked its length first, and these
// helpers assert the index, because a typed array silently ignores writes past its end.
function putU16(bytes: Uint8Array, at: number, value: number): void {
  assert(at + 2 <= bytes.length);
  bytes[at] = value >>> 8;
  bytes[at + 1] = value & 0xff;
}
function putU32(bytes: Uint8Array, at: number, value: number): void {
  assert(at + 4 <= bytes.length);
  bytes[at] = value >>> 24;
  bytes[at + 1] = (value >>> 16) & 0xff;
  bytes[at + 2] = (value >>> 8) & 0xff;
  bytes[at + 3] = value & 0xff;
}
function getU16(bytes: Uint8Array, at: number): number {
  assert(at + 2 <= bytes.length);
  return (bytes[at]! << 8) | bytes[at + 1]!;
}
function getU32(bytes: Uint8Array, at: number): number {
  assert(at + 4 <= bytes.length);
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
}
/** A u64 split in two u32 halves, e.g. 2^40 + 5 -> high 256, low 5. */
function putU64Number(bytes: Uint8Array, at: number, value: number): void {
  if (!(Number.isSafeInteger(value) && value >= 0)) fail(`u64 must be a safe non-negative integer, got ${value}`);
  putU32(bytes, at, Math.floor(value / 0x100000000));
  putU32(bytes, at + 4, value % 0x100000000);
}
/** The cookie is opaque: copy its 8 bytes as a bigint without a DataView. */
function putCookie(bytes: Uint8Array, at: number, cookie: bigint): void {
  putU32(bytes, at, Number((cookie >> 32n) & 0xffffffffn));
  putU32(bytes, at + 4, Number(cookie & 0xffffffffn));
}
function getCookie(bytes: Uint8Array, at: number): bigint {
  return (BigInt(getU32(bytes, at)) << 32n) | BigInt(getU32(bytes, at + 4));
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/** UTF-8 bytes of a string we send; asserts the protocol's rules (our strings, our bug). */
export function encodeString(text: string): Uint8Array {
  const bytes = utf8Encoder.encode(text);
  assert(bytes.length <= stringBytesMax, `NBD string of ${bytes.length} bytes exceeds ${stringBytesMax}`);
  assert(!bytes.includes(0), 'NBD strings must not contain NUL');
  return bytes;
}

/** Decodes a client's string: valid UTF-8, no NUL, at most stringBytesMax bytes. */
export function decodeString(bytes: Uint8Array, what: string): Decoded<string> {
  if (bytes.length > stringBytesMax) return bad(`${what} is ${bytes.length} bytes, more than ${stringBytesMax}`);
  if (bytes.includes(0)) return bad(`${what} contains a NUL byte`);
  try {
    return ok(utf8Decoder.decode(bytes));
  } catch {
    return bad(`${what} is not valid UTF-8`);
  }
}

/**
 * Shortens a message for the wire to at most `bytesMax` UTF-8 bytes without splitting a
 * character, and drops NULs. Used for error texts that may come from deep layers.
 */
export function clipMessage(text: string, bytesMax = 1024): string {
  let clipped = text.replace(/\0/g, '');
  while (utf8Encoder.encode(clipped).length > bytesMax) clipped = clipped.slice(0, Math.floor(clipped.length * 0.9));
  return clipped;
}

/**
 * Reads a big-endian u64 as a number when it is at most 2^53 - 1, else null. Done with two u32
 * halves: the high half must be below 2^21 for the whole to fit in 53 bits, e.g. high 0x1fffff,
 * low 0xffffffff is 2^53 - 1, the largest value that comes back as a number.
 */
function readU64Safe(view: DataView, at: number): number | null {
  const high = view.getUint32(at);
  const low = view.getUint32(at + 4);
  if (high >= 0x200000) return null;
  return high * 0x100000000 + low;
}

function writeU64(view: DataView, at: number, value: number | bigint): void {
  if (typeof value === 'bigint') {
    if (!(value >= 0n && value <= 0xffffffffffffffffn)) fail(`u64 out of range: ${value}`);
    view.setBigUint64(at, value);
    return;
  }
  if (!(Number.isSafeInteger(value) && value >= 0)) fail(`u64 must be a safe non-negative integer, got ${value}`);
  view.setUint32(at, Math.floor(value / 0x100000000));
  view.setUint32(at + 4, value % 0x100000000);
}

function assertU32(value: number, what: string): void {
  if (!(Number.isInteger(value) && value >= 0 && value <= u32Max)) fail(`${what} must be a u32, got ${value}`);
}
function assertU16(value: number, what: string): void {
  if (!(Number.isInteger(value) && value >= 0 && value <= 0xffff)) fail(`${what} must be a u16, got ${value}`);
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Handshake: greeting and client flags.

export function encodeServerGreeting(flags: number): Uint8Array {
  assertU16(flags, 'handshake flags');
  const out = new Uint8Array(serverGreetingBytes);
  const view = viewOf(out);
  view.setBigUint64(0, nbdMagic);
  view.setBigUint64(8, optionMagic);
  view.setUint16(16, flags);
  return out;
}

export function decodeServerGreeting(bytes: Uint8Array): Decoded<{ flags: number }> {
  if (bytes.length !== serverGreetingBytes) return bad(`greeting must be ${serverGreetingBytes} bytes`);
  const view = viewOf(bytes);
  if (view.getBigUint64(0) !== nbdMagic) return bad('greeting does not start with NBDMAGIC');
  if (view.getBigUint64(8) !== optionMagic) return bad('greeting is not newstyle (no IHAVEOPT)');
  return ok({ flags: view.getUint16(16) });
}

export function encodeClientFlags(flags: number): Uint8Array {
  assertU32(flags, 'client flags');
  const out = new Uint8Array(clientFlagsBytes);
  viewOf(out).setUint32(0, flags);
  return out;
}

export function decodeClientFlags(bytes: Uint8Array): Decoded<number> {
  if (bytes.length !== clientFlagsBytes) return bad(`client flags must be ${clientFlagsBytes} bytes`);
  return ok(viewOf(bytes).getUint32(0));
}

// ---------------------------------------------------------------------------------------------
// Handshake: options (client to server).

export interface OptionHeader {
  readonly option: number;
  /** Bytes of option data that follow the header. */
  readonly length: number;
}

export function encodeOption(option: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  assertU32(option, 'option');
  assertU32(data.length, 'option length');
  const out = new Uint8Array(optionHeaderBytes + data.length);
  const view = viewOf(out);
  view.setBigUint64(0, optionMagic);
  view.setUint32(8, option);
  view.setUint32(12, data.length);
  out.set(data, optionHeaderBytes);
  return out;
}

export function decodeOptionHeader(bytes: Uint8Array): Decoded<OptionHeader> {
  if (bytes.length !== optionHeaderBytes) return bad(`option header must be ${optionHeaderBytes} bytes`);
  const view = viewOf(bytes);
  if (view.getBigUint64(0) !== optionMagic) return bad('option does not start with IHAVEOPT');
  return ok({ option: view.getUint32(8), length: view.getUint32(12) });
}

/** NBD_OPT_INFO and NBD_OPT_GO data: an export name and the information types asked for. */
export interface InfoRequest {
  readonly name: string;
  readonly requests: readonly number[];
}

export function encodeInfoRequest(request: InfoRequest): Uint8Array {
  const name = encodeString(request.name);
  assertU16(request.requests.length, 'info request count');
  const out = new Uint8Array(4 + name.length + 2 + 2 * request.requests.length);
  const view = viewOf(out);
  view.setUint32(0, name.length);
  out.set(name, 4);
  let at = 4 + name.length;
  view.setUint16(at, request.requests.length);
  at += 2;
  for (const r of request.requests) {
    assertU16(r, 'info type');
    view.setUint16(at, r);
    at += 2;
  }
  return out;
}

/**
 * Layout: u32 name length, name, u16 count, count x u16. The name length must leave room for the
 * count (so at most data length - 6), and the data must end exactly after the last request.
 */
export function decodeInfoRequest(data: Uint8Array): Decoded<InfoRequest> {
  if (data.length < 6) return bad(`INFO/GO data is ${data.length} bytes, less than the 6 every request needs`);
  const view = viewOf(data);
  const nameBytes = view.getUint32(0);
  if (nameBytes > data.length - 6) return bad(`export name length ${nameBytes} overruns the ${data.length}-byte data`);
  const name = decodeString(data.subarray(4, 4 + nameBytes), 'export name');
  if (!name.ok) return name;
  const countAt = 4 + nameBytes;
  const count = view.getUint16(countAt);
  const expected = countAt + 2 + 2 * count;
  if (expected !== data.length) {
    return bad(`INFO/GO data is ${data.length} bytes but ${count} information requests need ${expected}`);
  }
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(view.getUint16(countAt + 2 + 2 * i));
  return ok({ name: name.value, requests });
}

/** NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT data. */
export interface MetaContextRequest {
  readonly exportName: string;
  readonly queries: readonly string[];
}

export function encodeMetaContextRequest(request: MetaContextRequest): Uint8Array {
  const parts: Uint8Array[] = [];
  const name = encodeString(request.exportName);
  parts.push(encodeU32(name.length), name, encodeU32(request.queries.length));
  for (const q of request.queries) {
    const bytes = encodeString(q);
    parts.push(encodeU32(bytes.length), bytes);
  }
  return concat(parts);
}

function encodeU32(value: number): Uint8Array {
  assertU32(value, 'u32');
  const out = new Uint8Array(4);
  viewOf(out).setUint32(0, value);
  return out;
}

/**
 * Layout: u32 name length, name, u32 query count, then per query u32 length and the query. Every
 * length is checked against what remains, the count against the fewest bytes its queries could
 * take (4 each), and nothing may follow the last query.
 */
export function decodeMetaContextRequest(data: Uint8Array): Decoded<MetaContextRequest> {
  const view = viewOf(data);
  let at = 0;
  const remaining = (): number => data.length - at;
  if (remaining() < 4) return bad('meta context data ends before the export name length');
  const nameBytes = view.getUint32(at);
  at += 4;
  if (nameBytes > remaining()) return bad(`export name length ${nameBytes} overruns the option data`);
  const exportName = decodeString(data.subarray(at, at + nameBytes), 'export name');
  if (!exportName.ok) return exportName;
  at += nameBytes;
  if (remaining() < 4) return bad('meta context data ends before the query count');
  const count = view.getUint32(at);
  at += 4;
  if (count > remaining() / 4) return bad(`${count} queries cannot fit in the ${remaining()} bytes left`);
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (remaining() < 4) return bad(`query ${i} has no length`);
    const queryBytes = view.getUint32(at);
    at += 4;
    if (queryBytes > remaining()) return bad(`query ${i} length ${queryBytes} overruns the option data`);
    const query = decodeString(data.subarray(at, at + queryBytes), `query ${i}`);
    if (!query.ok) return query;
    at += queryBytes;
    queries.push(query.value);
  }
  if (remaining() !== 0) return bad(`${remaining()} bytes follow the last query`);
  return ok({ exportName: exportName.value, queries });
}

// ---------------------------------------------------------------------------------------------
// Handshake: option replies (server to client).

export interface OptionReplyHeader {
  readonly option: number;
  readonly replyType: number;
  readonly length: number;
}

export function encodeOptionReply(option: number, replyType: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  assertU32(option, 'option');
  assertU32(replyType, 'reply type');
  assertU32(data.length, 'reply length');
  const out = new Uint8Array(optionReplyHeaderBytes + data.length);
  const view = viewOf(out);
  view.setBigUint64(0, optionReplyMagic);
  view.setUint32(8, option);
  view.setUint32(12, replyType);
  view.setUint32(16, data.length);
  out.set(data, optionReplyHeaderBytes);
  return out;
}

export function decodeOptionReplyHeader(bytes: Uint8Array): Decoded<OptionReplyHeader> {
  if (bytes.length !== optionReplyHeaderBytes)
    return bad(`option reply header must be ${optionReplyHeaderBytes} bytes`);
  const view = viewOf(bytes);
  if (view.getBigUint64(0) !== optionReplyMagic) return bad('option reply has the wrong magic');
  return ok({ option: view.getUint32(8), replyType: view.getUint32(12), length: view.getUint32(16) });
}

/** An error reply to an option, with a human-readable message as its data. */
export function encodeOptionError(option: number, replyType: number, message: string): Uint8Array {
  assert(isOptionReplyError(replyType), `reply type ${replyType} is not an error`);
  return encodeOptionReply(option, replyType, encodeString(clipMessage(message)));
}

/** NBD_REP_SERVER data: u32 name length, name, then an optional description. */
export function encodeServerReplyData(name: string, description: string): Uint8Array {
  const nameBytes = encodeString(name);
  const descriptionBytes = encodeString(clipMessage(description));
  return concat([encodeU32(nameBytes.length), nameBytes, descriptionBytes]);
}

export function decodeServerReplyData(data: Uint8Array): Decoded<{ name: string; description: string }> {
  if (data.length < 4) return bad('NBD_REP_SERVER data is shorter than 4 bytes');
  const nameBytes = viewOf(data).getUint32(0);
  if (nameBytes > data.length - 4) return bad(`export name length ${nameBytes} overruns the reply`);
  const name = decodeString(data.subarray(4, 4 + nameBytes), 'export name');
  if (!name.ok) return name;
  const description = decodeString(data.subarray(4 + nameBytes), 'export description');
  if (!description.ok) return description;
  return ok({ name: name.value, description: description.value });
}

/** The pieces of NBD_REP_INFO data, by information type. */
export type InfoReply =
  | { readonly kind: 'export'; readonly sizeBytes: number; readonly flags: number }
  | { readonly kind: 'name'; readonly name: string }
  | { readonly kind: 'description'; readonly description: string }
  | {
      readonly kind: 'blockSize';
      readonly minimumBytes: number;
      readonly preferredBytes: number;
      readonly maximumBytes: number;
    }
  | { readonly kind: 'unknown'; readonly type: number; readonly data: Uint8Array };

export function encodeInfoExport(sizeBytes: number, flags: number): Uint8Array {
  assertU16(flags, 'transmission flags');
  const out = new Uint8Array(12);
  const view = viewOf(out);
  view.setUint16(0, infoType.export);
  writeU64(view, 2, sizeBytes);
  view.setUint16(10, flags);
  return out;
}

export function encodeInfoName(name: string): Uint8Array {
  return concat([encodeU16(infoType.name), encodeString(name)]);
}

export function encodeInfoDescription(description: string): Uint8Array {
  return concat([encodeU16(infoType.description), encodeString(clipMessage(description))]);
}

export function encodeInfoBlockSize(minimumBytes: number, preferredBytes: number, maximumBytes: number): Uint8Array {
  assertU32(minimumBytes, 'minimum block size');
  assertU32(preferredBytes, 'preferred block size');
  assertU32(maximumBytes, 'maximum payload');
  const out = new Uint8Array(14);
  const view = viewOf(out);
  view.setUint16(0, infoType.blockSize);
  view.setUint32(2, minimumBytes);
  view.setUint32(6, preferredBytes);
  view.setUint32(10, maximumBytes);
  return out;
}

function encodeU16(value: number): Uint8Array {
  assertU16(value, 'u16');
  const out = new Uint8Array(2);
  viewOf(out).setUint16(0, value);
  return out;
}

export function decodeInfoReply(data: Uint8Array): Decoded<InfoReply> {
  if (data.length < 2) return bad('NBD_REP_INFO data is shorter than 2 bytes');
  const view = viewOf(data);
  const type = view.getUint16(0);
  switch (type) {
    case infoType.export: {
      if (data.length !== 12) return bad(`NBD_INFO_EXPORT must be 12 bytes, got ${data.length}`);
      const sizeBytes = readU64Safe(view, 2);
      if (sizeBytes === null) return bad('export size is above 2^53 - 1');
      return ok({ kind: 'export', sizeBytes, flags: view.getUint16(10) });
    }
    case infoType.name: {
      const name = decodeString(data.subarray(2), 'export name');
      return name.ok ? ok({ kind: 'name', name: name.value }) : name;
    }
    case infoType.description: {
      const description = decodeString(data.subarray(2), 'export description');
      return description.ok ? ok({ kind: 'description', description: description.value }) : description;
    }
    case infoType.blockSize:
      if (data.length !== 14) return bad(`NBD_INFO_BLOCK_SIZE must be 14 bytes, got ${data.length}`);
      return ok({
        kind: 'blockSize',
        minimumBytes: view.getUint32(2),
        preferredBytes: view.getUint32(6),
        maximumBytes: view.getUint32(10),
      });
    default:
      return ok({ kind: 'unknown', type, data: data.slice(2) });
  }
}

export function encodeMetaContextReplyData(contextId: number, name: string): Uint8Array {
  return concat([encodeU32(contextId), encodeString(name)]);
}

export function decodeMetaContextReplyData(data: Uint8Array): Decoded<{ contextId: number; name: string }> {
  if (data.length < 4) return bad('NBD_REP_META_CONTEXT data is shorter than 4 bytes');
  const name = decodeString(data.subarray(4), 'context name');
  if (!name.ok) return name;
  return ok({ contextId: viewOf(data).getUint32(0), name: name.value });
}

/** NBD_OPT_EXPORT_NAME's reply: no header, just size and flags, then zeros unless agreed away. */
export function encodeExportNameReply(sizeBytes: number, flags: number, noZeroes: boolean): Uint8Array {
  assertU16(flags, 'transmission flags');
  const out = new Uint8Array(noZeroes ? exportNameReplyBytesNoZeroes : exportNameReplyBytes);
  const view = viewOf(out);
  writeU64(view, 0, sizeBytes);
  view.setUint16(8, flags);
  return out;
}

export function decodeExportNameReply(bytes: Uint8Array): Decoded<{ sizeBytes: number; flags: number }> {
  if (bytes.length !== exportNameReplyBytes && bytes.length !== exportNameReplyBytesNoZeroes) {
    return bad(`export name reply must be ${exportNameReplyBytes} or ${exportNameReplyBytesNoZeroes} bytes`);
  }
  const view = viewOf(bytes);
  const sizeBytes = readU64Safe(view, 0);
  if (sizeBytes === null) return bad('export size is above 2^53 - 1');
  return ok({ sizeBytes, flags: view.getUint16(8) });
}

// ---------------------------------------------------------------------------------------------
// Transmission: requests (client to server).

export interface RequestHeader {
  readonly flags: number;
  readonly type: number;
  /** Opaque; echoed in every reply to this request. */
  readonly cookie: bigint;
  /** Byte offset, or null when the wire value is above 2^53 - 1 (beyond any export we serve). */
  readonly offset: number | null;
  readonly length: number;
}

export interface RequestToEncode {
  readonly flags?: number;
  readonly type: number;
  readonly cookie: bigint;
  /** A bigint lets tests send offsets no number can hold. */
  readonly offset?: number | bigint;
  readonly length?: number;
}

export function encodeRequestHeader(request: RequestToEncode): Uint8Array {
  const flags = request.flags ?? 0;
  const length = request.length ?? 0;
  assertU16(flags, 'command flags');
  assertU16(request.type, 'command type');
  assertU32(length, 'request length');
  const out = new Uint8Array(requestHeaderBytes);
  const view = viewOf(out);
  view.setUint32(0, requestMagic);
  view.setUint16(4, flags);
  view.setUint16(6, request.type);
  view.setBigUint64(8, request.cookie);
  writeU64(view, 16, request.offset ?? 0);
  view.setUint32(24, length);
  return out;
}

export function decodeRequestHeader(bytes: Uint8Array): Decoded<RequestHeader> {
  if (bytes.length !== requestHeaderBytes) return bad(`request header must be ${requestHeaderBytes} bytes`);
  const magic = getU32(bytes, 0);
  if (magic !== requestMagic) return bad(`request magic is 0x${magic.toString(16)}, not 0x25609513`);
  // Offset: see readU64Safe; the high half must be below 2^21 for the value to fit in 53 bits.
  const offsetHigh = getU32(bytes, 16);
  const offset = offsetHigh >= 0x200000 ? null : offsetHigh * 0x100000000 + getU32(bytes, 20);
  return ok({
    flags: getU16(bytes, 4),
    type: getU16(bytes, 6),
    cookie: getCookie(bytes, 8),
    offset,
    length: getU32(bytes, 24),
  });
}

// ---------------------------------------------------------------------------------------------
// Transmission: replies (server to client).

/** A simple reply header; a successful READ's data follows it. */
export function encodeSimpleReply(errno: number, cookie: bigint): Uint8Array {
  assertU32(errno, 'error');
  const out = new Uint8Array(simpleReplyBytes);
  putU32(out, 0, simpleReplyMagic);
  putU32(out, 4, errno);
  putCookie(out, 8, cookie);
  return out;
}

export interface ChunkHeader {
  readonly flags: number;
  readonly type: number;
  readonly cookie: bigint;
  readonly length: number;
}

export function encodeChunkHeader(header: ChunkHeader): Uint8Array {
  assertU16(header.flags, 'chunk flags');
  assertU16(header.type, 'chunk type');
  assertU32(header.length, 'chunk length');
  const out = new Uint8Array(chunkHeaderBytes);
  writeChunkHeader(out, header.flags, header.type, header.cookie, header.length);
  return out;
}

function writeChunkHeader(out: Uint8Array, flags: number, type: number, cookie: bigint, length: number): void {
  putU32(out, 0, structuredReplyMagic);
  putU16(out, 4, flags);
  putU16(out, 6, type);
  putCookie(out, 8, cookie);
  putU32(out, 16, length);
}

/**
 * Decodes the start of any reply: a 16-byte simple reply or the first 16 bytes of a 20-byte
 * chunk header (the caller reads 4 more bytes for the chunk length). Both start with a magic.
 */
export type ReplyStart =
  | { readonly kind: 'simple'; readonly errno: number; readonly cookie: bigint }
  | { readonly kind: 'chunk'; readonly flags: number; readonly type: number; readonly cookie: bigint };

export function decodeReplyStart(bytes: Uint8Array): Decoded<ReplyStart> {
  if (bytes.length !== simpleReplyBytes) return bad(`reply start must be ${simpleReplyBytes} bytes`);
  const view = viewOf(bytes);
  const magic = view.getUint32(0);
  if (magic === simpleReplyMagic) return ok({ kind: 'simple', errno: view.getUint32(4), cookie: view.getBigUint64(8) });
  if (magic === structuredReplyMagic) {
    return ok({ kind: 'chunk', flags: view.getUint16(4), type: view.getUint16(6), cookie: view.getBigUint64(8) });
  }
  return bad(`reply magic 0x${magic.toString(16)} is neither simple nor structured`);
}

export function decodeChunkHeader(bytes: Uint8Array): Decoded<ChunkHeader> {
  if (bytes.length !== chunkHeaderBytes) return bad(`chunk header must be ${chunkHeaderBytes} bytes`);
  const start = decodeReplyStart(bytes.subarray(0, simpleReplyBytes));
  if (!start.ok) return start;
  if (start.value.kind !== 'chunk') return bad('expected a structured reply chunk');
  const { flags, type, cookie } = start.value;
  return ok({ flags, type, cookie, length: viewOf(bytes).getUint32(16) });
}

/** The 28 bytes before an OFFSET_DATA chunk's data: chunk header and the data's offset. */
export function encodeOffsetDataHead(cookie: bigint, flags: number, offset: number, dataBytes: number): Uint8Array {
  if (!(dataBytes > 0 && dataBytes <= u32Max - 8)) fail(`OFFSET_DATA needs 1..2^32-9 data bytes, got ${dataBytes}`);
  assertU16(flags, 'chunk flags');
  const out = new Uint8Array(chunkHeaderBytes + 8);
  writeChunkHeader(out, flags, chunkType.offsetData, cookie, 8 + dataBytes);
  putU64Number(out, chunkHeaderBytes, offset);
  return out;
}

export function encodeOffsetHoleChunk(cookie: bigint, flags: number, offset: number, holeBytes: number): Uint8Array {
  if (!(holeBytes > 0 && holeBytes <= u32Max)) fail(`OFFSET_HOLE needs 1..2^32-1 bytes, got ${holeBytes}`);
  const out = new Uint8Array(chunkHeaderBytes + 12);
  out.set(encodeChunkHeader({ flags, type: chunkType.offsetHole, cookie, length: 12 }), 0);
  const view = viewOf(out);
  writeU64(view, chunkHeaderBytes, offset);
  view.setUint32(chunkHeaderBytes + 8, holeBytes);
  return out;
}

export function encodeNoneChunk(cookie: bigint): Uint8Array {
  return encodeChunkHeader({ flags: chunkFlag.done, type: chunkType.none, cookie, length: 0 });
}

export interface BlockStatusDescriptor {
  /** Bytes covered, 1 to 2^32 - 1. */
  readonly length: number;
  readonly flags: number;
}

export function encodeBlockStatusChunk(
  cookie: bigint,
  flags: number,
  contextId: number,
  descriptors: readonly BlockStatusDescriptor[],
): Uint8Array {
  assert(descriptors.length > 0, 'a block status chunk needs at least one descriptor');
  assertU32(contextId, 'context id');
  const length = 4 + blockStatusDescriptorBytes * descriptors.length;
  const out = new Uint8Array(chunkHeaderBytes + length);
  out.set(encodeChunkHeader({ flags, type: chunkType.blockStatus, cookie, length }), 0);
  const view = viewOf(out);
  view.setUint32(chunkHeaderBytes, contextId);
  let at = chunkHeaderBytes + 4;
  for (const d of descriptors) {
    if (!(d.length > 0 && d.length <= u32Max)) fail(`descriptor length must be 1..2^32-1, got ${d.length}`);
    assertU32(d.flags, 'descriptor flags');
    view.setUint32(at, d.length);
    view.setUint32(at + 4, d.flags);
    at += blockStatusDescriptorBytes;
  }
  return out;
}

export function decodeBlockStatusPayload(
  data: Uint8Array,
): Decoded<{ contextId: number; descriptors: BlockStatusDescriptor[] }> {
  if (data.length < 4 + blockStatusDescriptorBytes || (data.length - 4) % blockStatusDescriptorBytes !== 0) {
    return bad(`block status payload of ${data.length} bytes is not 4 + 8n with n >= 1`);
  }
  const view = viewOf(data);
  const descriptors: BlockStatusDescriptor[] = [];
  for (let at = 4; at < data.length; at += blockStatusDescriptorBytes) {
    descriptors.push({ length: view.getUint32(at), flags: view.getUint32(at + 4) });
  }
  return ok({ contextId: view.getUint32(0), descriptors });
}

/** An NBD_REPLY_TYPE_ERROR chunk: errno, message length, message. */
export function encodeErrorChunk(cookie: bigint, flags: number, errno: number, message: string): Uint8Array {
  assert(errno !== 0, 'an error chunk needs a nonzero error');
  assertU32(errno, 'error');
  const text = encodeString(clipMessage(message));
  const length = 6 + text.length;
  const out = new Uint8Array(chunkHeaderBytes + length);
  out.set(encodeChunkHeader({ flags, type: chunkType.error, cookie, length }), 0);
  const view = viewOf(out);
  view.setUint32(chunkHeaderBytes, errno);
  view.setUint16(chunkHeaderBytes + 4, text.length);
  out.set(text, chunkHeaderBytes + 6);
  return out;
}

/** Decodes the common start of every error chunk payload (ERROR and ERROR_OFFSET). */
export function decodeErrorPayload(data: Uint8Array): Decoded<{ errno: number; message: string }> {
  if (data.length < 6) return bad(`error payload of ${data.length} bytes is shorter than 6`);
  const view = viewOf(data);
  const messageBytes = view.getUint16(4);
  if (messageBytes > data.length - 6) return bad(`error message length ${messageBytes} overruns the payload`);
  const message = decodeString(data.subarray(6, 6 + messageBytes), 'error message');
  if (!message.ok) return message;
  return ok({ errno: view.getUint32(0), message: message.value });
}

export function decodeOffsetDataPayload(data: Uint8Array): Decoded<{ offset: number; data: Uint8Array }> {
  if (data.length < 9) return bad(`OFFSET_DATA payload of ${data.length} bytes is shorter than 9`);
  const offset = readU64Safe(viewOf(data), 0);
  if (offset === null) return bad('OFFSET_DATA offset is above 2^53 - 1');
  return ok({ offset, data: data.subarray(8) });
}

export function decodeOffsetHolePayload(data: Uint8Array): Decoded<{ offset: number; length: number }> {
  if (data.length !== 12) return bad(`OFFSET_HOLE payload must be 12 bytes, got ${data.length}`);
  const view = viewOf(data);
  const offset = readU64Safe(view, 0);
  if (offset === null) return bad('OFFSET_HOLE offset is above 2^53 - 1');
  const length = view.getUint32(8);
  if (length === 0) return bad('OFFSET_HOLE length must be nonzero');
  return ok({ offset, length });
}
