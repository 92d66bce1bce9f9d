/**
 * What the CSI driver checks in a request before it acts, pure: names, capacities, volume
 * capabilities, StorageClass parameters and list tokens. Each refusal is a CsiError with the
 * specification's status code and the field named, so a CO (or a person reading its events)
 * knows what to fix. See controller.ts for where each is used.
 */
import { createHash } from 'node:crypto';
import { checkName, parseSize } from '../core/index.js';
import { parseLabels } from '../api/index.js';
import { status } from './status.js';

/** The gRPC status of a refused or failed CSI call (status.ts names the codes). */
export class CsiError extends Error {
  override readonly name = 'CsiError';
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

export const invalid = (field: string, why: string): CsiError =>
  new CsiError(status.INVALID_ARGUMENT, `${field}: ${why}`);

/** A required string field: present and not empty. */
export function required(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length === 0) throw invalid(field, 'required');
  return value;
}

/**
 * The Cairn name (volume or snapshot) for a CO's name. A name Cairn accepts as it is stays as it
 * is (Kubernetes' `pvc-<uuid>` and `snapshot-<uuid>` do); any other is folded to lowercase
 * letters, digits and '-' and suffixed with 12 hex digits of its sha256, so the same CO name
 * always gives the same Cairn name (CreateVolume is idempotent by name) and two differing ones
 * never collide in practice.
 */
export function cairnName(coName: string, field: string): string {
  if (coName.length === 0) throw invalid(field, 'required');
  if (coName.length > 128) throw invalid(field, `longer than 128 characters (${coName.length})`);
  // The specification's banned characters: control characters other than common whitespace.
  if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/.test(coName))
    throw invalid(field, 'holds a control character');
  try {
    return checkName(coName, 'volume');
  } catch {
    const folded = coName
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 48)
      .replace(/-+$/, '');
    const hash = createHash('sha256').update(coName).digest('hex').slice(0, 12);
    return folded.length === 0 ? `csi-${hash}` : `${folded}-${hash}`;
  }
}

/** A snapshot's CSI id: `VOL@SNAP`, the same spelling as its NBD export. */
export const snapshotId = (volume: string, snapshot: string): string => `${volume}@${snapshot}`;

/** int64 fields arrive as decimal strings (longs: String); 0 or absent means unset. */
export function int64(value: unknown, field: string): number {
  const text = typeof value === 'number' ? String(value) : typeof value === 'string' ? value : '0';
  if (!/^-?\d+$/.test(text)) throw invalid(field, `not an integer ("${text}")`);
  const n = Number(text);
  if (n < 0) throw invalid(field, `negative (${text})`);
  if (!Number.isSafeInteger(n)) throw invalid(field, `too large (${text})`);
  return n;
}

/** Volume sizes are whole 4 KiB blocks: a request is rounded up to one. */
export const sizeGrainBytes = 4096;
/** The size of a volume asked for with no capacity range. */
export const defaultVolumeBytes = 1024 ** 3;

/**
 * The size to provision for a capacity range: the required bytes rounded up to 4 KiB, or the
 * default (1 GiB, or the limit if lower); OUT_OF_RANGE when that exceeds the limit.
 */
export function sizeFor(range: { required_bytes?: unknown; limit_bytes?: unknown } | null | undefined): number {
  const required = int64(range?.required_bytes, 'capacity_range.required_bytes');
  const limit = int64(range?.limit_bytes, 'capacity_range.limit_bytes');
  if (limit > 0 && required > limit)
    throw invalid('capacity_range', `required_bytes ${required} is above limit_bytes ${limit}`);
  const roundUp = (n: number): number => Math.ceil(n / sizeGrainBytes) * sizeGrainBytes;
  let size = required > 0 ? roundUp(required) : defaultVolumeBytes;
  if (required === 0 && limit > 0 && limit < size) size = Math.floor(limit / sizeGrainBytes) * sizeGrainBytes;
  if (size === 0 || (limit > 0 && size > limit))
    throw new CsiError(
      status.OUT_OF_RANGE,
      `capacity_range: no size in whole ${sizeGrainBytes}-byte blocks fits between ${required} and ${limit} bytes`,
    );
  return size;
}

