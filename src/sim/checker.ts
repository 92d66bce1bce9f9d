/**
 * The checker: what a correct volume may return, and when it may fail.
 *
 * VolumeModel keeps, per extent, the set of contents the volume may hold now (`current`) and the
 * set a crash may reveal (`published`). Usually each holds one plain Uint8Array; a set grows only
 * where a client operation failed (its bytes may or may not have landed) or where a background
 * flush may have published any state since the last FLUSH. Every read must equal one member of
 * `current` (which then shrinks to the members that agree); after a successful FLUSH `published`
 * becomes `current`; a crash makes `current` what was `published`, and the first read of each
 * extent afterwards must find one of those.
 *
 * judgeFailure() decides whether an operation's typed error is justified by the world: a read
 * may fail only when more than m shards of one generation of an extent it touches were
 * unavailable (down, flaky, corrupted, lost); a flush only for such reads, for more failed puts
 * than durableShardsMin allows, for a refused placement while targets are down, or for a commit
 * failure the world injected (timeouts, fencing).
 *
 * What it leaves out: timing (how long an operation took), and block status beyond "a hole reads
 * as zeros" (a data run over zeros is allowed).
 */
import { createHash } from 'node:crypto';
import { CairnError, PlacementError, UnavailableError, assert, errorMessage, parseShardKey } from '../core/index.js';
import { extentCount, extentLength, splitByExtent, type ExtentGeometry } from '../extent/index.js';
import { ExtentUnreadableError, PersistError } from '../volume/index.js';
import type { FailReason, StoreEvent } from './faulty_store.js';

/** Possible contents of one extent; beyond this many the simulation reports itself inconclusive. */
export const extentStatesMax = 64;

function digest(bytes: Uint8Array): string {
  return createHash('sha1').update(bytes).digest('base64');
}

/** A set of possible contents of one extent, by content. */
export class ExtentStates {
  private readonly byHash = new Map<string, Uint8Array>();

  static of(bytes: Uint8Array): ExtentStates {
    const s = new ExtentStates();
    s.add(bytes);
    return s;
  }

  get size(): number {
    return this.byHash.size;
  }

  values(): IterableIterator<Uint8Array> {
    return this.byHash.values();
  }

  add(bytes: Uint8Array): void {
    const h = digest(bytes);
    if (!this.byHash.has(h)) this.byHash.set(h, bytes);
  }

  has(bytes: Uint8Array): boolean {
    return this.byHash.has(digest(bytes));
  }

  addAll(other: ExtentStates): void {
    for (const [h, b] of other.byHash) if (!this.byHash.has(h)) this.byHash.set(h, b);
  }

  clone(): ExtentStates {
    const s = new ExtentStates();
    s.addAll(this);
    return s;
  }

  /** Keeps only the members for which `keep` is true; returns how many remain. */
  filter(keep: (bytes: Uint8Array) => boolean): number {
    for (const [h, b] of this.byHash) if (!keep(b)) this.byHash.delete(h);
    return this.byHash.size;
  }

  first(): Uint8Array {
    const [b] = this.byHash.values();
    assert(b !== undefined, 'empty extent state set');
    return b;
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);
}

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

function hex(bytes: Uint8Array, at: number, count = 8): string {
  return Buffer.from(bytes.subarray(at, at + count)).toString('hex');
}

export class VolumeModel {
  readonly extents: number;
  private readonly current: ExtentStates[] = [];
  private readonly published: ExtentStates[] = [];

  constructor(private readonly g: ExtentGeometry) {
    this.extents = extentCount(g);
    for (let e = 0; e < this.extents; e++) {
      this.current.push(ExtentStates.of(new Uint8Array(extentLength(g, e))));
      this.published.push(ExtentStates.of(new Uint8Array(extentLength(g, e))));
    }
  }

  /** The extents a volume range touches. */
  extentsOf(offset: number, length: number): number[] {
    return splitByExtent(this.g, offset, length).map((p) => p.extent);
  }

  /** The largest number of possible contents of any extent, now or after a crash. */
  get ambiguity(): number {
    let most = 0;
    for (let e = 0; e < this.extents; e++) most = Math.max(most, this.current[e]!.size, this.published[e]!.size);
    return most;
  }

  /** Extents whose current content is not known exactly. */
  ambiguousExtents(): number[] {
    const out: number[] = [];
    for (let e = 0; e < this.extents; e++) if (this.current[e]!.size > 1) out.push(e);
    return out;
  }

