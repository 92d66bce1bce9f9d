/**
 * The volume's write-ahead journal in the simulated world: journal nodes (the journal service of
 * each storage node, with fencing, group commit and crashes), each frontend process's connection
 * to them (latency, lost requests and replies), the journal's layout as etcd keeps it (fenced by
 * the volume lock), and SimJournalWriter, the frontend side (the twin of frontend/journal.ts's
 * VolumeJournal) that the write-back cache uses as its CacheJournal. The real record format,
 * ReplicatedJournal (the r-way append, fence and its error rules) and readSegment run on top.
 *
 * What it keeps true:
 * - A node acknowledges an append only after its group commit (fsync) made it durable; a crash
 *   loses what was received and not yet fsynced (maybe leaving a torn prefix of a record, which
 *   the record decoder must skip at replay) and nothing fsynced. Its epoch is durable the same way.
 * - Node-side fencing as the real journal store does it: appends, creates and fences of a lower
 *   epoch than the node has seen are refused; fence() resolves only after every lower-epoch
 *   append the node let in has settled.
 * - A segment is authoritative for the LSNs from its firstLsn up to the next segment's firstLsn
 *   (the seal): replay ignores a record of a sealed segment at or past the seal. With a new LSN
 *   for every append try none lands there; the rule guards replay should an LSN be reused.
 * - The LSN of a failed append is never handed out again (the record may be on some replicas
 *   of a segment that stays current): what is published or appended after it carries a higher
 *   LSN, so replaying it is harmless. An attach starts above every LSN it replays and every LSN
 *   a published generation holds (a failed try's LSN may be one, and found on no replica).
 * - Attach (SimJournalWriter.open) fences every replica of every segment, reads each segment
 *   from one fenced replica (a seeded choice: any of them must do), and appends what it read to
 *   new segments of its own epoch on r nodes before the layout names only those: from then on
 *   every later attach replays exactly what this one replayed, whichever replica it reads.
 * - Every failure a fault caused is registered as injected, so the checker can tell it from a bug.
 * What it leaves out: a node losing its disk (wipes touch shard stores only), corrupt (as opposed
 * to torn) records, reading several pages of a segment, and etcd failures of layout writes
 * (they are only fenced).
 */
import {
  CairnError,
  FencedError,
  PlacementError,
  UnavailableError,
  assert,
  errorMessage,
  type Clock,
} from '../core/index.js';
import type { CacheJournal, JournalWrite } from '../cache/index.js';
import {
  JournalFencedError,
  JournalLsnError,
  JournalReplicationError,
  JournalSegmentFullError,
  JournalSegmentNotFoundError,
  ReplicatedJournal,
  decodeRecords,
  encodeRecord,
  readSegment,
  recordChecksum,
  type AppendRequest,
  type CreateRequest,
  type JournalListAnswer,
  type JournalRecord,
  type JournalReplica,
  type ReadAnswer,
  type ReadRequest,
  type RecordInput,
  type SegmentSpace,
  type TrimRequest,
  writesOfRecord,
} from '../journal/index.js';
import { hang, type ProcessLife } from './faulty_store.js';
import type { Prng } from './prng.js';
import type { SimClock } from './sim_clock.js';

/** Journal bugs planted on purpose (see planted_bugs.ts). */
export type JournalBug =
  | 'ack-after-r-minus-1'
  | 'replay-without-epoch-check'
  | 'reuse-failed-lsn'
  | 'attach-reuses-published-lsn'
  | 'attach-keeps-old-segments';

/** One segment as the layout names it. */
export interface SimSegment {
  readonly id: number;
  readonly epoch: number;
  /** The first LSN this segment is authoritative for; the next segment's firstLsn seals it. */
  readonly firstLsn: number;
  readonly replicas: readonly string[];
}

/** The journal's layout, as etcd keeps it: changed only by the holder of the volume lock. */
export interface SimJournalLayout {
  /** Every record up to this LSN is folded into published generations: replay starts after it. */
  readonly foldedLsn: number;
  readonly segments: readonly SimSegment[];
}

export interface SimJournalConfig {
  readonly volume: string;
  /** r: replicas of each segment. */
  readonly replicas: number;
  /** Network latency of a request and of its reply, each uniform in [0, latencyMs]. */
  readonly latencyMs: number;
  /** Group commit: the fsync that makes appends durable runs this long after the first waits. */
  readonly fsyncMs: number;
  /** Bytes a segment holds. */
  readonly segmentBytes: number;
  /** Room below which the writer starts a new segment after an append (a record must fit). */
  readonly rotateBytesLeftMin: number;
}

/** What the journal needs from the world around it. */
export interface JournalEnv {
  readonly clock: SimClock;
  /** The journal stream: latencies, lost messages, replica choices, torn lengths. */
  readonly rng: Prng;
  readonly injected: WeakSet<object>;
  trace(line: string): void;
  anomaly(message: string): void;
  /** The epoch holding the volume lock now (null: nobody). */
  lockEpoch(): number | null;
  /** The node's storage node is up (not crashed, its zone not lost). */
  nodeUp(name: string): boolean;
  /** Extra latency of the node while it is slow. */
  nodeSlowMs(name: string): number;
  /** Nodes registered as live, with their zones, for choosing replicas. */
  liveNodes(): readonly { readonly name: string; readonly zone: string }[];
  /** True when some node is down or unregistered: too few live nodes is then no bug. */
  degraded(): boolean;
  /** The node crashes now (armed failpoint): the world takes it down for a while. */
  crashNode(name: string): void;
  readonly bug: JournalBug | undefined;
}

