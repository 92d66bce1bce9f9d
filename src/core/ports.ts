/**
 * Ports shared by several layers. A port used by one layer is declared by that layer instead.
 *
 * ShardStore is where shard bytes live: a storage node, an S3 bucket, a local directory, memory.
 * Every implementation keeps the same promises, checked by one contract test suite
 * (test/integration/shard_store_contract.test.ts) that runs against all of them.
 */
import type { ShardExpectation } from './extent_record.js';

/** A half-open byte range [offset, offset + length) within a shard's data. */
export interface ByteRange {
  readonly offset: number;
  readonly length: number;
}

export interface ShardStat {
  readonly key: string;
  /** Bytes of shard data (not counting checksums or framing). */
  readonly dataBytes: number;
}

export interface ShardStoreCapabilities {
  /** True when get() with a range transfers only (about) the range, not the whole shard. */
  readonly rangeRead: boolean;
  /** True when put() is create-only on the server side (not check-then-write). */
  readonly atomicCreate: boolean;
}

/** How put() frames a shard. */
export interface ShardPutOptions {
  /** The starting value of every block CRC (shardSeed() of the shard's record); default 0, none. */
  readonly seed?: number;
}

/**
 * Immutable shard objects under string keys.
 *
 * Keys: 1-512 characters of [A-Za-z0-9._/-], no leading '/', no '..' segment. Callers own their
 * namespace; Cairn uses `<volume>/<extent>/<generation>/<shard>`.
 *
 * Errors: ShardExistsError, ShardNotFoundError, ChecksumMismatchError, StorageIoError (disk full,
 * permissions; not retryable unless said), UnavailableError (target down or slow; retryable).
 */
export interface ShardStore {
  /** Where this store puts bytes, for messages: `node "b-1"`, `s3 "zone-c" (bucket cairn-c)`. */
  readonly description: string;

  capabilities(): ShardStoreCapabilities;

  /**
   * Stores `data` under `key` if no shard has that key. When the promise resolves the shard is
   * durable (fsynced / acknowledged by S3) with its checksums. `data` is read during the call and
   * not retained. A crash or error leaves either no shard or the whole shard, never a part.
   * Throws ShardExistsError when the key exists (whatever its bytes), so a retry of a put that
   * did succeed is recognisable: the caller compares with head() if it needs to.
   */
  put(key: string, data: Uint8Array, options?: ShardPutOptions): Promise<void>;

  /**
   * Reads the whole shard, or `range` of it, verifying the checksum of every block the bytes come
   * from: against `expect` (the size and seed the shard's extent record implies) when given,
   * else against the seed the shard was stored with. A mismatch throws ChecksumMismatchError and
   * returns nothing. A range past the end is an
   * InvalidArgumentError. The returned array belongs to the caller.
   */
  get(key: string, range?: ByteRange, expect?: ShardExpectation): Promise<Uint8Array>;

  /**
   * Optional: get() of a non-empty `range`, writing the bytes into `out` at `at` instead of a new
   * array (the read path then copies each byte once less). On failure `out` may hold part of
   * the range. Callers without it use get().
   */
  getInto?(key: string, range: ByteRange, out: Uint8Array, at: number, expect?: ShardExpectation): Promise<void>;

  /** Size of the shard, or null when there is none. Does not read or verify the data. */
  head(key: string): Promise<ShardStat | null>;

  /** Removes the shard. Idempotent: deleting a missing key succeeds. */
  delete(key: string): Promise<void>;

  /** Keys starting with `prefix`, sorted, at most `limit` (default 1000) after `startAfter`. */
  list(prefix: string, options?: { startAfter?: string; limit?: number }): Promise<string[]>;

  /** Releases sockets and timers. Idempotent; later calls on the store are not allowed. */
  close?(): void;
}

/** What a block device can do; the NBD server advertises exactly these (nbdkit's can_* probes). */
export interface BlockDeviceCapabilities {
  readonly readOnly: boolean;
  /** flush() persists every write acknowledged before it was called. */
  readonly flush: boolean;
  /** write(..., { fua: true }) persists that write before resolving. */
  readonly fua: boolean;
  readonly trim: boolean;
  readonly writeZeroes: boolean;
  /** Every handle opened on this export shares one cache, so flush on one covers writes on all. */
  readonly multiConn: boolean;
}

/** One run of a block-status answer: [offset, offset + length) is all hole or all data. */
export interface BlockStatusRun {
  readonly offset: number;
  readonly length: number;
  /** Never written, or trimmed: reads as zeros and holds no storage. */
  readonly hole: boolean;
  /** Known to read as zeros (true for every hole). */
  readonly zero: boolean;
}

export interface WriteOptions {
  /** Force unit access: the write is durable when the promise resolves. */
  readonly fua?: boolean;
  /**
   * The caller gives `data` up: the device may keep it instead of copying it (the NBD session
   * passes each request's own payload). Without it, the caller may reuse its buffer at once.
   */
  readonly adopt?: boolean;
}

