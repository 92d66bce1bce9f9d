/**
 * Erasure-code a file into a directory of shards and back: the operations behind
 * `cairnctl codec encode` and `cairnctl codec decode`. The file is one stripe: k data shards of
 * ceil(size / k) bytes (the last one zero-padded) and m parity shards, plus manifest.json.
 *
 * What it keeps true: the manifest is written last, so a directory with a manifest has every
 * shard it names; every file is written to a temporary name, fsynced and renamed, so a crash
 * leaves old or new files, never torn ones; decode never returns bytes whose CRC-32 differs from
 * the original's. It leaves out extents, placement and nodes: this is the codec seen on files.
 */
import { open, readFile, rename, stat, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CairnError,
  InvalidArgumentError,
  StorageIoError,
  TooFewShardsError,
  assert,
  checkProfile,
  codecFileBytesMax,
  crc32Of,
  errorMessage,
  formatBytes,
} from '../core/index.js';
import type { Profile } from '../core/index.js';
import { type ErasureCodec, shardBytesFor } from '../codec/index.js';

export const manifestFormat = 'cairn-shards/1';
export const manifestName = 'manifest.json';

export interface ShardManifest {
  readonly format: typeof manifestFormat;
  readonly k: number;
  readonly m: number;
  /** Bytes in the original file. */
  readonly size: number;
  /** Bytes in every shard: ceil(size / k). */
  readonly shardBytes: number;
  /** CRC-32 of the original file, lowercase hex, checked after decode. */
  readonly crc32: string;
  readonly shards: readonly { readonly index: number; readonly file: string; readonly crc32: string }[];
}

export interface EncodeResult {
  readonly k: number;
  readonly m: number;
  readonly size: number;
  readonly shardBytes: number;
  readonly outputDir: string;
  readonly files: readonly string[];
}

export interface DecodeResult {
  readonly size: number;
  readonly output: string;
  readonly k: number;
  readonly m: number;
  /** Shards that were absent. */
  readonly missing: readonly number[];
  /** Shards present whose checksum did not match; they were treated as missing. */
  readonly corrupt: readonly number[];
  /** Data shards rebuilt from parity. */
  readonly rebuilt: readonly number[];
}

export type CodecFactory = (profile: Profile) => ErasureCodec | Promise<ErasureCodec>;

const hex = (n: number): string => n.toString(16).padStart(8, '0');
export const shardFileName = (index: number): string => `shard.${index}`;

/** Writes `bytes` to `path` atomically: temporary file, fsync, rename. */
async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    const handle = await open(tmp, 'w');
    try {
      await handle.writeFile(bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new StorageIoError(`Cannot write ${path}: ${errorMessage(err)}`, { cause: err });
  }
}

