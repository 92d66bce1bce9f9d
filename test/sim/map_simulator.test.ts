/**
 * The map-page simulator in `make test`: a few seeds of the real map code under page faults,
 * crashes between pages and root, takeovers, repairs swapping the root and gc racing commits;
 * and both planted bugs caught. `make sim` runs more seeds.
 */
import { expect } from 'chai';
import { runMapSimulation } from '../../src/sim/index.js';

describe('sim: map pages', function () {
  this.timeout(120_000);

  for (const seed of [1, 2, 3]) {
    it(`seed ${seed}: the published root always reads back as the model, whatever the faults`, async () => {
      const r = await runMapSimulation(seed, { steps: 80 });
      expect(r.ok, r.failure).to.equal(true);
      // The seed exercised what it claims to.
      expect(r.commits, 'commits').to.be.above(10);
    });
  }

  it('faults and gc happen across seeds (the checker had something to check)', async () => {
    let faults = 0;
    let collected = 0;
    for (const seed of [1, 2, 3]) {
      const r = await runMapSimulation(seed, { steps: 80 });
      faults += r.faults;
      collected += r.pagesCollected;
    }
    expect(faults, 'damaged page copies').to.be.above(0);
    expect(collected, 'page copies gc deleted').to.be.above(0);
  });

  it('snapshots, clones and resizes happen across seeds (each read against its own model)', async () => {
    let snapshots = 0;
    let clones = 0;
    let resizes = 0;
    for (const seed of [1, 2, 3]) {
      const r = await runMapSimulation(seed, { steps: 80 });
      snapshots += r.snapshots;
      clones += r.clones;
      resizes += r.resizes;
    }
    expect([snapshots > 0, clones > 0, resizes > 0], 'snapshots, clones and resizes made').to.deep.equal([
      true,
      true,
      true,
    ]);
  });

  // Each bug with a seed whose 80 steps reach it (a shrink is rare: seed 2's reaches one).
  for (const [bug, seed] of [
    ['map-swap-before-durable', 1],
    ['map-gc-reachable', 1],
    ['map-gc-ignores-snapshots', 1],
    ['clone-reads-parent', 1],
    ['shrink-keeps-tail', 2],
  ] as const)
    it(`catches the planted bug ${bug}`, async () => {
      const r = await runMapSimulation(seed, { steps: 80, bug });
      expect(r.ok, `${bug} went unnoticed`).to.equal(false);
      expect(r.failure).to.match(new RegExp(`seed ${seed} step \\d+: `));
    });
});
