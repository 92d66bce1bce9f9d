/**
 * What placement reads (the topology: targets with zone, kind, capacity and health), what it is
 * asked for (a policy: k+m shards, a number of zones, a kind of target), and the one judgement
 * made before any extent is placed: can the policy be met, and with what per-zone cap.
 *
 * Keeps true: the answer depends on the set of targets, never on their order in the topology;
 * a policy is refused only when no placement could meet it, and the refusal names the numbers.
 * Leaves out: choosing targets for an extent (placer.ts) and wording for humans (explain.ts).
 */
import {
  PlacementError,
  assert,
  assertByteCount,
  formatBytes,
  shardCountMax,
  dataShardsMin,
  type TargetId,
  type ZoneId,
} from '../core/index.js';
import { reasonNamesMax, topologyTargetsMax } from './limits.js';

/** What a target is: a storage node's disks, or an S3 bucket. */
export type TargetKind = 'node' | 's3';

/** One place a shard can go, as registered in etcd (by a node's lease, or by an operator for S3). */
export interface TargetInfo {
  readonly id: TargetId;
  readonly zone: ZoneId;
  readonly kind: TargetKind;
  /** Bytes the target offers in total. A safe non-negative integer. */
  readonly capacityBytes: number;
  /**
   * Bytes in use. May exceed capacityBytes (a disk shrank, an S3 quota was lowered): the target is
   * then full, not broken.
   */
  readonly usedBytes: number;
  /** False while the target's lease is gone or its health check fails. Down targets get nothing. */
  readonly up: boolean;
}

/** Every target the cluster knows, in any order. Ids are unique. */
export interface Topology {
  readonly targets: readonly TargetInfo[];
}

/** Which kinds of target a volume's shards may use. */
export type TargetKindChoice = TargetKind | 'any';

/**
 * How a volume wants its extents placed.
 * @example { k: 4, m: 2, zonesRequired: 3, targets: 'node' } // 6 shards, at most 2 per zone
 */
export interface PlacementPolicy {
  /** Data shards per extent, >= 1. */
  readonly k: number;
  /** Parity shards per extent, >= 0. */
  readonly m: number;
  /**
   * The fewest distinct zones an extent's shards must span, >= 1. A topology whose usable targets
   * sit in fewer zones is refused; so is a profile with fewer shards than this.
   */
  readonly zonesRequired: number;
  readonly targets: TargetKindChoice;
  /**
   * The zones shards may go to (a volume pinned to zones, as CSI topology asks); absent or
   * empty: every zone.
   */
  readonly allowedZones?: readonly string[];
}

/** Why a target can or cannot take new shards, checked in this order. */
export type TargetStatus = 'usable' | 'down' | 'wrong-kind' | 'wrong-zone' | 'full';

/** Free bytes, never negative: a target over its capacity has 0 free. */
export function freeBytesOf(target: TargetInfo): number {
  return Math.max(0, target.capacityBytes - target.usedBytes);
}

/** The status of `target` under `policy`. A target with 0 free bytes is full: it gets no new shards. */
export function targetStatus(target: TargetInfo, policy: PlacementPolicy): TargetStatus {
  if (!target.up) return 'down';
  if (policy.targets !== 'any' && target.kind !== policy.targets) return 'wrong-kind';
  if (policy.allowedZones !== undefined && policy.allowedZones.length > 0 && !policy.allowedZones.includes(target.zone))
    return 'wrong-zone';
  if (freeBytesOf(target) <= 0) return 'full';
  return 'usable';
}

/** One line of why a target is skipped: "down", "wrong kind: s3, policy wants node", "full: 0 B free of 1 TiB". */
export function statusReason(target: TargetInfo, policy: PlacementPolicy): string {
  const status = targetStatus(target, policy);
  switch (status) {
    case 'usable':
      return `usable: ${formatBytes(freeBytesOf(target))} free`;
    case 'down':
      return 'down';
    case 'wrong-kind':
      return `wrong kind: ${target.kind}, policy wants ${policy.targets}`;
    case 'wrong-zone':
      return `wrong zone: ${target.zone}, the volume is pinned to ${(policy.allowedZones ?? []).join(', ')}`;
    case 'full':
      return `full: ${formatBytes(freeBytesOf(target))} free of ${formatBytes(target.capacityBytes)} (${formatBytes(target.usedBytes)} used)`;
  }
}