/** A message-level marker: the node crashed while the call waited on it. */
class NodeCrashed extends Error {}

interface StoredRecord {
  readonly lsn: number;
  readonly epoch: number;
  readonly bytes: Uint8Array;
}

interface Waiter {
  readonly epoch: number;
  resolve(): void;
  reject(err: Error): void;
}

interface NodeSegment {
  readonly id: number;
  /** fsynced records, in LSN order. */
  durable: StoredRecord[];
  /** Received, not yet fsynced. */
  queued: StoredRecord[];
  /** A prefix of a record a crash cut short, after the durable ones; ignored by readers. */
  torn: Uint8Array | undefined;
}

/**
 * One storage node's journal service. Calls arrive here through SimJournalReplica (which applies
 * the network); this class is the node's disk and its rules.
 */
export class SimJournalNode {
  /** The highest epoch let in: lower ones are refused. */
  promisedEpoch = 0;
  /** The highest epoch fsynced: what a crash falls back to. */
  durableEpoch = 0;
  readonly segments = new Map<number, NodeSegment>();
  /** Partitioned from every frontend: requests and replies are lost. */
  unreachable = false;
  /** Probability that a request fails (before landing) or its reply is lost (after). */
  flakyP = 0;
  /** Armed failpoint: the next append this node receives is lost by a crash before its fsync. */
  crashOnAppend: { readonly tornP: number } | undefined;
  private waiters: Waiter[] = [];
  private fsyncDue = false;
  /** Bumped by each crash: an fsync scheduled before it does nothing. */
  private incarnation = 0;
  appends = 0;
  fsyncs = 0;

  constructor(
    readonly name: string,
    readonly zone: string,
    private readonly env: JournalEnv,
    private readonly config: SimJournalConfig,
    private readonly fsyncMs: number,
  ) {}

  get up(): boolean {
    return this.env.nodeUp(this.name);
  }

  private usedBytes(seg: NodeSegment): number {
    let total = 0;
    for (const r of seg.durable) total += r.bytes.length;
    for (const r of seg.queued) total += r.bytes.length;
    return total;
  }

  private space(seg: NodeSegment): SegmentSpace {
    return { usedBytes: this.usedBytes(seg), capacityBytes: this.config.segmentBytes };
  }

  private refuseLower(epoch: number, what: string): void {
    if (epoch < this.promisedEpoch)
      throw new JournalFencedError(
        `${what} on node "${this.name}": it has seen epoch ${this.promisedEpoch}`,
        epoch,
        this.promisedEpoch,
      );
    this.promisedEpoch = epoch;
  }

