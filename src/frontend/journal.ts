/**
 * A volume's write-ahead journal as its writer runs it: segments on r storage nodes (distinct
 * zones where possible), their layout in etcd, fencing and replay at attach, rotation when a
 * segment fills or a replica fails, and trimming once the cache has folded what they hold.
 * Implements the cache's CacheJournal port.
 *
 * What it keeps true:
 * - An append resolves only when every replica of the current segment has fdatasync'd the record
 *   (ReplicatedJournal), so a FLUSH answered after it survives the loss of any r - 1 of them.
 * - Attach fences every replica of every segment at the new epoch before reading it, so the
 *   writer it replaces can gather no more acknowledgements; records are read from a fenced
 *   replica (every acknowledged record is on all of them) and handed over in LSN order.
 * - The layout in etcd changes only through fenced transactions (EtcdMeta.putJournal): a deposed
 *   writer cannot add, drop or trim segments. A segment leaves the layout before its files are
 *   deleted, and only once every record in it is folded.
 * - When a replica fails, the journal opens a new segment on other nodes and, before it answers
 *   the append there, has the cache fold every journaled extent: nothing acknowledged then
 *   depends on the segment that lost a copy.
 *
 * What it leaves out: choosing the folding policy (the cache's), and reading the journal for a
 * read-only view (refused beside a writer; see provider.ts).
 */
import { FencedError, PlacementError, UnavailableError, errorMessage, type Clock, systemClock } from '../core/index.js';
import type { CacheJournal, JournalWrite } from '../cache/index.js';
import {
  JournalFencedError,
  JournalReplicationError,
  JournalSegmentFullError,
  ReplicatedJournal,
  journalSegmentBytesDefault,
  journalRecordDataBytesMax,
  readSegment,
  writesOfRecord,
  type JournalRange,
  type JournalRecord,
} from '../journal/index.js';
import type { EtcdMeta, JournalLayout, JournalSegmentRecord, VolumeLock, VolumeRecord } from '../meta/index.js';
import { JournalNodeClient } from '../shard/index.js';
import type { VolumeCipher } from '../crypt/index.js';
import { journalClientFor, type SecretSource } from '../api/index.js';
import { journalCreateAttemptsMax, journalRotateBytesLeftMin, journalTrimDelayMs } from './limits.js';

/** A record read back at attach, in the cache's terms. */
export interface ReplayedRecord {
  readonly lsn: number;
  readonly epoch: number;
  readonly writes: readonly JournalWrite[];
}

/** A node that can hold journal segments. */
interface JournalNode {
  readonly name: string;
  readonly zone: string;
  readonly address: string;
  /** It serves TLS only (its etcd records say `tls: true`). */
  readonly tls: boolean;
  /** Free bytes it reported (capacity - used), for choosing among nodes. */
  readonly freeBytes: number;
}

export interface VolumeJournalOptions {
  readonly meta: EtcdMeta;
  readonly volume: VolumeRecord;
  readonly lock: VolumeLock;
  readonly replicas: number;
  /** The highest journal LSN any published generation of the volume holds (its extent records). */
  readonly lsnFloor?: number;
  readonly secrets: SecretSource;
  /** An encrypted volume's cipher: records are enciphered before they leave this process. */
  readonly cipher?: VolumeCipher;
  readonly clock?: Clock;
  readonly log?: (line: string) => void;
}

/** What a record read back holds, deciphered first when the volume is encrypted. */
function writesOf(r: JournalRecord, cipher: VolumeCipher | undefined): JournalWrite[] {
  if (cipher !== undefined) cipher.openRecordSync(r.data, r.epoch, r.lsn);
  return writesOfRecord(r);
}

export class VolumeJournal implements CacheJournal {
  private readonly meta: EtcdMeta;
  private readonly volume: VolumeRecord;
  private readonly lock: VolumeLock;
  private readonly log: (line: string) => void;
  private readonly clock: Clock;
  private readonly secrets: SecretSource;
  private readonly cipher: VolumeCipher | undefined;
  private readonly clients = new Map<string, JournalNodeClient>();
  private layout: JournalLayout;
  private current: ReplicatedJournal;
  private next: number;
  /** Bytes of each appended record after the folded LSN, for status. */
  private readonly recordBytes = new Map<number, number>();
  private trimming: Promise<void> | undefined;
  private trimWanted = false;
  private layoutChain: Promise<void> = Promise.resolve();
  private closed = false;
  /** Set by the frontend: folds every journaled extent (used before leaving a failed replica). */
  foldAll: () => Promise<void> = async () => undefined;

