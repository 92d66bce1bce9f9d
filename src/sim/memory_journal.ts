/**
 * The in-memory twin of a volume's replicated journal, as the cache uses it (CacheJournal): an
 * append is durable at once, unless a fault says otherwise. For unit and model tests and the
 * simulator; never instead of the journal on real nodes in integration tests.
 *
 * What it keeps true: LSNs increase by one per append, in call order, also across a crash of its
 * writer (a new writer continues after the highest LSN it replayed); `fenced` refuses an append
 * and keeps nothing of it; `failNext` fails appends retryably, keeping nothing; records up to the
 * folded LSN are trimmed.
 * What it leaves out: replicas, segments and their replacement (the real journal's business).
 */
import { FencedError, UnavailableError } from '../core/index.js';
import type { CacheJournal, JournalWrite } from '../cache/index.js';

export interface MemoryJournalRecord {
  readonly lsn: number;
  readonly epoch: number;
  readonly writes: readonly JournalWrite[];
}

export class MemoryJournal {
  /** Durable records, in LSN order. */
  readonly records: MemoryJournalRecord[] = [];
  foldedLsn = 0;
  /** The highest epoch a writer has used: appends of lower epochs are refused (node-side fencing). */
  epoch = 0;
  /** Appends to fail (retryably, nothing kept) before the next one succeeds. */
  failNext = 0;
  appends = 0;
  private lastLsn = 0;

  /** The highest LSN ever handed out. */
  get headLsn(): number {
    return this.lastLsn;
  }

  /** Records after the folded LSN, in order: what an attach replays. */
  unfolded(): readonly MemoryJournalRecord[] {
    return this.records.filter((r) => r.lsn > this.foldedLsn);
  }

  /** The journal as the writer at `epoch` reaches it; taking it fences every older writer. */
  writer(epoch: number): MemoryJournalWriter {
    this.epoch = Math.max(this.epoch, epoch);
    return new MemoryJournalWriter(this, epoch);
  }

  /** @internal Hands out the next LSN after `lsn` was used. */
  used(lsn: number): void {
    this.lastLsn = Math.max(this.lastLsn, lsn);
  }
}

/** One writer's view of a MemoryJournal (CacheJournal). */
export class MemoryJournalWriter implements CacheJournal {
  // LSNs a dead writer handed out but never made durable are not reused: a new writer starts
  // after the highest LSN ever handed out, as the real one starts after the highest it replayed.
  private next: number;

  constructor(
    private readonly journal: MemoryJournal,
    readonly epoch: number,
  ) {
    this.next = journal.headLsn + 1;
  }

  get nextLsn(): number {
    return this.next;
  }

  async append(writes: readonly JournalWrite[]): Promise<number> {
    const lsn = this.next++;
    this.journal.used(lsn);
    await Promise.resolve();
    if (this.journal.epoch > this.epoch)
      throw new FencedError(`Cannot append to the journal: epoch ${this.epoch} was fenced by ${this.journal.epoch}`);
    if (this.journal.failNext > 0) {
      this.journal.failNext -= 1;
      this.next = lsn; // the LSN was not used: the retry gets it again
      throw new UnavailableError(`Cannot append record ${lsn} to the journal: a replica did not answer`);
    }
    this.journal.appends += 1;
    this.journal.records.push({
      lsn,
      epoch: this.epoch,
      writes: writes.map((w) => ({ offset: w.offset, data: w.data.slice() })),
    });
    return lsn;
  }

  folded(lsn: number): void {
    const j = this.journal;
    if (j.epoch > this.epoch || lsn <= j.foldedLsn) return;
    j.foldedLsn = lsn;
    while (j.records.length > 0 && j.records[0]!.lsn <= lsn) j.records.shift();
  }
}