  /** Resolves at the next fsync (group commit), rejects with NodeCrashed if the node crashes first. */
  private sync(epoch: number): Promise<void> {
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ epoch, resolve, reject }));
    if (!this.fsyncDue) {
      this.fsyncDue = true;
      const incarnation = this.incarnation;
      this.env.clock.after(this.fsyncMs, () => {
        if (this.incarnation === incarnation) this.fsync();
      });
    }
    return done;
  }

  private fsync(): void {
    this.fsyncDue = false;
    this.fsyncs += 1;
    for (const seg of this.segments.values()) {
      if (seg.queued.length === 0) continue;
      // The first append after a torn tail overwrites it (the real store zeros it first).
      seg.torn = undefined;
      seg.durable.push(...seg.queued);
      seg.queued = [];
    }
    this.durableEpoch = this.promisedEpoch;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.resolve();
  }

  /**
   * The node's process dies: what was received and not fsynced is gone (the first queued record
   * of a segment maybe half written, a torn tail), the epoch falls back to the durable one, and
   * every call waiting on the node fails. Its disk keeps everything fsynced.
   */
  crash(rng: Prng, tornP: number): string[] {
    this.incarnation += 1;
    this.fsyncDue = false;
    const lost: string[] = [];
    for (const seg of this.segments.values()) {
      const first = seg.queued[0];
      if (first !== undefined && rng.chance(tornP)) {
        seg.torn = first.bytes.slice(0, rng.range(1, first.bytes.length - 1));
        lost.push(`segment ${seg.id} lsn ${first.lsn} torn after ${seg.torn.length} of ${first.bytes.length} bytes`);
      }
      for (const r of seg.queued)
        if (r !== first || seg.torn === undefined) lost.push(`segment ${seg.id} lsn ${r.lsn}`);
      seg.queued = [];
    }
    this.promisedEpoch = this.durableEpoch;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(new NodeCrashed(`node "${this.name}" crashed`));
    return lost;
  }

  private segmentFor(id: number, create: boolean, what: string): NodeSegment {
    let seg = this.segments.get(id);
    if (seg === undefined) {
      if (!create) throw new JournalSegmentNotFoundError(`${what}: node "${this.name}" has no such segment`);
      seg = { id, durable: [], queued: [], torn: undefined };
      this.segments.set(id, seg);
    }
    return seg;
  }

  async create(req: CreateRequest): Promise<SegmentSpace> {
    const what = `Cannot create journal segment ${req.segment}`;
    this.refuseLower(req.epoch, what);
    const seg = this.segmentFor(req.segment, true, what);
    await this.sync(req.epoch);
    return this.space(seg);
  }

  async append(req: AppendRequest): Promise<SegmentSpace> {
    const what = `Cannot append lsn ${req.lsn} to journal segment ${req.segment}`;
    this.refuseLower(req.epoch, what);
    const seg = this.segmentFor(req.segment, true, what);
    const last = seg.queued.at(-1) ?? seg.durable.at(-1);
    if (last !== undefined && req.lsn <= last.lsn) {
      const retry =
        req.lsn === last.lsn &&
        req.epoch === last.epoch &&
        req.record.length === last.bytes.length &&
        recordChecksum(req.record) === recordChecksum(last.bytes);
      if (!retry)
        throw new JournalLsnError(
          `${what} on node "${this.name}": the segment's last lsn is ${last.lsn}; lsns must rise within a segment`,
        );
      // A retry of the last record: its own outcome (durable now, or at the next fsync).
      if (seg.queued.includes(last)) await this.sync(req.epoch);
      return this.space(seg);
    }
    if (this.usedBytes(seg) + req.record.length > this.config.segmentBytes)
      throw new JournalSegmentFullError(`${what} on node "${this.name}": ${req.record.length} bytes do not fit`);
    seg.queued.push({ lsn: req.lsn, epoch: req.epoch, bytes: req.record.slice() });
    this.appends += 1;
    const done = this.sync(req.epoch);
    const armed = this.crashOnAppend;
    if (armed !== undefined) {
      // The failpoint: received, not yet fsynced, and the node dies.
      this.crashOnAppend = undefined;
      done.catch(() => undefined);
      const lost = this.crash(this.env.rng, armed.tornP);
      this.env.trace(`  journal: node ${this.name} crashes before fsync of lsn ${req.lsn}; lost ${lost.join(', ')}`);
      this.env.crashNode(this.name);
    }
    await done;
    return this.space(seg);
  }

  /** Raises the epoch and waits until every lower-epoch append let in has settled (the next fsync). */
  async fence(epoch: number): Promise<number> {
    this.refuseLower(epoch, `Cannot fence at epoch ${epoch}`);
    await this.sync(epoch);
    return this.promisedEpoch;
  }

  /**
   * The segment's durable records with LSN >= fromLsn, as the node finds them on its disk: the
   * real decoder walks the log (records, then any torn tail) and stops where a record does not
   * decode, so a torn record is never sent.
   */
  durableRecords(segment: number, fromLsn: number): { records: JournalRecord[]; encoded: Uint8Array[]; torn: boolean } {
    const seg = this.segments.get(segment);
    if (seg === undefined) return { records: [], encoded: [], torn: false };
    const parts = seg.durable.map((r) => r.bytes);
    if (seg.torn !== undefined) parts.push(seg.torn);
    const log = concat(parts);
    const decoded = decodeRecords(log);
    if (decoded.records.length !== seg.durable.length || (seg.torn !== undefined) !== (decoded.stop.kind === 'torn')) {
      this.env.anomaly(
        `journal segment ${segment} on node "${this.name}": ${seg.durable.length} durable records${seg.torn === undefined ? '' : ' and a torn tail'}, but the decoder found ${decoded.records.length} and stopped at ${decoded.stop.kind}`,
      );
    }
    const records: JournalRecord[] = [];
    const encoded: Uint8Array[] = [];
    decoded.records.forEach((r, i) => {
      if (r.lsn < fromLsn) return;
      records.push(r);
      encoded.push(seg.durable[i]!.bytes);
    });
    return { records, encoded, torn: seg.torn !== undefined };
  }

  read(req: ReadRequest): Promise<ReadAnswer> {
    const seg = this.segmentFor(req.segment, false, `Cannot read journal segment ${req.segment}`);
    const { encoded, torn } = this.durableRecords(seg.id, req.fromLsn);
    const records = concat(encoded);
    return Promise.resolve({
      tail: torn ? 'torn' : 'clean',
      more: false,
      nextLsn: encoded.length === 0 ? req.fromLsn : this.lastLsn(seg) + 1,
      count: encoded.length,
      records,
    });
  }

  private lastLsn(seg: NodeSegment): number {
    return seg.durable.at(-1)?.lsn ?? 0;
  }

  trim(req: TrimRequest): Promise<number> {
    let n = 0;
    for (const seg of [...this.segments.values()]) {
      const gone =
        'segment' in req
          ? seg.id === req.segment
          : 'deleted' in req || (seg.durable.length > 0 && seg.queued.length === 0 && this.lastLsn(seg) < req.belowLsn);
      if (gone) {
        this.segments.delete(seg.id);
        n += 1;
      }
    }
    return Promise.resolve(n);
  }

  list(): Promise<JournalListAnswer> {
    return Promise.resolve({
      volumes: [
        {
          volume: this.config.volume,
          epoch: this.promisedEpoch,
          segments: [...this.segments.values()].map((s) => ({
            segment: s.id,
            capacityBytes: this.config.segmentBytes,
            usedBytes: this.usedBytes(s),
            records: s.durable.length,
            firstLsn: s.durable[0]?.lsn ?? null,
            lastLsn: s.durable.at(-1)?.lsn ?? null,
            lastEpoch: s.durable.at(-1)?.epoch ?? null,
            tail: s.torn === undefined ? 'clean' : 'torn',
          })),
        },
      ],
    });
  }
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

