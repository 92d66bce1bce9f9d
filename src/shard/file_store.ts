/**
 * FileShardStore: shards as files under one local directory, one file per key at `<dir>/<key>`
 * (the key's '/' segments become subdirectories), each file in the framed format of format.ts.
 *
 * What it keeps true:
 * - put() is create-only and atomic: the bytes go to a temp file in the final directory, are
 *   fsynced, and then link() gives them the final name. link() fails with EEXIST when the name is
 *   taken, so of several concurrent puts exactly one wins, and no reader ever sees a partial
 *   file (rename() would silently replace a winner). The directory is fsynced before put()
 *   resolves. On any failure the temp file is removed: nothing partial is left behind.
 * - Temp names contain '~', a character keys may not hold, so a temp file can never be mistaken
 *   for a shard, and open() removes the temp files a crash left behind. Directories whose name
 *   holds '~' are not the store's either (cairnd keeps its journal in `journal~`): list() and
 *   the usage scan skip them.
 * - Every byte get() returns has passed its block's CRC-32; a range read is one pread of the
 *   blocks it touches.
 * - usedBytes is the sum of shard file sizes: scanned once at open(), then tracked per put/delete.
 *
 * What it leaves out:
 * - A key cannot also be the directory of longer keys ("a" and "a/b" both stored): the second
 *   put fails with InvalidArgumentError. Cairn's own keys all have four segments, so they never
 *   meet this.
 * - delete() does not fsync: a delete lost in a crash brings back a garbage shard that the
 *   collector deletes again (deletes are idempotent).
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readdir, rmdir, statfs, unlink, type FileHandle } from 'node:fs/promises';
import { readSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import {
  CairnError,
  ChecksumMismatchError,
  checksumBlockBytes,
  DiskFullError,
  InvalidArgumentError,
  RangeOutsideError,
  ShardExistsError,
  ShardNotFoundError,
  StorageIoError,
  InlineIo,
  assert,
  formatBytes,
  type ByteRange,
  type ShardExpectation,
  type ShardPutOptions,
  type ShardStat,
  type ShardStore,
  type ShardStoreCapabilities,
} from '../core/index.js';
import {
  checkExpectation,
  checkRange,
  decodeHeader,
  encodeFrame,
  frameHeaderBytes,
  framedSpan,
  unframeSpan,
  verifyFrame,
  verifySpan,
  type FrameHeader,
  type FramedSpan,
} from './format.js';
import { ShardFileWriter } from './file_writer.js';
import { checkShardKey, checkShardPrefix } from './keys.js';
import { listLimitDefault, listLimitMax } from './limits.js';

/**
 * Longest file name the store creates. Linux file systems allow 255 bytes per name; a temp name
 * adds `~` and 16 hex digits plus `.tmp` (21 characters) to the key's last segment.
 */
const fileNameBytesMax = 255;
const tempSuffixChars = 21;
export const keySegmentCharsMax = fileNameBytesMax - tempSuffixChars;

export interface FileShardStoreOptions {
  /** How messages name this store, e.g. `node "b-1"`. Default: `directory "<dir>"`. */
  readonly description?: string;
  /** Bytes this store may hold; puts beyond it fail with DiskFullError. Default: the file system's size. */
  readonly capacityBytes?: number;
}

export interface StoreUsage {
  /** The configured capacity, or the size of the file system holding the directory. */
  readonly capacityBytes: number;
  /** Bytes of shard files (framed, so including checksums and headers). */
  readonly usedBytes: number;
}

/** A verified span of a shard's framed bytes, as the node's HTTP API sends it. */
/**
 * Shard files kept open for reads (with their checked headers): a read then costs one pread, not
 * an open, two reads and a close (measured: open and close were 35 % of a node's CPU on 4 KiB
 * random reads). Shards never change once written, and a delete closes its entry.
 */
const openShardsMax = 256;

interface OpenShard {
  readonly file: FileHandle;
  readonly header: FrameHeader;
  users: number;
  evicted: boolean;
}

/** A cache slot: the open in progress, then the open file. */
interface OpenSlot {
  readonly opening: Promise<OpenShard>;
  shard: OpenShard | undefined;
}

