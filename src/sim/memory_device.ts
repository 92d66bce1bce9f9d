/**
 * The in-memory BlockDevice and ExportProvider: the twin of a Cairn volume for tests and
 * simulations, as MemoryShardStore is for shard stores. Sparse (4 KiB pages, a missing page is a
 * hole), with every capability on by default, block status that tells holes (never written, or
 * trimmed) from data, and a model of durability: writes are volatile until flush() or FUA, and
 * crash() throws away what was not made durable, so tests can check that FLUSH and FUA really
 * reach the device.
 *
 * What it keeps true:
 * - Ranges are checked with assertions (the NBD edge validated them; a bad one is a caller bug).
 * - Stored pages are never mutated: a write replaces a page with a new array (copy on write),
 *   so the durable map can share pages with the visible one without copying.
 * - A write that would exceed allocatedBytesMax fails with DiskFullError before changing anything.
 * - multiConn holds: every connection gets the same device object, so a flush covers all writes.
 *
 * What it leaves out: persistence across processes, real latency (add it with the
 * beforeOperation hook), and compact storage of huge NO_HOLE zero ranges (each zeroed page costs
 * a map entry, not 4 KiB; keep such ranges test-sized).
 */
import {
  assert,
  assertByteCount,
  CairnError,
  DiskFullError,
  KiB,
  type BlockDevice,
  type BlockDeviceCapabilities,
  type BlockStatusRun,
  type ExportInfo,
  type ExportProvider,
  type WriteOptions,
} from '../core/index.js';

/** Granularity of allocation and of block status. */
export const memoryPageBytes = 4 * KiB;
/**
 * Reads up to this size are carved out of shared zeroed slabs: a fresh 4 KiB typed array costs
 * about 900 ns (measured on Node 20), a view into a slab a few tens, which is most of the gap to
 * nbdkit on 4 KiB random reads. The caller still owns its view outright; a live view keeps its
 * 1 MiB slab alive, which a test twin can afford.
 */
const slabReadBytesMax = 64 * KiB;
const slabBytes = 1024 * KiB;

/** Marks a page that is allocated (not a hole) and reads as zeros, without holding 4 KiB. */
const zeroPage: unique symbol = Symbol('zeroPage');
type Page = Uint8Array | typeof zeroPage;

export type MemoryDeviceOperationKind = 'read' | 'write' | 'flush' | 'trim' | 'writeZeroes' | 'blockStatus';

/** What a beforeOperation hook is told. Offset and length are 0 for flush. */
export interface MemoryDeviceOperation {
  readonly kind: MemoryDeviceOperationKind;
  readonly offset: number;
  readonly length: number;
  readonly fua: boolean;
}

export interface MemoryDeviceOptions {
  /** Overrides of the default capabilities (all true except readOnly). */
  readonly capabilities?: Partial<BlockDeviceCapabilities>;
  /** Allocated bytes (whole pages, zeroed NO_HOLE pages included) before writes fail with ENOSPC. */
  readonly allocatedBytesMax?: number;
  /** Runs before every operation; see MemoryBlockDevice.beforeOperation. */
  readonly beforeOperation?: MemoryDeviceHook;
}

/**
 * Awaited before an operation touches the pages: delay it (return a promise the test resolves
 * later), or fail it (throw, e.g. a StorageIoError or an AssertionError to play a bug).
 */
export type MemoryDeviceHook = (operation: MemoryDeviceOperation) => Promise<void> | void;

export interface MemoryDeviceStats {
  reads: number;
  writes: number;
  flushes: number;
  trims: number;
  writeZeroes: number;
  blockStatus: number;
  /** Writes and zeroes that asked for FUA. */
  fuaWrites: number;
  /** Operations started but not finished, now and at most so far. */
  inFlight: number;
  inFlightHighWater: number;
}

const defaultCapabilities: BlockDeviceCapabilities = {
  readOnly: false,
  flush: true,
  fua: true,
  trim: true,
  writeZeroes: true,
  multiConn: true,
};

/**
 * A sparse in-memory block device.
 * @example
 * const device = new MemoryBlockDevice(1 * MiB);
 * await device.write(4096, new Uint8Array([1, 2, 3]));
 * await device.blockStatus(0, 8192); // [{0, 4096, hole}, {4096, 4096, data}]
 */
