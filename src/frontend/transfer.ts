/**
 * Moving volumes in and out as files: `cairnctl volume export|import` (raw images, sparse where
 * the volume has holes) and `export-diff|import-diff` (only the extents that changed between two
 * snapshots, found by the map trees' diff, in a checksummed stream of our own format).
 *
 * Everything goes through a VolumeFrontend in the caller's process: exports read the read-only
 * view of a snapshot (or of a detached volume), imports write through a writer's cache, so the
 * same engine, cache and fencing serve them as serve NBD clients.
 *
 * The diff format (all integers big-endian):
 *   "CAIRN-DIFF 1\n", one line of JSON (DiffHeader), then records: u8 kind (1 data, 2 zeros),
 *   u64 offset, u32 length, and for data `length` bytes; then u8 0 (the end) and the SHA-256 of
 *   every byte before it. A reader checks the trailer and every record's range.
 */
import { createHash, type Hash } from 'node:crypto';
import { once } from 'node:events';
import { closeSync, createReadStream, createWriteStream, fstatSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import {
  InvalidArgumentError,
  errorMessage,
  parseVolumeRef,
  snapshotName,
  volumeName,
  type BlockDevice,
} from '../core/index.js';
import {
  NotFoundError,
  PreconditionError,
  snapshotIdentity,
  type EtcdMeta,
  type SnapshotRecord,
  type VolumeRecord,
} from '../meta/index.js';
import { VolumeMaps, createVolume, requireSnapshot, rollbackVolume, type CreateVolumeOptions } from '../api/index.js';
import type { VolumeFrontend } from './provider.js';
import { cryptUnitBytes } from '../crypt/index.js';

/** Extents read or written at once by a transfer. */
export const transferExtentsInFlight = 16;

export interface TransferProgress {
  readonly bytesDone: number;
  readonly bytesTotal: number;
}

export interface TransferResult {
  readonly volume: string;
  readonly sizeBytes: number;
  /** Bytes of data moved (holes and zero extents are not). */
  readonly dataBytes: number;
  /** Extents moved as data, and as holes or zeros. */
  readonly dataExtents: number;
  readonly zeroExtents: number;
}

const diffMagic = 'CAIRN-DIFF 1\n';
const kindEnd = 0;
const kindData = 1;
const kindZero = 2;

/** What a diff says about itself: where it comes from and what it applies to. */
export interface DiffHeader {
  readonly format: 'cairn-diff';
  readonly volume: string;
  readonly sizeBytes: number;
  readonly extentBytes: number;
  /** The base snapshot's name and identity (snapshotIdentity); null: from an empty volume. */
  readonly fromName: string | null;
  readonly from: string | null;
  readonly toName: string;
  readonly to: string;
  readonly extents: number;
  readonly createdAt: string;
}

function isZero(bytes: Uint8Array): boolean {
  // 8 bytes at a time where aligned; the tail byte by byte.
  const words = Math.floor(bytes.byteLength / 8);
  if (bytes.byteOffset % 8 === 0) {
    const view = new BigUint64Array(bytes.buffer, bytes.byteOffset, words);
    for (let i = 0; i < words; i++) if (view[i] !== 0n) return false;
    for (let i = words * 8; i < bytes.length; i++) if (bytes[i] !== 0) return false;
    return true;
  }
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

/** Extent `e`'s bytes, or null when it is a hole or reads as zeros. */
async function readExtentOf(device: BlockDevice, extentBytes: number, e: number): Promise<Uint8Array | null> {
  const offset = e * extentBytes;
  const length = Math.min(extentBytes, device.sizeBytes - offset);
  const runs = await device.blockStatus(offset, length);
  if (runs.every((r) => r.hole || r.zero)) return null;
  const bytes = await device.read(offset, length);
  return isZero(bytes) ? null : bytes;
}

/**
 * Runs `produce(i)` for i in [0, count) with up to `inFlight` at once and hands the results to
 * `consume` in order (so a stream is written in order while reads overlap).
 */
async function pipelined<T>(
  count: number,
  inFlight: number,
  produce: (i: number) => Promise<T>,
  consume: (value: T, i: number) => Promise<void> | void,
): Promise<void> {
  const started: Promise<T>[] = [];
  let next = 0;
  const start = (): void => {
    const p = produce(next++);
    p.catch(() => undefined); // awaited below, in order; an early failure must not go unhandled
    started.push(p);
  };
  while (next < count && started.length < inFlight) start();
  for (let i = 0; i < count; i++) {
    const value = await started.shift()!;
    if (next < count) start();
    await consume(value, i);
  }
}

/** Writes to a stream, waiting when it asks to. */
async function put(out: Writable, bytes: Uint8Array): Promise<void> {
  if (!out.write(bytes)) await once(out, 'drain');
}

/** Ends a stream we opened (a file) and waits until it is written; stdout is left open. */
async function finish(out: Writable, owned: boolean): Promise<void> {
  if (!owned) return;
  out.end();
  await once(out, 'finish');
}

/**
 * Writes the contents of `ref` (`VOL@SNAP`, or `VOL` while no writer holds it) to `path` (a file,
 * made sparse where the volume has holes or zeros) or `stream` (every byte, in order).
 */
export async function exportVolume(
  frontend: VolumeFrontend,
  meta: EtcdMeta,
  ref: string,
  to: { readonly path: string } | { readonly stream: Writable },
  onProgress?: (p: TransferProgress) => void,
): Promise<TransferResult> {
  const { extentBytes } = await meta.requireVolume(parseVolumeRef(ref).volume);
  const handle = await frontend.open(ref, { readOnly: true });
  try {
    const device = handle.device;
    const { sizeBytes } = device;
    const count = Math.ceil(sizeBytes / extentBytes);
    let dataBytes = 0;
    let dataExtents = 0;
    const fd = 'path' in to ? openSync(to.path, 'w', 0o644) : undefined;
    try {
      if (fd !== undefined) ftruncateSync(fd, sizeBytes);
      const zeros = new Uint8Array(extentBytes);
      await pipelined(
        count,
        transferExtentsInFlight,
        (e) => readExtentOf(device, extentBytes, e),
        async (bytes, e) => {
          const offset = e * extentBytes;
          const length = Math.min(extentBytes, sizeBytes - offset);
          if (bytes !== null) {
            dataBytes += bytes.length;
            dataExtents += 1;
          }
          if (fd !== undefined) {
            if (bytes !== null) writeSync(fd, bytes, 0, bytes.length, offset);
          } else if ('stream' in to) {
            await put(to.stream, bytes ?? zeros.subarray(0, length));
          }
          onProgress?.({ bytesDone: offset + length, bytesTotal: sizeBytes });
        },
      );
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
    return { volume: ref, sizeBytes, dataBytes, dataExtents, zeroExtents: count - dataExtents };
  } finally {
    await handle.close();
  }
}

/**
 * Creates volume `options.name` and writes `from` into it: a file (its size is the volume's
 * unless options.sizeBytes says more) or a stream (options.sizeBytes required). Extents that
 * read as zeros are not written, so holes stay holes. On failure the volume is deleted again.
 */
export async function importVolume(
  frontend: VolumeFrontend,
  meta: EtcdMeta,
  from: { readonly path: string } | { readonly stream: Readable },
  options: Omit<CreateVolumeOptions, 'sizeBytes'> & { readonly sizeBytes?: number },
  onProgress?: (p: TransferProgress) => void,
): Promise<TransferResult> {
  const name = volumeName(options.name);
  let inputBytes: number | undefined;
  if ('path' in from) {
    const fd = openSync(from.path, 'r');
    try {
      inputBytes = fstatSync(fd).size;
    } finally {
      closeSync(fd);
    }
  }
  // Rounded up to whole blocks: 512 bytes, or the 4 KiB unit of encryption.
  const block = options.encrypted === true ? cryptUnitBytes : 512;
  const sizeBytes = options.sizeBytes ?? (inputBytes === undefined ? undefined : Math.ceil(inputBytes / block) * block);
  if (sizeBytes === undefined)
    throw new InvalidArgumentError('Importing from standard input needs --size (the volume size)');
  if (inputBytes !== undefined && inputBytes > sizeBytes)
    throw new InvalidArgumentError(`The input holds ${inputBytes} bytes, more than --size ${sizeBytes}`);
  if (sizeBytes === 0) throw new InvalidArgumentError('The input is empty: a volume needs a size');
  const volume = await createVolume(meta, { ...options, name, sizeBytes });
  try {
    const stream = 'stream' in from ? from.stream : createReadStream(from.path, { highWaterMark: 1 << 20 });
    const result = await writeStream(frontend, volume, stream, sizeBytes, onProgress);
    return result;
  } catch (err) {
    // Nothing of the user's is in it yet: the half-made volume goes.
    await frontend.close().catch(() => undefined);
    await meta.deleteVolume(name).catch(() => undefined);
    throw new InvalidArgumentError(
      `Cannot import into volume "${name}": ${errorMessage(err)}; the volume was deleted again`,
      { cause: err },
    );
  }
}

/** Extent-sized chunks of `stream`, non-zero ones written through a writer's cache; then a flush. */
async function writeStream(
  frontend: VolumeFrontend,
  volume: VolumeRecord,
  stream: Readable,
  sizeBytes: number,
  onProgress?: (p: TransferProgress) => void,
): Promise<TransferResult> {
  const handle = await frontend.open(volume.name, { readOnly: false });
  try {
    const { device } = handle;
    const { extentBytes } = volume;
    let chunk = new Uint8Array(extentBytes);
    let filled = 0;
    let at = 0;
    let dataBytes = 0;
    let dataExtents = 0;
    let zeroExtents = 0;
    const writes = new Set<Promise<void>>();
    let failure: unknown;
    const emit = async (bytes: Uint8Array, offset: number): Promise<void> => {
      if (isZero(bytes)) {
        zeroExtents += 1;
        return;
      }
      dataBytes += bytes.length;
      dataExtents += 1;
      const w = device.write(offset, bytes, { adopt: true }).catch((err: unknown) => {
        failure ??= err;
      });
      writes.add(w);
      void w.finally(() => writes.delete(w));
      if (writes.size >= transferExtentsInFlight) await Promise.race(writes);
      if (failure !== undefined) throw failure;
    };
    for await (const piece of stream as AsyncIterable<Buffer>) {
      let from = 0;
      while (from < piece.length) {
        const take = Math.min(piece.length - from, extentBytes - filled);
        if (at + filled + take > sizeBytes)
          throw new InvalidArgumentError(`The input holds more than the volume's ${sizeBytes} bytes`);
        chunk.set(piece.subarray(from, from + take), filled);
        filled += take;
        from += take;
        if (filled === extentBytes) {
          await emit(chunk, at);
          at += extentBytes;
          chunk = new Uint8Array(extentBytes);
          filled = 0;
          onProgress?.({ bytesDone: at, bytesTotal: sizeBytes });
        }
      }
    }
    if (filled > 0) {
      await emit(chunk.subarray(0, filled), at);
      at += filled;
    }
    await Promise.all(writes);
    if (failure !== undefined) throw failure;
    await device.flush();
    onProgress?.({ bytesDone: sizeBytes, bytesTotal: sizeBytes });
    return { volume: volume.name, sizeBytes, dataBytes, dataExtents, zeroExtents };
  } finally {
    await handle.close();
  }
}

/** The volume and snapshot records `VOL@SNAP` names, checked. */
async function resolveSnapshot(
  meta: EtcdMeta,
  ref: string,
): Promise<{ volume: VolumeRecord; snapshot: SnapshotRecord }> {
  const parsed = parseVolumeRef(ref);
  if (parsed.snapshot === undefined)
    throw new InvalidArgumentError(`Name the snapshot to export, VOL@SNAP (not "${ref}"): a diff is between snapshots`);
  const volume = await meta.requireVolume(parsed.volume);
  return { volume, snapshot: await requireSnapshot(meta, volume, parsed.snapshot) };
}

/**
 * Writes the extents that differ between snapshot `from` (absent: an empty volume) and `ref`
 * (`VOL@SNAP`) to `out` as a diff. The extents come from the map trees' diff, so a diff of two
 * snapshots a few writes apart reads only those writes' pages and extents.
 */
export async function exportDiff(
  frontend: VolumeFrontend,
  meta: EtcdMeta,
  ref: string,
  fromName: string | undefined,
  out: Writable,
  owned: boolean,
  onProgress?: (p: TransferProgress) => void,
): Promise<TransferResult> {
  const { volume, snapshot } = await resolveSnapshot(meta, ref);
  const base = fromName === undefined ? undefined : await requireSnapshot(meta, volume, snapshotName(fromName));
  if (base !== undefined && base.sizeBytes !== snapshot.sizeBytes)
    throw new InvalidArgumentError(
      `Snapshots ${base.name} and ${snapshot.name} of "${volume.name}" differ in size; export the later one whole`,
    );
  const maps = VolumeMaps.of(meta);
  await maps.refreshTargets();
  const tree = maps.tree({ ...volume, sizeBytes: snapshot.sizeBytes });
  const changed: number[] = [];
  if (base === undefined) {
    for await (const item of tree.walk(snapshot.root)) if ('record' in item) changed.push(item.extent);
    changed.sort((a, b) => a - b);
  } else {
    for await (const e of tree.diff(base.root, snapshot.root)) changed.push(e);
  }
  const header: DiffHeader = {
    format: 'cairn-diff',
    volume: volume.name,
    sizeBytes: snapshot.sizeBytes,
    extentBytes: volume.extentBytes,
    fromName: base?.name ?? null,
    from: base === undefined ? null : snapshotIdentity(base),
    toName: snapshot.name,
    to: snapshotIdentity(snapshot),
    extents: changed.length,
    createdAt: new Date().toISOString(),
  };
  const hash = createHash('sha256');
  const emit = async (bytes: Uint8Array): Promise<void> => {
    hash.update(bytes);
    await put(out, bytes);
  };
  await emit(Buffer.from(`${diffMagic}${JSON.stringify(header)}\n`));
  const handle = await frontend.open(`${volume.name}@${snapshot.name}`, { readOnly: true });
  let dataBytes = 0;
  let dataExtents = 0;
  try {
    const { extentBytes } = volume;
    await pipelined(
      changed.length,
      transferExtentsInFlight,
      (i) => readExtentOf(handle.device, extentBytes, changed[i]!),
      async (bytes, i) => {
        const e = changed[i]!;
        const offset = e * extentBytes;
        const length = Math.min(extentBytes, snapshot.sizeBytes - offset);
        const head = Buffer.alloc(13);
        head.writeUInt8(bytes === null ? kindZero : kindData, 0);
        head.writeBigUInt64BE(BigInt(offset), 1);
        head.writeUInt32BE(length, 9);
        await emit(head);
        if (bytes !== null) {
          await emit(bytes);
          dataBytes += bytes.length;
          dataExtents += 1;
        }
        onProgress?.({ bytesDone: i + 1, bytesTotal: changed.length });
      },
    );
  } finally {
    await handle.close();
  }
  await emit(Uint8Array.of(kindEnd));
  await put(out, hash.digest());
  await finish(out, owned);
  return {
    volume: `${volume.name}@${snapshot.name}`,
    sizeBytes: snapshot.sizeBytes,
    dataBytes,
    dataExtents,
    zeroExtents: changed.length - dataExtents,
  };
}

/** Bytes of a stream, taken exactly, hashed as they go (all but the trailer). */
class StreamBytes {
  private readonly chunks: Buffer[] = [];
  private held = 0;
  private readonly it: AsyncIterator<Buffer>;
  readonly hash: Hash = createHash('sha256');

  constructor(stream: Readable) {
    this.it = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  }

  async take(n: number, what: string, hashed = true): Promise<Buffer> {
    while (this.held < n) {
      const next = await this.it.next();
      if (next.done === true) throw new InvalidArgumentError(`The diff ends early, inside ${what}: it is truncated`);
      this.chunks.push(next.value);
      this.held += next.value.length;
    }
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    this.chunks.length = 0;
    if (all.length > n) this.chunks.push(all.subarray(n));
    this.held -= n;
    if (hashed) this.hash.update(out);
    return out;
  }

  /** The header line: up to 64 KiB ending in a newline. */
  async line(what: string): Promise<string> {
    const bytes: number[] = [];
    for (;;) {
      const b = (await this.take(1, what))[0]!;
      if (b === 0x0a) return Buffer.from(bytes).toString('utf8');
      bytes.push(b);
      if (bytes.length > 65536) throw new InvalidArgumentError(`The diff's ${what} is longer than 64 KiB: not a diff`);
    }
  }

  async atEnd(): Promise<boolean> {
    if (this.held > 0) return false;
    const next = await this.it.next();
    if (next.done === true) return true;
    this.chunks.push(next.value);
    this.held += next.value.length;
    return next.value.length === 0 ? this.atEnd() : false;
  }
}

function parseHeader(text: string): DiffHeader {
  let h: Partial<DiffHeader>;
  try {
    h = JSON.parse(text) as Partial<DiffHeader>;
  } catch {
    throw new InvalidArgumentError('The diff header is not JSON: not a Cairn diff');
  }
  const count = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  const ok =
    h.format === 'cairn-diff' &&
    typeof h.volume === 'string' &&
    count(h.sizeBytes) &&
    h.sizeBytes > 0 &&
    count(h.extentBytes) &&
    h.extentBytes > 0 &&
    (h.from === null || typeof h.from === 'string') &&
    (h.fromName === null || typeof h.fromName === 'string') &&
    typeof h.to === 'string' &&
    typeof h.toName === 'string' &&
    count(h.extents);
  if (!ok) throw new InvalidArgumentError('The diff header lacks fields a Cairn diff has: not a Cairn diff');
  return h as DiffHeader;
}

export interface ImportDiffResult extends TransferResult {
  /** The snapshot made on the target after applying: the diff's `to`. */
  readonly snapshot: string;
  readonly created: boolean;
}

/**
 * Applies a diff to volume `name`: its base must be there (the target has a snapshot of the
 * diff's base, and nothing was written since), else it is refused before anything changes. A
 * diff from an empty volume creates the volume (or applies to one never written). Once applied,
 * the target gets a snapshot named as the diff's `to`, the base of the next diff. A failure
 * half-way (a truncated or corrupt stream) puts the volume back: it is rolled back to the base,
 * or deleted if this call created it.
 */
export async function importDiff(
  frontend: VolumeFrontend,
  meta: EtcdMeta,
  stream: Readable,
  name: string,
  options: { readonly owner: string; readonly createOptions?: Omit<CreateVolumeOptions, 'name' | 'sizeBytes'> },
  onProgress?: (p: TransferProgress) => void,
): Promise<ImportDiffResult> {
  const target = volumeName(name);
  const input = new StreamBytes(stream);
  const magic = (await input.take(diffMagic.length, 'its magic')).toString('latin1');
  if (magic !== diffMagic) throw new InvalidArgumentError('The input does not start like a Cairn diff (CAIRN-DIFF 1)');
  const header = parseHeader(await input.line('header'));
  const what = `the diff of ${header.volume}@${header.toName}${header.fromName === null ? '' : ` from ${header.fromName}`}`;
  let volume = await meta.getVolume(target);
  let created = false;
  if (volume === null) {
    if (header.from !== null)
      throw new NotFoundError(
        `No volume named "${target}": ${what} applies to a volume holding snapshot ${header.fromName}`,
      );
    volume = await createVolume(meta, {
      ...options.createOptions,
      name: target,
      sizeBytes: header.sizeBytes,
      extentBytes: header.extentBytes,
    });
    created = true;
  }
  const refuse = (why: string): PreconditionError =>
    new PreconditionError(`Cannot apply ${what} to volume "${target}": ${why}; nothing was changed`);
  if (volume.sizeBytes !== header.sizeBytes)
    throw refuse(`the volume holds ${volume.sizeBytes} bytes, the diff ${header.sizeBytes}`);
  if (volume.extentBytes !== header.extentBytes && !created)
    throw refuse(`its extents are ${volume.extentBytes} bytes, the diff's ${header.extentBytes}`);
  snapshotName(header.toName);
  if ((await meta.getSnapshot(volume.id, header.toName)) !== null)
    throw refuse(`it has a snapshot named ${header.toName} already`);
  if (header.from !== null) {
    // Before the attach too: a wrong base is refused as such even while another writer holds
    // the volume (checked again after the attach, which is what counts).
    const early = await meta.getSnapshot(volume.id, header.fromName!);
    if (early === null) throw refuse(`it has no snapshot named ${header.fromName}`);
    if (snapshotIdentity(early) !== header.from)
      throw refuse(
        `its snapshot ${header.fromName} is not the diff's base (${snapshotIdentity(early)}, not ${header.from})`,
      );
  }
  const handle = await frontend.open(target, { readOnly: false });
  let changed = false;
  let base: SnapshotRecord | null = null;
  try {
    // After the attach (which folds any journal): what the volume holds now.
    const live = await VolumeMaps.of(meta).root(volume);
    if (header.from === null) {
      if ((live.written ?? 0) > 0 && !created)
        throw refuse('the diff starts from an empty volume, and this one holds data');
    } else {
      base = await meta.getSnapshot(volume.id, header.fromName!);
      if (base === null) throw refuse(`it has no snapshot named ${header.fromName}`);
      if (snapshotIdentity(base) !== header.from)
        throw refuse(
          `its snapshot ${header.fromName} is not the diff's base (${snapshotIdentity(base)}, not ${header.from})`,
        );
      const same =
        (base.root.page === undefined && live.page === undefined) ||
        (base.root.page?.generation === live.page?.generation && base.root.page?.checksum === live.page?.checksum);
      if (!same) throw refuse(`it was written after snapshot ${header.fromName}`);
    }
    const { device } = handle;
    let dataBytes = 0;
    let dataExtents = 0;
    let zeroExtents = 0;
    for (let n = 0; ; n++) {
      const kind = (await input.take(1, 'a record'))[0]!;
      if (kind === kindEnd) break;
      if (kind !== kindData && kind !== kindZero)
        throw new InvalidArgumentError(`Record ${n} of the diff has unknown kind ${kind}`);
      const head = await input.take(12, `record ${n}`);
      const offset = Number(head.readBigUInt64BE(0));
      const length = head.readUInt32BE(8);
      if (
        !Number.isSafeInteger(offset) ||
        offset % header.extentBytes !== 0 ||
        length === 0 ||
        length > header.extentBytes ||
        offset + length > header.sizeBytes
      )
        throw new InvalidArgumentError(
          `Record ${n} of the diff covers [${offset}, +${length}), outside the volume's extents`,
        );
      changed = true;
      if (kind === kindData) {
        const bytes = await input.take(length, `record ${n}'s data`);
        await device.write(offset, bytes);
        dataBytes += length;
        dataExtents += 1;
      } else {
        await device.trim(offset, length);
        zeroExtents += 1;
      }
      onProgress?.({ bytesDone: n + 1, bytesTotal: header.extents });
    }
    const expected = input.hash.digest();
    const trailer = await input.take(32, 'its checksum', false);
    if (!trailer.equals(expected))
      throw new InvalidArgumentError('The diff does not match its checksum: it is corrupt');
    if (!(await input.atEnd())) throw new InvalidArgumentError('The diff goes on after its checksum: it is corrupt');
    await device.flush();
    await frontend.snapshot(target, header.toName, { origin: header.to });
    return {
      volume: target,
      sizeBytes: header.sizeBytes,
      dataBytes,
      dataExtents,
      zeroExtents,
      snapshot: header.toName,
      created,
    };
  } catch (err) {
    await handle.close().catch(() => undefined);
    if (created) {
      await frontend.close().catch(() => undefined);
      await meta.deleteVolume(target).catch(() => undefined);
    } else if (changed && base !== null) {
      await frontend.close().catch(() => undefined);
      await putBack(meta, volume, base, options.owner).catch((e: unknown) => {
        throw new InvalidArgumentError(
          `${errorMessage(err)}; and the volume could not be rolled back to ${base!.name}: ${errorMessage(e)} (run cairnctl snapshot rollback ${target} ${base!.name})`,
        );
      });
    }
    throw err;
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** Rolls a volume whose diff failed half-way back to the diff's base (it is detached by now). */
async function putBack(meta: EtcdMeta, volume: VolumeRecord, base: SnapshotRecord, owner: string): Promise<void> {
  const lock = await meta.acquireLock(volume.name, owner);
  try {
    await rollbackVolume(meta, lock, volume, base.name);
  } finally {
    await lock.release();
  }
}

/** Opens `path` for a diff or export written as a stream ('-': standard output, left open). */
export function outputStream(path: string): { stream: Writable; owned: boolean } {
  return path === '-' ? { stream: process.stdout, owned: false } : { stream: createWriteStream(path), owned: true };
}