export interface FramedRead {
  readonly header: FrameHeader;
  readonly span: FramedSpan;
  readonly framed: Uint8Array;
}

interface ErrnoError extends Error {
  code?: string;
}

const errnoOf = (err: unknown): string | undefined => (err as ErrnoError | null)?.code;

/** Operator-readable words for the errno codes a disk most often gives. */
const errnoWords: Readonly<Record<string, string>> = {
  ENOSPC: 'disk full',
  EDQUOT: 'disk quota exceeded',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EROFS: 'read-only file system',
  EIO: 'I/O error',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files',
};

export class FileShardStore implements ShardStore {
  readonly description: string;
  readonly dir: string;
  private readonly capacityBytesConfigured: number | undefined;
  private usedBytes: number;
  /** Bytes of puts in progress, counted against a configured capacity before they are written. */
  private reservedBytes = 0;
  /** Open shard files, least recently used first (see openShardsMax). */
  private readonly openShards = new Map<string, OpenSlot>();
  /** Creates shard files, in batches, on a thread of its own. */
  private readonly writer = new ShardFileWriter();
  /** Small reads on this thread while they are fast (see InlineReads). */
  private readonly inlineReads = new InlineReads();

  private constructor(dir: string, usedBytes: number, options: FileShardStoreOptions) {
    this.dir = dir;
    this.usedBytes = usedBytes;
    this.description = options.description ?? `directory "${dir}"`;
    this.capacityBytesConfigured = options.capacityBytes;
  }

  /**
   * Opens (creating if needed) a store at `dir`: scans it once for usedBytes and removes temp
   * files a crash left behind. Throws StorageIoError when the directory cannot be used.
   */
  static async open(dir: string, options: FileShardStoreOptions = {}): Promise<FileShardStore> {
    const root = resolve(dir);
    if (options.capacityBytes !== undefined) {
      if (!Number.isSafeInteger(options.capacityBytes) || options.capacityBytes <= 0) {
        throw new InvalidArgumentError(
          `Invalid capacity ${options.capacityBytes} for the shard directory ${root}: must be a positive whole number of bytes`,
        );
      }
    }
    try {
      await mkdir(root, { recursive: true, mode: 0o700 });
      const probe = await lstat(root);
      if (!probe.isDirectory()) throw new StorageIoError(`Cannot open shard directory ${root}: it is not a directory`);
      const usedBytes = await scan(root);
      return new FileShardStore(root, usedBytes, options);
    } catch (err) {
      if (err instanceof StorageIoError) throw err;
      throw new StorageIoError(`Cannot open shard directory ${root}: ${ioWords(err)}`, { cause: err });
    }
  }

  /**
   * Closes the shard files kept open for reads (those a read still uses close when it ends) and
   * stops the shard writer's thread once its batch in flight is stored; later puts fail.
   */
  async close(): Promise<void> {
    await this.writer.close();
    await Promise.all([...this.openShards.keys()].map((key) => this.evict(key)));
  }

  capabilities(): ShardStoreCapabilities {
    return { rangeRead: true, atomicCreate: true };
  }

  async put(key: string, data: Uint8Array, options: ShardPutOptions = {}): Promise<void> {
    const what = `Cannot store shard ${key} on ${this.description}`;
    await this.storeFramed(key, encodeFrame(data, options.seed), what);
  }

  /**
   * Stores a shard its writer already framed, byte for byte as given, after checking its header,
   * size and every block (verifyFrame). A node takes PUTs this way: the checksums are computed
   * once, by the frontend, and the node neither computes them again nor copies the bytes.
   */
  async putFramed(key: string, framed: Uint8Array): Promise<FrameHeader> {
    const what = `Cannot store shard ${key} on ${this.description}`;
    const header = verifyFrame(framed, what);
    // Reads assume Cairn's block size (a block of gigabytes would make every small read huge).
    if (header.blockBytes !== checksumBlockBytes)
      throw new InvalidArgumentError(
        `${what}: its checksum blocks are ${header.blockBytes} bytes; shards use ${checksumBlockBytes}`,
      );
    await this.storeFramed(key, framed, what);
    return header;
  }

