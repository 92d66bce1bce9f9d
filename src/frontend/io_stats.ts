/**
 * The frontend's IO counters for the API's chart (GET /api/v1/stats/io): NBD reads and writes
 * answered OK and their bytes, since this process started, written every ioStatsPublishMs to a
 * leased etcd key, `cairn/v1/frontend-stats/<owner>`. The lease (ioStatsLeaseSeconds) removes the
 * key of a frontend that died, so the API stops counting it.
 *
 * What it keeps true: counting is a few additions per request, off the request's path; a failed
 * write to etcd is logged once per failure streak and retried at the next tick, never thrown.
 * What it leaves out: per-volume counts (the NBD server reports a request's command and bytes,
 * not its export), so the chart shows the whole frontend.
 */
import { errorMessage } from '../core/index.js';
import type { FrontendStatsRecord } from '../api/index.js';
import { keys, type EtcdMeta } from '../meta/index.js';

/** How often the counters are written: the API samples every 10 s, so each sample sees a fresh value. */
export const ioStatsPublishMs = 5_000;
/** The key outlives its frontend by at most this: three missed writes. */
export const ioStatsLeaseSeconds = 15;

export class IoStatsPublisher {
  private readOps = 0;
  private writeOps = 0;
  private readBytes = 0;
  private writeBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private lease: ReturnType<EtcdMeta['client']['lease']> | undefined;
  private failing = false;

  constructor(
    private readonly meta: EtcdMeta,
    private readonly owner: string,
    private readonly log: (line: string) => void,
  ) {}

  /** An NbdServer onRequest observer: counts READ and WRITE requests answered OK. */
  observe(command: string, bytes: number): (outcome: string) => void {
    return (outcome) => {
      if (outcome !== 'OK') return;
      if (command === 'READ') {
        this.readOps += 1;
        this.readBytes += bytes;
      } else if (command === 'WRITE') {
        this.writeOps += 1;
        this.writeBytes += bytes;
      }
    };
  }

  start(): void {
    const tick = (): void => void this.publish();
    tick();
    this.timer = setInterval(tick, ioStatsPublishMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    const lease = this.lease;
    this.lease = undefined;
    await lease?.revoke().catch(() => undefined);
  }

  private async publish(): Promise<void> {
    const record: FrontendStatsRecord = {
      owner: this.owner,
      at: new Date().toISOString(),
      readOps: this.readOps,
      writeOps: this.writeOps,
      readBytes: this.readBytes,
      writeBytes: this.writeBytes,
    };
    try {
      if (this.lease === undefined || this.lease.revoked()) {
        const lease = this.meta.client.lease(ioStatsLeaseSeconds, { autoKeepAlive: true });
        lease.on('lost', () => {
          if (this.lease === lease) this.lease = undefined;
        });
        this.lease = lease;
      }
      await this.lease.put(keys.frontendStats(this.owner)).value(JSON.stringify(record)).exec();
      this.failing = false;
    } catch (err) {
      if (!this.failing) this.log(`io stats: cannot write ${keys.frontendStats(this.owner)}: ${errorMessage(err)}`);
      this.failing = true;
      const lease = this.lease;
      this.lease = undefined;
      lease?.revoke().catch(() => undefined);
    }
  }
}