  /**
   * Applies a write of `data` (or zeros when null) at `offset`. `certain`: the operation
   * succeeded; otherwise it failed and may or may not have changed each extent it touches.
   * Either way every resulting state may since have been published by a background flush.
   */
  write(offset: number, length: number, data: Uint8Array | null, certain: boolean): void {
    for (const p of splitByExtent(this.g, offset, length)) {
      const before = this.current[p.extent]!;
      const after = new ExtentStates();
      for (const old of before.values()) {
        const next = old.slice();
        if (data === null) next.fill(0, p.offset, p.offset + p.length);
        else next.set(data.subarray(p.bufferOffset, p.bufferOffset + p.length), p.offset);
        after.add(next);
      }
      if (!certain) after.addAll(before);
      this.current[p.extent] = after;
      this.published[p.extent]!.addAll(after);
    }
  }

  /**
   * Checks bytes a read returned for [offset, offset + got.length). Returns a description of the
   * mismatch, or null; on success the extents' possible contents shrink to those that agree.
   */
  checkRead(offset: number, got: Uint8Array): string | null {
    for (const p of splitByExtent(this.g, offset, got.length)) {
      const piece = got.subarray(p.bufferOffset, p.bufferOffset + p.length);
      const states = this.current[p.extent]!;
      const first = states.first();
      const count = states.size;
      const left = states.filter((s) => equalBytes(s.subarray(p.offset, p.offset + p.length), piece));
      if (left === 0) {
        const expected = first.subarray(p.offset, p.offset + p.length);
        const at = firstDifference(expected, piece);
        const volumeAt = p.extent * this.g.extentBytes + p.offset + at;
        this.current[p.extent] = ExtentStates.of(first);
        return (
          `read [${offset}, +${got.length}) returned wrong bytes in extent ${p.extent} at volume offset ${volumeAt}: ` +
          `expected ${hex(expected, at)}, got ${hex(piece, at)} (none of ${count} possible contents matched)`
        );
      }
    }
    return null;
  }

  /** Checks that the range may read as zeros (a hole in block status); shrinks as checkRead. */
  checkZeros(offset: number, length: number): string | null {
    for (const p of splitByExtent(this.g, offset, length)) {
      const states = this.current[p.extent]!;
      const left = states.filter((s) => s.subarray(p.offset, p.offset + p.length).every((b) => b === 0));
      if (left === 0) return `block status reports a hole over [${offset}, +${length}) but extent ${p.extent} has data`;
    }
    return null;
  }

  /** A FLUSH (all extents) or FUA (its extents) succeeded: what is current is what is published. */
  markPublished(extents?: readonly number[]): void {
    for (const e of extents ?? this.allExtents()) this.published[e] = this.current[e]!.clone();
  }

  /** The frontend died: only what was published survives. */
  crash(): void {
    for (let e = 0; e < this.extents; e++) this.current[e] = this.published[e]!.clone();
  }

  /**
   * After a crash, the whole extent as first read: it must be one of the published contents, and
   * from now on it is the only one (nothing of the dead process can publish any more).
   */
  checkRecovered(e: number, got: Uint8Array): string | null {
    if (!this.published[e]!.has(got)) {
      const first = this.published[e]!.first();
      const at = firstDifference(first, got);
      return (
        `after the crash extent ${e} reads other bytes than any of its ${this.published[e]!.size} published contents: ` +
        `at volume offset ${e * this.g.extentBytes + at} expected ${hex(first, at)}, got ${hex(got, at)}`
      );
    }
    this.published[e] = ExtentStates.of(got);
    this.current[e] = ExtentStates.of(got);
    return null;
  }

  /** A reader opened on the published map (no cache) read extent e: it must be publishable. */
  checkPublished(e: number, got: Uint8Array): string | null {
    if (this.published[e]!.has(got)) return null;
    const first = this.published[e]!.first();
    const at = firstDifference(first, got);
    return (
      `the published map holds other bytes for extent ${e} than any of its ${this.published[e]!.size} publishable contents: ` +
      `at volume offset ${e * this.g.extentBytes + at} expected ${hex(first, at)}, got ${hex(got, at)}`
    );
  }

  allExtents(): number[] {
    return Array.from({ length: this.extents }, (_, e) => e);
  }

  /**
   * A snapshot taken now, after a successful flush and fold: its extents may hold what the
   * volume's may hold now, and nothing written later changes that (its reads are checked with
   * checkRecovered, which also narrows it).
   */
  snapshot(): VolumeModel {
    const copy = new VolumeModel(this.g);
    for (let e = 0; e < this.extents; e++) {
      copy.current[e] = this.current[e]!.clone();
      copy.published[e] = this.current[e]!.clone();
    }
    return copy;
  }