  private constructor(
    options: VolumeJournalOptions,
    layout: JournalLayout,
    current: ReplicatedJournal,
    nextLsn: number,
    clients: Map<string, JournalNodeClient>,
  ) {
    this.meta = options.meta;
    this.volume = options.volume;
    this.lock = options.lock;
    this.log = options.log ?? (() => undefined);
    this.clock = options.clock ?? systemClock;
    this.secrets = options.secrets;
    this.cipher = options.cipher;
    this.layout = layout;
    this.current = current;
    this.next = nextLsn;
    this.clients = clients;
  }

  /**
   * Opens the journal of a volume this writer holds the lock of: fences and reads every existing
   * segment (calling `replay` with each record after the folded LSN, in LSN order), then starts a
   * new segment for this epoch. Throws UnavailableError naming the segment when no replica of an
   * existing segment can be fenced and read: acknowledged writes may be there, so the attach must
   * not go on without them.
   */
  static async open(options: VolumeJournalOptions, replay: (record: ReplayedRecord) => void): Promise<VolumeJournal> {
    const { meta, volume, lock } = options;
    const log = options.log ?? (() => undefined);
    const clients = new Map<string, JournalNodeClient>();
    try {
      const nodes = await journalNodes(meta);
      const clientOf = (name: string): JournalNodeClient => {
        let c = clients.get(name);
        if (c === undefined) {
          const node = nodes.get(name);
          if (node === undefined)
            throw new UnavailableError(`Journal node "${name}" of volume "${volume.name}" is not registered`);
          c = journalClientFor(options.secrets, node);
          clients.set(name, c);
        }
        return c;
      };
      const existing = (await meta.getJournal(volume.id)) ?? {
        foldedLsn: 0,
        headLsn: 0,
        unfoldedBytes: 0,
        segments: [],
      };
      const records = new Map<number, ReplayedRecord>();
      // Above every LSN a published generation holds too: a flush publishes a whole extent with
      // the LSN of the last append try, which may have reached no replica (simulator seed 13).
      let highest = Math.max(existing.foldedLsn, existing.headLsn, options.lsnFloor ?? 0);
      /** Segments that hold records after the folded LSN: the rest are dropped below. */
      const live: JournalSegmentRecord[] = [];
      for (const seg of existing.segments) {
        const replicas = seg.replicas.filter((n) => nodes.has(n)).map(clientOf);
        const journal = new ReplicatedJournal({ volume: volume.id, epoch: lock.epoch, segment: seg.id, replicas });
        let fenced: readonly string[] = [];
        try {
          if (replicas.length > 0) fenced = (await journal.fence()).fenced;
        } catch (err) {
          if (err instanceof JournalFencedError) throw toFenced(err);
          log(`volume ${volume.name}: cannot fence journal segment ${seg.id}: ${errorMessage(err)}`);
        }
        let read = false;
        const why: string[] = [];
        for (const name of fenced) {
          try {
            let count = 0;
            await readSegment(
              clientOf(name),
              { volume: volume.id, segment: seg.id, fromLsn: existing.foldedLsn + 1 },
              (r) => {
                count += 1;
                highest = Math.max(highest, r.lsn);
                if (!records.has(r.lsn))
                  records.set(r.lsn, { lsn: r.lsn, epoch: r.epoch, writes: writesOf(r, options.cipher) });
              },
            );
            if (count > 0) live.push(seg);
            read = true;
            break;
          } catch (err) {
            why.push(`${name}: ${errorMessage(err)}`);
          }
        }
        if (!read) {
          throw new UnavailableError(
            `Cannot attach volume "${volume.name}": no replica of journal segment ${seg.id} (${seg.replicas.join(', ')}) could be fenced and read${why.length > 0 ? ` (${why.join('; ')})` : ''}; acknowledged writes may be there`,
          );
        }
      }
      for (const lsn of [...records.keys()].sort((a, b) => a - b)) replay(records.get(lsn)!);
      const nextLsn = highest + 1;
      const segmentId = Math.max(0, ...existing.segments.map((s) => s.id)) + 1;
      let created: { journal: ReplicatedJournal; chosen: JournalNode[] };
      try {
        created = await createSegment({
          volume: volume.id,
          epoch: lock.epoch,
          segment: segmentId,
          r: options.replicas,
          nodes: inAllowedZones(nodes, volume),
          avoid: new Set(),
          clientOf,
          log: (line) => log(`volume ${volume.name}: ${line}`),
        });
      } catch (err) {
        if (existing.segments.length === 0 && err instanceof PlacementError)
          throw new JournalUnavailableError(errorMessage(err), { cause: err });
        throw err;
      }
      const { journal: current, chosen } = created;
      const layout: JournalLayout = {
        foldedLsn: existing.foldedLsn,
        headLsn: highest,
        unfoldedBytes: existing.unfoldedBytes,
        segments: [
          ...live,
          { id: segmentId, epoch: lock.epoch, firstLsn: nextLsn, replicas: chosen.map((n) => n.name) },
        ],
      };
      await meta.putJournal(lock, volume.id, layout);
      // Segments with nothing left to replay are out of the layout now: delete their files.
      for (const seg of existing.segments.filter((s) => !live.includes(s))) {
        await Promise.allSettled(
          seg.replicas.filter((n) => nodes.has(n)).map((n) => clientOf(n).trim({ volume: volume.id, segment: seg.id })),
        );
      }
      log(
        `volume ${volume.name}: journal segment ${segmentId} on ${chosen.map((n) => n.name).join(', ')}; ${records.size} records replayed, next LSN ${nextLsn}`,
      );
      return new VolumeJournal(options, layout, current, nextLsn, clients);
    } catch (err) {
      for (const c of clients.values()) c.close();
      throw err;
    }
  }