/** A zone as placement sees it for one policy: only its usable targets count. */
export interface ZoneAssessment {
  readonly zone: ZoneId;
  /** Usable targets in the zone, sorted by id. */
  readonly targets: readonly TargetInfo[];
  /** Sum of the usable targets' free bytes: the zone's weight when slots are drawn. */
  readonly freeBytes: number;
  /** Most shards of one extent this zone may hold: min(zoneCapShards, usable targets here). */
  readonly capShards: number;
}

/** The judgement on (topology, policy), made once and shared by every extent placed under it. */
export interface PolicyAssessment {
  readonly policy: PlacementPolicy;
  /** k + m. */
  readonly shardCount: number;
  /** Null when the policy can be met; else the reason, naming the numbers. */
  readonly refusal: string | null;
  /** Zones with at least one usable target, sorted by id. */
  readonly zones: readonly ZoneAssessment[];
  /** Every target of the topology with its status, sorted by id. */
  readonly verdicts: readonly { readonly target: TargetInfo; readonly status: TargetStatus }[];
  /** ceil(shardCount / zones): the cap if every zone had enough targets. 0 when there are no zones. */
  readonly evenCapShards: number;
  /**
   * The per-zone cap actually used: the smallest c >= evenCapShards with
   * sum over zones of min(c, usable targets in zone) >= shardCount. It is the least "most shards
   * in one zone" any placement can reach. 0 when refused.
   */
  readonly zoneCapShards: number;
  /** True when zoneCapShards <= m: losing any one zone costs at most m shards of an extent. */
  readonly zoneLossSurvivable: boolean;
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function listNames(names: readonly string[]): string {
  const shown = names.slice(0, reasonNamesMax).join(', ');
  return names.length > reasonNamesMax ? `${shown} and ${names.length - reasonNamesMax} more` : shown;
}

/** "4+2 (zones 3, targets node)": how refusals and explanations name a policy. */
export function formatPolicy(policy: PlacementPolicy): string {
  const pinned =
    policy.allowedZones !== undefined && policy.allowedZones.length > 0 ? `, in ${policy.allowedZones.join(' ')}` : '';
  return `${policy.k}+${policy.m} (zones ${policy.zonesRequired}, targets ${policy.targets}${pinned})`;
}

/**
 * Asserts the shape of a policy. Profiles are validated where users type them (core/profile.ts)
 * and zone counts where volumes are created, so a bad shape here is a bug, not a user's mistake.
 */
function assertPolicyShape(policy: PlacementPolicy): void {
  const { k, m, zonesRequired, targets } = policy;
  assert(Number.isSafeInteger(k) && k >= dataShardsMin, `policy k must be an integer >= ${dataShardsMin}, got ${k}`);
  assert(Number.isSafeInteger(m) && m >= 0, `policy m must be an integer >= 0, got ${m}`);
  assert(k + m <= shardCountMax, `policy k+m must be at most ${shardCountMax}, got ${k + m}`);
  assert(Number.isSafeInteger(zonesRequired) && zonesRequired >= 1, `zonesRequired must be >= 1, got ${zonesRequired}`);
  assert(targets === 'node' || targets === 's3' || targets === 'any', `unknown target kind choice ${String(targets)}`);
}

function assertTargetShape(target: TargetInfo): void {
  assert(target.id.length > 0 && target.zone.length > 0, 'target id and zone must be non-empty');
  assert(
    target.kind === 'node' || target.kind === 's3',
    `target "${target.id}" has unknown kind ${String(target.kind)}`,
  );
  assertByteCount(target.capacityBytes, `capacityBytes of target "${target.id}"`);
  assertByteCount(target.usedBytes, `usedBytes of target "${target.id}"`);
}

/** The smallest c >= start with sum(min(c, n_z)) >= shards; assumes sum(n_z) >= shards. */
function waterFillCap(start: number, zoneSizes: readonly number[], shards: number): number {
  // Each step raises the cap by one; it stops by max(n_z), so at most shardCountMax steps.
  for (let cap = start; ; cap++) {
    let room = 0;
    for (const n of zoneSizes) room += Math.min(cap, n);
    if (room >= shards) return cap;
    assert(cap <= shardCountMax, 'zone cap search ran past the widest profile');
  }
}

/**
 * Judges whether `policy` can be met by `topology` and with what per-zone cap. Never throws
 * PlacementError (see checkPolicy); asserts on malformed input (duplicate ids, bad byte counts).
 */
export function assessPolicy(topology: Topology, policy: PlacementPolicy): PolicyAssessment {
  assertPolicyShape(policy);
  const shardCount = policy.k + policy.m;
  const sorted = [...topology.targets].sort((a, b) => compareText(a.id, b.id));
  for (let i = 0; i < sorted.length; i++) {
    const target = sorted[i];
    assert(target !== undefined);
    assertTargetShape(target);
    assert(i === 0 || sorted[i - 1]?.id !== target.id, `target "${target.id}" appears twice in the topology`);
  }
  const verdicts = sorted.map((target) => ({ target, status: targetStatus(target, policy) }));

  const byZone = new Map<ZoneId, TargetInfo[]>();
  for (const { target, status } of verdicts) {
    if (status !== 'usable') continue;
    const list = byZone.get(target.zone);
    if (list === undefined) byZone.set(target.zone, [target]);
    else list.push(target);
  }
  const zoneIds = [...byZone.keys()].sort(compareText);
  const usableCount = verdicts.filter((v) => v.status === 'usable').length;

  const refuse = (refusal: string): PolicyAssessment => ({
    policy,
    shardCount,
    refusal: `Cannot meet placement policy ${formatPolicy(policy)}: ${refusal}`,
    zones: [],
    verdicts,
    evenCapShards: 0,
    zoneCapShards: 0,
    zoneLossSurvivable: false,
  });

  if (sorted.length > topologyTargetsMax) {
    return refuse(`the topology has ${sorted.length} targets, at most ${topologyTargetsMax} are supported`);
  }
  if (policy.zonesRequired > shardCount) {
    return refuse(`an extent has ${shardCount} shards, too few to span the ${policy.zonesRequired} zones required`);
  }
  if (usableCount < shardCount) {
    return refuse(
      `${shardCount} distinct usable targets needed, ${usableCount} of ${sorted.length} usable${skippedSummary(verdicts)}`,
    );
  }
  if (zoneIds.length < policy.zonesRequired) {
    return refuse(
      `${policy.zonesRequired} zones with usable targets needed, ${zoneIds.length} found (${listNames(zoneIds)})${skippedSummary(verdicts)}`,
    );
  }

  const evenCapShards = Math.ceil(shardCount / zoneIds.length);
  const zoneSizes = zoneIds.map((z) => byZone.get(z)?.length ?? 0);
  const zoneCapShards = waterFillCap(evenCapShards, zoneSizes, shardCount);
  const zones = zoneIds.map((zone): ZoneAssessment => {
    const targets = byZone.get(zone) ?? [];
    let freeBytes = 0;
    for (const t of targets) freeBytes += freeBytesOf(t);
    return { zone, targets, freeBytes, capShards: Math.min(zoneCapShards, targets.length) };
  });
  return {
    policy,
    shardCount,
    refusal: null,
    zones,
    verdicts,
    evenCapShards,
    zoneCapShards,
    zoneLossSurvivable: zoneCapShards <= policy.m,
  };
}

/** "; 1 down (c-1); 2 wrong kind (s3-a, s3-b)", or "" when every target is usable. */
function skippedSummary(verdicts: PolicyAssessment['verdicts']): string {
  const parts: string[] = [];
  for (const status of ['down', 'wrong-kind', 'wrong-zone', 'full'] as const) {
    const names = verdicts.filter((v) => v.status === status).map((v) => v.target.id);
    if (names.length > 0) parts.push(`${names.length} ${status.replace('-', ' ')} (${listNames(names)})`);
  }
  return parts.length > 0 ? `; ${parts.join('; ')}` : '';
}

/**
 * Throws PlacementError with a human reason when `policy` cannot be met by the up targets of the
 * allowed kind that have free space: fewer than k+m of them, fewer zones than zonesRequired, or
 * fewer shards than zonesRequired. A policy that can be met but cannot survive a zone loss (too
 * few zones for the profile) is not refused; assessPolicy() and explainPlacement() say so.
 *
 * @example
 * checkPolicy({ targets: twoZonesOfThree }, { k: 4, m: 2, zonesRequired: 3, targets: 'node' });
 * // PlacementError: Cannot meet placement policy 4+2 (zones 3, targets node):
 * //   3 zones with usable targets needed, 2 found (a, b)
 */
export function checkPolicy(topology: Topology, policy: PlacementPolicy): void {
  const { refusal } = assessPolicy(topology, policy);
  if (refusal !== null) throw new PlacementError(refusal);
}
