/**
 * A volume's extent map as a copy-on-write radix tree of immutable pages (issue 15's first step:
 * the format and the tree; the engine, etcd roots, gc and the simulator do not use it yet).
 *
 * Shape: extent index e is found by its bits, leafBits at the bottom and interiorBits per level
 * above: a leaf page holds the records of 2^leafBits consecutive extents, an interior page the
 * references of 2^interiorBits children. The depth follows from the volume's extent count alone,
 * so a tree never rebalances. Why a radix tree and not a B-tree: the keys are dense integers
 * known in advance (0 .. extents - 1), so a radix tree finds a slot by shifting bits (no key
 * comparisons, no keys stored at all), a sparse volume simply has no page for untouched ranges,
 * and two trees of one volume (a volume and its snapshot, later) line up page for page, which is
 * what a diff walks. A B-tree's balancing buys nothing for such keys.
 *
 * What it keeps true:
 * - Pages are immutable and addressed by (volume, level, page index, commit generation), so a
 *   commit never overwrites a page another root can reach.
 * - Every page is checked on load against the checksum its parent holds (the root's lives in the
 *   root reference, for etcd): a lost, torn, stale or wrong page is an error, never a map.
 * - A commit writes exactly the pages on the paths to the changed extents (a leaf and its
 *   ancestors), each once however many of its extents changed; every other page is shared with
 *   the previous root.
 *
 * Page format (little-endian): header 24 bytes: magic "CRNM", u16 version 1, u8 kind (1 leaf,
 * 2 interior), u8 level (0 for leaves), u64 page index, u32 slot count, u32 reserved. Interior:
 * a 2^interiorBits-bit presence bitmap, then for each present slot the child's u64 generation
 * and its 16-byte checksum. Leaf: a u16 count of target names and each name (u16 length, UTF-8),
 * the presence bitmap, then for each present slot a record: u64 generation, u32 shard bytes,
 * u32 seed (0: none), u8 flags (1: journalLsn follows, 2: keys follow, 4: zero blocks follow),
 * u8 shard count, then u16 target-name indexes, the optional u64 journalLsn, when a key is not the
 * one shardKey() derives every key (u16 length, UTF-8), and the optional zero-block bitmap (u16
 * length, bytes; ExtentRecord.zeroBlocks).
 */
import { createHash } from 'node:crypto';
import {
  assert,
  BinaryReader,
  BinaryWriter,
  ChecksumMismatchError,
  shardKey,
  type ExtentRecord,
  type ExtentShardRef,
} from '../core/index.js';

/** Extents per leaf page, as bits: 256 records of about 40 bytes, a 10 KiB page for 4+2. */
export const mapLeafBits = 8;
/** Children per interior page, as bits: 256 references of 24 bytes, a 6 KiB page. */
export const mapInteriorBits = 8;
/** Bytes of a page checksum (the first half of its SHA-256). */
export const mapChecksumBytes = 16;

const magic = 0x4d4e5243; // "CRNM" little-endian
const version = 1;
const kindLeaf = 1;
const kindInterior = 2;
const flagJournalLsn = 1;
const flagKeys = 2;
const flagZeroBlocks = 4;

/** Where a page is and what it must hash to: the reference a parent (or etcd, for the root) holds. */
export interface MapPageRef {
  /** The commit generation that wrote the page (part of its object key). */
  readonly generation: number;
  /** Hex of the page's checksum. */
  readonly checksum: string;
}

/** A volume's map as etcd would hold it: the tree's height and its root page. */
export interface MapRoot {
  /** Levels of the tree: 1 means the root is a leaf. */
  readonly levels: number;
  /** Undefined for a map with no record at all. */
  readonly page: MapPageRef | undefined;
  /**
   * The highest journal LSN any record under this root holds (0 or absent: none): what a writer
   * attaching needs without reading every record. Kept by commit().
   */
  readonly journalLsn?: number;
  /** Extents under this root whose record holds data (hole records left out). Kept by commit(). */
  readonly written?: number;
}

/**
 * Where pages are kept. get() returns bytes put() stored under `key` that `accept` takes (the
 * tree passes its checksum check, so a store with several copies can skip a wrong one), or
 * throws, naming the key; put() resolves once the page is durable. Keys are never reused, so
 * put() may refuse to overwrite.
 */
export interface MapPageStore {
  get(key: string, accept: (bytes: Uint8Array) => boolean): Promise<Uint8Array>;
  put(key: string, bytes: Uint8Array): Promise<void>;
}