export async function encodeFile(options: {
  profile: Profile;
  input: string;
  outputDir: string;
  force?: boolean;
  codec: CodecFactory;
}): Promise<EncodeResult> {
  const { k, m } = checkProfile(options.profile);
  const info = await stat(options.input).catch((err: unknown) => {
    throw new InvalidArgumentError(`Cannot read input ${options.input}: ${errorMessage(err)}`);
  });
  if (!info.isFile()) throw new InvalidArgumentError(`Cannot encode ${options.input}: not a regular file`);
  if (info.size > codecFileBytesMax) {
    throw new InvalidArgumentError(
      `Cannot encode ${options.input}: ${formatBytes(info.size)} is over the ${formatBytes(codecFileBytesMax)} this command reads into memory`,
    );
  }
  const manifestPath = join(options.outputDir, manifestName);
  if (!options.force && (await stat(manifestPath).catch(() => null)) !== null) {
    throw new InvalidArgumentError(`Refusing to overwrite ${manifestPath}: pass --force to replace the shards there`);
  }
  const size = info.size;
  const shardBytes = shardBytesFor(size, k);
  // One buffer for all k+m shards: data shards are views of it, so the input is read once and
  // never copied; the zero tail of the last data shard comes from the zero-filled allocation.
  const stripe = new Uint8Array(shardBytes * (k + m));
  const handle = await open(options.input, 'r');
  try {
    let done = 0;
    while (done < size) {
      const { bytesRead } = await handle.read(stripe, done, size - done, done);
      if (bytesRead === 0) throw new StorageIoError(`Cannot encode ${options.input}: it shrank while being read`);
      done += bytesRead;
    }
  } finally {
    await handle.close();
  }
  const shards = Array.from({ length: k + m }, (_, i) => stripe.subarray(i * shardBytes, (i + 1) * shardBytes));
  const codec = await options.codec({ k, m });
  codec.encode(shards.slice(0, k), shards.slice(k));

  await mkdir(options.outputDir, { recursive: true });
  // Remove the old manifest first: from here until the new one lands, the directory is not a
  // valid shard set, which is what it is while shards are being replaced.
  await rm(manifestPath, { force: true });
  const files = shards.map((_, i) => shardFileName(i));
  await Promise.all(shards.map((s, i) => writeFileAtomic(join(options.outputDir, files[i]!), s)));
  const manifest: ShardManifest = {
    format: manifestFormat,
    k,
    m,
    size,
    shardBytes,
    crc32: hex(crc32Of(stripe.subarray(0, size))),
    shards: shards.map((s, i) => ({ index: i, file: files[i]!, crc32: hex(crc32Of(s)) })),
  };
  await writeFileAtomic(manifestPath, Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`));
  return { k, m, size, shardBytes, outputDir: options.outputDir, files: [...files, manifestName] };
}

/** Reads and validates DIR/manifest.json; every problem is an InvalidArgumentError naming it. */
export async function readManifest(dir: string): Promise<ShardManifest> {
  const path = join(dir, manifestName);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new InvalidArgumentError(`Cannot decode ${dir}: no readable ${manifestName} (${errorMessage(err)})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new InvalidArgumentError(`Cannot decode ${dir}: ${manifestName} is not valid JSON`);
  }
  const bad = (why: string): never => {
    throw new InvalidArgumentError(`Cannot decode ${dir}: ${manifestName} ${why}`);
  };
  if (typeof raw !== 'object' || raw === null) return bad('is not an object');
  const o = raw as Record<string, unknown>;
  if (o['format'] !== manifestFormat) bad(`has format ${JSON.stringify(o['format'])}, expected "${manifestFormat}"`);
  const int = (key: string): number => {
    const v = o[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) return bad(`has no valid "${key}"`);
    return v;
  };
  const k = int('k');
  const m = int('m');
  const size = int('size');
  const shardBytes = int('shardBytes');
  try {
    checkProfile({ k, m });
  } catch (err) {
    bad(`has a bad profile: ${errorMessage(err)}`);
  }
  if (shardBytes !== shardBytesFor(size, k))
    bad(`says shardBytes ${shardBytes}, but ceil(${size} / ${k}) is ${shardBytesFor(size, k)}`);
  const isHex = (v: unknown): v is string => typeof v === 'string' && /^[0-9a-f]{8}$/.test(v);
  if (!isHex(o['crc32'])) bad('has no valid "crc32"');
  const shards = o['shards'];
  if (!Array.isArray(shards) || shards.length !== k + m) return bad(`must list ${k + m} shards`);
  const list = shards.map((s: unknown, i) => {
    const e = (s ?? {}) as Record<string, unknown>;
    if (e['index'] !== i || e['file'] !== shardFileName(i) || !isHex(e['crc32'])) bad(`has a bad entry for shard ${i}`);
    return { index: i, file: shardFileName(i), crc32: e['crc32'] as string };
  });
  return { format: manifestFormat, k, m, size, shardBytes, crc32: o['crc32'] as string, shards: list };
}

export async function decodeDir(options: {
  inputDir: string;
  output: string;
  codec: CodecFactory;
}): Promise<DecodeResult> {
  const manifest = await readManifest(options.inputDir);
  const { k, m, shardBytes, size } = manifest;
  const missing: number[] = [];
  const corrupt: number[] = [];
  const shards: (Uint8Array | null)[] = await Promise.all(
    manifest.shards.map(async (entry) => {
      const path = join(options.inputDir, entry.file);
      let bytes: Uint8Array;
      try {
        bytes = await readFile(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          missing.push(entry.index);
          return null;
        }
        throw new StorageIoError(`Cannot read ${path}: ${errorMessage(err)}`, { cause: err });
      }
      if (bytes.length !== shardBytes) {
        throw new InvalidArgumentError(
          `Cannot decode ${options.inputDir}: ${entry.file} has ${bytes.length} bytes, the manifest says every shard has ${shardBytes}`,
        );
      }
      if (hex(crc32Of(bytes)) !== entry.crc32) {
        corrupt.push(entry.index);
        return null;
      }
      return bytes;
    }),
  );
  missing.sort((a, b) => a - b);
  corrupt.sort((a, b) => a - b);
  const present = shards.filter((s) => s !== null).length;
  if (present < k) {
    const detail = [
      missing.length > 0 ? `missing ${missing.map(shardFileName).join(', ')}` : '',
      corrupt.length > 0 ? `corrupt ${corrupt.map(shardFileName).join(', ')}` : '',
    ]
      .filter((s) => s !== '')
      .join('; ');
    const err = new TooFewShardsError(k, present, `decode ${options.inputDir}`);
    throw new CairnError(err.code, `${err.message} (${detail})`, { cause: err });
  }
  const rebuilt = shards.slice(0, k).flatMap((s, i) => (s === null ? [i] : []));
  if (rebuilt.length > 0) (await options.codec({ k, m })).reconstruct(shards, rebuilt);
  const out = new Uint8Array(size);
  for (let i = 0; i < k; i++) {
    const shard = shards[i];
    assert(shard !== null && shard !== undefined, 'data shard still missing after reconstruction');
    const start = i * shardBytes;
    if (start >= size) break;
    out.set(shard.subarray(0, Math.min(shardBytes, size - start)), start);
  }
  if (hex(crc32Of(out)) !== manifest.crc32) {
    throw new CairnError(
      'ECHECKSUM',
      `Cannot decode ${options.inputDir}: the rebuilt file's CRC-32 does not match the manifest; nothing was written`,
    );
  }
  await writeFileAtomic(options.output, out);
  return { size, output: options.output, k, m, missing, corrupt, rebuilt };
}