/**
 * A byte-addressed block device: what a Cairn volume looks like to the NBD server. Offsets and
 * lengths are bytes, half-open ranges [offset, offset + length), and the caller has already
 * checked them against sizeBytes (implementations assert it). Promises reject with CairnError
 * subclasses; the NBD layer maps them to NBD errors in one switch.
 *
 * Buffers: read() returns a new array the caller owns; write() reads `data` before its promise
 * resolves and keeps no reference after.
 */
export interface BlockDevice {
  readonly sizeBytes: number;
  capabilities(): BlockDeviceCapabilities;
  /** The bytes of the range; the caller must not change them (they may be a view of a cache). */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Durable only after flush(), unless options.fua. */
  write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void>;
  /** Persists every write acknowledged before the call. */
  flush(): Promise<void>;
  /** The range reads as zeros afterwards and may free storage. */
  trim(offset: number, length: number, options?: WriteOptions): Promise<void>;
  /** The range reads as zeros afterwards; with noHole, storage stays allocated (a data run). */
  writeZeroes(offset: number, length: number, options?: WriteOptions & { readonly noHole?: boolean }): Promise<void>;
  /** Hole/data runs covering [offset, offset + length), in order, at least one. */
  blockStatus(offset: number, length: number): Promise<BlockStatusRun[]>;
}

/** An export as the NBD server sees it: a name, a description, and a device per connection. */
export interface ExportInfo {
  readonly name: string;
  readonly description: string;
  readonly sizeBytes: number;
  /**
   * What a connection opened now would be able to do: NBD_OPT_INFO answers from this (and
   * sizeBytes) without opening the export, so it must match what open() gives.
   */
  readonly capabilities: BlockDeviceCapabilities;
  /**
   * Metadata contexts besides base:allocation this export offers for NBD_CMD_BLOCK_STATUS, by
   * full name (a snapshot offers `qemu:dirty-bitmap:OLDER` for each older snapshot); the opened
   * handle's `contexts` answers them.
   */
  readonly metaContexts?: readonly string[];
}

/** One run of a metadata context's answer: [offset, offset + length) has `flags` (the context's). */
export interface ContextRun {
  readonly offset: number;
  readonly length: number;
  readonly flags: number;
}

/** Answers the metadata contexts an export offers (ExportInfo.metaContexts). */
export interface MetaContextSource {
  /** Runs covering [offset, offset + length) in order, at least one. */
  status(name: string, offset: number, length: number): Promise<ContextRun[]>;
}

/**
 * Where the NBD server finds its exports. Volumes created after the server started are found,
 * because lookups happen per connection.
 */
export interface ExportProvider {
  /** Every export, from metadata alone: nothing is opened, locked or attached. */
  list(): Promise<ExportInfo[]>;
  /**
   * The export's info, or null when there is none by that name. Cheap, and opens nothing: used by
   * NBD_OPT_INFO, which must not attach (for a volume: take its lock, bump its epoch).
   */
  info(name: string): Promise<ExportInfo | null>;
  /**
   * Opens the export for one connection. Throws NotFound-style CairnError (code ENOTFOUND) when
   * absent. The handle is released with close() when the connection ends; the device stays
   * shared between connections to the same export.
   */
  open(
    name: string,
    options: { readonly readOnly: boolean },
  ): Promise<{ device: BlockDevice; close(): Promise<void>; contexts?: MetaContextSource }>;
}

/**
 * The k+m shards of one extent in codec memory, back to back: the data shards together are the
 * extent's bytes padded to k * shardBytes. Valid from Codec.allocate() until Codec.release();
 * views taken from it must not be used after release, nor touched while a codec job on it runs.
 */
export interface CodecBuffer {
  readonly k: number;
  readonly m: number;
  /** Bytes in each shard. */
  readonly shardBytes: number;
  /** The k data shards as one view: the extent's bytes, then padding. */
  data(): Uint8Array;
  /** A view of shard i, 0 <= i < k + m. */
  shard(i: number): Uint8Array;
}

/**
 * Systematic Reed-Solomon as the volume engine uses it. The real implementation is the wasm
 * worker pool (codec/pool.ts); the simulator supplies a deterministic one. Both keep the same
 * promises, so the engine never needs to know which it has.
 */
export interface Codec {
  /** A buffer for one extent; throws when codec memory is exhausted (the caller bounds its use). */
  allocate(profile: { readonly k: number; readonly m: number }, shardBytes: number): CodecBuffer;
  /** Returns the buffer; idempotent per buffer is NOT promised: release each once. */
  release(buf: CodecBuffer): void;
  /** Computes the m parity shards from the k data shards, in place. */
  encode(buf: CodecBuffer): Promise<void>;
  /**
   * Rebuilds the shards in `wanted` (default: every missing one) from at least k present ones,
   * in place. `present[i]` says shard i holds valid bytes.
   */
  reconstruct(buf: CodecBuffer, present: readonly boolean[], wanted?: readonly number[]): Promise<void>;
}