/** Simulated milliseconds a request to a partitioned node waits before it times out. */
export const journalTimeoutMs = 300;

/**
 * One frontend process's connection to one journal node: requests and replies take seeded
 * latency (in order on the connection, as on one TCP stream), a down node refuses at once, a
 * partitioned one times out, a flaky one loses requests or replies. A process that dies stops
 * hearing anything; a request it sent may still arrive (or die with its connection).
 */
export class SimJournalReplica implements JournalReplica {
  /** When the last request sent on this connection arrives: later ones arrive after it. */
  private arrivesAtMs = 0;

  constructor(
    private readonly env: JournalEnv,
    private readonly node: SimJournalNode,
    private readonly life: ProcessLife,
    private readonly latencyMs: number,
  ) {}

  get name(): string {
    return this.node.name;
  }

  private injected(message: string): UnavailableError {
    const err = new UnavailableError(message);
    this.env.injected.add(err);
    return err;
  }

  private delayMs(): number {
    const maxMs = this.latencyMs + this.env.nodeSlowMs(this.node.name);
    return maxMs > 0 ? this.env.rng.int(maxMs + 1) : 0;
  }

  private async call<T>(what: string, work: () => Promise<T>): Promise<T> {
    await Promise.resolve();
    if (!this.life.alive) return hang();
    const clock = this.env.clock;
    this.arrivesAtMs = Math.max(this.arrivesAtMs, clock.now() + this.delayMs());
    if (this.arrivesAtMs > clock.now()) await clock.sleep(this.arrivesAtMs - clock.now());
    // A request of a process that died meanwhile arrives, or died with its connection.
    if (!this.life.alive && this.env.rng.chance(0.5)) return hang();
    const node = this.node;
    const where = `${what} on journal node "${node.name}"`;
    if (!node.up) {
      if (!this.life.alive) return hang();
      throw this.injected(`Cannot ${where}: connection refused (the node is down)`);
    }
    if (node.unreachable || (node.flakyP > 0 && this.env.rng.chance(node.flakyP))) {
      await clock.sleep(journalTimeoutMs);
      if (!this.life.alive) return hang();
      throw this.injected(`Cannot ${where}: the request timed out`);
    }
    let result: T;
    try {
      result = await work();
    } catch (err) {
      if (!this.life.alive) return hang();
      if (err instanceof NodeCrashed) throw this.injected(`Cannot ${where}: connection reset (the node crashed)`);
      throw err;
    }
    const lostReply = node.unreachable || !node.up || (node.flakyP > 0 && this.env.rng.chance(node.flakyP / 2));
    const replyMs = this.delayMs();
    if (replyMs > 0) await clock.sleep(replyMs);
    if (!this.life.alive) return hang();
    if (lostReply) throw this.injected(`Cannot ${where}: the reply was lost`);
    return result;
  }

  create(request: CreateRequest): Promise<SegmentSpace> {
    return this.call(`create segment ${request.segment}`, () => this.node.create(request));
  }

  append(request: AppendRequest): Promise<SegmentSpace> {
    return this.call(`append lsn ${request.lsn} to segment ${request.segment}`, () => this.node.append(request));
  }

  fence(_volume: string, epoch: number): Promise<number> {
    return this.call(`fence at epoch ${epoch}`, () => this.node.fence(epoch));
  }

  read(request: ReadRequest): Promise<ReadAnswer> {
    return this.call(`read segment ${request.segment}`, () => this.node.read(request));
  }

  trim(request: TrimRequest): Promise<number> {
    return this.call('trim', () => this.node.trim(request));
  }

  list(): Promise<JournalListAnswer> {
    return this.call('list', () => this.node.list());
  }
}

/** True when every leaf of `err` is a failure the world injected. */
export function causedByWorld(err: unknown, injected: WeakSet<object>): boolean {
  if (typeof err === 'object' && err !== null && injected.has(err)) return true;
  if (err instanceof JournalReplicationError)
    return err.failures.length > 0 && err.failures.every((f) => causedByWorld(f.error, injected));
  return false;
}

/**
 * r nodes for a segment: one per zone before a second in any, nodes in `avoid` last, by name
 * otherwise (the rule of frontend/journal.ts's chooseReplicas, which also prefers free space;
 * the simulated nodes have no shortage of it). Throws PlacementError when fewer than r nodes
 * are live.
 */
