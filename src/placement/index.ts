/**
 * Placement: which target holds each shard of an extent, from (volume, extent, topology, policy)
 * alone. Pure and synchronous; the only entry other layers import.
 *
 * - checkPolicy / assessPolicy: can a policy be met by a topology, with what per-zone cap.
 * - placeExtent, or createPlacer(...).place for many extents under one topology.
 * - explainPlacement: the same answer with its reasons, for `cairnctl placement explain`.
 */
export {
  assessPolicy,
  checkPolicy,
  formatPolicy,
  freeBytesOf,
  statusReason,
  targetStatus,
  type PlacementPolicy,
  type PolicyAssessment,
  type TargetInfo,
  type TargetKind,
  type TargetKindChoice,
  type TargetStatus,
  type Topology,
  type ZoneAssessment,
} from './topology.js';
export { createPlacer, placeExtent, type Placer, type ShardPlacement, type ZonePlan } from './placer.js';
export {
  explainPlacement,
  type PassedOverTarget,
  type PassedOverZone,
  type PlacementExplanation,
  type ShardExplanation,
  type TargetExplanation,
  type ZoneExplanation,
} from './explain.js';
export { explainPassedOverMax, reasonNamesMax, topologyTargetsMax } from './limits.js';
