/** Background jobs of one API server, and the repair rate from the backlog it saw. */
import { expect } from 'chai';
import { EventHub, apiJobsMax, type ApiEvent, type RepairSummary } from '../../../../src/api/index.js';
import { Jobs } from '../../../../src/api/http/jobs.js';

const summary: RepairSummary = {
  extentsTotal: 4,
  shardsRebuilt: 4,
  bytesWritten: 4096,
  failed: 0,
  unrecoverable: 0,
  errors: [],
};

describe('Jobs', () => {
  it('runs a job in the background, publishes its start and end, and records the result', async () => {
    const hub = new EventHub();
    const seen: ApiEvent[] = [];
    hub.subscribe((e) => seen.push(e));
    const jobs = new Jobs(hub, () => undefined);
    let finish!: (r: RepairSummary) => void;
    const job = jobs.start('drain', 'a-1', 'ops', () => new Promise((resolve) => (finish = resolve)));
    expect(job.state).to.equal('running');
    expect(() => jobs.start('drain', 'a-1', 'ops', async () => summary)).to.throw(/running already/);
    finish(summary);
    await new Promise((resolve) => setImmediate(resolve));
    expect(jobs.list()[0]).to.include({ id: job.id, state: 'done' });
    expect(seen.map((e) => (e['job'] as { state: string }).state)).to.deep.equal(['running', 'done']);
  });

  it('records a failing job as failed, with its message, and never throws at the caller', async () => {
    const jobs = new Jobs(new EventHub(), () => undefined);
    jobs.start('repair', null, 'ops', () => Promise.reject(new Error('etcd did not answer')));
    await new Promise((resolve) => setImmediate(resolve));
    expect(jobs.list()[0]).to.include({ state: 'failed', error: 'etcd did not answer' });
  });

  it(`refuses more than ${apiJobsMax} running jobs`, () => {
    const jobs = new Jobs(new EventHub(), () => undefined);
    const never = () => new Promise<RepairSummary>(() => undefined);
    for (let i = 0; i < apiJobsMax; i++) jobs.start('drain', `n-${i}`, 'ops', never);
    expect(() => jobs.start('drain', 'one-more', 'ops', never)).to.throw(/jobs already/);
  });

  it('derives the repair rate from the backlog over time: 120 -> 60 extents in 60 s is 1 extent/s', () => {
    let now = 0;
    const jobs = new Jobs(
      new EventHub(),
      () => undefined,
      () => now,
    );
    jobs.noteBacklog(120);
    expect(jobs.backlogRate()).to.equal(null);
    now = 2_000;
    jobs.noteBacklog(999); // within backlogSampleMs of the last reading: ignored
    now = 60_000;
    jobs.noteBacklog(60);
    expect(jobs.backlogRate()).to.equal(1);
  });
});