export function chooseJournalNodes(
  nodes: readonly { readonly name: string; readonly zone: string }[],
  r: number,
  avoid: ReadonlySet<string>,
): string[] {
  if (nodes.length < r)
    throw new PlacementError(
      `Cannot place a journal segment on ${r} nodes: ${nodes.length} live nodes (${nodes.map((n) => n.name).join(', ') || 'none'})`,
    );
  const chosen: { name: string; zone: string }[] = [];
  const zones = new Map<string, number>();
  while (chosen.length < r) {
    const pick = nodes
      .filter((n) => !chosen.includes(n))
      .sort(
        (a, b) =>
          Number(avoid.has(a.name)) - Number(avoid.has(b.name)) ||
          (zones.get(a.zone) ?? 0) - (zones.get(b.zone) ?? 0) ||
          a.name.localeCompare(b.name),
      )[0]!;
    chosen.push(pick);
    zones.set(pick.zone, (zones.get(pick.zone) ?? 0) + 1);
  }
  return chosen.map((n) => n.name);
}

function describeLayout(l: SimJournalLayout): string {
  const segs = l.segments.map((s) => `${s.id}(e${s.epoch} from ${s.firstLsn} on ${s.replicas.join(',')})`);
  return `folded ${l.foldedLsn}, segments ${segs.join(' ') || 'none'}`;
}

/** A record replayed at attach, in the cache's terms. */
export interface ReplayRecord {
  readonly lsn: number;
  readonly epoch: number;
  readonly writes: readonly JournalWrite[];
}

/**
 * The records a layout's segments hold for replay, given each segment's records as read from
 * one replica: after the folded LSN and before the segment's seal. With the planted bug
 * 'replay-without-epoch-check', past the seal too, the first record read for an LSN winning.
 */
function replaySet(
  layout: SimJournalLayout,
  perSegment: readonly (readonly JournalRecord[])[],
  bug: JournalBug | undefined,
  discarded: (segment: SimSegment, record: JournalRecord) => void,
): JournalRecord[] {
  const records = new Map<number, JournalRecord>();
  layout.segments.forEach((seg, i) => {
    const seal = layout.segments[i + 1]?.firstLsn ?? Number.POSITIVE_INFINITY;
    for (const r of perSegment[i]!) {
      if (r.lsn <= layout.foldedLsn) continue;
      if (bug === 'replay-without-epoch-check') {
        if (!records.has(r.lsn)) records.set(r.lsn, r);
        continue;
      }
      if (r.lsn >= seal || r.lsn < seg.firstLsn) {
        discarded(seg, r);
        continue;
      }
      assert(!records.has(r.lsn), `two segments of the layout hold lsn ${r.lsn}`);
      records.set(r.lsn, r);
    }
  });
  return [...records.values()].sort((a, b) => a.lsn - b.lsn);
}

/** The world's journal: its nodes, its layout (as etcd keeps it), and connections to the nodes. */
export class SimJournal {
  readonly nodes = new Map<string, SimJournalNode>();
  private current: SimJournalLayout = { foldedLsn: 0, segments: [] };
  private segmentIds = 0;
  private readonly views = new WeakMap<ProcessLife, Map<string, SimJournalReplica>>();

  constructor(
    readonly env: JournalEnv,
    readonly config: SimJournalConfig,
    nodes: readonly { readonly name: string; readonly zone: string; readonly fsyncMs: number }[],
  ) {
    for (const n of nodes) this.nodes.set(n.name, new SimJournalNode(n.name, n.zone, env, config, n.fsyncMs));
  }

  get layout(): SimJournalLayout {
    return this.current;
  }

  /** A segment id never used before (a failed attempt's segment may linger on nodes). */
  newSegmentId(): number {
    return ++this.segmentIds;
  }

  replica(name: string, life: ProcessLife): SimJournalReplica {
    let views = this.views.get(life);
    if (views === undefined) this.views.set(life, (views = new Map()));
    let view = views.get(name);
    if (view === undefined) {
      const node = this.nodes.get(name);
      assert(node !== undefined, `no journal node ${name}`);
      view = new SimJournalReplica(this.env, node, life, this.config.latencyMs);
      views.set(name, view);
    }
    return view;
  }

  /** Writes the layout as the writer at `epoch`; fenced like an extent map commit. */
  async putLayout(epoch: number, life: ProcessLife, layout: SimJournalLayout): Promise<void> {
    await Promise.resolve();
    const ms = this.config.latencyMs > 0 ? this.env.rng.int(this.config.latencyMs + 1) : 0;
    if (ms > 0) await this.env.clock.sleep(ms);
    const lock = this.env.lockEpoch();
    if (lock !== epoch) {
      const err = new FencedError(
        `Cannot write the journal layout: this writer (epoch ${epoch}) no longer holds its lock (lock epoch ${lock ?? 'none'})`,
      );
      this.env.injected.add(err);
      this.env.trace(`  journal: layout write by epoch ${epoch} refused (lock epoch ${lock ?? 'none'})`);
      if (!life.alive) return hang();
      throw err;
    }
    this.current = layout;
    this.env.trace(`  journal: epoch ${epoch} layout ${describeLayout(layout)}`);
    if (!life.alive) return hang();
  }

  /**
   * What an attach would replay if it read each segment from a seeded choice of its replicas,
   * as the disks hold them now (no fencing, no network): for a reader checking what a crash may
   * reveal. Records in LSN order.
   */
  durableView(rng: Prng): ReplayRecord[] {
    const layout = this.current;
    const perSegment = layout.segments.map((seg) => {
      const name = rng.pick(seg.replicas);
      return this.nodes.get(name)!.durableRecords(seg.id, layout.foldedLsn + 1).records;
    });
    return replaySet(layout, perSegment, this.env.bug, () => undefined).map((r) => ({
      lsn: r.lsn,
      epoch: r.epoch,
      writes: writesOfRecord(r),
    }));
  }
}