/** True when `bytes` hash to `checksum` (a MapPageRef's). */
export function mapPageMatches(bytes: Uint8Array, checksum: string): boolean {
  return checksumOf(bytes) === checksum;
}

/** Levels a tree over `extents` extents needs (at least 1). */
export function mapLevelsFor(extents: number): number {
  assert(Number.isSafeInteger(extents) && extents >= 0, `extent count ${extents}`);
  let levels = 1;
  let covered = 2 ** mapLeafBits;
  while (covered < extents) {
    covered *= 2 ** mapInteriorBits;
    levels += 1;
  }
  return levels;
}

/** The object key of a page. */
export function mapPageKey(volumeId: string, level: number, index: number, generation: number): string {
  return `${volumeId}/map/${level}/${index}/${generation}`;
}

function checksumOf(bytes: Uint8Array): string {
  return createHash('sha256')
    .update(bytes)
    .digest('hex')
    .slice(0, mapChecksumBytes * 2);
}

/**
 * Decoded pages by the reference objects that lead to them, kept on the references themselves
 * under a symbol of this cache's own (a WeakMap lookup per level was a quarter of a cached
 * lookup's time). Another tree's cache never sees them: each has its own symbol.
 */
class RefPages {
  private readonly slot = Symbol('map page');
  get(ref: MapPageRef): MapPage | undefined {
    return (ref as unknown as Record<symbol, MapPage | undefined>)[this.slot];
  }
  set(ref: MapPageRef, page: MapPage): void {
    (ref as unknown as Record<symbol, MapPage | undefined>)[this.slot] = page;
  }
  delete(ref: MapPageRef): void {
    (ref as unknown as Record<symbol, MapPage | undefined>)[this.slot] = undefined;
  }
}

const leafSlots = 2 ** mapLeafBits;
const interiorSlots = 2 ** mapInteriorBits;
const slotsAt = (level: number): number => (level === 0 ? leafSlots : interiorSlots);

/** What peek() returns when a page on the path is not cached. */
export const notCached: unique symbol = Symbol('not cached');

// ------------------------------------------------------------------------------------------------
// Encoding.

/** Reads a page's fields; an overrun is a damaged page. */
function pageReader(bytes: Uint8Array, what: string): BinaryReader {
  return new BinaryReader(bytes, (reason) => new ChecksumMismatchError(`${what}: ${reason}`));
}

/**
 * A leaf page, kept as its bytes and where each slot's record starts: a cached leaf costs about
 * its encoded size (10 KiB for 256 records of 4+2), not the 150 KiB of 256 decoded records with
 * their shard keys. record() builds the record of one slot, a new object each call.
 */
export class MapLeaf {
  readonly kind = 'leaf';
  private view: DataView | undefined;

  /** @internal use decodeMapPage() */
  constructor(
    readonly index: number,
    private readonly volumeId: string,
    private readonly bytes: Uint8Array,
    private readonly names: readonly string[],
    /** Byte offset of each slot's record, -1 for an empty slot. */
    private readonly offsets: Int32Array,
  ) {}