  /**
   * For a read-only view of a volume no writer holds: every record after the folded LSN, read
   * (without fencing: there is no writer to fence) from the first replica of each segment that
   * answers, deduplicated by LSN and handed to `replay` in LSN order. So a cold reader sees what a
   * writer that died (or could not fold at detach) acknowledged. Throws UnavailableError naming the
   * segment when no replica of one can be read.
   */
  static async replayReadOnly(
    options: {
      readonly meta: EtcdMeta;
      readonly volume: VolumeRecord;
      readonly secrets: SecretSource;
      readonly cipher?: VolumeCipher | undefined;
    },
    replay: (record: ReplayedRecord) => void,
  ): Promise<number> {
    const { meta, volume } = options;
    const layout = await meta.getJournal(volume.id);
    if (layout === null || layout.segments.length === 0) return 0;
    const nodes = await journalNodes(meta);
    const records = new Map<number, ReplayedRecord>();
    const clients: JournalNodeClient[] = [];
    try {
      for (const seg of layout.segments) {
        const why: string[] = [];
        let read = false;
        for (const name of seg.replicas) {
          const node = nodes.get(name);
          if (node === undefined) {
            why.push(`${name}: not live`);
            continue;
          }
          const client = journalClientFor(options.secrets, node);
          clients.push(client);
          try {
            await readSegment(client, { volume: volume.id, segment: seg.id, fromLsn: layout.foldedLsn + 1 }, (r) => {
              if (!records.has(r.lsn))
                records.set(r.lsn, { lsn: r.lsn, epoch: r.epoch, writes: writesOf(r, options.cipher) });
            });
            read = true;
            break;
          } catch (err) {
            why.push(`${name}: ${errorMessage(err)}`);
          }
        }
        if (!read)
          throw new UnavailableError(
            `Cannot attach volume "${volume.name}" read-only: no replica of journal segment ${seg.id} can be read (${why.join('; ')}); flushed writes may be there`,
          );
      }
    } finally {
      for (const c of clients) c.close();
    }
    for (const lsn of [...records.keys()].sort((a, b) => a - b)) replay(records.get(lsn)!);
    return records.size;
  }

  get nextLsn(): number {
    return this.next;
  }