  private async storeFramed(key: string, framed: Uint8Array, what: string): Promise<void> {
    const path = this.pathOf(key);
    this.reserve(framed.length, what);
    try {
      await this.writeNew(key, path, framed, what);
      this.usedBytes += framed.length;
    } finally {
      this.reservedBytes -= framed.length;
    }
  }

  async get(key: string, range?: ByteRange, expect?: ShardExpectation): Promise<Uint8Array> {
    const what = `Cannot read shard ${key} from ${this.description}`;
    const read = await this.readSpan(key, range, what);
    checkExpectation(read.header, expect, what);
    const want = range ?? { offset: 0, length: read.header.dataBytes };
    return unframeSpan(read.framed, read.span, want, read.header, what);
  }

  /**
   * The framed blocks covering `range` (the whole shard when absent), verified block by block,
   * for a server that sends them on so its client can verify them again. Throws like get().
   */
  async getFramed(key: string, range?: ByteRange, beforeRead?: (framedBytes: number) => void): Promise<FramedRead> {
    const what = `Cannot read shard ${key} from ${this.description}`;
    const read = await this.readSpan(key, range, what, beforeRead);
    const want = range ?? { offset: 0, length: read.header.dataBytes };
    verifySpan(read.framed, read.span, want, read.header, what);
    return read;
  }

  async head(key: string): Promise<ShardStat | null> {
    const path = this.pathOf(key);
    const what = `Cannot read shard ${key} from ${this.description}`;
    let file: FileHandle;
    try {
      file = await open(path, 'r');
    } catch (err) {
      if (isMissing(err)) return null;
      throw new StorageIoError(`${what}: ${ioWords(err)}`, { cause: err });
    }
    try {
      const header = decodeHeader(await readAt(file, 0, frameHeaderBytes, what), what);
      return { key, dataBytes: header.dataBytes };
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    } finally {
      await file.close();
    }
  }

  async delete(key: string): Promise<void> {
    const path = this.pathOf(key);
    // Evicted before the unlink and again after it: a read that opened the file meanwhile (its
    // slot is gone when its open completes) uses it once and does not cache it.
    void this.evict(key);
    try {
      await this.unlinkShard(key, path);
    } finally {
      void this.evict(key);
    }
  }

  private async unlinkShard(key: string, path: string): Promise<void> {
    let sizeBytes: number;
    try {
      const stat = await lstat(path);
      if (!stat.isFile()) return; // a directory of longer keys is not this key's shard
      sizeBytes = stat.size;
      await unlink(path);
    } catch (err) {
      if (isMissing(err)) return;
      throw new StorageIoError(`Cannot delete shard ${key} from ${this.description}: ${ioWords(err)}`, { cause: err });
    }
    // Only the caller whose unlink succeeded gets here, so concurrent deletes subtract once.
    this.usedBytes -= sizeBytes;
    await this.removeEmptyParents(dirname(path));
  }

  async list(prefix: string, options: { startAfter?: string; limit?: number } = {}): Promise<string[]> {
    checkShardPrefix(prefix);
    const limit = Math.min(options.limit ?? listLimitDefault, listLimitMax);
    if (!Number.isSafeInteger(limit) || limit < 0) {
      throw new InvalidArgumentError(
        `Cannot list shards on ${this.description}: limit must be a whole number >= 0, got ${options.limit}`,
      );
    }
    const out: string[] = [];
    if (limit === 0) return out;
    try {
      await this.walk('', prefix, options.startAfter, limit, out);
    } catch (err) {
      throw new StorageIoError(`Cannot list shards with prefix "${prefix}" on ${this.description}: ${ioWords(err)}`, {
        cause: err,
      });
    }
    return out;
  }

  /** Capacity and use, for the node's registration and health answer. */
  async usage(): Promise<StoreUsage> {
    let capacityBytes = this.capacityBytesConfigured;
    if (capacityBytes === undefined) {
      try {
        const fs = await statfs(this.dir);
        capacityBytes = fs.blocks * fs.bsize;
      } catch (err) {
        throw new StorageIoError(`Cannot read the size of the file system holding ${this.dir}: ${ioWords(err)}`, {
          cause: err,
        });
      }
    }
    return { capacityBytes, usedBytes: this.usedBytes };
  }

