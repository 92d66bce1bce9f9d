/**
 * `cairnctl placement explain VOLUME EXTENT`: where each shard of an extent goes and why, as data
 * (printed with --json) and as lines of text for people.
 *
 * Keeps true: the placements explained are exactly those placeExtent() returns (it calls the same
 * placer), and every "passed over" claim is checked against the placement by an assertion.
 * Leaves out: reading the topology or the volume's policy (the CLI does), and where the shards of
 * the extent actually are today (the extent map knows; placement says where they should be).
 */
import { assert, formatBytes, type TargetId, type ZoneId } from '../core/index.js';
import { draw, drawPurpose, extentKey, hashText } from './hash.js';
import { explainPassedOverMax, reasonNamesMax } from './limits.js';
import { createPlacer, type ShardPlacement } from './placer.js';
import {
  assessPolicy,
  formatPolicy,
  freeBytesOf,
  statusReason,
  type PlacementPolicy,
  type PolicyAssessment,
  type TargetKind,
  type TargetStatus,
  type Topology,
} from './topology.js';

/** A higher-scoring target a shard did not get, and the earlier shard that had taken it. */
export interface PassedOverTarget {
  readonly target: TargetId;
  readonly score: number;
  readonly takenByShard: number;
}

/** A zone a shard ranked above the one it got, whose slots earlier shards had filled. */
export interface PassedOverZone {
  readonly zone: ZoneId;
  readonly filledByShards: readonly number[];
}

export interface ShardExplanation extends ShardPlacement {
  readonly role: 'data' | 'parity';
  /** One sentence: why this zone and this target. */
  readonly reason: string;
  readonly zonesPassedOver: readonly PassedOverZone[];
  readonly targetsPassedOver: readonly PassedOverTarget[];
}

export interface ZoneExplanation {
  readonly zone: ZoneId;
  readonly usableTargets: number;
  readonly freeBytes: number;
  /** Most shards of one extent this zone may hold. */
  readonly capShards: number;
  /** Shards of this extent in the zone, ascending. */
  readonly shards: readonly number[];
}

export interface TargetExplanation {
  readonly target: TargetId;
  readonly zone: ZoneId;
  readonly kind: TargetKind;
  readonly status: TargetStatus;
  /** "usable: 1.2 TiB free", "down", "wrong kind: s3, policy wants node", "full: 0 B free of 1 TiB". */
  readonly reason: string;
  readonly freeBytes: number;
  /** Shards of this extent on the target, ascending. */
  readonly shards: readonly number[];
}

/** Everything `placement explain` shows; JSON-safe (strings, finite numbers, booleans, null, arrays). */
export interface PlacementExplanation {
  readonly volume: string;
  readonly extent: number;
  readonly policy: PlacementPolicy;
  readonly shardCount: number;
  /** Null when placed; else why the policy cannot be met, and `shards` is empty. */
  readonly refusal: string | null;
  /** ceil(k+m / zones with usable targets). */
  readonly evenCapShards: number;
  /** The cap used: evenCapShards, raised when some zones have too few usable targets. */
  readonly zoneCapShards: number;
  /** True when no zone holds more than m shards of this extent. */
  readonly zoneLossSurvivable: boolean;
  readonly maxShardsInOneZone: number;
  /** Conditions an operator should act on: zone loss not survivable, cap raised. */
  readonly warnings: readonly string[];
  readonly shards: readonly ShardExplanation[];
  readonly zones: readonly ZoneExplanation[];
  readonly targets: readonly TargetExplanation[];
  /** The same, as text. */
  readonly lines: readonly string[];
}

function ordinalRank(rank: number): string {
  const tens = rank % 100;
  const suffix = tens >= 11 && tens <= 13 ? 'th' : (['th', 'st', 'nd', 'rd'][rank % 10] ?? 'th');
  return `${rank}${suffix}`;
}

function scoreText(score: number): string {
  return formatBytes(Math.round(score));
}

function listNumbers(numbers: readonly number[]): string {
  return numbers.length === 0 ? 'none' : numbers.join(', ');
}