  /** Bytes of records appended after the folded LSN (as far as this writer knows). */
  get unfoldedBytes(): number {
    let total = 0;
    for (const b of this.recordBytes.values()) total += b;
    return total;
  }

  get foldedLsn(): number {
    return this.layout.foldedLsn;
  }

  async append(writes: readonly JournalWrite[]): Promise<number> {
    const ranges: JournalRange[] = writes.map((w) => ({ offset: w.offset, length: w.data.length }));
    const total = writes.reduce((s, w) => s + w.data.length, 0);
    if (total > journalRecordDataBytesMax) {
      // One record per part: LSNs stay consecutive, and the cache sees the last one.
      let start = 0;
      let bytes = 0;
      let last = this.next;
      for (let i = 0; i <= writes.length; i++) {
        const w = writes[i];
        if (w === undefined || (bytes + w.data.length > journalRecordDataBytesMax && i > start)) {
          last = await this.append(writes.slice(start, i));
          start = i;
          bytes = 0;
        }
        if (w !== undefined) bytes += w.data.length;
      }
      return last;
    }
    const data = new Uint8Array(total);
    let at = 0;
    for (const w of writes) {
      data.set(w.data, at);
      at += w.data.length;
    }
    for (let attempt = 0; ; attempt++) {
      // Every try takes a new LSN, used or not: a failed append may have landed on some replicas,
      // and replay must never find two contents under one LSN (the simulator's planted
      // 'reuse-failed-lsn' shows a stale record replayed over a newer generation otherwise).
      const lsn = this.next++;
      try {
        // Enciphered per try: each try has its own LSN, and so its own counter blocks.
        let body = data;
        if (this.cipher !== undefined) {
          body = data.slice();
          await this.cipher.sealRecord(body, this.lock.epoch, lsn);
        }
        const ack = await this.current.append({ lsn, ranges, data: body });
        this.recordBytes.set(lsn, ack.recordBytes);
        if (ack.bytesLeft < journalRotateBytesLeftMin) await this.rotate(new Set(), 'the segment is nearly full');
        return lsn;
      } catch (err) {
        if (err instanceof JournalFencedError) throw toFenced(err);
        if (this.closed || attempt >= 1) throw err;
        if (err instanceof JournalSegmentFullError) {
          await this.rotate(new Set(), 'the segment is full');
          continue;
        }
        if (err instanceof JournalReplicationError) {
          // Leave the failed replicas: fold what the old segment holds (so nothing acknowledged
          // depends on it any more), then append to a new segment on other nodes.
          const failed = new Set(err.failures.map((f) => f.replica));
          await this.rotate(failed, `replica ${[...failed].join(', ')} failed: ${errorMessage(err)}`);
          // Best effort: when the fold cannot publish now (too few shard targets), the records it
          // would have covered keep their r - 1 surviving copies until a later fold; say so.
          await this.foldAll().catch((foldErr: unknown) =>
            this.log(
              `volume ${this.volume.name}: cannot fold after losing a journal replica (${errorMessage(foldErr)}); records up to LSN ${lsn - 1} have ${this.current.replicas.length - failed.size} copies until they are folded`,
            ),
          );
          continue;
        }
        throw err;
      }
    }
  }

  /** Starts a new segment (on nodes other than `avoid` where possible) and records it in etcd. */
  private async rotate(avoid: ReadonlySet<string>, why: string): Promise<void> {
    const nodes = await journalNodes(this.meta);
    const id = Math.max(...this.layout.segments.map((s) => s.id)) + 1;
    const { journal: next, chosen } = await createSegment({
      volume: this.volume.id,
      epoch: this.lock.epoch,
      segment: id,
      r: this.current.replicas.length,
      nodes: inAllowedZones(nodes, this.volume),
      avoid,
      clientOf: (name) => {
        let c = this.clients.get(name);
        if (c === undefined) {
          c = journalClientFor(this.secrets, nodes.get(name)!);
          this.clients.set(name, c);
        }
        return c;
      },
      log: (line) => this.log(`volume ${this.volume.name}: ${line}`),
    });
    const segment: JournalSegmentRecord = {
      id,
      epoch: this.lock.epoch,
      firstLsn: this.next,
      replicas: chosen.map((n) => n.name),
    };
    await this.writeLayout((l) => ({ ...l, headLsn: this.next - 1, segments: [...l.segments, segment] }));
    this.current = next;
    this.log(`volume ${this.volume.name}: journal segment ${id} on ${segment.replicas.join(', ')} (${why})`);
  }