  /** The record of `slot` (0 .. 2^mapLeafBits - 1), undefined when the slot is empty. */
  record(slot: number): ExtentRecord | undefined {
    let at = this.offsets[slot]!;
    if (at < 0) return undefined;
    // Fields read in place (the page was checked whole when it was loaded).
    const view = (this.view ??= new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength));
    // Two 32-bit halves: a BigInt read costs more than the rest of the record.
    const generation = view.getUint32(at, true) + view.getUint32(at + 4, true) * 2 ** 32;
    const shardBytes = view.getUint32(at + 8, true);
    const seed = view.getUint32(at + 12, true);
    const flags = view.getUint8(at + 16);
    const count = view.getUint8(at + 17);
    at += 18;
    const targetsAt = at;
    at += 2 * count;
    let journalLsn: number | undefined;
    if ((flags & flagJournalLsn) !== 0) {
      journalLsn = view.getUint32(at, true) + view.getUint32(at + 4, true) * 2 ** 32;
      at += 8;
    }
    const shards: ExtentShardRef[] = new Array<ExtentShardRef>(count);
    let zeroBlocks: string | undefined;
    if ((flags & flagKeys) === 0) {
      const prefix = `${this.volumeId}/${this.index * this.offsets.length + slot}/${generation}/`;
      for (let i = 0; i < count; i++)
        shards[i] = { target: this.names[view.getUint16(targetsAt + 2 * i, true)]!, key: prefix + i };
    }
    if ((flags & (flagKeys | flagZeroBlocks)) !== 0) {
      const r = pageReader(this.bytes, 'a checked map page');
      r.at = at;
      if ((flags & flagKeys) !== 0)
        for (let i = 0; i < count; i++)
          shards[i] = { target: this.names[view.getUint16(targetsAt + 2 * i, true)]!, key: r.str('key', 0xffff) };
      if ((flags & flagZeroBlocks) !== 0)
        zeroBlocks = Buffer.from(r.raw(r.u16('zero-block bytes'), 'zero blocks')).toString('base64');
    }
    const rec: { -readonly [K in keyof ExtentRecord]: ExtentRecord[K] } = { generation, shardBytes, shards };
    if (journalLsn !== undefined) rec.journalLsn = journalLsn;
    if (seed !== 0) rec.seed = seed;
    if (zeroBlocks !== undefined) rec.zeroBlocks = zeroBlocks;
    return rec;
  }

  /** Every slot's record, in slot order. */
  records(): (ExtentRecord | undefined)[] {
    return Array.from(this.offsets, (_, slot) => this.record(slot));
  }

  /** True when no slot holds a record. */
  get empty(): boolean {
    return this.offsets.every((o) => o < 0);
  }
}

/** An interior page decoded: its children's references (undefined: no page below). */
export interface MapInterior {
  readonly kind: 'interior';
  readonly level: number;
  readonly index: number;
  readonly children: readonly (MapPageRef | undefined)[];
}

export type MapPage = MapLeaf | MapInterior;

function writeHeader(w: BinaryWriter, kind: number, level: number, index: number, slots: number): void {
  w.u32(magic);
  w.u16(version);
  w.u8(kind);
  w.u8(level);
  w.u64(index);
  w.u32(slots);
  w.u32(0);
}

function writeBitmap(w: BinaryWriter, present: readonly unknown[]): void {
  const bitmap = new Uint8Array(present.length / 8);
  present.forEach((p, i) => {
    if (p !== undefined) bitmap[i >> 3]! |= 1 << (i & 7);
  });
  w.raw(bitmap);
}

/**
 * Encodes leaf `index` of `volumeId`'s map from its slots' records (the volume id lets keys that
 * shardKey() derives be left out).
 */
export function encodeMapLeaf(
  volumeId: string,
  index: number,
  records: readonly (ExtentRecord | undefined)[],
): Uint8Array {
  const slots = slotsAt(0);
  assert(records.length === slots, `a leaf holds ${slots} slots`);
  const names = new Map<string, number>();
  for (const rec of records)
    for (const s of rec?.shards ?? []) if (!names.has(s.target)) names.set(s.target, names.size);
  const w = new BinaryWriter();
  writeHeader(w, kindLeaf, 0, index, slots);
  w.u16(names.size);
  for (const name of names.keys()) w.str(name, 0xffff);
  writeBitmap(w, records);
  records.forEach((rec, slot) => {
    if (rec === undefined) return;
    const extent = index * slots + slot;
    const derived = rec.shards.every((s, i) => s.key === shardKey(volumeId, extent, rec.generation, i));
    w.u64(rec.generation);
    w.u32(rec.shardBytes);
    w.u32(rec.seed ?? 0);
    w.u8(
      (rec.journalLsn === undefined ? 0 : flagJournalLsn) |
        (derived ? 0 : flagKeys) |
        (rec.zeroBlocks === undefined ? 0 : flagZeroBlocks),
    );
    assert(rec.shards.length < 256, 'a record of 256 shards or more');
    w.u8(rec.shards.length);
    for (const s of rec.shards) w.u16(names.get(s.target)!);
    if (rec.journalLsn !== undefined) w.u64(rec.journalLsn);
    if (!derived) for (const s of rec.shards) w.str(s.key, 0xffff);
    if (rec.zeroBlocks !== undefined) {
      const bitmap = Buffer.from(rec.zeroBlocks, 'base64');
      assert(bitmap.length <= 0xffff, 'a zero-block bitmap of 64 KiB or more');
      w.u16(bitmap.length);
      w.raw(bitmap);
    }
  });
  return w.done().slice(); // exactly the page: it is kept (cached, stored) as it is
}