function warningsOf(assessment: PolicyAssessment, maxShardsInOneZone: number): string[] {
  const warnings: string[] = [];
  const { policy, zones } = assessment;
  if (assessment.zoneCapShards > assessment.evenCapShards) {
    const small = zones.filter((z) => z.targets.length < assessment.evenCapShards);
    const names = small.slice(0, reasonNamesMax).map((z) => `${z.zone} (${z.targets.length})`);
    warnings.push(
      `zone cap raised from ${assessment.evenCapShards} to ${assessment.zoneCapShards}: ` +
        `zones with fewer than ${assessment.evenCapShards} usable targets: ${names.join(', ')}`,
    );
  }
  if (maxShardsInOneZone > policy.m) {
    const why =
      zones.length === 1
        ? 'all usable targets are in one zone'
        : `${zones.length} zones with usable targets cannot spread ${assessment.shardCount} shards ` +
          `at most ${policy.m} per zone`;
    warnings.push(
      `losing one zone can cost ${maxShardsInOneZone} shards, more than m = ${policy.m}: ` +
        `this extent does not survive a zone loss (${why}; add zones or targets)`,
    );
  }
  return warnings;
}

/**
 * Explains where each shard of `extent` of `volume` goes under `policy` and why: the zone cap and
 * how it was reached, the zone and rank of each shard's target, the higher-ranked zones and
 * targets it was passed over for (taken by earlier shards), and every skipped target with its
 * reason (down, wrong kind, full). Does not throw when the policy cannot be met: the explanation
 * then carries the refusal, the reason placeExtent() would throw.
 */