  /** A rollback: the volume's contents become the snapshot's (current and published alike). */
  restore(from: VolumeModel): void {
    for (let e = 0; e < this.extents; e++) {
      this.current[e] = from.published[e]!.clone();
      this.published[e] = from.published[e]!.clone();
    }
  }
}

/** What judgeFailure needs to know about the world. */
export interface JudgeContext {
  readonly k: number;
  readonly m: number;
  readonly durableShardsMin: number;
  /** Store failures logged since the last heal (older ones cannot excuse anything). */
  readonly events: readonly StoreEvent[];
  readonly injected: WeakSet<object>;
  /** Extents the operation touched (all of them for a FLUSH). */
  readonly extents: readonly number[];
  /** True when some target is down or not registered: placement may rightly refuse. */
  readonly topologyDegraded: boolean;
}

/** Store failures that make a shard unavailable for a reason the world caused. */
const unavailableReasons: ReadonlySet<FailReason> = new Set<FailReason>(['down', 'flaky', 'checksum', 'lost']);
const putFailureReasons: ReadonlySet<FailReason> = new Set<FailReason>(['down', 'flaky', 'lost-reply']);

/**
 * The shards a failure message names (the engine lists every shard it could not read or store,
 * quoting the store's error, which names the key), grouped by (extent, generation), keeping only
 * those whose failure the world logged for one of `reasons`. Judging by the shards the failing
 * attempt itself names, rather than by every failure in a time window, ties the verdict to that
 * attempt: an old outage of other shards cannot excuse it, and a load that started operations
 * ago is still judged by what it met.
 */
function backedShards(
  message: string,
  events: readonly StoreEvent[],
  op: StoreEvent['op'],
  reasons: ReadonlySet<FailReason>,
  extents: readonly number[],
): Map<string, Set<number>> {
  const logged = new Set<string>();
  for (const ev of events) if (ev.op === op && reasons.has(ev.reason)) logged.add(ev.key);
  const want = new Set(extents);
  const out = new Map<string, Set<number>>();
  for (const match of message.matchAll(/[A-Za-z0-9._-]+\/\d+\/\d+\/\d+/g)) {
    const key = match[0];
    const k = parseShardKey(key);
    if (k === undefined || !want.has(k.extent) || !logged.has(key)) continue;
    const id = `extent ${k.extent} generation ${k.generation}`;
    let set = out.get(id);
    if (set === undefined) out.set(id, (set = new Set()));
    set.add(k.shard);
  }
  return out;
}

/** The largest group, for messages: "3 shards (0, 2, 5) of extent 4 generation 9". */
function most(groups: Map<string, Set<number>>): string {
  let best = 'no shard of it';
  let n = -1;
  for (const [id, s] of groups) {
    if (s.size > n) {
      n = s.size;
      best = `${s.size} shards (${[...s].sort((a, b) => a - b).join(', ')}) of ${id}`;
    }
  }
  return best;
}

/**
 * Null when `err` is a failure the world justifies; otherwise why it is not (a bug: an untyped
 * error, or a typed one the world did not cause).
 */
export function judgeFailure(err: unknown, ctx: JudgeContext): string | null {
  if (typeof err === 'object' && err !== null && ctx.injected.has(err)) return null;
  if (!(err instanceof Error)) return `threw a non-error: ${String(err)}`;
  if (err instanceof PersistError) {
    if (err.failed.size === 0) return `PersistError with no failed extent: ${err.message}`;
    for (const [e, leaf] of err.failed) {
      const why = judgeFailure(leaf, { ...ctx, extents: [e] });
      if (why !== null) return `extent ${e} failed to persist: ${why}`;
    }
    return null;
  }
  if (err instanceof ExtentUnreadableError) {
    const groups = backedShards(err.message, ctx.events, 'get', unavailableReasons, ctx.extents);
    for (const s of groups.values()) if (s.size > ctx.m) return null;
    return `${err.name} (${err.message}) though at most ${ctx.m} shards may be lost and the world made unavailable only ${most(groups)}`;
  }
  if (err instanceof UnavailableError && /shards stored, \d+ required/.test(err.message)) {
    const groups = backedShards(err.message, ctx.events, 'put', putFailureReasons, ctx.extents);
    const allowed = ctx.k + ctx.m - ctx.durableShardsMin;
    for (const s of groups.values()) if (s.size > allowed) return null;
    return `${err.message}, though the world failed only ${most(groups)} (up to ${allowed} may fail)`;
  }
  if (err instanceof PlacementError) {
    return ctx.topologyDegraded ? null : `placement refused with every target up: ${err.message}`;
  }
  const kind = err instanceof CairnError ? `${err.name} ${err.code}` : `untyped ${err.name}`;
  return `${kind}: ${errorMessage(err)}`;
}