/** Encodes an interior page. */
export function encodeMapInterior(page: MapInterior): Uint8Array {
  const slots = slotsAt(page.level);
  assert(page.level >= 1 && page.children.length === slots, `an interior page holds ${slots} slots`);
  const w = new BinaryWriter();
  writeHeader(w, kindInterior, page.level, page.index, slots);
  writeBitmap(w, page.children);
  for (const ref of page.children) {
    if (ref === undefined) continue;
    w.u64(ref.generation);
    w.raw(Buffer.from(ref.checksum, 'hex'));
  }
  return w.done().slice(); // exactly the page: it is kept (cached, stored) as it is
}

/**
 * Decodes a page and checks it is the one `expect` describes: its checksum, level and index.
 * Throws ChecksumMismatchError (a lost, torn, stale or wrong page) naming `what`.
 */
export function decodeMapPage(
  volumeId: string,
  bytes: Uint8Array,
  expect: { readonly checksum: string; readonly level: number; readonly index: number },
  what: string,
): MapPage {
  if (checksumOf(bytes) !== expect.checksum)
    throw new ChecksumMismatchError(`${what}: the page does not match its parent's checksum`);
  return parseMapPage(volumeId, bytes, expect, what);
}

/** decodeMapPage() after the checksum: the page's fields, checked. */
function parseMapPage(
  volumeId: string,
  bytes: Uint8Array,
  expect: { readonly level: number; readonly index: number },
  what: string,
): MapPage {
  const r = pageReader(bytes, what);
  if (r.u32('magic') !== magic || r.u16('version') !== version)
    throw new ChecksumMismatchError(`${what}: not a map page`);
  const kind = r.u8('kind');
  const level = r.u8('level');
  const index = r.u64('page index');
  const slots = r.u32('slot count');
  r.u32('reserved');
  if (level !== expect.level || index !== expect.index || slots !== slotsAt(level))
    throw new ChecksumMismatchError(`${what}: the page is for level ${level}, index ${index}`);
  if (kind === kindInterior && level >= 1) {
    const bitmap = r.raw(slots / 8, 'bitmap');
    const children: (MapPageRef | undefined)[] = new Array(slots).fill(undefined);
    for (let i = 0; i < slots; i++) {
      if ((bitmap[i >> 3]! & (1 << (i & 7))) === 0) continue;
      children[i] = {
        generation: r.u64('child generation'),
        checksum: Buffer.from(r.raw(mapChecksumBytes, 'child checksum')).toString('hex'),
      };
    }
    return { kind: 'interior', level, index, children };
  }
  if (kind !== kindLeaf || level !== 0) throw new ChecksumMismatchError(`${what}: a page of unknown kind ${kind}`);
  const names: string[] = [];
  for (let n = r.u16('target count'); n > 0; n--) names.push(r.str('target name', 0xffff));
  const bitmap = r.raw(slots / 8, 'bitmap');
  // Where each record starts; every field is checked to lie inside the page, and every target
  // index to name a target, so record() cannot fail later.
  const offsets = new Int32Array(slots).fill(-1);
  for (let slot = 0; slot < slots; slot++) {
    if ((bitmap[slot >> 3]! & (1 << (slot & 7))) === 0) continue;
    offsets[slot] = r.at;
    r.raw(16, 'record'); // generation, shard bytes, seed
    const flags = r.u8('record flags');
    const count = r.u8('shard count');
    for (let i = 0; i < count; i++)
      if (r.u16('target') >= names.length) throw new ChecksumMismatchError(`${what}: a record names no target`);
    if ((flags & flagJournalLsn) !== 0) r.raw(8, 'journal LSN');
    if ((flags & flagKeys) !== 0) for (let i = 0; i < count; i++) r.str('key', 0xffff);
    if ((flags & flagZeroBlocks) !== 0) r.raw(r.u16('zero-block bytes'), 'zero blocks');
  }
  return new MapLeaf(index, volumeId, bytes, names, offsets);
}

/** (volume, level, index, generation) of a page key, or undefined for a key that is not one. */
export function parseMapPageKey(
  key: string,
): { volumeId: string; level: number; index: number; generation: number } | undefined {
  const m = /^(.+)\/map\/(\d+)\/(\d+)\/(\d+)$/.exec(key);
  if (m === null) return undefined;
  const [level, index, generation] = [Number(m[2]), Number(m[3]), Number(m[4])];
  if (![level, index, generation].every(Number.isSafeInteger)) return undefined;
  return { volumeId: m[1]!, level, index, generation };
}

