/** The process helpers the dev cluster and the test harness share: waiting and looking at pids. */
import { expect } from 'chai';
import { basename } from 'node:path';
import { CairnError } from '../../../src/core/index.js';
import { pidAlive, pidGone, pidRuns, waitFor } from '../../../src/dev/index.js';

describe('waitFor()', () => {
  it('returns the first value the condition gives that is neither undefined nor false', async () => {
    let calls = 0;
    const value = await waitFor(
      'the third call',
      () => (++calls === 3 ? 'third' : calls === 1 ? false : undefined),
      10_000,
      {
        intervalMs: 1,
      },
    );
    expect(value).to.equal('third');
    expect(calls).to.equal(3);
  });

  it('names what it waited for, the last error and what was seen when the deadline passes', async () => {
    let caught: unknown;
    try {
      await waitFor(
        'the impossible',
        () => {
          throw new Error('not yet');
        },
        0,
        { seen: () => 'nothing', intervalMs: 1 },
      );
    } catch (err) {
      caught = err;
    }
    expect(caught).to.be.instanceOf(CairnError);
    expect((caught as CairnError).code).to.equal('ETIMEDOUT');
    expect((caught as CairnError).message).to.equal(
      'Timed out after 0 ms waiting for the impossible: not yet; nothing',
    );
  });
});

describe('pidAlive(), pidGone(), pidRuns()', () => {
  it('see this process running its own command line', () => {
    expect(pidAlive(process.pid)).to.equal(true);
    expect(pidGone(process.pid)).to.equal(false);
    expect(pidRuns(process.pid, basename(process.argv[1]!))).to.equal(true);
    expect(pidRuns(process.pid, 'a needle no command line holds \u0001')).to.equal(false);
  });

  it('see no process behind a pid above the kernel maximum', () => {
    const pid = 2 ** 22 + 1; // pid_max is at most 2^22 on Linux
    expect(pidAlive(pid)).to.equal(false);
    expect(pidGone(pid)).to.equal(true);
    expect(pidRuns(pid, '')).to.equal(false);
  });
});