  /** Records up to `lsn` are folded: drop the segments wholly below it, from etcd, then from their nodes. */
  folded(lsn: number): void {
    if (this.closed || lsn <= this.layout.foldedLsn) return;
    for (const k of this.recordBytes.keys()) if (k <= lsn) this.recordBytes.delete(k);
    this.layout = { ...this.layout, foldedLsn: lsn };
    this.trimWanted = true;
    if (this.trimming !== undefined) return;
    this.trimming = (async () => {
      // Batch: several folds in a row make one etcd write.
      await new Promise<void>((resolve) => {
        const stop = this.clock.every(journalTrimDelayMs, () => {
          stop();
          resolve();
        });
      });
      while (this.trimWanted && !this.closed) {
        this.trimWanted = false;
        await this.trim().catch((err: unknown) =>
          this.log(
            `volume ${this.volume.name}: journal trim failed (will retry at the next fold): ${errorMessage(err)}`,
          ),
        );
      }
    })().finally(() => {
      this.trimming = undefined;
    });
  }

  /**
   * Writes the layout `next` computes from the current one, one write at a time: a trim and a
   * rotation racing must not write a layout built from a copy taken before the other's write
   * (that dropped the segment being appended to). A foldedLsn that advanced meanwhile is kept.
   */
  private writeLayout(next: (current: JournalLayout) => JournalLayout): Promise<void> {
    const run = this.layoutChain.then(async () => {
      const layout = next(this.layout);
      await this.meta.putJournal(this.lock, this.volume.id, layout);
      this.layout = { ...layout, foldedLsn: Math.max(layout.foldedLsn, this.layout.foldedLsn) };
    });
    this.layoutChain = run.catch(() => undefined);
    return run;
  }

  private async trim(): Promise<void> {
    let gone: JournalSegmentRecord[] = [];
    await this.writeLayout((l) => {
      const segs = l.segments;
      // A segment's records end where the next one's begin; the current one is never trimmed.
      gone = segs.filter((_, i) => i < segs.length - 1 && segs[i + 1]!.firstLsn - 1 <= l.foldedLsn);
      return {
        foldedLsn: l.foldedLsn,
        headLsn: this.next - 1,
        unfoldedBytes: this.unfoldedBytes,
        segments: segs.filter((s) => !gone.includes(s)),
      };
    });
    for (const s of gone) {
      await Promise.allSettled(
        s.replicas.map((name) => this.clients.get(name)?.trim({ volume: this.volume.id, segment: s.id })),
      );
    }
  }

  /**
   * Waits for a trim in flight; when every record is folded (a clean detach), drops every
   * segment, from etcd and then from the nodes; closes the node connections. Never throws.
   */
  async close(): Promise<void> {
    await this.trimming?.catch(() => undefined);
    this.closed = true;
    try {
      if (this.layout.foldedLsn >= this.next - 1) {
        let segments: readonly JournalSegmentRecord[] = [];
        await this.writeLayout((l) => {
          segments = l.segments;
          return { foldedLsn: l.foldedLsn, headLsn: this.next - 1, unfoldedBytes: 0, segments: [] };
        });
        for (const s of segments) {
          await Promise.allSettled(
            s.replicas.map((name) => this.clients.get(name)?.trim({ volume: this.volume.id, segment: s.id })),
          );
        }
      } else if (this.trimWanted) {
        await this.trim();
      }
    } catch (err) {
      this.log(`volume ${this.volume.name}: cannot trim the journal at detach: ${errorMessage(err)}`);
    }
    for (const c of this.clients.values()) c.close();
  }
}

/**
 * The volume has no journal to replay and fewer live journal nodes than its replicas: it can run
 * without a journal (every flush writes generations), and the frontend does so.
 */
export class JournalUnavailableError extends UnavailableError {
  override readonly name: string = 'JournalUnavailableError';
}

function toFenced(err: JournalFencedError): FencedError {
  return new FencedError(err.message);
}