  /** Batches the shard writer has stored, and the puts they carried. */
  get putBatches(): { readonly batches: number; readonly puts: number } {
    return { ...this.writer.stats };
  }

  /** Small reads done on the event loop's thread, and how many were slow (see InlineReads). */
  get inlineReadStats(): { readonly inline: number; readonly slow: number } {
    return { ...this.inlineReads.stats };
  }

  /** Test hook: the file that holds `key` (for tests that damage shards behind the store's back). */
  fileOf(key: string): string {
    return this.pathOf(key);
  }

  // ---------------------------------------------------------------------------------------------

  private pathOf(key: string): string {
    checkShardKey(key);
    const segments = key.split('/');
    for (const s of segments) {
      if (s.length > keySegmentCharsMax) {
        throw new InvalidArgumentError(
          `Invalid shard key "${key.slice(0, 80)}": a segment longer than ${keySegmentCharsMax} characters cannot be a file name on ${this.description}`,
        );
      }
    }
    const path = join(this.dir, ...segments);
    // checkShardKey already forbids '..' and absolute keys; this guards the invariant itself.
    assert(path.startsWith(this.dir + sep), `shard path ${path} escapes ${this.dir}`);
    return path;
  }

  private reserve(bytes: number, what: string): void {
    const capacity = this.capacityBytesConfigured;
    if (capacity === undefined) {
      this.reservedBytes += bytes;
      return;
    }
    if (this.usedBytes + this.reservedBytes + bytes > capacity) {
      throw new DiskFullError(
        `${what}: disk full (ENOSPC): the configured capacity of ${formatBytes(capacity)} is reached, ${formatBytes(this.usedBytes)} used`,
      );
    }
    this.reservedBytes += bytes;
  }

  /**
   * temp file, fsync, link (the create-only step), unlink temp, fsync directory: on the shard
   * writer's thread, batched with the other puts waiting (file_writer.ts).
   */
  private async writeNew(key: string, path: string, framed: Uint8Array, what: string): Promise<void> {
    const temp = `${path}~${randomBytes(8).toString('hex')}.tmp`;
    const outcome = await this.writer.write({ path, temp, data: framed });
    if (outcome.ok) return;
    const cause = Object.assign(new Error(outcome.message), outcome.code === undefined ? {} : { code: outcome.code });
    switch (outcome.kind) {
      case 'prefix':
        throw new InvalidArgumentError(`${what}: a shard already exists at a prefix of this key`, { cause });
      case 'under':
        throw new InvalidArgumentError(`${what}: shards exist under ${key}/, so ${key} cannot be a shard`, { cause });
      case 'exists':
        throw new ShardExistsError(`${what}: it already exists`, { cause });
      case 'io':
        if (outcome.code === 'ENOSPC' || outcome.code === 'EDQUOT')
          throw new DiskFullError(`${what}: ${ioWords(cause)}`, { cause });
        throw new StorageIoError(`${what}: ${ioWords(cause)}`, { cause });
    }
  }

  /** `beforeRead` sees the framed size once it is known, before any data is read, and may refuse. */
  private async readSpan(
    key: string,
    range: ByteRange | undefined,
    what: string,
    beforeRead?: (framedBytes: number) => void,
  ): Promise<FramedRead> {
    let shard: OpenShard;
    try {
      shard = await this.acquire(key, what);
    } catch (err) {
      if (isMissing(err)) throw new ShardNotFoundError(`${what}: no such shard`, { cause: err });
      if (err instanceof CairnError) throw err;
      throw new StorageIoError(`${what}: ${ioWords(err)}`, { cause: err });
    }
    try {
      const header = shard.header;
      const want = range ?? { offset: 0, length: header.dataBytes };
      try {
        checkRange(want, header.dataBytes);
      } catch (err) {
        throw new RangeOutsideError(
          `${what}: range [${want.offset}, ${want.offset + want.length}) is outside the shard's ${header.dataBytes} bytes`,
          { cause: err },
        );
      }
      const span = framedSpan(want, header.dataBytes, header.blockBytes);
      beforeRead?.(span.end - span.start);
      const length = span.end - span.start;
      const framed = this.inlineReads.use(length)
        ? this.inlineReads.read(shard.file.fd, span.start, length, what)
        : await readAt(shard.file, span.start, length, what);
      return { header, span, framed };
    } finally {
      this.release(shard);
    }
  }