// ------------------------------------------------------------------------------------------------
// The tree.

export interface MapTreeOptions {
  readonly volumeId: string;
  /** Extents of the volume: fixes the tree's height. */
  readonly extents: number;
  readonly store: MapPageStore;
  /** Decoded pages kept for lookups (default 4096: about 40 MiB of 4+2 leaves). */
  readonly cachePages?: number;
}

/** What a commit wrote. */
export interface MapCommit {
  readonly root: MapRoot;
  /** Keys of the pages written (all durable when commit() resolves). */
  readonly pagesWritten: readonly string[];
  readonly bytesWritten: number;
}

/**
 * Reads and commits one volume's map. Pages are loaded on demand, checked against their parents,
 * and kept (decoded) in a bounded cache; commit() writes the new pages and returns the new root,
 * which the caller publishes (in etcd, in the volume's fenced transaction) only after it resolves.
 */
export class MapTree {
  readonly levels: number;
  /**
   * Decoded pages by key, in two tiers so that leaf traffic never pushes out the few interior
   * pages every lookup passes through; each tier drops its oldest first. `refs` are the parent
   * references that lead to the page (see `byRef`).
   */
  private readonly leaves = new Map<string, { page: MapPage; refs: MapPageRef[] }>();
  private readonly interiors = new Map<string, { page: MapPage; refs: MapPageRef[] }>();
  /** The same pages by the reference objects that lead to them: a lookup builds no key. */
  private readonly byRef = new RefPages();
  private readonly leavesMax: number;
  private readonly interiorsMax: number;

  /** Extents one page of each level covers. */
  private readonly extentsPerPage: readonly number[];

  constructor(private readonly options: MapTreeOptions) {
    this.levels = mapLevelsFor(options.extents);
    this.extentsPerPage = Array.from({ length: this.levels }, (_, level) => leafSlots * interiorSlots ** level);
    const pages = options.cachePages ?? 4096;
    this.leavesMax = pages;
    this.interiorsMax = Math.max(256, Math.ceil(pages / 8));
  }

  /** An empty map of this volume. */
  emptyRoot(): MapRoot {
    return { levels: this.levels, page: undefined };
  }

  /** The record of extent `e` under `root`, or undefined when it was never written. */
  async lookup(root: MapRoot, e: number): Promise<ExtentRecord | undefined> {
    const cached = this.peek(root, e);
    if (cached !== notCached) return cached;
    const leaf = await this.leafOf(root, e);
    return leaf?.record(e % slotsAt(0));
  }

  /**
   * lookup() without waiting: the record (or undefined) when every page on the path is cached,
   * else `notCached`. One array index per level; what makes cached lookups fast.
   */
  peek(root: MapRoot, e: number): ExtentRecord | undefined | typeof notCached {
    this.checkExtent(e);
    if (root.levels !== this.levels) assert(false, `a root of ${root.levels} levels for a tree of ${this.levels}`);
    let ref = root.page;
    for (let level = this.levels - 1; ; level--) {
      if (ref === undefined) return undefined;
      const page = this.byRef.get(ref);
      if (page === undefined) return notCached;
      if (page.kind === 'leaf') return page.record(e % leafSlots);
      ref = page.children[Math.floor(e / this.extentsPerPage[level - 1]!) % interiorSlots];
    }
  }