/**
 * Creates segment `segment` on r nodes chosen by chooseReplicas(), choosing again without the
 * nodes that failed (a node whose lease has not expired yet looks alive), a few times.
 */
async function createSegment(options: {
  readonly volume: string;
  readonly epoch: number;
  readonly segment: number;
  readonly r: number;
  readonly nodes: ReadonlyMap<string, JournalNode>;
  readonly avoid: ReadonlySet<string>;
  readonly clientOf: (name: string) => JournalNodeClient;
  readonly log: (line: string) => void;
}): Promise<{ journal: ReplicatedJournal; chosen: JournalNode[] }> {
  const avoid = new Set(options.avoid);
  for (let attempt = 1; ; attempt++) {
    const chosen = chooseReplicas(options.nodes, options.r, avoid);
    const journal = new ReplicatedJournal({
      volume: options.volume,
      epoch: options.epoch,
      segment: options.segment,
      replicas: chosen.map((n) => options.clientOf(n.name)),
    });
    try {
      await journal.create();
      return { journal, chosen };
    } catch (err) {
      if (err instanceof JournalFencedError) throw toFenced(err);
      if (!(err instanceof JournalReplicationError) || attempt >= journalCreateAttemptsMax) throw err;
      for (const f of err.failures) avoid.add(f.replica);
      options.log(`cannot create journal segment ${options.segment} (${errorMessage(err)}); choosing other nodes`);
    }
  }
}

/** The journal nodes a volume pinned to zones may place new segments on (all, when it is not). */
function inAllowedZones(nodes: ReadonlyMap<string, JournalNode>, volume: VolumeRecord): Map<string, JournalNode> {
  const zones = volume.allowedZones;
  if (zones === undefined || zones.length === 0) return new Map(nodes);
  return new Map([...nodes].filter(([, n]) => zones.includes(n.zone)));
}

/** Registered, live storage nodes that serve the journal protocol, by name. */
async function journalNodes(meta: EtcdMeta): Promise<Map<string, JournalNode>> {
  const [targets, alive] = await Promise.all([meta.listTargets(), meta.listAlive()]);
  const up = new Map(alive.map((a) => [a.name, a]));
  const out = new Map<string, JournalNode>();
  for (const t of targets) {
    const a = up.get(t.name);
    const address = a?.journal ?? t.journal;
    if (t.kind !== 'node' || t.draining === true || a === undefined || address === undefined) continue;
    // A node that cannot hold a segment (a full disk, a tiny test node) is not a journal node.
    const freeBytes = Math.max(0, a.capacityBytes - a.usedBytes);
    if (freeBytes < journalSegmentBytesDefault) continue;
    out.set(t.name, { name: t.name, zone: t.zone, address, tls: a.tls === true || t.tls === true, freeBytes });
  }
  return out;
}

/**
 * r nodes for a segment: zones first (one node per zone before a second in any), the nodes in
 * `avoid` last, then the most free space, then by name. Throws PlacementError
 * when fewer than r nodes serve the journal.
 */
export function chooseReplicas(
  nodes: ReadonlyMap<string, JournalNode>,
  r: number,
  avoid: ReadonlySet<string>,
): JournalNode[] {
  const all = [...nodes.values()].sort(
    (a, b) => Number(avoid.has(a.name)) - Number(avoid.has(b.name)) || a.name.localeCompare(b.name),
  );
  if (all.length < r)
    throw new PlacementError(
      `Cannot place a journal segment on ${r} nodes: ${all.length} live nodes serve the journal (${all.map((n) => n.name).join(', ') || 'none'})`,
    );
  const chosen: JournalNode[] = [];
  const zones = new Map<string, number>();
  while (chosen.length < r) {
    const pick = all
      .filter((n) => !chosen.includes(n))
      .sort(
        (a, b) =>
          Number(avoid.has(a.name)) - Number(avoid.has(b.name)) ||
          (zones.get(a.zone) ?? 0) - (zones.get(b.zone) ?? 0) ||
          b.freeBytes - a.freeBytes ||
          a.name.localeCompare(b.name),
      )[0]!;
    chosen.push(pick);
    zones.set(pick.zone, (zones.get(pick.zone) ?? 0) + 1);
  }
  return chosen;
}