export class MemoryBlockDevice implements BlockDevice {
  readonly sizeBytes: number;
  /** See MemoryDeviceHook. May be replaced at any time; null for none. */
  beforeOperation: MemoryDeviceHook | null;
  readonly stats: MemoryDeviceStats = {
    reads: 0,
    writes: 0,
    flushes: 0,
    trims: 0,
    writeZeroes: 0,
    blockStatus: 0,
    fuaWrites: 0,
    inFlight: 0,
    inFlightHighWater: 0,
  };
  private readonly caps: BlockDeviceCapabilities;
  private readonly allocatedBytesMax: number;
  /** What reads see. */
  private pages = new Map<number, Page>();
  /** What survives crash(): the state as of the last flush, plus FUA writes since. */
  private durable = new Map<number, Page>();
  /** Pages whose visible state differs from the durable one. */
  private readonly dirty = new Set<number>();
  private slab: Uint8Array | null = null;
  private slabUsed = 0;

  constructor(sizeBytes: number, options: MemoryDeviceOptions = {}) {
    assertByteCount(sizeBytes, 'device size');
    this.sizeBytes = sizeBytes;
    this.caps = { ...defaultCapabilities, ...options.capabilities };
    this.allocatedBytesMax = options.allocatedBytesMax ?? Number.MAX_SAFE_INTEGER;
    assertByteCount(this.allocatedBytesMax, 'allocatedBytesMax');
    this.beforeOperation = options.beforeOperation ?? null;
  }

  capabilities(): BlockDeviceCapabilities {
    return this.caps;
  }

  /** Bytes held by allocated pages (a zeroed NO_HOLE page counts, though it uses no memory). */
  get allocatedBytes(): number {
    return this.pages.size * memoryPageBytes;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    this.checkRange(offset, length);
    return this.run({ kind: 'read', offset, length, fua: false }, () => {
      this.stats.reads += 1;
      return this.peek(offset, length);
    });
  }

  async write(offset: number, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    this.checkRange(offset, data.length);
    const fua = options.fua === true;
    // The port lets us read `data` until our promise resolves, so no defensive copy: pages are
    // built from it below (that is the one copy).
    const bytes = data;
    await this.run({ kind: 'write', offset, length: bytes.length, fua }, () => {
      this.checkWritable('write');
      this.stats.writes += 1;
      if (fua) this.stats.fuaWrites += 1;
      this.reserve(offset, bytes.length);
      this.forPages(offset, bytes.length, (index, from, to, pageStart) => {
        const chunk = bytes.subarray(pageStart + from - offset, pageStart + to - offset);
        this.setPage(index, this.withBytes(index, from, to, chunk));
      });
      if (fua) this.persist(offset, bytes.length);
    });
  }

  async flush(): Promise<void> {
    await this.run({ kind: 'flush', offset: 0, length: 0, fua: false }, () => {
      this.stats.flushes += 1;
      for (const index of this.dirty) this.persistPage(index);
      this.dirty.clear();
    });
  }

  async trim(offset: number, length: number, options: WriteOptions = {}): Promise<void> {
    this.checkRange(offset, length);
    const fua = options.fua === true;
    await this.run({ kind: 'trim', offset, length, fua }, () => {
      this.checkWritable('trim');
      this.stats.trims += 1;
      this.punch(offset, length);
      if (fua) this.persist(offset, length);
    });
  }

  async writeZeroes(
    offset: number,
    length: number,
    options: WriteOptions & { readonly noHole?: boolean } = {},
  ): Promise<void> {
    this.checkRange(offset, length);
    const fua = options.fua === true;
    await this.run({ kind: 'writeZeroes', offset, length, fua }, () => {
      this.checkWritable('write zeroes to');
      this.stats.writeZeroes += 1;
      if (fua) this.stats.fuaWrites += 1;
      if (options.noHole !== true) {
        this.punch(offset, length);
      } else {
        this.reserve(offset, length);
        this.forPages(offset, length, (index, from, to) => {
          const whole = from === 0 && to === this.pageEnd(index);
          const current = this.pages.get(index);
          // A whole page, or a part of a page that already reads as zeros, becomes an
          // allocated zero page; a part of a data page is zeroed in a copy.
          if (whole || current === undefined || current === zeroPage) this.setPage(index, zeroPage);
          else this.setPage(index, this.withBytes(index, from, to, null));
        });
      }
      if (fua) this.persist(offset, length);
    });
  }