  /**
   * Writes the pages for `changes` (a record, or null to forget the extent) over `root` and
   * returns the new root. `generation` must be new for this volume (a writer's commit counter
   * under its epoch): it names the pages written.
   */
  async commit(
    root: MapRoot,
    changes: ReadonlyMap<number, ExtentRecord | null>,
    generation: number,
  ): Promise<MapCommit> {
    assert(root.levels === this.levels, `a root of ${root.levels} levels for a tree of ${this.levels}`);
    assert(Number.isSafeInteger(generation) && generation >= 0, `commit generation ${generation}`);
    const { store } = this.options;
    const writes: { key: string; bytes: Uint8Array }[] = [];
    const leafSlots = slotsAt(0);
    // Level 0: each touched leaf once.
    const byLeaf = new Map<number, [number, ExtentRecord | null][]>();
    for (const [e, rec] of changes) {
      this.checkExtent(e);
      const list = byLeaf.get(Math.floor(e / leafSlots));
      if (list === undefined) byLeaf.set(Math.floor(e / leafSlots), [[e, rec]]);
      else list.push([e, rec]);
    }
    let touched = new Map<number, MapPageRef | undefined>();
    let written = root.written ?? 0;
    let journalLsn = root.journalLsn ?? 0;
    const holdsData = (r: ExtentRecord | null | undefined): boolean =>
      r !== undefined && r !== null && r.shards.length > 0;
    for (const [index, list] of byLeaf) {
      const old = await this.pageAt(root, 0, index);
      const records =
        old === undefined ? new Array<ExtentRecord | undefined>(leafSlots).fill(undefined) : (old as MapLeaf).records();
      for (const [e, rec] of list) {
        written += (holdsData(rec) ? 1 : 0) - (holdsData(records[e % leafSlots]) ? 1 : 0);
        journalLsn = Math.max(journalLsn, rec?.journalLsn ?? 0);
        records[e % leafSlots] = rec ?? undefined;
      }
      touched.set(index, this.stage({ kind: 'leaf', index, records }, generation, writes));
    }
    // Each level above: each parent of a touched page once.
    for (let level = 1; level < this.levels; level++) {
      const slots = slotsAt(level);
      const parents = new Map<number, Map<number, MapPageRef | undefined>>();
      for (const [index, ref] of touched) {
        const p = Math.floor(index / slots);
        let m = parents.get(p);
        if (m === undefined) parents.set(p, (m = new Map()));
        m.set(index % slots, ref);
      }
      const next = new Map<number, MapPageRef | undefined>();
      for (const [index, slotsChanged] of parents) {
        const old = await this.pageAt(root, level, index);
        const children =
          old === undefined
            ? new Array<MapPageRef | undefined>(slots).fill(undefined)
            : [...(old as MapInterior).children];
        for (const [slot, ref] of slotsChanged) children[slot] = ref;
        next.set(index, this.stage({ kind: 'interior', level, index, children }, generation, writes));
      }
      touched = next;
    }
    assert(touched.size <= 1, 'a tree with more than one root');
    // Every page is durable before the caller can publish the root that reaches them.
    await Promise.all(writes.map((w) => store.put(w.key, w.bytes)));
    const page = touched.size === 0 ? root.page : touched.get(0);
    const newRoot: MapRoot =
      page === undefined ? { levels: this.levels, page } : { levels: this.levels, page, journalLsn, written };
    return {
      root: newRoot,
      pagesWritten: writes.map((w) => w.key),
      bytesWritten: writes.reduce((s, w) => s + w.bytes.length, 0),
    };
  }

  /**
   * `root` (of this volume at another height: the volume was resized) as a root of this tree's
   * height. Growing wraps it in new interior pages, child 0 each (written under `generation`,
   * durable when this resolves); shrinking descends child 0, which needs every other child empty
   * (the caller dropped the records of the extents past the new end first). The records, their
   * pages and the counts are unchanged.
   */
  async rebase(root: MapRoot, generation: number): Promise<MapCommit> {
    const writes: { key: string; bytes: Uint8Array }[] = [];
    let ref = root.page;
    if (ref !== undefined && root.levels < this.levels) {
      for (let level = root.levels; level < this.levels; level++) {
        const children = new Array<MapPageRef | undefined>(slotsAt(level)).fill(undefined);
        children[0] = ref;
        ref = this.stage({ kind: 'interior', level, index: 0, children }, generation, writes);
      }
    }
    if (ref !== undefined && root.levels > this.levels) {
      for (let level = root.levels - 1; level >= this.levels; level--) {
        const page = (await this.load(level, 0, ref)) as MapInterior;
        assert(
          page.children.every((c, i) => i === 0 || c === undefined),
          `a map shrunk to ${this.levels} levels still has pages past its end at level ${level}`,
        );
        ref = page.children[0];
        if (ref === undefined) break;
      }
    }
    await Promise.all(writes.map((w) => this.options.store.put(w.key, w.bytes)));
    const next: MapRoot =
      ref === undefined
        ? { levels: this.levels, page: undefined }
        : {
            levels: this.levels,
            page: ref,
            ...(root.journalLsn === undefined ? {} : { journalLsn: root.journalLsn }),
            ...(root.written === undefined ? {} : { written: root.written }),
          };
    return {
      root: next,
      pagesWritten: writes.map((w) => w.key),
      bytesWritten: writes.reduce((sum, w) => sum + w.bytes.length, 0),
    };
  }

