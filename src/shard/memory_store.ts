/**
 * The in-memory ShardStore: the twin used by unit tests and the simulator. It keeps shards framed
 * exactly as the file and S3 stores do, so checksum behaviour (and a test that flips a byte with
 * corrupt()) matches theirs.
 */
import { ShardExistsError, ShardNotFoundError } from '../core/index.js';
import type {
  ByteRange,
  ShardExpectation,
  ShardPutOptions,
  ShardStat,
  ShardStore,
  ShardStoreCapabilities,
} from '../core/index.js';
import { checkShardKey, checkShardPrefix } from './keys.js';
import { checkExpectation, decodeHeader, encodeFrame, framedSpan, frameHeaderBytes, unframeSpan } from './format.js';
import { listLimitDefault, listLimitMax } from './limits.js';

export class MemoryShardStore implements ShardStore {
  readonly description: string;
  private readonly shards = new Map<string, Uint8Array>();

  constructor(name = 'memory') {
    this.description = `memory store "${name}"`;
  }

  capabilities(): ShardStoreCapabilities {
    return { rangeRead: true, atomicCreate: true };
  }

  async put(key: string, data: Uint8Array, options: ShardPutOptions = {}): Promise<void> {
    checkShardKey(key);
    if (this.shards.has(key))
      throw new ShardExistsError(`Cannot store shard ${key} on ${this.description}: it already exists`);
    this.shards.set(key, encodeFrame(data, options.seed));
  }

  async get(key: string, range?: ByteRange, expect?: ShardExpectation): Promise<Uint8Array> {
    checkShardKey(key);
    const framed = this.shards.get(key);
    if (framed === undefined)
      throw new ShardNotFoundError(`Cannot read shard ${key} from ${this.description}: no such shard`);
    const what = `Cannot read shard ${key} from ${this.description}`;
    const header = decodeHeader(framed.subarray(0, frameHeaderBytes), what);
    checkExpectation(header, expect, what);
    const want = range ?? { offset: 0, length: header.dataBytes };
    const span = framedSpan(want, header.dataBytes, header.blockBytes);
    return unframeSpan(framed.subarray(span.start, span.end), span, want, header, what);
  }

  async head(key: string): Promise<ShardStat | null> {
    checkShardKey(key);
    const framed = this.shards.get(key);
    if (framed === undefined) return null;
    return { key, dataBytes: decodeHeader(framed, `shard ${key}`).dataBytes };
  }

  async delete(key: string): Promise<void> {
    checkShardKey(key);
    this.shards.delete(key);
  }

  async list(prefix: string, options: { startAfter?: string; limit?: number } = {}): Promise<string[]> {
    checkShardPrefix(prefix);
    const limit = Math.min(options.limit ?? listLimitDefault, listLimitMax);
    return [...this.shards.keys()]
      .filter((k) => k.startsWith(prefix) && (options.startAfter === undefined || k > options.startAfter))
      .sort()
      .slice(0, limit);
  }

  /**
   * Test hook: replaces stored shard `key` with `data` framed under `seed` (0: as the node frames
   * a plain PUT). The result is intact as far as this store can tell: a shard other than the one
   * its record names (simulates data PUT under the key, or a misplaced shard).
   */
  replace(key: string, data: Uint8Array, seed = 0): void {
    if (!this.shards.has(key)) throw new ShardNotFoundError(`no shard ${key}`);
    this.shards.set(key, encodeFrame(data, seed));
  }

  /** Test hook: flips bit `bit` of framed byte `at` of a stored shard (simulates bit rot). */
  corrupt(key: string, at: number, bit = 0): void {
    const framed = this.shards.get(key);
    if (framed === undefined) throw new ShardNotFoundError(`no shard ${key}`);
    framed[at] = framed[at]! ^ (1 << bit);
  }
}