/** Simulated milliseconds between a fold and the layout write that trims what it folded. */
export const journalTrimDelayMs = 200;

/**
 * The frontend's journal (CacheJournal) in the simulated world, after frontend/journal.ts's
 * VolumeJournal: appends go to every replica of the current segment (ReplicatedJournal, or with
 * the planted bug 'ack-after-r-minus-1' to all but one); a replica failure seals the segment, a
 * new one starts on other nodes, and everything journaled is folded before the append is retried
 * there; a nearly full segment is followed by a new one; folded segments are trimmed.
 */
export class SimJournalWriter implements CacheJournal {
  /** Set by the world: folds every journaled extent (before leaving a failed replica). */
  foldAll: () => Promise<void> = async () => undefined;
  private layout: SimJournalLayout;
  private layoutChain: Promise<void> = Promise.resolve();
  private foldedUpTo: number;
  private trimming = false;

  private constructor(
    private readonly journal: SimJournal,
    private readonly epoch: number,
    private readonly life: ProcessLife,
    private readonly clock: Clock,
    private readonly log: (line: string) => void,
    layout: SimJournalLayout,
    private current: ReplicatedJournal,
    private next: number,
  ) {
    this.layout = layout;
    this.foldedUpTo = layout.foldedLsn;
  }

  /**
   * Attaches the journal for the writer at `epoch` (which holds the volume lock): fences every
   * replica of every segment, reads each segment from one fenced replica, keeps the records
   * after the folded LSN and before each segment's seal, appends them to new segments of this
   * epoch, and makes those the only segments. Returns the writer and the records to replay, in
   * LSN order; the writer's next LSN lies above them and above `publishedLsnMax`, the highest
   * journal LSN a published generation holds. Throws FencedError when a newer writer exists, and
   * a retryable error when a segment cannot be fenced and read or the new segment cannot be
   * written (attach again later).
   */
  static async open(
    journal: SimJournal,
    epoch: number,
    life: ProcessLife,
    clock: Clock,
    log: (line: string) => void,
    publishedLsnMax: number,
  ): Promise<{ writer: SimJournalWriter; replay: ReplayRecord[] }> {
    const env = journal.env;
    const config = journal.config;
    const layout = journal.layout;
    try {
      const perSegment: JournalRecord[][] = [];
      for (const seg of layout.segments) {
        const replicas = seg.replicas.map((n) => journal.replica(n, life));
        let readable: JournalReplica[];
        if (env.bug === 'replay-without-epoch-check') {
          readable = replicas;
        } else {
          const fenced = await new ReplicatedJournal({
            volume: config.volume,
            epoch,
            segment: seg.id,
            replicas,
          }).fence();
          readable = replicas.filter((r) => fenced.fenced.includes(r.name));
        }
        const order = shuffle(readable, env.rng);
        const why: string[] = [];
        const errors: unknown[] = [];
        let got: JournalRecord[] | undefined;
        for (const replica of order) {
          try {
            const records: JournalRecord[] = [];
            const summary = await readSegment(
              replica,
              { volume: config.volume, segment: seg.id, fromLsn: layout.foldedLsn + 1 },
              (r) => void records.push(r),
            );
            log(
              `journal: segment ${seg.id} read from ${replica.name}: lsns ${records.map((r) => r.lsn).join(',')}${summary.tail === 'clean' ? '' : ` (${summary.tail} tail ignored)`}`,
            );
            got = records;
            break;
          } catch (err) {
            why.push(`${replica.name}: ${errorMessage(err)}`);
            errors.push(err);
          }
        }
        if (got === undefined) {
          const err = new UnavailableError(
            `Cannot attach the journal: no replica of segment ${seg.id} (${seg.replicas.join(', ')}) could be fenced and read (${why.join('; ') || 'none fenced'})`,
          );
          if (errors.every((e) => causedByWorld(e, env.injected))) env.injected.add(err);
          throw err;
        }
        perSegment.push(got);
      }
      const records = replaySet(layout, perSegment, env.bug, (seg, r) =>
        log(`journal: lsn ${r.lsn} (epoch ${r.epoch}) of segment ${seg.id} lies past its seal: ignored`),
      );
      const highest = Math.max(layout.foldedLsn, ...records.map((r) => r.lsn));
      // This epoch's segments hold again everything this attach replays: whatever replica a later
      // attach reads, it replays the same. A segment that fills is followed by another.
      const segments: SimSegment[] = [];
      const start = async (firstLsn: number): Promise<ReplicatedJournal> => {
        const id = journal.newSegmentId();
        const { segment: created, names } = await createSegment(journal, epoch, life, id, new Set(), log);
        segments.push({ id, epoch, firstLsn, replicas: names });
        return created;
      };
      const nextLsn = Math.max(highest, env.bug === 'attach-reuses-published-lsn' ? 0 : publishedLsnMax) + 1;
      let segment: ReplicatedJournal;
      let next: SimJournalLayout;
      if (env.bug === 'attach-keeps-old-segments') {
        // As frontend/journal.ts's open(): the segments read stay in the layout (those with
        // records to replay), and this epoch's segment starts after them; nothing is copied.
        const live = layout.segments.filter((_, i) => perSegment[i]!.some((r) => r.lsn > layout.foldedLsn));
        segment = await start(nextLsn);
        next = { foldedLsn: layout.foldedLsn, segments: [...live, ...segments] };
      } else {
        segment = await start(layout.foldedLsn + 1);
        for (const [i, r] of records.entries()) {
          const ack = await segment.append({ lsn: r.lsn, ranges: r.ranges, data: r.data });
          const following = records[i + 1];
          if (following !== undefined && ack.bytesLeft < config.rotateBytesLeftMin)
            segment = await start(following.lsn);
        }
        next = { foldedLsn: layout.foldedLsn, segments };
      }
      await journal.putLayout(epoch, life, next);
      // The old segments out of the layout: delete them from their nodes (best effort).
      for (const seg of layout.segments.filter((g) => !next.segments.includes(g)))
        for (const n of seg.replicas)
          void journal
            .replica(n, life)
            .trim({ volume: config.volume, segment: seg.id })
            .catch(() => undefined);
      // Above every LSN replayed, and above every LSN a published generation holds: the writer
      // before may have published with the LSN of an append that failed (and was never read).
      const writer = new SimJournalWriter(journal, epoch, life, clock, log, next, segment, nextLsn);
      return {
        writer,
        replay: records.map((r) => ({ lsn: r.lsn, epoch: r.epoch, writes: writesOfRecord(r) })),
      };
    } catch (err) {
      throw convert(err, env);
    }
  }