  /**
   * The extents whose records differ between roots `a` and `b` of this volume, in extent order.
   * Subtrees both roots reach through the same reference are skipped unread, so two roots a few
   * commits apart cost the pages those commits wrote (what a repair's new root is checked by,
   * and what a diff of two snapshots will walk).
   */
  async *diff(a: MapRoot, b: MapRoot): AsyncGenerator<number> {
    assert(a.levels === this.levels && b.levels === this.levels, 'roots of another height');
    yield* this.diffAt(this.levels - 1, 0, a.page, b.page);
  }

  private async *diffAt(
    level: number,
    index: number,
    ra: MapPageRef | undefined,
    rb: MapPageRef | undefined,
  ): AsyncGenerator<number> {
    if (ra === undefined && rb === undefined) return;
    if (ra !== undefined && rb !== undefined && ra.generation === rb.generation && ra.checksum === rb.checksum) return;
    const pa = ra === undefined ? undefined : await this.load(level, index, ra);
    const pb = rb === undefined ? undefined : await this.load(level, index, rb);
    if (level === 0) {
      const la = pa as MapLeaf | undefined;
      const lb = pb as MapLeaf | undefined;
      for (let slot = 0; slot < leafSlots; slot++) {
        const x = la?.record(slot);
        const y = lb?.record(slot);
        if (x === undefined && y === undefined) continue;
        if (x === undefined || y === undefined || JSON.stringify(x) !== JSON.stringify(y))
          yield index * leafSlots + slot;
      }
      return;
    }
    const ca = (pa as MapInterior | undefined)?.children;
    const cb = (pb as MapInterior | undefined)?.children;
    for (let slot = 0; slot < interiorSlots; slot++)
      yield* this.diffAt(level - 1, index * interiorSlots + slot, ca?.[slot], cb?.[slot]);
  }

  /** Every page key and every record's shards a root reaches (for gc), visiting each page once. */
  async *walk(
    root: MapRoot,
  ): AsyncGenerator<{ pageKey: string; checksum: string } | { extent: number; record: ExtentRecord }> {
    if (root.page === undefined) return;
    // From the root's own height: pages are named by level, index and generation only, so a root
    // of another size of this volume (a snapshot from before a resize) walks the same way.
    const stack: { level: number; index: number; ref: MapPageRef }[] = [
      { level: root.levels - 1, index: 0, ref: root.page },
    ];
    while (stack.length > 0) {
      const { level, index, ref } = stack.pop()!;
      yield { pageKey: mapPageKey(this.options.volumeId, level, index, ref.generation), checksum: ref.checksum };
      const page = await this.load(level, index, ref);
      if (page.kind === 'leaf') {
        for (const [slot, record] of page.records().entries())
          if (record !== undefined) yield { extent: index * slotsAt(0) + slot, record };
      } else {
        for (let slot = page.children.length - 1; slot >= 0; slot--) {
          const child = page.children[slot];
          if (child !== undefined) stack.push({ level: level - 1, index: index * slotsAt(level) + slot, ref: child });
        }
      }
    }
  }

  /**
   * Which of `listed` (page keys found on the targets) gc may delete: pages of this volume that no
   * root in `roots` reaches and that are older than the newest of them. A page newer than every
   * root may belong to a commit still in flight (written, its root not yet swapped): it is kept,
   * and collected by a later pass once a newer root exists. So is a page of an epoch at or above
   * `inFlightEpoch` (the epoch of the writer holding the volume, read after listing): a repair may
   * have published a root newer than that writer's commit in flight. Keys that are not this
   * volume's pages are never returned.
   */
  async collectable(
    roots: readonly MapRoot[],
    listed: Iterable<string>,
    options: { readonly inFlightEpoch?: number } = {},
  ): Promise<string[]> {
    const reachable = new Set<string>();
    let newest = -1;
    for (const root of roots) {
      if (root.page === undefined) continue;
      newest = Math.max(newest, root.page.generation);
      for await (const item of this.walk(root)) if ('pageKey' in item) reachable.add(item.pageKey);
    }
    const out: string[] = [];
    for (const key of listed) {
      const parsed = parseMapPageKey(key);
      if (parsed === undefined || parsed.volumeId !== this.options.volumeId) continue;
      const inFlight =
        options.inFlightEpoch !== undefined && Math.floor(parsed.generation / 2 ** 32) >= options.inFlightEpoch;
      if (!reachable.has(key) && parsed.generation < newest && !inFlight) out.push(key);
    }
    return out;
  }