export function explainPlacement(
  volume: string,
  extent: number,
  topology: Topology,
  policy: PlacementPolicy,
  /** How the volume is named in the text; `volume` is the hash key (its stable id). */
  label: string = `volume "${volume}"`,
): PlacementExplanation {
  const assessment = assessPolicy(topology, policy);
  const head = `${label} extent ${extent}: policy ${formatPolicy(policy)}`;
  const targetsOf = (placements: readonly ShardPlacement[]): TargetExplanation[] =>
    assessment.verdicts.map(({ target, status }) => ({
      target: target.id,
      zone: target.zone,
      kind: target.kind,
      status,
      reason: statusReason(target, policy),
      freeBytes: freeBytesOf(target),
      shards: placements.filter((p) => p.target === target.id).map((p) => p.shard),
    }));

  if (assessment.refusal !== null) {
    const targets = targetsOf([]);
    const lines = [head, `refused: ${assessment.refusal}`, 'targets:'];
    for (const t of targets) lines.push(`  ${t.target} (zone ${t.zone}, ${t.kind}): ${t.reason}`);
    return {
      volume,
      extent,
      policy,
      shardCount: assessment.shardCount,
      refusal: assessment.refusal,
      evenCapShards: assessment.evenCapShards,
      zoneCapShards: assessment.zoneCapShards,
      zoneLossSurvivable: false,
      maxShardsInOneZone: 0,
      warnings: [],
      shards: [],
      zones: [],
      targets,
      lines,
    };
  }

  const placer = createPlacer(topology, policy);
  const placements = placer.place(volume, extent);
  const plan = placer.zonePlan(volume, extent);
  const key = extentKey(volume, extent);
  const zoneKeys = assessment.zones.map((z) => hashText(z.zone));

  const shards = placements.map((p): ShardExplanation => {
    const zoneIndex = plan.shardZones[p.shard] ?? -1;
    const zone = assessment.zones[zoneIndex];
    const zoneKey = zoneKeys[zoneIndex];
    assert(zone !== undefined && zoneKey !== undefined && zone.zone === p.zone);

    // Zones this shard ranked higher than its own, among zones with slots in this extent: each
    // must have been filled by earlier shards, or step 2 of the placer would have chosen it.
    const ownDraw = draw(key, drawPurpose.shardZone, p.shard, zoneKey);
    const zonesPassedOver: PassedOverZone[] = [];
    assessment.zones.forEach((other, z) => {
      const otherKey = zoneKeys[z];
      assert(otherKey !== undefined);
      const slots = plan.slotCounts[z] ?? 0;
      if (z === zoneIndex || slots === 0) return;
      if (draw(key, drawPurpose.shardZone, p.shard, otherKey) <= ownDraw) return;
      const filledByShards = plan.shardZones.flatMap((zz, shard) => (zz === z && shard < p.shard ? [shard] : []));
      assert(
        filledByShards.length === slots,
        `zone "${other.zone}" was passed over by shard ${p.shard} with room left`,
      );
      zonesPassedOver.push({ zone: other.zone, filledByShards });
    });

    // Targets of the zone that outscored the chosen one for this shard: each taken earlier.
    const targetsPassedOver: PassedOverTarget[] = [];
    for (const t of zone.targets) {
      if (t.id === p.target) continue;
      const score = freeBytesOf(t) / -Math.log(draw(key, drawPurpose.shardTarget, p.shard, hashText(t.id)));
      if (score <= p.score) continue;
      const holder = placements.find((q) => q.target === t.id);
      assert(
        holder !== undefined && holder.shard < p.shard,
        `target "${t.id}" outscored shard ${p.shard}'s choice but was free`,
      );
      targetsPassedOver.push({ target: t.id, score, takenByShard: holder.shard });
    }
    targetsPassedOver.sort((a, b) => b.score - a.score);
    assert(targetsPassedOver.length === p.rank - 1, `shard ${p.shard}: rank ${p.rank} disagrees with the scores`);

    const zoneWhy =
      zonesPassedOver.length === 0
        ? `zone ${p.zone} is its highest-ranked zone`
        : `zone ${p.zone} because higher-ranked ${zonesPassedOver
            .map((zp) => `${zp.zone} is full (shards ${zp.filledByShards.join(', ')})`)
            .join(', ')}`;
    const targetWhy =
      p.rank === 1
        ? `${p.target} has the highest score of ${zone.targets.length} in the zone`
        : `${p.target} is ${ordinalRank(p.rank)} of ${zone.targets.length}: ${targetsPassedOver
            .slice(0, explainPassedOverMax)
            .map((tp) => `${tp.target} taken by shard ${tp.takenByShard}`)
            .join(', ')}${targetsPassedOver.length > explainPassedOverMax ? ', ...' : ''}`;
    return {
      ...p,
      role: p.shard < policy.k ? 'data' : 'parity',
      reason: `${zoneWhy}; ${targetWhy}`,
      zonesPassedOver,
      targetsPassedOver,
    };
  });

  const zones = assessment.zones.map((z): ZoneExplanation => ({
    zone: z.zone,
    usableTargets: z.targets.length,
    freeBytes: z.freeBytes,
    capShards: z.capShards,
    shards: placements.filter((p) => p.zone === z.zone).map((p) => p.shard),
  }));
  const maxShardsInOneZone = Math.max(...zones.map((z) => z.shards.length));
  // The cap is the least maximum any placement can reach, so every placement reaches it exactly.
  assert(maxShardsInOneZone === assessment.zoneCapShards, 'a zone holds more or fewer shards than the cap');
  const warnings = warningsOf(assessment, maxShardsInOneZone);
  const targets = targetsOf(placements);

  const lines = [head];
  lines.push(
    `zone cap: ${assessment.zoneCapShards} shards per zone ` +
      `(ceil(${assessment.shardCount} shards / ${zones.length} zones) = ${assessment.evenCapShards}` +
      `${assessment.zoneCapShards > assessment.evenCapShards ? ', raised: some zones have too few targets' : ''}); ` +
      (maxShardsInOneZone <= policy.m
        ? `losing any one zone costs at most ${maxShardsInOneZone} shards <= m = ${policy.m}: survives a zone loss`
        : `losing a zone can cost ${maxShardsInOneZone} shards > m = ${policy.m}: does NOT survive a zone loss`),
  );
  for (const warning of warnings) lines.push(`warning: ${warning}`);
  lines.push(
    'score = free bytes / -ln(u), u in (0,1) hashed from (volume, extent, shard, target); ' +
      'in its zone a shard takes the highest-scoring target not taken by an earlier shard',
  );
  for (const s of shards) {
    lines.push(
      `shard ${s.shard} (${s.role}) -> ${s.target} in zone ${s.zone}, score ${scoreText(s.score)}: ${s.reason}`,
    );
  }
  lines.push('zones (slots drawn by weighted lot, weight = free bytes of usable targets):');
  for (const z of zones) {
    lines.push(
      `  ${z.zone}: shards ${listNumbers(z.shards)} (${z.shards.length} of cap ${z.capShards}); ` +
        `${z.usableTargets} usable targets, ${formatBytes(z.freeBytes)} free`,
    );
  }
  const skipped = targets.filter((t) => t.status !== 'usable');
  lines.push(skipped.length === 0 ? 'skipped targets: none' : 'skipped targets:');
  for (const t of skipped) lines.push(`  ${t.target} (zone ${t.zone}, ${t.kind}): ${t.reason}`);

  return {
    volume,
    extent,
    policy,
    shardCount: assessment.shardCount,
    refusal: null,
    evenCapShards: assessment.evenCapShards,
    zoneCapShards: assessment.zoneCapShards,
    zoneLossSurvivable: maxShardsInOneZone <= policy.m,
    maxShardsInOneZone,
    warnings,
    shards,
    zones,
    targets,
    lines,
  };
}