  get nextLsn(): number {
    return this.next;
  }

  /** The segment appends go to now, for faults aimed at it. */
  get currentReplicas(): readonly string[] {
    return this.current.replicas.map((r) => r.name);
  }

  async append(writes: readonly JournalWrite[]): Promise<number> {
    const ranges = writes.map((w) => ({ offset: w.offset, length: w.data.length }));
    const data = concat(writes.map((w) => w.data));
    for (let attempt = 0; ; attempt++) {
      // Every try takes a new LSN, used or not, as frontend/journal.ts does: a failed try may
      // have landed on some replicas of a segment that stays current, where replay finds it; a
      // later publish of its extents (journalLsn = nextLsn - 1) and every later record then lie
      // above it. (The planted bug 'reuse-failed-lsn' hands a failed try's LSN out again.)
      const lsn = this.next;
      if (this.journal.env.bug !== 'reuse-failed-lsn') this.next = lsn + 1;
      try {
        const bytesLeft = await this.appendTo(this.current, { lsn, ranges, data });
        assert(this.next <= lsn + 1, `journal appends overlapped: lsn ${lsn} done, next is ${this.next}`);
        this.next = lsn + 1;
        if (bytesLeft < this.journal.config.rotateBytesLeftMin) {
          // Best effort: when it fails, the next append finds the segment full and rotates then.
          await this.rotate(new Set(), 'the segment is nearly full').catch((err: unknown) =>
            this.log(`journal: cannot start a new segment: ${errorMessage(err)}`),
          );
        }
        return lsn;
      } catch (err) {
        if (err instanceof JournalFencedError || err instanceof FencedError || attempt >= 1)
          throw convert(err, this.journal.env);
        if (!(err instanceof JournalReplicationError)) throw convert(err, this.journal.env);
        // Leave the failed replicas: a new segment on other nodes (sealing this one after `lsn`),
        // then fold what this one holds, so nothing acknowledged depends on it any more.
        const failed = new Set(err.failures.map((f) => f.replica));
        try {
          await this.rotate(failed, `replica ${[...failed].join(', ')} failed: ${errorMessage(err)}`);
        } catch (rotateErr) {
          throw convert(rotateErr, this.journal.env);
        }
        await this.foldAll().catch((foldErr: unknown) => {
          this.log(`journal: cannot fold after losing a replica: ${errorMessage(foldErr)}`);
          // A fold may fail for the world's reasons (typed errors); an assertion is a bug below.
          if (!(foldErr instanceof CairnError))
            this.journal.env.anomaly(
              `the cache's foldAll() before leaving a failed journal replica threw ${foldErr instanceof Error ? `${foldErr.name}: ${foldErr.message}` : String(foldErr)}`,
            );
        });
      }
    }
  }

  /** Appends to every replica (or, with the planted bug, resolves once all but one have it). */
  private async appendTo(segment: ReplicatedJournal, input: RecordInput): Promise<number> {
    if (this.journal.env.bug !== 'ack-after-r-minus-1') {
      const ack = await segment.append(input);
      return ack.bytesLeft;
    }
    const encoded = encodeRecord({ volume: segment.volume, epoch: segment.epoch, ...input });
    const need = Math.max(1, segment.replicas.length - 1);
    return new Promise<number>((resolve, reject) => {
      let acked = 0;
      let left = Number.POSITIVE_INFINITY;
      const failures: { replica: string; error: unknown }[] = [];
      for (const r of segment.replicas) {
        r.append({
          volume: segment.volume,
          segment: segment.segment,
          epoch: segment.epoch,
          lsn: input.lsn,
          record: encoded,
        }).then(
          (space) => {
            left = Math.min(left, space.capacityBytes - space.usedBytes);
            if (++acked === need) resolve(left);
          },
          (error: unknown) => {
            failures.push({ replica: r.name, error });
            if (failures.length > segment.replicas.length - need) {
              const fenced = failures.find((f) => f.error instanceof JournalFencedError);
              if (fenced !== undefined) reject(fenced.error);
              else
                reject(
                  new JournalReplicationError(
                    `Cannot append lsn ${input.lsn}: ${failures.length} replicas failed`,
                    [],
                    failures,
                    {
                      retryable: true,
                    },
                  ),
                );
            }
          },
        );
      }
    });
  }