  /** Decoded pages in the cache. */
  get cachedPages(): number {
    return this.leaves.size + this.interiors.size;
  }

  // ---------------------------------------------------------------------------------------------

  private checkExtent(e: number): void {
    // On every lookup: the message is built only when the check fails.
    if (!(Number.isSafeInteger(e) && e >= 0 && e < this.options.extents))
      assert(false, `extent ${e} of ${this.options.extents}`);
  }

  /** Encodes `page`, queues its write, caches it, and returns its reference (undefined when empty). */
  private stage(
    page:
      | { readonly kind: 'leaf'; readonly index: number; readonly records: readonly (ExtentRecord | undefined)[] }
      | MapInterior,
    generation: number,
    writes: { key: string; bytes: Uint8Array }[],
  ): MapPageRef | undefined {
    const empty =
      page.kind === 'leaf' ? page.records.every((r) => r === undefined) : page.children.every((c) => c === undefined);
    if (empty) return undefined;
    const level = page.kind === 'leaf' ? 0 : page.level;
    const { volumeId } = this.options;
    const bytes = page.kind === 'leaf' ? encodeMapLeaf(volumeId, page.index, page.records) : encodeMapInterior(page);
    const key = mapPageKey(volumeId, level, page.index, generation);
    writes.push({ key, bytes });
    const ref = { generation, checksum: checksumOf(bytes) };
    // Cached as a reader would load it (a leaf as its bytes), so a commit's pages cost no more.
    this.remember(
      key,
      page.kind === 'leaf' ? parseMapPage(volumeId, bytes, { level, index: page.index }, key) : page,
      ref,
    );
    return ref;
  }

  /** The leaf holding extent e under root, or undefined where the tree has none. */
  private async leafOf(root: MapRoot, e: number): Promise<MapLeaf | undefined> {
    return (await this.pageAt(root, 0, Math.floor(e / slotsAt(0)))) as MapLeaf | undefined;
  }

  /** The page at (level, index) under root, loading the path to it; undefined where there is none. */
  private async pageAt(root: MapRoot, level: number, index: number): Promise<MapPage | undefined> {
    assert(root.levels === this.levels, `a root of ${root.levels} levels for a tree of ${this.levels}`);
    let ref = root.page;
    for (let l = this.levels - 1; ref !== undefined; l--) {
      const page = await this.load(l, Math.floor(index / this.span(level, l)), ref);
      if (l === level) return page;
      // The child on the path: the ancestor of (level, index) one level down.
      ref = (page as MapInterior).children[Math.floor(index / this.span(level, l - 1)) % slotsAt(l)];
    }
    return undefined;
  }

  /** How many level-`from` pages one level-`to` page covers (1 when to = from). */
  private span(from: number, to: number): number {
    let n = 1;
    for (let k = from + 1; k <= to; k++) n *= slotsAt(k);
    return n;
  }

  private async load(level: number, index: number, ref: MapPageRef): Promise<MapPage> {
    const known = this.byRef.get(ref);
    if (known !== undefined) return known;
    const key = mapPageKey(this.options.volumeId, level, index, ref.generation);
    const tier = level === 0 ? this.leaves : this.interiors;
    const cached = tier.get(key);
    if (cached !== undefined) {
      // Another reference to a page already decoded (a parent decoded again, say).
      cached.refs.push(ref);
      this.byRef.set(ref, cached.page);
      return cached.page;
    }
    const what = `Cannot read map page ${key} of volume ${this.options.volumeId}`;
    const bytes = await this.options.store.get(key, (b) => mapPageMatches(b, ref.checksum));
    const page = decodeMapPage(this.options.volumeId, bytes, { checksum: ref.checksum, level, index }, what);
    this.remember(key, page, ref);
    return page;
  }

  private remember(key: string, page: MapPage, ref: MapPageRef): void {
    const [tier, max] = page.kind === 'leaf' ? [this.leaves, this.leavesMax] : [this.interiors, this.interiorsMax];
    const entry = tier.get(key);
    if (entry === undefined) tier.set(key, { page, refs: [ref] });
    else entry.refs.push(ref);
    this.byRef.set(ref, entry?.page ?? page);
    while (tier.size > max) {
      const [oldest, dropped] = tier.entries().next().value!;
      tier.delete(oldest);
      for (const r of dropped.refs) this.byRef.delete(r);
    }
  }
}
