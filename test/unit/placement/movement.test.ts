// How many shards move when the topology changes. Placement is deterministic, so these numbers are
// exact for the hash as it is; the bounds leave room for a deliberate change of hash or scoring.
//
// Why not "every moved shard moved to the new node": no pure placement function can promise it
// once targets must be distinct. An exhaustive search (the first test below) over every function
// from sets of 3..5 targets to 3 distinct ordered targets finds none that moves only shards
// landing on an added target. So the tests pin what can be promised exactly (shards leave only the zone of the change;
// every extent keeps its zone layout when the zone caps fix it) and bound the rest.
import { expect } from 'chai';
import { TiB, type TargetId, type ZoneId } from '../../../src/core/index.js';
import { createPlacer, type PlacementPolicy, type TargetInfo } from '../../../src/placement/index.js';

const extents = 5000;
const p42: PlacementPolicy = { k: 4, m: 2, zonesRequired: 3, targets: 'node' };

function node(id: string, zone: string, usedBytes = 1 * TiB): TargetInfo {
  return { id: id as TargetId, zone: zone as ZoneId, kind: 'node', capacityBytes: 2 * TiB, usedBytes, up: true };
}

function grid(zones: readonly string[], perZone: number): TargetInfo[] {
  return zones.flatMap((z) => Array.from({ length: perZone }, (_, i) => node(`${z}-${i}`, z)));
}

interface Movement {
  /** Shard slots compared: extents x (k+m). */
  readonly slots: number;
  /** Slots whose target changed. */
  readonly moved: number;
  /** Moved slots whose new target is `joined` (join) or whose old target is `left` (leave). */
  readonly explained: number;
  /** Moved slots whose zone changed. */
  readonly zoneChanges: number;
  /** Moved slots in zones other than `zone`. */
  readonly outsideZone: number;
  /** Slots on `joined` after, or on `left` before. */
  readonly onChanged: number;
}

function measure(
  before: readonly TargetInfo[],
  after: readonly TargetInfo[],
  policy: PlacementPolicy,
  change: { joined?: string; left?: string; zone: string },
): Movement {
  const placerBefore = createPlacer({ targets: before }, policy);
  const placerAfter = createPlacer({ targets: after }, policy);
  let slots = 0;
  let moved = 0;
  let explained = 0;
  let zoneChanges = 0;
  let outsideZone = 0;
  let onChanged = 0;
  for (let extent = 0; extent < extents; extent++) {
    const a = placerBefore.place('vol', extent);
    const b = placerAfter.place('vol', extent);
    for (let shard = 0; shard < a.length; shard++) {
      const was = a[shard];
      const now = b[shard];
      if (was === undefined || now === undefined) throw new Error('placement length changed');
      slots++;
      if (now.target === change.joined || was.target === change.left) onChanged++;
      if (was.target === now.target) continue;
      moved++;
      if (now.target === change.joined || was.target === change.left) explained++;
      if (was.zone !== now.zone) zoneChanges++;
      if (was.zone !== change.zone && now.zone !== change.zone) outsideZone++;
    }
  }
  return { slots, moved, explained, zoneChanges, outsideZone, onChanged };
}

/**
 * Is there any function f from sets of targets (drawn from `universe` targets, of size >= shards)
 * to an ordered list of `shards` distinct members, such that removing a target moves only the
 * shards that were on it? (Equivalently: adding one moves shards only onto it.) Backtracking from
 * the largest set down; each set's answer is pinned by its supersets' answers.
 */
