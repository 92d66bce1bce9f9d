import { expect } from 'chai';
import { AssertionError, GiB, PlacementError, TiB, type TargetId, type ZoneId } from '../../../src/core/index.js';
import {
  assessPolicy,
  checkPolicy,
  createPlacer,
  explainPlacement,
  placeExtent,
  type PlacementPolicy,
  type ShardPlacement,
  type TargetInfo,
  type Topology,
} from '../../../src/placement/index.js';

/** A node with `freeBytes` free of 2 TiB; override anything with `extra`. */
function target(id: string, zone: string, freeBytes = 1 * TiB, extra: Partial<TargetInfo> = {}): TargetInfo {
  return {
    id: id as TargetId,
    zone: zone as ZoneId,
    kind: 'node',
    capacityBytes: 2 * TiB,
    usedBytes: 2 * TiB - freeBytes,
    up: true,
    ...extra,
  };
}

/** `perZone` nodes in each of `zones`, named "<zone>-<i>". */
function grid(zones: readonly string[], perZone: number): TargetInfo[] {
  return zones.flatMap((z) => Array.from({ length: perZone }, (_, i) => target(`${z}-${i}`, z)));
}

const p42 = (zonesRequired: number): PlacementPolicy => ({ k: 4, m: 2, zonesRequired, targets: 'node' });

function zoneCounts(placements: readonly ShardPlacement[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const p of placements) counts.set(p.zone, (counts.get(p.zone) ?? 0) + 1);
  return counts;
}

/** A deterministic shuffle (a fixed LCG), so the test needs no randomness of its own. */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  let s = seed >>> 0;
  for (let i = out.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    const a = out[i] as T;
    out[i] = out[j] as T;
    out[j] = a;
  }
  return out;
}