  async blockStatus(offset: number, length: number): Promise<BlockStatusRun[]> {
    this.checkRange(offset, length);
    assert(length > 0, 'block status needs a nonzero length');
    return this.run({ kind: 'blockStatus', offset, length, fua: false }, () => {
      this.stats.blockStatus += 1;
      return this.runsOf(offset, length);
    });
  }

  /**
   * Reads without hooks or statistics: for tests and checkers comparing against a model. The
   * result may be a view into a larger buffer (mind byteOffset); it belongs to the caller.
   */
  peek(offset: number, length: number): Uint8Array {
    this.checkRange(offset, length);
    const out = this.allocate(length);
    // A plain loop rather than forPages(): this is the hot path of every READ.
    const end = offset + length;
    let at = offset;
    while (at < end) {
      const index = Math.floor(at / memoryPageBytes);
      const pageStart = index * memoryPageBytes;
      const to = Math.min(end, pageStart + memoryPageBytes);
      const page = this.pages.get(index);
      if (page instanceof Uint8Array) out.set(page.subarray(at - pageStart, to - pageStart), at - offset);
      at = to;
    }
    return out;
  }

  /** A zeroed array of `length` bytes that nobody else holds. */
  private allocate(length: number): Uint8Array {
    if (length > slabReadBytesMax) return new Uint8Array(length);
    if (this.slab === null || this.slabUsed + length > this.slab.length) {
      this.slab = new Uint8Array(slabBytes);
      this.slabUsed = 0;
    }
    const out = this.slab.subarray(this.slabUsed, this.slabUsed + length);
    this.slabUsed += length;
    return out;
  }

  /**
   * Simulates power loss: everything not flushed (and not written with FUA) is lost, as a real
   * volume's write-back cache would lose it. The device stays usable.
   */
  crash(): void {
    this.pages = new Map(this.durable);
    this.dirty.clear();
  }

  /** Bytes written since the last flush that a crash would lose (whole pages). */
  get dirtyBytes(): number {
    return this.dirty.size * memoryPageBytes;
  }

  // -------------------------------------------------------------------------------------------

  private checkRange(offset: number, length: number): void {
    // Every call checks; the message is built only on failure (assertByteCount() and a template
    // literal in assert() would format strings on every read, which measured as most of a 4 KiB read).
    const ok =
      Number.isSafeInteger(offset) &&
      Number.isSafeInteger(length) &&
      offset >= 0 &&
      length >= 0 &&
      offset <= this.sizeBytes &&
      length <= this.sizeBytes - offset;
    if (!ok) assert(false, `[${offset}, +${length}) is not a byte range within ${this.sizeBytes} bytes`);
  }

  private checkWritable(action: string): void {
    if (this.caps.readOnly) throw new CairnError('EROFS', `Cannot ${action} a read-only memory device`);
  }

  private async run<T>(operation: MemoryDeviceOperation, body: () => T): Promise<T> {
    this.stats.inFlight += 1;
    this.stats.inFlightHighWater = Math.max(this.stats.inFlightHighWater, this.stats.inFlight);
    try {
      if (this.beforeOperation !== null) await this.beforeOperation(operation);
      return body();
    } finally {
      this.stats.inFlight -= 1;
    }
  }

  private pageEnd(index: number): number {
    return Math.min(memoryPageBytes, this.sizeBytes - index * memoryPageBytes);
  }

  /**
   * Calls `visit` for every page [offset, offset + length) touches, with the touched part of the
   * page as [from, to) relative to the page start. E.g. offset 4000, length 200 with 4 KiB pages
   * visits page 0 with [4000, 4096) and page 1 with [0, 104).
   */
  private forPages(
    offset: number,
    length: number,
    visit: (index: number, from: number, to: number, pageStart: number) => void,
  ): void {
    if (length === 0) return;
    const end = offset + length;
    for (let index = Math.floor(offset / memoryPageBytes); index * memoryPageBytes < end; index++) {
      const pageStart = index * memoryPageBytes;
      visit(
        index,
        Math.max(offset, pageStart) - pageStart,
        Math.min(end, pageStart + memoryPageBytes) - pageStart,
        pageStart,
      );
    }
  }