/** Whether a volume of `size` bytes satisfies a capacity range (for an idempotent re-create). */
export function fits(
  size: number,
  range: { required_bytes?: unknown; limit_bytes?: unknown } | null | undefined,
): boolean {
  const required = int64(range?.required_bytes, 'capacity_range.required_bytes');
  const limit = int64(range?.limit_bytes, 'capacity_range.limit_bytes');
  return size >= required && (limit === 0 || size <= limit);
}

/** Access modes Cairn serves: one writer at a time (the volume's lock), or readers of a snapshot. */
export const accessModes = [
  'SINGLE_NODE_WRITER',
  'SINGLE_NODE_READER_ONLY',
  'SINGLE_NODE_SINGLE_WRITER',
  'MULTI_NODE_READER_ONLY',
] as const;

/** Filesystems NodeStageVolume formats and mounts ('' means the default, ext4). */
export const fsTypes = ['', 'ext4', 'xfs'] as const;

export interface Capability {
  readonly kind: 'block' | 'mount';
  readonly fsType: string;
  readonly mountFlags: readonly string[];
  readonly mode: string;
}

/** Checks one VolumeCapability message; INVALID_ARGUMENT naming the field when it is malformed. */
export function capability(raw: unknown, field: string): Capability {
  if (raw === null || typeof raw !== 'object') throw invalid(field, 'required');
  const c = raw as {
    block?: unknown;
    mount?: { fs_type?: string; mount_flags?: string[] } | null;
    access_mode?: { mode?: string } | null;
    access_type?: string;
  };
  const kind = c.access_type ?? (c.block ? 'block' : c.mount ? 'mount' : undefined);
  if (kind !== 'block' && kind !== 'mount') throw invalid(`${field}.access_type`, 'required (block or mount)');
  const mode = c.access_mode?.mode;
  if (mode === undefined || mode === 'UNKNOWN') throw invalid(`${field}.access_mode.mode`, 'required');
  const fsType = kind === 'mount' ? (c.mount?.fs_type ?? '') : '';
  return { kind, fsType, mountFlags: kind === 'mount' ? (c.mount?.mount_flags ?? []) : [], mode };
}

/** Why Cairn cannot serve a (well-formed) capability, or undefined when it can. */
export function unsupported(c: Capability): string | undefined {
  if (!(accessModes as readonly string[]).includes(c.mode))
    return `access mode ${c.mode} is not served: a Cairn volume has one writer at a time (use ${accessModes.join(', ')})`;
  if (c.kind === 'mount' && !(fsTypes as readonly string[]).includes(c.fsType))
    return `filesystem "${c.fsType}" is not served (use ext4 or xfs)`;
  return undefined;
}

/** The volume_capabilities of a request: at least one, each well-formed. */
export function capabilities(raw: unknown, field = 'volume_capabilities'): Capability[] {
  if (!Array.isArray(raw) || raw.length === 0) throw invalid(field, 'required (at least one)');
  return raw.map((c, i) => capability(c, `${field}[${i}]`));
}

/** A volume's settings from StorageClass parameters (see docs/kubernetes.md for each). */
export interface VolumeParameters {
  readonly profile?: string;
  readonly zonesRequired?: number;
  readonly targets?: string;
  readonly durableShardsMin?: number;
  readonly journalReplicas?: number;
  readonly extentBytes?: number;
  /**
   * Labels policy rules select on: the `labels` parameter (`app=postgres,tier=prod`), and the
   * PVC's namespace and name as `pvc-namespace` and `pvc-name` when the provisioner passes them
   * (its --extra-create-metadata).
   */
  readonly labels?: Record<string, string>;
  /** `encrypted: "true"`: encrypt at rest; the KEK comes from the provisioner secret's `kek` key. */
  readonly encrypted?: boolean;
}

/** Parameter keys the provisioner adds itself (with --extra-create-metadata): read, not refused. */
const coPrefix = 'csi.storage.k8s.io/';
const coLabels: Record<string, string> = {
  'csi.storage.k8s.io/pvc/namespace': 'pvc-namespace',
  'csi.storage.k8s.io/pvc/name': 'pvc-name',
};

