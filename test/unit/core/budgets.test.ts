import { expect } from 'chai';
import { ClientBudget, LimitLog, WaitingBudget, completeLimits } from '../../../src/core/index.js';

describe('WaitingBudget', () => {
  it('grants waiters in the order they asked, so a large request is not starved by small ones', () => {
    const budget = new WaitingBudget(10);
    const granted: string[] = [];
    expect(budget.tryTake(8, () => granted.push('first'))).to.equal(true);
    expect(budget.tryTake(6, () => granted.push('large'))).to.equal(false);
    // Fits the room left, but waits behind the large request.
    expect(budget.tryTake(2, () => granted.push('small'))).to.equal(false);
    budget.give(8);
    expect(granted).to.deep.equal(['large', 'small']);
    expect(budget.inUse).to.equal(8);
  });

  it('runs a request larger than the whole budget alone instead of never', async () => {
    const budget = new WaitingBudget(10);
    const small = await budget.take(1);
    let granted = false;
    const large = budget.take(25).then((release) => {
      granted = true;
      return release;
    });
    await Promise.resolve();
    expect(granted).to.equal(false);
    small();
    small(); // a second release gives nothing back twice
    const release = await large;
    expect(budget.inUse).to.equal(25);
    release();
    expect(budget.inUse).to.equal(0);
  });

  it('withdraws a cancelled request and grants the next one', () => {
    const budget = new WaitingBudget(4);
    const granted: string[] = [];
    budget.tryTake(4, () => undefined);
    const gone = (): void => void granted.push('gone');
    budget.tryTake(4, gone);
    budget.tryTake(1, () => granted.push('next'));
    expect(budget.cancel(gone)).to.equal(true);
    expect(budget.cancel(gone)).to.equal(false);
    budget.give(4);
    expect(granted).to.deep.equal(['next']);
  });
});

describe('ClientBudget and LimitLog', () => {
  it('refuses past the client share before the total, and logs one line per interval', () => {
    const budget = new ClientBudget(3, 2);
    expect(budget.take('a', 1)).to.equal(undefined);
    expect(budget.take('a', 1)).to.equal(undefined);
    expect(budget.take('a', 1)).to.equal('client');
    expect(budget.take('b', 1)).to.equal(undefined);
    expect(budget.take('c', 1)).to.equal('total');
    let now = 0;
    const lines: string[] = [];
    const hits: string[] = [];
    const log = new LimitLog<'connections'>(
      (l) => lines.push(l),
      (h) => hits.push(h),
      1000,
      () => now,
    );
    log.hit('connections', 'one');
    log.hit('connections', 'two');
    now = 1000;
    log.hit('connections', 'three');
    expect(lines).to.deep.equal([
      'limit connections: one',
      'limit connections: three (and 1 more times since the last line)',
    ]);
    expect(hits).to.have.length(3);
  });
});

describe('completeLimits()', () => {
  const defaults = { totalMax: 10, perClientMax: 4 };
  it('fills defaults and refuses a bound that is not a whole number above 0, or a share above its whole', () => {
    const pairs = [['perClientMax', 'totalMax']] as const;
    expect(completeLimits('test', defaults, { totalMax: 20 }, pairs)).to.deep.equal({ totalMax: 20, perClientMax: 4 });
    expect(() => completeLimits('test', defaults, { totalMax: 0 }, pairs)).to.throw(/Invalid test limit totalMax: 0/);
    expect(() => completeLimits('test', defaults, { perClientMax: 1.5 }, pairs)).to.throw(/perClientMax: 1.5/);
    expect(() => completeLimits('test', defaults, { perClientMax: 11 }, pairs)).to.throw(
      /perClientMax \(11\) is above totalMax \(10\)/,
    );
  });
});