  /** A new page: the current one with [from, to) replaced by `bytes`, or by zeros when null. */
  private withBytes(index: number, from: number, to: number, bytes: Uint8Array | null): Uint8Array {
    const current = this.pages.get(index);
    const page = new Uint8Array(this.pageEnd(index));
    if (current instanceof Uint8Array && (from > 0 || to < page.length)) page.set(current);
    if (bytes === null) page.fill(0, from, to);
    else page.set(bytes, from);
    return page;
  }

  private setPage(index: number, page: Page | undefined): void {
    if (page === undefined) this.pages.delete(index);
    else this.pages.set(index, page);
    this.dirty.add(index);
  }

  /** Fails with DiskFullError if the pages this call would newly allocate do not fit. */
  private reserve(offset: number, length: number): void {
    if (this.allocatedBytesMax === Number.MAX_SAFE_INTEGER) return;
    let added = 0;
    this.forPages(offset, length, (index) => {
      if (!this.pages.has(index)) added += 1;
    });
    const after = (this.pages.size + added) * memoryPageBytes;
    if (after > this.allocatedBytesMax) {
      throw new DiskFullError(
        `Cannot write [${offset}, +${length}) to memory device: ${after} bytes allocated would exceed ${this.allocatedBytesMax}`,
      );
    }
  }

  /** Trim: whole pages become holes, parts of data pages become zeros. */
  private punch(offset: number, length: number): void {
    if (length === 0) return;
    const first = Math.floor(offset / memoryPageBytes);
    const last = Math.floor((offset + length - 1) / memoryPageBytes);
    const edge = (index: number): void => {
      const pageStart = index * memoryPageBytes;
      const from = Math.max(offset, pageStart) - pageStart;
      const to = Math.min(offset + length, pageStart + memoryPageBytes) - pageStart;
      const current = this.pages.get(index);
      if (from === 0 && to === this.pageEnd(index)) {
        if (current !== undefined) this.setPage(index, undefined);
      } else if (current instanceof Uint8Array) {
        this.setPage(index, this.withBytes(index, from, to, null));
      }
    };
    edge(first);
    if (last !== first) edge(last);
    // The pages strictly between are whole; walk whichever is smaller, the range or the map.
    if (last - first - 1 <= this.pages.size) {
      for (let index = first + 1; index < last; index++) if (this.pages.has(index)) this.setPage(index, undefined);
    } else {
      for (const index of [...this.pages.keys()]) if (index > first && index < last) this.setPage(index, undefined);
    }
  }

  private persist(offset: number, length: number): void {
    this.forPages(offset, length, (index) => {
      if (this.dirty.delete(index)) this.persistPage(index);
    });
  }

  private persistPage(index: number): void {
    const page = this.pages.get(index);
    if (page === undefined) this.durable.delete(index);
    else this.durable.set(index, page);
  }

  /** Hole/data runs at page granularity, clipped to [offset, offset + length). */
  private runsOf(offset: number, length: number): BlockStatusRun[] {
    const end = offset + length;
    const first = Math.floor(offset / memoryPageBytes);
    const last = Math.floor((end - 1) / memoryPageBytes);
    const runs: BlockStatusRun[] = [];
    const add = (fromPage: number, toPage: number, hole: boolean, zero: boolean): void => {
      const start = Math.max(offset, fromPage * memoryPageBytes);
      const stop = Math.min(end, (toPage + 1) * memoryPageBytes);
      const previous = runs[runs.length - 1];
      if (previous !== undefined && previous.hole === hole && previous.zero === zero) {
        runs[runs.length - 1] = { ...previous, length: stop - previous.offset };
      } else {
        runs.push({ offset: start, length: stop - start, hole, zero });
      }
    };
    const addPage = (index: number): void => {
      const page = this.pages.get(index);
      if (page === undefined) add(index, index, true, true);
      else add(index, index, false, page === zeroPage);
    };
    if (last - first + 1 <= 2 * this.pages.size + 2) {
      for (let index = first; index <= last; index++) addPage(index);
    } else {
      // A long range over a sparse device: walk the allocated pages in order and fill the gaps.
      const allocated = [...this.pages.keys()].filter((i) => i >= first && i <= last).sort((a, b) => a - b);
      let cursor = first;
      for (const index of allocated) {
        if (index > cursor) add(cursor, index - 1, true, true);
        addPage(index);
        cursor = index + 1;
      }
      if (cursor <= last) add(cursor, last, true, true);
    }
    return runs;
  }
}