function consistentPlacementExists(universe: number, shards: number): boolean {
  const sizeOf = (mask: number): number => {
    let size = 0;
    for (let v = mask; v !== 0; v &= v - 1) size++;
    return size;
  };
  const sets: number[] = [];
  for (let mask = 0; mask < 1 << universe; mask++) if (sizeOf(mask) >= shards) sets.push(mask);
  sets.sort((a, b) => sizeOf(b) - sizeOf(a));
  const answer = new Map<number, number[]>();
  const candidates = (set: number): number[][] => {
    const fixed: (number | undefined)[] = new Array<number | undefined>(shards).fill(undefined);
    for (let y = 0; y < universe; y++) {
      if ((set & (1 << y)) !== 0) continue;
      const above = answer.get(set | (1 << y));
      if (above === undefined) throw new Error('superset not yet decided');
      for (let p = 0; p < shards; p++) {
        const t = above[p] as number;
        if ((set & (1 << t)) === 0) continue; // position p held the removed target: free to change
        if (fixed[p] !== undefined && fixed[p] !== t) return [];
        fixed[p] = t;
      }
    }
    const out: number[][] = [];
    const fill = (p: number, used: number, acc: number[]): void => {
      if (p === shards) {
        out.push([...acc]);
        return;
      }
      const pinned = fixed[p];
      const options =
        pinned !== undefined ? [pinned] : [...Array(universe).keys()].filter((t) => (set & (1 << t)) !== 0);
      for (const t of options) {
        if ((used & (1 << t)) !== 0 || (pinned === undefined && fixed.includes(t))) continue;
        fill(p + 1, used | (1 << t), [...acc, t]);
      }
    };
    fill(0, 0, []);
    return out;
  };
  const search = (i: number): boolean => {
    const set = sets[i];
    if (set === undefined) return true;
    for (const choice of candidates(set)) {
      answer.set(set, choice);
      if (search(i + 1)) return true;
      answer.delete(set);
    }
    return false;
  };
  const full = sets[0] as number;
  answer.set(full, [...Array(shards).keys()]); // any answer for the full set, by symmetry
  return search(1);
}

function report(name: string, m: Movement, ideal: number): void {
  // One line per scenario, so a run's log shows the numbers behind the bounds.
  console.log(
    `      ${JSON.stringify({
      scenario: name,
      movedFraction: +(m.moved / m.slots).toFixed(4),
      ...(ideal > 0 ? { idealFraction: +ideal.toFixed(4), ratioToIdeal: +(m.moved / m.slots / ideal).toFixed(3) } : {}),
      movedToOrFromChanged: m.explained,
      movedOtherwise: m.moved - m.explained,
    })}`,
  );
}

describe('moving only the shards that land on a new target', () => {
  it('is possible for 2 shards, impossible for 3 shards over 5 targets (exhaustive search)', () => {
    expect(consistentPlacementExists(6, 2)).to.equal(true);
    expect(consistentPlacementExists(4, 3)).to.equal(true);
    expect(consistentPlacementExists(5, 3)).to.equal(false);
  });
});