  /** The open file and header of shard `key`, from the cache or opened now; release() it after use. */
  private async acquire(key: string, what: string): Promise<OpenShard> {
    for (;;) {
      const slot = this.openShards.get(key);
      if (slot !== undefined) {
        this.openShards.delete(key); // to the most recently used end
        this.openShards.set(key, slot);
        const shard = await slot.opening;
        if (shard.evicted) continue; // closed while we waited: open it again
        shard.users += 1;
        return shard;
      }
      const opening = this.openShard(key, what);
      const mine: OpenSlot = { opening, shard: undefined };
      this.openShards.set(key, mine);
      let shard: OpenShard;
      try {
        shard = await opening;
      } catch (err) {
        if (this.openShards.get(key) === mine) this.openShards.delete(key);
        throw err;
      }
      shard.users += 1;
      if (this.openShards.get(key) !== mine) {
        // Evicted while it opened (a delete began or ended meanwhile): this read only.
        shard.evicted = true;
        return shard;
      }
      mine.shard = shard;
      this.trimOpenShards();
      return shard;
    }
  }

  private async openShard(key: string, what: string): Promise<OpenShard> {
    const file = await open(this.pathOf(key), 'r');
    try {
      const header = decodeHeader(await readAt(file, 0, frameHeaderBytes, what), what);
      return { file, header, users: 0, evicted: false };
    } catch (err) {
      await file.close().catch(() => undefined);
      throw err;
    }
  }

  /** Closes idle open files, least recently used first, while more than openShardsMax are open. */
  private trimOpenShards(): void {
    let excess = this.openShards.size - openShardsMax;
    for (const [key, slot] of this.openShards) {
      if (excess <= 0) return;
      // Files being opened or read stay: the cache may hold more than the limit for a moment.
      if (slot.shard === undefined || slot.shard.users > 0) continue;
      void this.evict(key);
      excess -= 1;
    }
  }

  private release(shard: OpenShard): void {
    shard.users -= 1;
    if (shard.evicted && shard.users === 0) void shard.file.close().catch(() => undefined);
  }

  /** Forgets the open file of `key`; it closes now, or once no read uses it. */
  private evict(key: string): Promise<void> {
    const slot = this.openShards.get(key);
    if (slot === undefined) return Promise.resolve();
    this.openShards.delete(key);
    return slot.opening.then(
      async (shard) => {
        shard.evicted = true;
        if (shard.users === 0) await shard.file.close().catch(() => undefined);
      },
      () => undefined,
    );
  }

  /**
   * Appends the keys under `relDir` (a directory, '' for the root) that match, in key order. A
   * directory `d` sorts as `d/`: every key inside it starts with `d/`, and no sibling name holds
   * a '/', so comparing names that way orders whole keys exactly.
   */
  private async walk(
    relDir: string,
    prefix: string,
    startAfter: string | undefined,
    limit: number,
    out: string[],
  ): Promise<void> {
    let entries;
    try {
      entries = await readdir(relDir === '' ? this.dir : join(this.dir, relDir), { withFileTypes: true });
    } catch (err) {
      if (isMissing(err)) return; // removed by a concurrent delete
      throw err;
    }
    const items = entries
      .filter((e) => (e.isFile() || e.isDirectory()) && !e.name.includes('~'))
      .map((e) => ({ key: relDir === '' ? e.name : `${relDir}/${e.name}`, isDir: e.isDirectory() }))
      .map((e) => ({ ...e, sortKey: e.isDir ? `${e.key}/` : e.key }))
      .sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
    for (const item of items) {
      if (out.length >= limit) return;
      if (item.isDir) {
        const dirKey = item.sortKey;
        const matches = dirKey.startsWith(prefix) || prefix.startsWith(dirKey);
        // Every key inside sorts before startAfter unless startAfter itself lies inside.
        const allBefore = startAfter !== undefined && dirKey < startAfter && !startAfter.startsWith(dirKey);
        if (matches && !allBefore) await this.walk(item.key, prefix, startAfter, limit, out);
      } else if (item.key.startsWith(prefix) && (startAfter === undefined || item.key > startAfter)) {
        out.push(item.key);
      }
    }
  }