/** A read-only face of a device, for connections opened read-only. Writes fail with EROFS. */
class ReadOnlyDevice implements BlockDevice {
  readonly sizeBytes: number;
  constructor(private readonly inner: BlockDevice) {
    this.sizeBytes = inner.sizeBytes;
  }
  capabilities(): BlockDeviceCapabilities {
    return { ...this.inner.capabilities(), readOnly: true };
  }
  read(offset: number, length: number): Promise<Uint8Array> {
    return this.inner.read(offset, length);
  }
  async write(): Promise<void> {
    throw new CairnError('EROFS', 'Cannot write: the export is opened read-only');
  }
  flush(): Promise<void> {
    return this.inner.flush();
  }
  async trim(): Promise<void> {
    throw new CairnError('EROFS', 'Cannot trim: the export is opened read-only');
  }
  async writeZeroes(): Promise<void> {
    throw new CairnError('EROFS', 'Cannot write zeroes: the export is opened read-only');
  }
  blockStatus(offset: number, length: number): Promise<BlockStatusRun[]> {
    return this.inner.blockStatus(offset, length);
  }
}

export interface MemoryExportOptions extends MemoryDeviceOptions {
  readonly description?: string;
  /** Every connection gets a read-only view, whatever the server asks. */
  readonly readOnly?: boolean;
}

interface MemoryExport {
  readonly device: MemoryBlockDevice;
  readonly description: string;
  readonly readOnly: boolean;
  openHandles: number;
}

/**
 * Exports backed by MemoryBlockDevices, added and removed at any time (the NBD server looks them
 * up per connection). open() hands every connection the same device, so they share writes.
 */
export class MemoryExportProvider implements ExportProvider {
  private readonly exports = new Map<string, MemoryExport>();

  /** Creates a device and exports it under `name`. Throws InvalidArgument-style if taken. */
  create(name: string, sizeBytes: number, options: MemoryExportOptions = {}): MemoryBlockDevice {
    const device = new MemoryBlockDevice(sizeBytes, options);
    this.add(name, device, options);
    return device;
  }

  /** Exports an existing device (e.g. one a simulation built) under `name`. */
  add(name: string, device: MemoryBlockDevice, options: { description?: string; readOnly?: boolean } = {}): void {
    if (this.exports.has(name)) throw new CairnError('EEXIST', `Cannot add export "${name}": it exists`);
    this.exports.set(name, {
      device,
      description: options.description ?? '',
      readOnly: options.readOnly === true,
      openHandles: 0,
    });
  }

  /** Stops exporting `name`; open connections keep their device. */
  remove(name: string): void {
    this.exports.delete(name);
  }

  device(name: string): MemoryBlockDevice {
    const found = this.exports.get(name);
    if (found === undefined) throw new CairnError('ENOTFOUND', `No memory export "${name}"`);
    return found.device;
  }

  /** Every open() that succeeded, closed or not: NBD_OPT_INFO and NBD_OPT_LIST must add none. */
  opens = 0;

  /** Handles opened and not yet closed, for one export or all. */
  openHandles(name?: string): number {
    if (name !== undefined) return this.exports.get(name)?.openHandles ?? 0;
    let total = 0;
    for (const e of this.exports.values()) total += e.openHandles;
    return total;
  }

  async list(): Promise<ExportInfo[]> {
    return [...this.exports.keys()].sort().map((name) => this.infoOf(name));
  }

  async info(name: string): Promise<ExportInfo | null> {
    return this.exports.has(name) ? this.infoOf(name) : null;
  }

  async open(
    name: string,
    options: { readonly readOnly: boolean },
  ): Promise<{ device: BlockDevice; close(): Promise<void> }> {
    const found = this.exports.get(name);
    if (found === undefined) throw new CairnError('ENOTFOUND', `Cannot open export "${name}": no such export`);
    found.openHandles += 1;
    this.opens += 1;
    let closed = false;
    const device = options.readOnly || found.readOnly ? new ReadOnlyDevice(found.device) : found.device;
    return {
      device,
      close: async () => {
        if (closed) return;
        closed = true;
        found.openHandles -= 1;
      },
    };
  }

  private infoOf(name: string): ExportInfo {
    const found = this.exports.get(name);
    assert(found !== undefined);
    const capabilities = found.device.capabilities();
    return {
      name,
      description: found.description,
      sizeBytes: found.device.sizeBytes,
      capabilities: found.readOnly ? { ...capabilities, readOnly: true } : capabilities,
    };
  }
}
