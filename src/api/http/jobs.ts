/**
 * Background jobs one API server runs (a drain, a repair pass), and the repair backlog it saw over
 * time, from which GET /repair derives a rate and an ETA.
 *
 * What it keeps true: at most apiJobsMax jobs run at once, and one per kind and target (a second
 * drain of the same node is refused, not doubled); the newest jobsKept are listed; a job's
 * failure is recorded, never thrown at the server.
 * What it leaves out: jobs of other replicas and of `cairnctl repair --daemon` (the repairer's
 * own checkpoint, in etcd, is shown beside them).
 */
import { randomBytes } from 'node:crypto';
import { LimitExceededError, errorMessage } from '../../core/index.js';
import { PreconditionError } from '../../meta/index.js';
import type { EventHub } from './events.js';
import { apiJobsMax } from './limits.js';
import type { RepairSummary } from './ports.js';

/** Finished jobs listed besides the running ones. */
const jobsKept = 20;
/** Backlog readings kept (one per GET /cluster or /repair at most every backlogSampleMs). */
const backlogSamplesMax = 120;
const backlogSampleMs = 5_000;
/** The rate is measured over the readings of this last stretch of time. */
const backlogWindowMs = 15 * 60_000;

export interface JobView {
  readonly id: string;
  readonly kind: 'drain' | 'repair';
  readonly target: string | null;
  readonly state: 'running' | 'done' | 'failed';
  readonly startedAt: string;
  readonly by: string;
  readonly endedAt?: string;
  readonly result?: RepairSummary;
  readonly error?: string;
}

export class Jobs {
  private readonly jobs: JobView[] = [];
  private readonly backlog: { atMs: number; extents: number }[] = [];

  constructor(
    private readonly events: EventHub,
    private readonly log: (line: string) => void,
    private readonly nowMs: () => number = Date.now,
  ) {}

  /** Starts `run` in the background; returns the job as it starts. */
  start(kind: JobView['kind'], target: string | null, by: string, run: () => Promise<RepairSummary>): JobView {
    const running = this.jobs.filter((j) => j.state === 'running');
    const same = running.find((j) => j.kind === kind && j.target === target);
    if (same !== undefined)
      throw new PreconditionError(
        `A ${kind}${target === null ? '' : ` of ${target}`} is running already (job ${same.id}, started ${same.startedAt} by ${same.by})`,
      );
    if (running.length >= apiJobsMax)
      throw new LimitExceededError(`This API server runs ${apiJobsMax} jobs already; try again when one ends`);
    const job: JobView = {
      id: randomBytes(4).toString('hex'),
      kind,
      target,
      state: 'running',
      startedAt: new Date(this.nowMs()).toISOString(),
      by,
    };
    this.jobs.push(job);
    this.trim();
    this.events.publish({ type: 'job', at: job.startedAt, job });
    const finish = (update: Partial<JobView>): void => {
      const i = this.jobs.findIndex((j) => j.id === job.id);
      const done: JobView = { ...job, ...update, endedAt: new Date(this.nowMs()).toISOString() };
      if (i >= 0) this.jobs[i] = done;
      this.events.publish({ type: 'job', at: done.endedAt!, job: done });
      this.log(JSON.stringify({ msg: `${kind} job ${done.state}`, job: done }));
    };
    run().then(
      (result) => finish({ state: result.failed > 0 ? 'failed' : 'done', result }),
      (err: unknown) => finish({ state: 'failed', error: errorMessage(err) }),
    );
    return job;
  }

  /** Running jobs and the newest finished ones, newest first. */
  list(): JobView[] {
    return [...this.jobs].reverse();
  }

  /** Records the repair backlog seen now (at most one reading per backlogSampleMs). */
  noteBacklog(extents: number): void {
    const atMs = this.nowMs();
    const last = this.backlog[this.backlog.length - 1];
    if (last !== undefined && atMs - last.atMs < backlogSampleMs) return;
    this.backlog.push({ atMs, extents });
    if (this.backlog.length > backlogSamplesMax) this.backlog.shift();
  }

  /**
   * Extents repaired per second over the last backlogWindowMs, from the readings this server took:
   * (oldest backlog in the window - newest) / seconds between them. Null with fewer than two
   * readings 20 s apart. Negative when the backlog grows (nodes went down faster than repair).
   * Example: 120 extents at 12:00:00 and 60 at 12:01:00 -> 1 extent/s, ETA of the 60 left: 60 s.
   */
  backlogRate(): number | null {
    const now = this.nowMs();
    const recent = this.backlog.filter((s) => now - s.atMs <= backlogWindowMs);
    const first = recent[0];
    const last = recent[recent.length - 1];
    if (first === undefined || last === undefined || last.atMs - first.atMs < 20_000) return null;
    return (first.extents - last.extents) / ((last.atMs - first.atMs) / 1000);
  }

  private trim(): void {
    while (this.jobs.length > jobsKept) {
      const i = this.jobs.findIndex((j) => j.state !== 'running');
      if (i < 0) break;
      this.jobs.splice(i, 1);
    }
  }
}
