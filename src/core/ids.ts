/**
 * Branded identifiers: a VolumeName cannot be passed where a TargetId is expected, though both are
 * strings at run time. Validation happens once, where text enters (CLI, API, etcd decode).
 */
import { InvalidArgumentError } from './errors.js';

declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

export type VolumeName = Brand<string, 'VolumeName'>;
/** A shard target: a storage node's name or a registered S3 target's name. */
export type TargetId = Brand<string, 'TargetId'>;
export type ZoneId = Brand<string, 'ZoneId'>;
export type SnapshotName = Brand<string, 'SnapshotName'>;

/**
 * Names users choose (volumes, nodes, zones, targets): 1-63 characters, lowercase letters, digits
 * and '-', starting and ending with a letter or digit. The same rule as a Kubernetes label value
 * (restricted to lowercase), so names survive being used in k8s objects, etcd keys and URLs.
 */
const namePattern = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function checkName(text: string, what: string): string {
  if (!namePattern.test(text)) {
    throw new InvalidArgumentError(
      `Invalid ${what} name "${text}": use 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
    );
  }
  return text;
}

export const volumeName = (text: string): VolumeName => checkName(text, 'volume') as VolumeName;
export const targetId = (text: string): TargetId => checkName(text, 'target') as TargetId;
export const zoneId = (text: string): ZoneId => checkName(text, 'zone') as ZoneId;
export const snapshotName = (text: string): SnapshotName => checkName(text, 'snapshot') as SnapshotName;

/**
 * `VOL@SNAP` (a snapshot, the NBD export name of its read-only view) or `VOL` (the volume): names
 * cannot hold '@', so the split is unambiguous. Both parts are checked.
 */
export function parseVolumeRef(text: string): { volume: VolumeName; snapshot: SnapshotName | undefined } {
  const at = text.indexOf('@');
  if (at < 0) return { volume: volumeName(text), snapshot: undefined };
  return { volume: volumeName(text.slice(0, at)), snapshot: snapshotName(text.slice(at + 1)) };
}