  /** Starts a new segment on r nodes (not those in `avoid` where possible) and names it in the layout. */
  private async rotate(avoid: ReadonlySet<string>, why: string): Promise<void> {
    const id = this.journal.newSegmentId();
    const { segment: next, names } = await createSegment(this.journal, this.epoch, this.life, id, avoid, this.log);
    const firstLsn = this.next;
    await this.updateLayout((l) => ({
      ...l,
      segments: [...l.segments, { id, epoch: this.epoch, firstLsn, replicas: names }],
    }));
    this.current = next;
    this.log(`journal: segment ${id} on ${names.join(', ')} from lsn ${firstLsn} (${why})`);
  }

  /** Layout writes one at a time, each from the layout the last one wrote. */
  private updateLayout(change: (layout: SimJournalLayout) => SimJournalLayout): Promise<void> {
    const run = this.layoutChain.then(async () => {
      const next = change(this.layout);
      await this.journal.putLayout(this.epoch, this.life, next);
      this.layout = next;
    });
    this.layoutChain = run.catch(() => undefined);
    return run;
  }

  folded(lsn: number): void {
    if (lsn <= this.foldedUpTo) return;
    this.foldedUpTo = lsn;
    if (this.trimming) return;
    this.trimming = true;
    // Several folds in a row make one layout write.
    const stop = this.clock.every(journalTrimDelayMs, () => {
      stop();
      this.trimming = false;
      this.trim().catch((err: unknown) => this.log(`journal: trim failed: ${errorMessage(err)}`));
    });
  }

  /** Drops the segments wholly folded (never the current one) from the layout, then from their nodes. */
  private async trim(): Promise<void> {
    const folded = this.foldedUpTo;
    let gone: SimSegment[] = [];
    await this.updateLayout((l) => {
      const segs = l.segments;
      gone = segs.filter((_, i) => i < segs.length - 1 && segs[i + 1]!.firstLsn - 1 <= folded);
      return { foldedLsn: Math.max(l.foldedLsn, folded), segments: segs.filter((s) => !gone.includes(s)) };
    });
    for (const s of gone)
      await Promise.allSettled(
        s.replicas.map((n) =>
          this.journal.replica(n, this.life).trim({ volume: this.journal.config.volume, segment: s.id }),
        ),
      );
  }
}

/** Node choices tried when creating a segment fails on some of them (frontend/limits.ts's journalCreateAttemptsMax). */
export const journalCreateAttemptsMax = 3;

/**
 * Creates segment `id` on r nodes, choosing again without the nodes that failed (a node whose
 * lease has not expired yet looks alive), up to journalCreateAttemptsMax times, as
 * frontend/journal.ts's createSegment does.
 */
async function createSegment(
  journal: SimJournal,
  epoch: number,
  life: ProcessLife,
  id: number,
  avoidFirst: ReadonlySet<string>,
  log: (line: string) => void,
): Promise<{ segment: ReplicatedJournal; names: string[] }> {
  const avoid = new Set(avoidFirst);
  for (let attempt = 1; ; attempt++) {
    const names = chooseJournalNodes(journal.env.liveNodes(), journal.config.replicas, avoid);
    const segment = new ReplicatedJournal({
      volume: journal.config.volume,
      epoch,
      segment: id,
      replicas: names.map((n) => journal.replica(n, life)),
    });
    try {
      await segment.create();
      return { segment, names };
    } catch (err) {
      if (!(err instanceof JournalReplicationError) || attempt >= journalCreateAttemptsMax) throw err;
      for (const f of err.failures) avoid.add(f.replica);
      log(`journal: cannot create segment ${id} (${errorMessage(err)}); choosing other nodes`);
    }
  }
}

/** Fisher-Yates with the journal stream. */
function shuffle<T>(items: readonly T[], rng: Prng): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/**
 * The error a journal operation throws to the cache: a node's fencing as FencedError (a newer
 * writer took the volume: always the world's doing), and any error every leaf of which the world
 * injected registered as injected (the checker accepts it); anything else as it is.
 */
function convert(err: unknown, env: JournalEnv): unknown {
  if (err instanceof JournalFencedError) {
    const fenced = new FencedError(err.message);
    env.injected.add(fenced);
    return fenced;
  }
  // Too few live nodes for a segment is the world's doing only while some node is down.
  if (err instanceof PlacementError && env.degraded()) env.injected.add(err);
  if (causedByWorld(err, env.injected) && typeof err === 'object' && err !== null) env.injected.add(err);
  return err;
}