  /** Removes directories left empty by a delete, up to (not including) the store's root. */
  private async removeEmptyParents(from: string): Promise<void> {
    for (let dir = from; dir.startsWith(this.dir + sep); dir = dirname(dir)) {
      try {
        await rmdir(dir);
      } catch {
        return; // not empty (or already gone): the normal way to stop
      }
    }
  }
}

/**
 * Small shard reads on the event loop's thread while they are fast (see InlineIo): at most
 * 64 KiB, slow past 1 ms. On 4 KiB random reads the pool's wake-ups were most of a node's read
 * cost (17.6k against 11.4k reads per second across the cluster, node CPU 76 % against 90 %,
 * with reads inline).
 */
export class InlineReads {
  private readonly io: InlineIo;

  /** @param now the clock reads are timed with (tests pass their own). */
  constructor(now?: () => number) {
    this.io = new InlineIo({ bytesMax: 64 * 1024, slowMs: 1, ...(now === undefined ? {} : { now }) });
  }

  /** Reads done inline, and how many of them were slow (for tests and the curious). */
  get stats(): { readonly inline: number; readonly slow: number } {
    return this.io.stats;
  }

  use(length: number): boolean {
    return this.io.use(length);
  }

  /** readAt() inline: exactly `length` bytes at `position`, or fewer when the file ends. */
  read(fd: number, position: number, length: number, what: string): Uint8Array {
    const buffer = Buffer.allocUnsafe(length);
    let got = 0;
    try {
      this.io.run(() => {
        while (got < length) {
          const n = readSync(fd, buffer, got, length - got, position + got);
          if (n === 0) break;
          got += n;
        }
      });
    } catch (err) {
      throw readFailure(err, what);
    }
    return readResult(buffer, got, position, what);
  }
}

/** Reads exactly `length` bytes at `position`, or fewer when the file ends (a truncated shard). */
async function readAt(file: FileHandle, position: number, length: number, what: string): Promise<Uint8Array> {
  const buffer = Buffer.allocUnsafe(length);
  let got = 0;
  try {
    while (got < length) {
      const { bytesRead } = await file.read(buffer, got, length - got, position + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
  } catch (err) {
    throw readFailure(err, what);
  }
  return readResult(buffer, got, position, what);
}

/** What a failed read of a shard file throws (EISDIR as it is: the caller reads it as missing). */
function readFailure(err: unknown, what: string): unknown {
  if (errnoOf(err) === 'EISDIR') return err;
  return new StorageIoError(`${what}: ${ioWords(err)}`, { cause: err });
}

/** The `got` bytes read into `buffer` at `position`; a header cut short is a truncated shard. */
function readResult(buffer: Buffer, got: number, position: number, what: string): Uint8Array {
  if (got < buffer.length && position === 0)
    throw new ChecksumMismatchError(`${what}: shard file is truncated (${got} bytes)`);
  return buffer.subarray(0, got);
}

/** ENOENT, or a key whose path runs through a file (ENOTDIR) or ends at a directory (EISDIR). */
function isMissing(err: unknown): boolean {
  const code = errnoOf(err);
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR';
}

function ioWords(err: unknown): string {
  const code = errnoOf(err);
  if (code !== undefined && errnoWords[code] !== undefined) return `${errnoWords[code]} (${code})`;
  return err instanceof Error ? err.message : String(err);
}

/** Sums shard file sizes under `root` and removes temp files left by a crash mid-put. */
async function scan(root: string): Promise<number> {
  let usedBytes = 0;
  const pending = [root];
  for (let dir = pending.pop(); dir !== undefined; dir = pending.pop()) {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        if (!entry.name.includes('~')) pending.push(path);
      } else if (entry.isFile() && entry.name.includes('~')) await unlink(path).catch(() => undefined);
      else if (entry.isFile()) usedBytes += (await lstat(path)).size;
    }
  }
  return usedBytes;
}