describe('placement movement when targets join and leave (5000 extents, 4+2)', () => {
  const nine = grid(['a', 'b', 'c'], 3);

  it('adding a 10th node to 9 in 3 zones moves about the ideal, only inside its zone', () => {
    const ten = [...nine, node('a-3', 'a')];
    const m = measure(nine, ten, p42, { joined: 'a-3', zone: 'a' });
    // The ideal: 3 zones and 4+2 fix every zone at exactly 2 shards. Zone a now has 4 equal
    // nodes, so a-3 should hold 2 x 1/4 = 0.5 shards per extent, 0.5 / 6 = 1/12 of all shards.
    // (The naive (k+m)/N = 6/10 shards per extent ignores that the zone cap fixes zone a at 2.)
    const ideal = (2 * (1 / 4)) / 6;
    report('join a-3 (equal free bytes)', m, ideal);
    expect(m.onChanged / m.slots, 'a-3 receives its share').to.be.within(ideal * 0.9, ideal * 1.1);
    expect(m.moved / m.slots).to.be.at.most(1.5 * ideal);
    // Exact: the zone layout of every extent is unchanged, and zones b and c do not move at all.
    expect(m.zoneChanges).to.equal(0);
    expect(m.outsideZone).to.equal(0);
    // Bounded: moves inside zone a not onto a-3 (a shard moving to a-3 frees its old target for a
    // later shard of the extent that had ranked it first). Measured: 411 against 2445 onto a-3.
    expect(m.moved - m.explained).to.be.at.most(0.25 * m.explained);
  });

  it('adding an empty node (twice the free bytes of the others) moves about its larger share', () => {
    const ten = [...nine, node('a-3', 'a', 0)];
    const m = measure(nine, ten, p42, { joined: 'a-3', zone: 'a' });
    // Weights in zone a: 1, 1, 1 (TiB free) and 2 for a-3: ideal 2 x 2/5 shards per extent.
    const ideal = (2 * (2 / 5)) / 6;
    report('join empty a-3 (2x free bytes)', m, ideal);
    expect(m.onChanged / m.slots).to.be.within(ideal * 0.85, ideal * 1.1);
    expect(m.moved / m.slots).to.be.at.most(1.5 * ideal);
    expect(m.zoneChanges).to.equal(0);
    expect(m.outsideZone).to.equal(0);
  });

  it('removing a node moves its shards, plus a bounded few inside its zone', () => {
    const ten = [...nine, node('a-3', 'a')];
    const without = ten.filter((t) => t.id !== 'a-0');
    const m = measure(ten, without, p42, { left: 'a-0', zone: 'a' });
    report('leave a-0 (4 nodes in zone a -> 3)', m, m.onChanged / m.slots);
    expect(m.explained, 'every shard on a-0 moves').to.equal(m.onChanged);
    expect(m.zoneChanges).to.equal(0);
    expect(m.outsideZone).to.equal(0);
    // Measured 1.17x the shards that were on a-0.
    expect(m.moved).to.be.at.most(1.35 * m.onChanged);
  });

  it('removing a node that leaves its zone with exactly the cap moves only inside that zone', () => {
    const without = nine.filter((t) => t.id !== 'b-0');
    const m = measure(nine, without, p42, { left: 'b-0', zone: 'b' });
    report('leave b-0 (zone b 3 nodes -> 2 = cap)', m, m.onChanged / m.slots);
    expect(m.explained).to.equal(m.onChanged);
    expect(m.zoneChanges).to.equal(0);
    expect(m.outsideZone).to.equal(0);
    // With two nodes for two shards, zone b's shards may swap between b-1 and b-2. Measured 1.25x.
    expect(m.moved).to.be.at.most(1.5 * m.onChanged);
  });

  it('a node going down is a node leaving: the same shards move', () => {
    const down = nine.map((t) => (t.id === 'c-1' ? { ...t, up: false } : t));
    const gone = nine.filter((t) => t.id !== 'c-1');
    const placerDown = createPlacer({ targets: down }, p42);
    const placerGone = createPlacer({ targets: gone }, p42);
    for (let extent = 0; extent < 500; extent++)
      expect(placerDown.place('vol', extent)).to.deep.equal(placerGone.place('vol', extent));
  });

  it('moves little when free bytes drift: one node filling by 1% of its capacity', () => {
    const drifted = nine.map((t) =>
      t.id === 'b-1' ? node('b-1', 'b', t.usedBytes + Math.round(0.01 * t.capacityBytes)) : t,
    );
    const m = measure(nine, drifted, p42, { zone: 'b' });
    report('drift b-1 used +1% of capacity', m, 0);
    // b-1's weight drops 2% (1 TiB free -> 0.98 TiB); it should lose about that share of its
    // contests: ~2% x 2/3 shards per extent. Measured 0.24% of shards moved.
    expect(m.moved / m.slots).to.be.below(0.01);
    expect(m.zoneChanges).to.equal(0);
    expect(m.outsideZone).to.equal(0);
  });

  it('bounds movement when zone slot counts can change (4 zones, cap 2: 2+2+1+1)', () => {
    // Here the zones' weights decide which two zones hold 2 shards, so a change in one zone's
    // free bytes moves a slot between zones and re-deals shard indices: the price of weighting
    // zones by capacity. Measured 1.9x the shards the new node receives.
    const twelve = grid(['a', 'b', 'c', 'd'], 3);
    const m = measure(
      twelve,
      [...twelve, node('c-3', 'c')],
      { ...p42, zonesRequired: 1 },
      { joined: 'c-3', zone: 'c' },
    );
    report('join c-3 with 4 zones of 3', m, m.onChanged / m.slots);
    expect(m.moved).to.be.at.most(2.5 * m.onChanged);
  });
});
