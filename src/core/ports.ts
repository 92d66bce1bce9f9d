/**
 * Ports shared by several layers. A port used by one layer is declared by that layer instead.
 *
 * ShardStore is where shard bytes live: a storage node, an S3 bucket, a local directory, memory.
 * Every implementation keeps the same promises, checked by one contract test suite
 * (test/integration/shard_store_contract.test.ts) that runs against all of them.
 */

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
  put(key: string, data: Uint8Array): Promise<void>;

  /**
   * Reads the whole shard, or `range` of it, verifying the checksum of every block the bytes come
   * from; a mismatch throws ChecksumMismatchError and returns nothing. A range past the end is an
   * InvalidArgumentError. The returned array belongs to the caller.
   */
  get(key: string, range?: ByteRange): Promise<Uint8Array>;

  /** Size of the shard, or null when there is none. Does not read or verify the data. */
  head(key: string): Promise<ShardStat | null>;

  /** Removes the shard. Idempotent: deleting a missing key succeeds. */
  delete(key: string): Promise<void>;

  /** Keys starting with `prefix`, sorted, at most `limit` (default 1000) after `startAfter`. */
  list(prefix: string, options?: { startAfter?: string; limit?: number }): Promise<string[]>;

  /** Releases sockets and timers. Idempotent; later calls on the store are not allowed. */
  close?(): void;
}
