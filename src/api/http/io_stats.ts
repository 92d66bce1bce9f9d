/**
 * Client IO rates for the dashboard's chart. Each frontend publishes its cumulative counters (NBD
 * read and write requests and bytes since it started) to a leased key,
 * `cairn/v1/frontend-stats/<owner>`, every few seconds; the API server reads them every
 * ioSampleIntervalMs and keeps one hour of rates in a ring (ioSamplesMax samples).
 *
 * The rate between two samples is the growth of each frontend's counters over the time between
 * the frontends' own timestamps. A frontend that restarted (its counters went down) counts from
 * zero; one that appeared counts from its first sample; one that went away stops counting.
 * Example: a frontend at 1000 writes at 12:00:00 and 1600 at 12:00:10 -> 60 write IOPS.
 *
 * What it leaves out: history from before this server started (each replica has its own ring) and
 * IO of frontends that do not publish (older versions).
 */
import { errorMessage } from '../../core/index.js';
import { keys, type EtcdMeta } from '../../meta/index.js';
import { ioSampleIntervalMs, ioSamplesMax } from './limits.js';

export interface IoCounters {
  readonly readOps: number;
  readonly writeOps: number;
  readonly readBytes: number;
  readonly writeBytes: number;
}

/** What a frontend publishes (frontend/serve.ts). */
export interface FrontendStatsRecord extends IoCounters {
  readonly owner: string;
  /** ISO 8601 time the counters were read. */
  readonly at: string;
  /** The same counters per volume, when the frontend knows them. */
  readonly volumes?: Readonly<Record<string, IoCounters>>;
}

export interface IoRate {
  readonly readIops: number;
  readonly writeIops: number;
  readonly readBytesPerSecond: number;
  readonly writeBytesPerSecond: number;
}

const zero: IoCounters = { readOps: 0, writeOps: 0, readBytes: 0, writeBytes: 0 };
const fields = ['readOps', 'writeOps', 'readBytes', 'writeBytes'] as const;

function growth(now: IoCounters, before: IoCounters | undefined): IoCounters {
  const b = before ?? zero;
  // Counters that went down belong to a restarted frontend: all of `now` is new.
  const reset = fields.some((f) => now[f] < b[f]);
  const base = reset ? zero : b;
  return {
    readOps: now.readOps - base.readOps,
    writeOps: now.writeOps - base.writeOps,
    readBytes: now.readBytes - base.readBytes,
    writeBytes: now.writeBytes - base.writeBytes,
  };
}

const rateOf = (c: IoCounters, seconds: number): IoRate => ({
  readIops: c.readOps / seconds,
  writeIops: c.writeOps / seconds,
  readBytesPerSecond: c.readBytes / seconds,
  writeBytesPerSecond: c.writeBytes / seconds,
});

function add(a: IoCounters, b: IoCounters): IoCounters {
  return {
    readOps: a.readOps + b.readOps,
    writeOps: a.writeOps + b.writeOps,
    readBytes: a.readBytes + b.readBytes,
    writeBytes: a.writeBytes + b.writeBytes,
  };
}

/** Pure: the ring of rates from successive readings of every frontend's record. */
export class IoRing {
  private last: Map<string, FrontendStatsRecord> | undefined;
  private lastAtMs = 0;
  private readonly series: (IoRate & { at: string })[] = [];
  private volumes: { volume: string; rate: IoRate }[] = [];
  private totals: IoCounters = zero;
  private sampledAt: string | null = null;
  private frontends = 0;

  /** Adds one reading, taken at `atMs`, of every frontend's record. */
  sample(records: readonly FrontendStatsRecord[], atMs: number): void {
    const now = new Map(records.map((r) => [r.owner, r]));
    this.totals = records.reduce<IoCounters>((sum, r) => add(sum, r), zero);
    this.frontends = records.length;
    this.sampledAt = new Date(atMs).toISOString();
    if (this.last !== undefined) {
      const seconds = (atMs - this.lastAtMs) / 1000;
      if (seconds > 0) {
        let sum = zero;
        const perVolume = new Map<string, IoCounters>();
        for (const [owner, r] of now) {
          const before = this.last.get(owner);
          sum = add(sum, growth(r, before));
          for (const [volume, c] of Object.entries(r.volumes ?? {}))
            perVolume.set(volume, add(perVolume.get(volume) ?? zero, growth(c, before?.volumes?.[volume])));
        }
        this.series.push({ at: this.sampledAt, ...rateOf(sum, seconds) });
        if (this.series.length > ioSamplesMax) this.series.splice(0, this.series.length - ioSamplesMax);
        this.volumes = [...perVolume.entries()]
          .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
          .map(([volume, c]) => ({ volume, rate: rateOf(c, seconds) }));
      }
    }
    this.last = now;
    this.lastAtMs = atMs;
  }

  report() {
    return {
      intervalMs: ioSampleIntervalMs,
      windowMs: ioSampleIntervalMs * ioSamplesMax,
      sampledAt: this.sampledAt,
      frontends: this.frontends,
      totals: this.totals,
      series: [...this.series],
      volumes: this.volumes.map((v) => ({ volume: v.volume, ...v.rate })),
    };
  }
}

/** Samples etcd every ioSampleIntervalMs into an IoRing. */
export class IoStats {
  readonly ring = new IoRing();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly meta: EtcdMeta,
    private readonly log: (line: string) => void,
  ) {}

  start(): void {
    const tick = (): void => {
      this.sampleOnce().catch((err: unknown) =>
        this.log(JSON.stringify({ msg: 'cannot sample frontend stats', error: errorMessage(err) })),
      );
    };
    tick();
    this.timer = setInterval(tick, ioSampleIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
  }

  async sampleOnce(): Promise<void> {
    const all = await this.meta.client.getAll().prefix(keys.frontendStatsPrefix()).strings();
    const records: FrontendStatsRecord[] = [];
    for (const text of Object.values(all)) {
      try {
        records.push(JSON.parse(text) as FrontendStatsRecord);
      } catch {
        // A malformed record is skipped, not fatal: the chart loses one frontend.
      }
    }
    this.ring.sample(records, Date.now());
  }

  report() {
    return this.ring.report();
  }
}