/** Parses StorageClass parameters; an unknown key or a bad value is INVALID_ARGUMENT naming it. */
export function volumeParameters(raw: Record<string, string> | null | undefined): VolumeParameters {
  const out: { -readonly [K in keyof VolumeParameters]: VolumeParameters[K] } = {};
  const count = (key: string, text: string): number => {
    if (!/^\d+$/.test(text)) throw invalid(`parameters.${key}`, `not a whole number ("${text}")`);
    return Number(text);
  };
  const labels: Record<string, string> = {};
  for (const [key, value] of Object.entries(raw ?? {})) {
    if (key.startsWith(coPrefix)) {
      const label = coLabels[key];
      if (label !== undefined && value !== '') labels[label] = value;
      continue;
    }
    switch (key) {
      case 'labels':
        try {
          Object.assign(labels, parseLabels(value, 'labels'));
        } catch (err) {
          throw invalid(`parameters.${key}`, (err as Error).message);
        }
        break;
      case 'profile':
        out.profile = value;
        break;
      case 'zones':
        out.zonesRequired = count(key, value);
        break;
      case 'targets':
        out.targets = value;
        break;
      case 'durableShards':
        out.durableShardsMin = count(key, value);
        break;
      case 'journalReplicas':
        out.journalReplicas = count(key, value);
        break;
      case 'extentSize':
        try {
          out.extentBytes = parseSize(value, 'extentSize');
        } catch (err) {
          throw invalid(`parameters.${key}`, (err as Error).message);
        }
        break;
      case 'encrypted':
        if (value !== 'true' && value !== 'false')
          throw invalid(`parameters.${key}`, `use "true" or "false" ("${value}")`);
        out.encrypted = value === 'true';
        break;
      default:
        throw invalid(
          `parameters.${key}`,
          'unknown (use profile, zones, targets, durableShards, journalReplicas, extentSize, encrypted or labels)',
        );
    }
  }
  if (Object.keys(labels).length > 0) out.labels = labels;
  return out;
}

/** The prefix of this driver's list tokens: anything else is not one it gave. */
const tokenPrefix = 'after:';

/**
 * A list's page of `entries` in the order of `keyOf`; `starting_token` names the key of the last
 * entry of the previous page (as this driver wrote it in `next_token`): the page starts after
 * it, so entries deleted or added meanwhile shift nothing (a page never skips an entry that was
 * there throughout). A token this driver never wrote is ABORTED, as the specification asks.
 */
export function page<T>(
  entries: readonly T[],
  request: { max_entries?: unknown; starting_token?: unknown },
  keyOf: (entry: T) => string,
): { entries: T[]; next: string } {
  const max = typeof request.max_entries === 'number' ? request.max_entries : 0;
  if (!Number.isSafeInteger(max) || max < 0) throw invalid('max_entries', `negative (${String(max)})`);
  // In code-unit order, the order the token's comparison uses.
  const all = [...entries].sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : keyOf(a) > keyOf(b) ? 1 : 0));
  const token = typeof request.starting_token === 'string' ? request.starting_token : '';
  let start = 0;
  if (token !== '') {
    let after: string;
    try {
      if (!token.startsWith(tokenPrefix)) throw new Error('no prefix');
      after = Buffer.from(token.slice(tokenPrefix.length), 'base64url').toString('utf8');
      if (after === '' || Buffer.from(after, 'utf8').toString('base64url') !== token.slice(tokenPrefix.length))
        throw new Error('not base64url');
    } catch {
      throw new CsiError(status.ABORTED, `starting_token "${token}" is not one this driver gave`);
    }
    start = all.findIndex((e) => keyOf(e) > after);
    if (start < 0) start = all.length;
  }
  const end = max === 0 ? all.length : Math.min(all.length, start + max);
  const last = all[end - 1];
  return {
    entries: all.slice(start, end),
    next:
      end < all.length && last !== undefined
        ? `${tokenPrefix}${Buffer.from(keyOf(last), 'utf8').toString('base64url')}`
        : '',
  };
}