describe('checkPolicy()', () => {
  it('refuses 2 zones when 3 are required, naming both numbers and the zones', () => {
    const topology = { targets: grid(['a', 'b'], 4) };
    expect(() => checkPolicy(topology, p42(3))).to.throw(
      PlacementError,
      'Cannot meet placement policy 4+2 (zones 3, targets node): 3 zones with usable targets needed, 2 found (a, b)',
    );
  });

  it('refuses k+m above the number of usable targets, and says which were skipped and why', () => {
    const targets = [
      ...grid(['a', 'b'], 2),
      target('c-0', 'c', 1 * TiB, { up: false }),
      target('c-1', 'c', 0),
      target('s3-c', 'c', 1 * TiB, { kind: 's3' }),
    ];
    expect(() => checkPolicy({ targets }, p42(1))).to.throw(
      PlacementError,
      '6 distinct usable targets needed, 4 of 7 usable; 1 down (c-0); 1 wrong kind (s3-c); 1 full (c-1)',
    );
    expect(() => checkPolicy({ targets: grid(['a'], 5) }, p42(1))).to.throw(
      PlacementError,
      '6 distinct usable targets needed, 5 of 5',
    );
  });

  it('refuses zonesRequired above k+m: 1+1 cannot span 3 zones', () => {
    expect(() =>
      checkPolicy({ targets: grid(['a', 'b', 'c'], 2) }, { k: 1, m: 1, zonesRequired: 3, targets: 'any' }),
    ).to.throw(PlacementError, 'an extent has 2 shards, too few to span the 3 zones required');
  });

  it('accepts a policy that fits exactly, and one that fits but cannot survive a zone loss', () => {
    expect(() => checkPolicy({ targets: grid(['a', 'b', 'c'], 2) }, p42(3))).to.not.throw();
    const twoZones = assessPolicy({ targets: grid(['a', 'b'], 4) }, p42(2));
    expect(twoZones.refusal).to.equal(null);
    expect(twoZones.zoneCapShards).to.equal(3);
    expect(twoZones.zoneLossSurvivable).to.equal(false);
  });

  it('counts only targets of the wanted kind: s3 targets serve an s3 policy, both serve "any"', () => {
    const targets = [
      ...grid(['a', 'b', 'c'], 1),
      ...['a', 'b', 'c'].map((z) => target(`s3-${z}`, z, TiB, { kind: 's3' })),
    ];
    expect(() => checkPolicy({ targets }, { k: 2, m: 1, zonesRequired: 3, targets: 's3' })).to.not.throw();
    expect(() => checkPolicy({ targets }, { k: 4, m: 2, zonesRequired: 3, targets: 's3' })).to.throw(
      PlacementError,
      '3 of 6 usable',
    );
    expect(() => checkPolicy({ targets }, { k: 4, m: 2, zonesRequired: 3, targets: 'any' })).to.not.throw();
  });

  it('keeps a volume pinned to zones in them: other zones count as wrong zone, every shard lands inside', () => {
    const topology: Topology = { targets: grid(['a', 'b', 'c'], 3) };
    const pinned: PlacementPolicy = { k: 2, m: 1, zonesRequired: 1, targets: 'node', allowedZones: ['b'] };
    for (let e = 0; e < 50; e++)
      expect([...zoneCounts(placeExtent('vol', e, topology, pinned)).keys()], `extent ${e}`).to.deep.equal(['b']);
    expect(() => checkPolicy(topology, { ...pinned, k: 3 })).to.throw(
      PlacementError,
      /4 distinct usable targets needed, 3 of 9 usable; 6 wrong zone \(a-0, a-1/,
    );
    expect(() => checkPolicy(topology, { ...pinned, zonesRequired: 2 })).to.throw(
      PlacementError,
      /2 zones with usable targets needed, 1 found \(b\)/,
    );
    expect(JSON.stringify(explainPlacement('vol', 0, topology, pinned))).to.include(
      'wrong zone: a, the volume is pinned to b',
    );
  });

  it('raises the zone cap when a zone has too few targets, to the least any placement can reach', () => {
    // ceil(6 / 3) = 2, but zone a has 1 target: min(2,1) + 2 + 2 = 5 < 6, so the cap becomes 3.
    const targets = [target('a-0', 'a'), ...grid(['b', 'c'], 4)];
    const assessment = assessPolicy({ targets }, p42(3));
    expect(assessment.evenCapShards).to.equal(2);
    expect(assessment.zoneCapShards).to.equal(3);
    expect(assessment.zoneLossSurvivable).to.equal(false);
  });

  it('asserts on a malformed topology: duplicate ids and negative byte counts are bugs upstream', () => {
    expect(() => checkPolicy({ targets: [target('a-0', 'a'), target('a-0', 'b')] }, p42(1))).to.throw(
      AssertionError,
      'appears twice',
    );
    expect(() => checkPolicy({ targets: [target('a-0', 'a', 0, { usedBytes: -1 })] }, p42(1))).to.throw(
      AssertionError,
      'usedBytes',
    );
    expect(() => checkPolicy({ targets: grid(['a'], 6) }, { k: 0, m: 2, zonesRequired: 1, targets: 'node' })).to.throw(
      AssertionError,
    );
  });
});

describe('placeExtent()', () => {
  const nine: Topology = { targets: grid(['a', 'b', 'c'], 3) };

  it('is deterministic and ignores the order of topology.targets', () => {
    for (let extent = 0; extent < 200; extent++) {
      const first = placeExtent('pg-data', extent, nine, p42(3));
      expect(placeExtent('pg-data', extent, nine, p42(3))).to.deep.equal(first);
      const reordered = { targets: shuffled(nine.targets, extent + 1) };
      expect(placeExtent('pg-data', extent, reordered, p42(3))).to.deep.equal(first);
    }
  });

  it('differs between volumes and between extents (not one fixed layout)', () => {
    const layouts = new Set<string>();
    for (let extent = 0; extent < 50; extent++) {
      layouts.add(
        placeExtent('vol-a', extent, nine, p42(3))
          .map((p) => p.target)
          .join(),
      );
    }
    expect(layouts.size).to.be.above(40);
    const a = placeExtent('vol-a', 0, nine, p42(3)).map((p) => p.target);
    const b = placeExtent('vol-b', 0, nine, p42(3)).map((p) => p.target);
    const c = placeExtent('vol-c', 0, nine, p42(3)).map((p) => p.target);
    expect(a.join() === b.join() && b.join() === c.join()).to.equal(false);
  });

  it('returns k+m placements, shard i at index i, on distinct targets', () => {
    for (let extent = 0; extent < 500; extent++) {
      const placements = placeExtent('v', extent, nine, p42(3));
      expect(placements.map((p) => p.shard)).to.deep.equal([0, 1, 2, 3, 4, 5]);
      expect(new Set(placements.map((p) => p.target)).size).to.equal(6);
      for (const p of placements) expect(p.rank).to.be.at.least(1);
    }
  });

  it('puts exactly 2 shards in each of 3 zones of 2 nodes for 4+2, so any zone loss costs <= m', () => {
    const six = { targets: grid(['a', 'b', 'c'], 2) };
    for (let extent = 0; extent < 500; extent++) {
      const counts = zoneCounts(placeExtent('v', extent, six, p42(3)));
      expect([...counts.values()]).to.deep.equal([2, 2, 2]);
      for (const lost of ['a', 'b', 'c']) expect(counts.get(lost) ?? 0).to.be.at.most(2);
    }
  });

  it('spans at least zonesRequired zones even when the cap alone would allow fewer', () => {
    // 4 zones, cap 2: 2+2+2+0 would respect the cap, but zonesRequired 4 forbids leaving one empty.
    const twelve = { targets: grid(['a', 'b', 'c', 'd'], 3) };
    let threeZoneExtents = 0;
    for (let extent = 0; extent < 500; extent++) {
      expect(zoneCounts(placeExtent('v', extent, twelve, p42(4))).size).to.equal(4);
      const loose = zoneCounts(placeExtent('v', extent, twelve, p42(1)));
      expect(loose.size).to.be.at.least(3);
      for (const n of loose.values()) expect(n).to.be.at.most(2);
      if (loose.size === 3) threeZoneExtents++;
    }
    expect(threeZoneExtents, 'without the requirement some extents use only 3 zones').to.be.above(0);
  });

  it('places as evenly as the zones allow when a zone loss cannot be survived: 3 and 3 over 2 zones', () => {
    const eight = { targets: grid(['a', 'b'], 4) };
    for (let extent = 0; extent < 200; extent++) {
      expect([...zoneCounts(placeExtent('v', extent, eight, p42(2))).values()]).to.deep.equal([3, 3]);
    }
  });

  it('gives a target with 3x the free bytes about 3x the shards over 10k extents', () => {
    // 3 zones of 4 and 2+1: the cap puts exactly one shard in each zone, so inside zone a the
    // only force is the weight: a-0 (3 TiB free) against a-1..a-3 (1 TiB free each).
    const targets = grid(['a', 'b', 'c'], 4).map((t) =>
      t.id === 'a-0' ? target('a-0', 'a', 3 * TiB, { capacityBytes: 4 * TiB, usedBytes: 1 * TiB }) : t,
    );
    const placer = createPlacer({ targets }, { k: 2, m: 1, zonesRequired: 3, targets: 'node' });
    const shards = new Map<string, number>();
    for (let extent = 0; extent < 10_000; extent++) {
      for (const p of placer.place('weights', extent)) shards.set(p.target, (shards.get(p.target) ?? 0) + 1);
    }
    const heavy = shards.get('a-0') ?? 0;
    const light = ['a-1', 'a-2', 'a-3'].map((id) => shards.get(id) ?? 0);
    const lightMean = light.reduce((a, b) => a + b, 0) / light.length;
    expect(heavy / lightMean).to.be.within(2.7, 3.3);
    expect(heavy).to.be.within(4700, 5300); // expected 10000 * 3/6
  });

  it('gives nothing to down, full, over-full, zero-capacity and wrong-kind targets', () => {
    const bad = [
      target('a-down', 'a', TiB, { up: false }),
      target('b-full', 'b', 0),
      target('b-over', 'b', 0, { usedBytes: 3 * TiB }),
      target('c-zero', 'c', 0, { capacityBytes: 0, usedBytes: 0 }),
      target('c-s3', 'c', TiB, { kind: 's3' }),
    ];
    const topology = { targets: [...grid(['a', 'b', 'c'], 3), ...bad] };
    const badIds = new Set(bad.map((t) => t.id as string));
    const placer = createPlacer(topology, p42(3));
    for (let extent = 0; extent < 2000; extent++) {
      for (const p of placer.place('v', extent)) expect(badIds.has(p.target)).to.equal(false);
    }
    // A nearly full target still gets its (small) share: only 0 free means full.
    const almost = { targets: [...grid(['a', 'b', 'c'], 2), target('a-9', 'a', 1 * GiB)] };
    const almostPlacer = createPlacer(almost, p42(3));
    let onAlmost = 0;
    for (let extent = 0; extent < 20_000; extent++) {
      if (almostPlacer.place('v', extent).some((p) => p.target === 'a-9')) onAlmost++;
    }
    expect(onAlmost).to.be.above(0);
  });

  it('agrees with createPlacer().place() for every extent', () => {
    const placer = createPlacer(nine, p42(3));
    for (let extent = 0; extent < 100; extent++)
      expect(placer.place('v', extent)).to.deep.equal(placeExtent('v', extent, nine, p42(3)));
  });

  it('throws PlacementError when the policy cannot be met', () => {
    expect(() => placeExtent('v', 0, { targets: grid(['a', 'b'], 4) }, p42(3))).to.throw(PlacementError, '2 found');
  });

  it('keeps a golden layout (a change here moves data in every cluster)', () => {
    const targets = grid(['a', 'b', 'c'], 3);
    const layout = [0, 1, 2].map((extent) =>
      placeExtent('pg-data', extent, { targets }, p42(3))
        .map((p) => p.target)
        .join(' '),
    );
    expect(layout).to.deep.equal(GOLDEN_LAYOUT);
  });
});

const GOLDEN_LAYOUT: readonly string[] = [
  'b-0 b-1 a-1 c-0 a-2 c-2',
  'b-0 c-1 a-1 c-2 b-2 a-2',
  'b-2 a-1 b-0 a-0 c-1 c-2',
];

describe('explainPlacement()', () => {
  const topology: Topology = {
    targets: [
      ...grid(['a', 'b', 'c'], 3),
      target('c-down', 'c', TiB, { up: false }),
      target('b-full', 'b', 0),
      target('a-s3', 'a', TiB, { kind: 's3' }),
    ],
  };

  it('explains exactly what placeExtent() returns, with every skipped target and its reason', () => {
    for (let extent = 0; extent < 100; extent++) {
      const explanation = explainPlacement('pg-data', extent, topology, p42(3));
      const placements = placeExtent('pg-data', extent, topology, p42(3));
      expect(explanation.refusal).to.equal(null);
      expect(
        explanation.shards.map(({ shard, target: t, zone, score, rank }) => ({ shard, target: t, zone, score, rank })),
      ).to.deep.equal(placements);
      for (const s of explanation.shards) expect(s.targetsPassedOver.length).to.equal(s.rank - 1);
    }
    const text = explainPlacement('pg-data', 17, topology, p42(3)).lines.join('\n');
    expect(text).to.include('volume "pg-data" extent 17: policy 4+2 (zones 3, targets node)');
    expect(text).to.include('zone cap: 2 shards per zone (ceil(6 shards / 3 zones) = 2)');
    expect(text).to.include('survives a zone loss');
    expect(text).to.include('c-down (zone c, node): down');
    expect(text).to.include('b-full (zone b, node): full: 0 B free of 2 TiB');
    expect(text).to.include('a-s3 (zone a, s3): wrong kind: s3, policy wants node');
    for (let shard = 0; shard < 6; shard++)
      expect(text).to.match(new RegExp(`shard ${shard} \\((data|parity)\\) -> [abc]-\\d in zone [abc]`));
  });

  it('names the earlier shard that took each higher-ranked target', () => {
    let seen = 0;
    for (let extent = 0; extent < 50; extent++) {
      const explanation = explainPlacement('v', extent, topology, p42(3));
      for (const s of explanation.shards) {
        for (const passed of s.targetsPassedOver) {
          const holder = explanation.shards[passed.takenByShard];
          expect(holder?.target).to.equal(passed.target);
          expect(passed.takenByShard).to.be.below(s.shard);
          expect(s.reason).to.include(`${passed.target} taken by shard ${passed.takenByShard}`);
          seen++;
        }
      }
    }
    expect(seen).to.be.above(0);
  });

  it('warns when a zone loss cannot be survived, and when the cap was raised', () => {
    const twoZones = explainPlacement('v', 0, { targets: grid(['a', 'b'], 4) }, p42(2));
    expect(twoZones.zoneLossSurvivable).to.equal(false);
    expect(twoZones.maxShardsInOneZone).to.equal(3);
    expect(twoZones.lines.join('\n')).to.include(
      'losing a zone can cost 3 shards > m = 2: does NOT survive a zone loss',
    );
    expect(twoZones.warnings.join('\n')).to.include(
      '2 zones with usable targets cannot spread 6 shards at most 2 per zone',
    );

    const lopsided = explainPlacement('v', 0, { targets: [target('a-0', 'a'), ...grid(['b', 'c'], 4)] }, p42(3));
    expect(lopsided.zoneCapShards).to.equal(3);
    expect(lopsided.warnings.join('\n')).to.include(
      'zone cap raised from 2 to 3: zones with fewer than 2 usable targets: a (1)',
    );
  });

  it('carries the refusal instead of throwing, and survives a JSON round trip', () => {
    const refused = explainPlacement('v', 3, { targets: grid(['a', 'b'], 4) }, p42(3));
    expect(refused.refusal).to.include('3 zones with usable targets needed, 2 found (a, b)');
    expect(refused.shards).to.deep.equal([]);
    expect(refused.lines.join('\n')).to.include('refused: Cannot meet placement policy');
    const placed = explainPlacement('v', 3, topology, p42(3));
    expect(JSON.parse(JSON.stringify(placed))).to.deep.equal(placed);
    expect(JSON.parse(JSON.stringify(refused))).to.deep.equal(refused);
  });
});
