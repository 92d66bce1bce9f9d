// Random topologies and policies: placement either refuses with PlacementError, for a reason an
// independent check confirms, or returns a placement that meets every constraint.
import { expect } from 'chai';
import fc from 'fast-check';
import { PlacementError, type TargetId, type ZoneId } from '../../../src/core/index.js';
import {
  explainPlacement,
  placeExtent,
  type PlacementPolicy,
  type TargetInfo,
  type TargetKind,
} from '../../../src/placement/index.js';

const zoneNames = ['a', 'b', 'c', 'd', 'e'] as const;

// Biased toward usable targets so that about half the runs can be placed; the rest are refused.
const targetArb = fc.record({
  zone: fc.constantFrom(...zoneNames),
  kind: fc.oneof(
    { arbitrary: fc.constant<TargetKind>('node'), weight: 4 },
    { arbitrary: fc.constant<TargetKind>('s3'), weight: 1 },
  ),
  capacityBytes: fc.oneof(
    { arbitrary: fc.constant(0), weight: 1 },
    { arbitrary: fc.integer({ min: 1, max: 2 ** 40 }), weight: 12 },
  ),
  usedFraction: fc.oneof(
    { arbitrary: fc.constant(1), weight: 1 },
    { arbitrary: fc.constant(1.1), weight: 1 },
    { arbitrary: fc.double({ min: 0, max: 0.95, noNaN: true }), weight: 12 },
  ),
  up: fc.integer({ min: 0, max: 99 }).map((x) => x < 90),
});

const topologyArb = fc.array(targetArb, { minLength: 0, maxLength: 24, size: 'max' }).map((specs) =>
  specs.map((s, i): TargetInfo => ({
    id: `t-${i}` as TargetId,
    zone: s.zone as ZoneId,
    kind: s.kind,
    capacityBytes: s.capacityBytes,
    usedBytes: Math.round(s.capacityBytes * s.usedFraction),
    up: s.up,
  })),
);

const policyArb = fc.record({
  k: fc.integer({ min: 1, max: 6 }),
  m: fc.integer({ min: 0, max: 3 }),
  zonesRequired: fc.oneof(
    { arbitrary: fc.integer({ min: 1, max: 3 }), weight: 4 },
    { arbitrary: fc.integer({ min: 4, max: 6 }), weight: 1 },
  ),
  targets: fc.constantFrom<PlacementPolicy['targets']>('node', 'any', 'any', 's3'),
});

/** The usable targets by zone, computed without the placement code. */
function usableByZone(targets: readonly TargetInfo[], policy: PlacementPolicy): Map<string, TargetInfo[]> {
  const byZone = new Map<string, TargetInfo[]>();
  for (const t of targets) {
    const usable = t.up && (policy.targets === 'any' || t.kind === policy.targets) && t.capacityBytes - t.usedBytes > 0;
    if (!usable) continue;
    byZone.set(t.zone, [...(byZone.get(t.zone) ?? []), t]);
  }
  return byZone;
}

/** The least "most shards in one zone" that any placement of n distinct targets can reach. */
function leastZoneMax(zoneSizes: readonly number[], n: number): number {
  for (let c = 1; ; c++) if (zoneSizes.reduce((acc, size) => acc + Math.min(c, size), 0) >= n) return c;
}

describe('placeExtent() on random topologies and policies', () => {
  it('refuses exactly when the policy cannot be met, and otherwise meets every constraint', () => {
    let placed = 0;
    let refused = 0;
    fc.assert(
      fc.property(topologyArb, policyArb, fc.nat({ max: 2 ** 40 }), fc.nat(), (targets, policy, extent, seed) => {
        const n = policy.k + policy.m;
        const byZone = usableByZone(targets, policy);
        const usableCount = [...byZone.values()].reduce((acc, list) => acc + list.length, 0);
        const meetable = usableCount >= n && byZone.size >= policy.zonesRequired && n >= policy.zonesRequired;

        let placements;
        try {
          placements = placeExtent('prop', extent, { targets }, policy);
        } catch (err) {
          expect(err).to.be.instanceOf(PlacementError);
          expect(meetable, `refused a meetable policy: ${(err as Error).message}`).to.equal(false);
          refused++;
          return;
        }
        expect(meetable, 'placed an unmeetable policy').to.equal(true);
        placed++;

        expect(placements.length).to.equal(n);
        placements.forEach((p, i) => expect(p.shard).to.equal(i));
        expect(new Set(placements.map((p) => p.target)).size, 'distinct targets').to.equal(n);
        const byId = new Map(targets.map((t) => [t.id as string, t]));
        const counts = new Map<string, number>();
        for (const p of placements) {
          const t = byId.get(p.target);
          expect(t, 'a known target').to.not.equal(undefined);
          expect(t?.zone).to.equal(p.zone);
          expect(byZone.get(p.zone)?.includes(t as TargetInfo), `${p.target} is usable`).to.equal(true);
          expect(Number.isFinite(p.score) && p.score > 0).to.equal(true);
          counts.set(p.zone, (counts.get(p.zone) ?? 0) + 1);
        }
        const least = leastZoneMax(
          [...byZone.values()].map((l) => l.length),
          n,
        );
        const most = Math.max(...counts.values());
        expect(most, 'as even over zones as the zones allow').to.equal(least);
        if (least <= policy.m) expect(most, 'survives a zone loss whenever possible').to.be.at.most(policy.m);
        expect(counts.size, 'spans zonesRequired zones').to.be.at.least(policy.zonesRequired);

        // Order of the topology does not matter.
        const reversed = [...targets].reverse();
        const rotated = targets.map((_, i) => targets[(i + seed) % targets.length] as TargetInfo);
        expect(placeExtent('prop', extent, { targets: reversed }, policy)).to.deep.equal(placements);
        expect(placeExtent('prop', extent, { targets: rotated }, policy)).to.deep.equal(placements);

        // The explanation tells the same story.
        const explanation = explainPlacement('prop', extent, { targets }, policy);
        expect(explanation.shards.map((s) => s.target)).to.deep.equal(placements.map((p) => p.target));
        expect(explanation.zoneLossSurvivable).to.equal(most <= policy.m);
      }),
      { numRuns: 2000 },
    );
    // Both branches must be exercised, or the property says little.
    expect(placed, `placed ${placed}, refused ${refused}`).to.be.above(500);
    expect(refused, `placed ${placed}, refused ${refused}`).to.be.above(300);
  });
});
