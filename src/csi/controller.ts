/**
 * The CSI Identity and Controller services over Cairn's control plane (api/): volumes, clones,
 * snapshots, expansion, capacity. Requests are checked first (requests.ts), then acted on; every
 * call is idempotent as the specification asks (a repeated CreateVolume with the same name and
 * a compatible request returns the same volume; deleting what is gone succeeds).
 *
 * Ids: a volume's id is its Cairn name (from the CO's name, see cairnName); a snapshot's is
 * `VOL@SNAP`, its NBD export name. A volume cloned from a volume (content source `volume`) is
 * cloned from a snapshot of the source taken for it, `csi-clone-<hash of the clone's name>`,
 * which goes when the clone is deleted.
 *
 * Work only a writer can do (a snapshot or a grow of a volume no frontend holds) is done by
 * attaching it in this process for the moment (`frontend`); a volume a frontend holds is asked
 * through etcd, as cairnctl does.
 */
import { createHash } from 'node:crypto';
import { CairnError, errorMessage, formatProfile, parseProfile } from '../core/index.js';
import { NotFoundError, type EtcdMeta, type SnapshotRecord, type VolumeRecord } from '../meta/index.js';
import { cloneVolume, createVolume, resizeVolume, takeSnapshot, volumeBytesMax } from '../api/index.js';
import { parseKek, type Kek } from '../crypt/index.js';
import type { VolumeFrontend } from '../frontend/index.js';
import {
  CsiError,
  cairnName,
  capabilities,
  fits,
  invalid,
  page,
  required,
  sizeFor,
  snapshotId,
  unsupported,
  volumeParameters,
  type Capability,
} from './requests.js';
import { status } from './status.js';

/** The driver's name, as CSIDriver objects and StorageClass provisioners name it. */
export const driverName = 'csi.cairn.io';
/** The topology key of a node's zone (NodeGetInfo) and of GetCapacity's segments. */
export const zoneTopologyKey = 'topology.cairn.io/zone';

export interface ControllerOptions {
  readonly meta: EtcdMeta;
  /**
   * Runs `work` with a frontend in this process that attaches volumes for work only a writer can
   * do, and detaches them (flush, fold, lock released) when it ends.
   */
  readonly withFrontend: <T>(work: (frontend: VolumeFrontend) => Promise<T>) => Promise<T>;
  /** Who this driver is, in locks and requests. */
  readonly owner: string;
  /** Starts collecting what a deletion freed, in the background. */
  readonly startGc: () => void;
  readonly version: string;
  readonly log: (line: string) => void;
  /**
   * Offer VOLUME_ACCESSIBILITY_CONSTRAINTS: CreateVolume pins a volume to the zones its
   * `accessibility_requirements` require (`topology.cairn.io/zone`), and nodes must report their
   * zone (csi serve --node --zone). Off: volumes go anywhere and are reachable from every node.
   */
  readonly topology?: boolean;
}

type Message = Record<string, unknown>;

/** One CSI Snapshot message for a Cairn snapshot. */
function snapshotMessage(volume: VolumeRecord, s: SnapshotRecord): Message {
  const ms = Date.parse(s.createdAt);
  return {
    size_bytes: String(s.sizeBytes),
    snapshot_id: snapshotId(volume.name, s.name),
    source_volume_id: volume.name,
    creation_time: { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 },
    ready_to_use: true,
  };
}

function volumeMessage(v: VolumeRecord, source?: Message): Message {
  return {
    capacity_bytes: String(v.sizeBytes),
    volume_id: v.name,
    volume_context: {
      profile: formatProfile(v.profile),
      extentBytes: String(v.extentBytes),
      zones: String(v.zonesRequired),
      targets: v.targets,
    },
    ...(source === undefined ? {} : { content_source: source }),
    ...(v.allowedZones === undefined || v.allowedZones.length === 0
      ? {}
      : { accessible_topology: v.allowedZones.map((zone) => ({ segments: { [zoneTopologyKey]: zone } })) }),
  };
}

/**
 * The zones `accessibility_requirements` require: those of its `requisite` topologies (none: no
 * requirement). Every segment must be `topology.cairn.io/zone`.
 */
export function requiredZones(raw: unknown): string[] {
  const req = raw as
    | { requisite?: { segments?: Record<string, string> }[]; preferred?: { segments?: Record<string, string> }[] }
    | null
    | undefined;
  if (req === null || req === undefined) return [];
  const zones = new Set<string>();
  for (const [list, name] of [
    [req.requisite ?? [], 'requisite'],
    [req.preferred ?? [], 'preferred'],
  ] as const)
    for (const [i, t] of list.entries())
      for (const [key, value] of Object.entries(t.segments ?? {})) {
        if (key !== zoneTopologyKey)
          throw invalid(`accessibility_requirements.${name}[${i}].segments.${key}`, `unknown (use ${zoneTopologyKey})`);
        if (name === 'requisite') zones.add(value);
      }
  return [...zones].sort();
}

/** A Snapshot id split, or undefined when it is not one this driver makes. */
function parseSnapshotId(id: string): { volume: string; snapshot: string } | undefined {
  const at = id.indexOf('@');
  if (at <= 0 || at === id.length - 1) return undefined;
  return { volume: id.slice(0, at), snapshot: id.slice(at + 1) };
}

/** How long DeleteVolume waits for a volume's frontend to detach before refusing. */
export const detachWaitMs = 10_000;

const cloneSnapshotPrefix = 'csi-clone-';
const cloneSnapshotName = (clone: string): string =>
  `${cloneSnapshotPrefix}${createHash('sha256').update(clone).digest('hex').slice(0, 16)}`;

export class CsiController {
  constructor(private readonly options: ControllerOptions) {}

  // ---- Identity ----

  getPluginInfo(): Message {
    return { name: driverName, vendor_version: this.options.version, manifest: {} };
  }

  getPluginCapabilities(controller: boolean): Message {
    return {
      capabilities: [
        ...(controller ? [{ service: { type: 'CONTROLLER_SERVICE' } }] : []),
        ...(this.options.topology === true ? [{ service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } }] : []),
        // OFFLINE: a volume grows at once (online, for its frontend), but a node sees the new
        // size only when it stages the volume again (NBD tells a client of no size change), so
        // the CO is told to expand while the volume is not in use.
        { volume_expansion: { type: 'OFFLINE' } },
      ],
    };
  }

  /** Ready when etcd answers and holds a cluster; otherwise the error names what is missing. */
  async probe(): Promise<Message> {
    try {
      await this.options.meta.requireCluster();
    } catch (err) {
      throw new CsiError(status.FAILED_PRECONDITION, `Not ready: ${errorMessage(err)}`);
    }
    return { ready: { value: true } };
  }

  // ---- Controller ----

  controllerGetCapabilities(): Message {
    const rpcs = [
      'CREATE_DELETE_VOLUME',
      'LIST_VOLUMES',
      'GET_CAPACITY',
      'CREATE_DELETE_SNAPSHOT',
      'LIST_SNAPSHOTS',
      'CLONE_VOLUME',
      'EXPAND_VOLUME',
    ];
    return { capabilities: rpcs.map((type) => ({ rpc: { type } })) };
  }

  async createVolume(req: Message): Promise<Message> {
    const { meta } = this.options;
    const name = cairnName(required(req['name'], 'name'), 'name');
    const caps = capabilities(req['volume_capabilities']);
    for (const [i, c] of caps.entries()) {
      const why = unsupported(c);
      if (why !== undefined) throw invalid(`volume_capabilities[${i}]`, why);
    }
    const range = req['capacity_range'] as Message | null | undefined;
    const size = sizeFor(range);
    const params = volumeParameters(req['parameters'] as Record<string, string> | undefined);
    // Pinned to the required zones that hold storage (the volume must be reachable from one).
    let zones = this.options.topology === true ? requiredZones(req['accessibility_requirements']) : [];
    if (zones.length > 0) {
      const known = new Set((await meta.listTargets()).map((t) => t.zone));
      const present = zones.filter((z) => known.has(z));
      if (present.length === 0)
        throw new CsiError(
          status.RESOURCE_EXHAUSTED,
          `accessibility_requirements: no storage in zone ${zones.join(', ')} (zones: ${[...known].sort().join(', ')})`,
        );
      // Every zone with storage allowed (a CO lists them all when nothing restricts the volume):
      // no pin, so zones added later serve it too.
      zones = present.length === known.size ? [] : present;
    }
    const source = req['volume_content_source'] as
      | { snapshot?: { snapshot_id?: string } | null; volume?: { volume_id?: string } | null; type?: string }
      | null
      | undefined;
    const fromSnapshot = source?.snapshot
      ? required(source.snapshot.snapshot_id, 'volume_content_source.snapshot.snapshot_id')
      : undefined;
    const fromVolume = source?.volume
      ? required(source.volume.volume_id, 'volume_content_source.volume.volume_id')
      : undefined;
    const sourceMessage =
      fromSnapshot !== undefined
        ? { snapshot: { snapshot_id: fromSnapshot } }
        : fromVolume !== undefined
          ? { volume: { volume_id: fromVolume } }
          : undefined;

    const existing = await meta.getVolume(name);
    if (existing !== null) {
      // Idempotent: the same name with a compatible request is the same volume.
      const parent = existing.parent;
      const sameSource =
        fromSnapshot !== undefined
          ? parent !== undefined && snapshotId(parent.volume, parent.snapshot) === fromSnapshot
          : fromVolume !== undefined
            ? parent !== undefined && parent.volume === fromVolume
            : true;
      if (!fits(existing.sizeBytes, range) || !sameSource)
        throw new CsiError(
          status.ALREADY_EXISTS,
          `Volume "${name}" exists with ${existing.sizeBytes} bytes${parent === undefined ? '' : ` cloned from ${parent.volume}@${parent.snapshot}`}, unlike this request`,
        );
      return { volume: volumeMessage(existing, sourceMessage) };
    }

    let made: VolumeRecord;
    if (fromSnapshot !== undefined || fromVolume !== undefined) {
      const tooSmall = (sourceBytes: number): CsiError =>
        new CsiError(
          status.OUT_OF_RANGE,
          `capacity_range: ${size} bytes is smaller than the source (${sourceBytes} bytes); a clone cannot shrink`,
        );
      let ref: string;
      if (fromSnapshot !== undefined) {
        const parsed = parseSnapshotId(fromSnapshot);
        const found = parsed === undefined ? undefined : await this.findSnapshot(parsed.volume, parsed.snapshot);
        if (found === undefined) throw new CsiError(status.NOT_FOUND, `No snapshot "${fromSnapshot}"`);
        if (size < found.sizeBytes) throw tooSmall(found.sizeBytes);
        ref = fromSnapshot;
      } else {
        const src = await meta.getVolume(fromVolume!);
        if (src === null) throw new CsiError(status.NOT_FOUND, `No volume "${fromVolume}" to clone`);
        if (size < src.sizeBytes) throw tooSmall(src.sizeBytes);
        const snap = cloneSnapshotName(name);
        if ((await meta.getSnapshot(src.id, snap)) === null) await this.snapshot(src.name, snap);
        ref = snapshotId(src.name, snap);
      }
      made = await cloneVolume(meta, ref, name);
      if (size > made.sizeBytes) {
        try {
          made = await this.grow(made.name, size);
        } catch (err) {
          // Not left half made: a retry with the same name starts again.
          await meta.deleteVolume(made.name, { trash: false }).catch(() => undefined);
          throw err;
        }
      }
    } else {
      made = await createVolume(meta, {
        name,
        sizeBytes: size,
        ...(params.profile === undefined ? {} : { profile: params.profile }),
        ...(params.extentBytes === undefined ? {} : { extentBytes: params.extentBytes }),
        ...(params.zonesRequired === undefined ? {} : { zonesRequired: params.zonesRequired }),
        ...(params.targets === undefined ? {} : { targets: params.targets }),
        ...(params.durableShardsMin === undefined ? {} : { durableShardsMin: params.durableShardsMin }),
        ...(params.journalReplicas === undefined ? {} : { journalReplicas: params.journalReplicas }),
        ...(params.labels === undefined ? {} : { labels: params.labels }),
        ...(zones.length === 0 ? {} : { allowedZones: zones }),
        ...(params.encrypted === undefined ? {} : { encrypted: params.encrypted }),
        ...kekOfSecrets(req['secrets']),
      });
    }
    this.options.log(
      `created volume ${made.name} (${made.sizeBytes} bytes)${sourceMessage ? ` from ${fromSnapshot ?? fromVolume}` : ''}`,
    );
    return { volume: volumeMessage(made, sourceMessage) };
  }

  async deleteVolume(req: Message): Promise<Message> {
    const { meta } = this.options;
    const id = required(req['volume_id'], 'volume_id');
    const volume = await meta.getVolume(id);
    if (volume === null) return {}; // gone already: success, as the specification asks
    // A frontend lingers a moment after its last client leaves (then flushes, folds and lets
    // the lock go): a delete right after NodeUnstageVolume waits for that rather than failing.
    let lock = await meta.getLock(volume.name);
    for (const until = Date.now() + detachWaitMs; lock !== null && Date.now() < until;) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      lock = await meta.getLock(volume.name);
    }
    if (lock !== null)
      throw new CsiError(
        status.FAILED_PRECONDITION,
        `Volume "${volume.name}" is attached by ${lock.owner} (still after ${detachWaitMs / 1000} s); unstage it first`,
      );
    await meta.deleteVolume(volume.name, { trash: false });
    // A clone made from a volume leaves the snapshot taken for it.
    const parent = volume.parent;
    if (parent !== undefined && parent.snapshot.startsWith(cloneSnapshotPrefix)) {
      const snap = await meta.getSnapshot(parent.volumeId, parent.snapshot);
      if (snap !== null && snap.clones.length === 0)
        await meta.deleteSnapshot(parent.volumeId, parent.snapshot, parent.volume).catch((err: unknown) => {
          this.options.log(
            `volume ${volume.name}: its source snapshot ${parent.volume}@${parent.snapshot} stays: ${errorMessage(err)}`,
          );
        });
    }
    this.options.startGc();
    this.options.log(`deleted volume ${volume.name}`);
    return {};
  }

  async validateVolumeCapabilities(req: Message): Promise<Message> {
    const id = required(req['volume_id'], 'volume_id');
    const caps = capabilities(req['volume_capabilities']);
    if ((await this.options.meta.getVolume(id)) === null) throw new CsiError(status.NOT_FOUND, `No volume "${id}"`);
    volumeParameters(req['parameters'] as Record<string, string> | undefined);
    const refused = caps.map(unsupported).find((why) => why !== undefined);
    if (refused !== undefined) return { message: refused };
    return {
      confirmed: {
        volume_context: req['volume_context'] ?? {},
        volume_capabilities: req['volume_capabilities'],
        parameters: req['parameters'] ?? {},
      },
    };
  }

  async listVolumes(req: Message): Promise<Message> {
    const all = (await this.options.meta.listVolumes()).sort((a, b) => a.name.localeCompare(b.name));
    const { entries, next } = page(all, req, (v) => v.name);
    return { entries: entries.map((v) => ({ volume: volumeMessage(v) })), next_token: next };
  }

  /**
   * Free bytes for new data: each live node's free space (in the asked zone, when a topology
   * segment names one) plus S3 targets' declared capacity, times k/(k+m) of the profile the
   * parameters (or the cluster's default) name: what a volume of that profile can still store.
   */
  async getCapacity(req: Message): Promise<Message> {
    const { meta } = this.options;
    if (req['volume_capabilities'] !== undefined && (req['volume_capabilities'] as unknown[]).length > 0)
      capabilities(req['volume_capabilities']);
    const params = volumeParameters(req['parameters'] as Record<string, string> | undefined);
    const segments =
      (req['accessible_topology'] as { segments?: Record<string, string> } | null | undefined)?.segments ?? {};
    for (const key of Object.keys(segments))
      if (key !== zoneTopologyKey)
        throw invalid(`accessible_topology.segments.${key}`, `unknown (use ${zoneTopologyKey})`);
    const zone = segments[zoneTopologyKey];
    const cluster = await meta.requireCluster();
    const profile = params.profile === undefined ? cluster.defaultProfile : parseProfile(params.profile);
    const targets = await meta.listTargets();
    const alive = await meta.listAlive();
    let raw = 0;
    for (const t of targets) {
      if (t.draining === true || (zone !== undefined && t.zone !== zone)) continue;
      if (t.kind === 's3') raw += t.capacityBytes ?? 0;
      else {
        const a = alive.find((x) => x.name === t.name);
        if (a !== undefined) raw += Math.max(0, a.capacityBytes - a.usedBytes);
      }
    }
    const available = Math.floor((raw * profile.k) / (profile.k + profile.m));
    return { available_capacity: String(available), maximum_volume_size: { value: String(volumeBytesMax) } };
  }

  async controllerExpandVolume(req: Message): Promise<Message> {
    const id = required(req['volume_id'], 'volume_id');
    const range = req['capacity_range'] as Message | null | undefined;
    if (range === null || range === undefined) throw invalid('capacity_range', 'required');
    const size = sizeFor(range);
    const volume = await this.options.meta.getVolume(id);
    if (volume === null) throw new CsiError(status.NOT_FOUND, `No volume "${id}"`);
    const cap = req['volume_capability'] as Message | null | undefined;
    const block = cap !== null && cap !== undefined && cap['block'] !== null && cap['block'] !== undefined;
    const grown = size <= volume.sizeBytes ? volume : await this.grow(volume.name, size);
    return { capacity_bytes: String(grown.sizeBytes), node_expansion_required: !block };
  }

  async createSnapshot(req: Message): Promise<Message> {
    const { meta } = this.options;
    const source = required(req['source_volume_id'], 'source_volume_id');
    const snap = cairnName(required(req['name'], 'name'), 'name');
    const volume = await meta.getVolume(source);
    if (volume === null) throw new CsiError(status.NOT_FOUND, `No volume "${source}"`);
    const mine = await meta.getSnapshot(volume.id, snap);
    if (mine !== null) return { snapshot: snapshotMessage(volume, mine) };
    // Snapshot names are one namespace for the CO: the same name on another volume is a conflict.
    for (const v of await meta.listVolumes())
      if (v.id !== volume.id && (await meta.getSnapshot(v.id, snap)) !== null)
        throw new CsiError(status.ALREADY_EXISTS, `Snapshot "${snap}" exists already, of volume ${v.name}`);
    const made = await this.snapshot(volume.name, snap);
    this.options.log(`took snapshot ${volume.name}@${snap}`);
    return { snapshot: snapshotMessage(volume, made) };
  }

  async deleteSnapshot(req: Message): Promise<Message> {
    const { meta } = this.options;
    const id = required(req['snapshot_id'], 'snapshot_id');
    const parsed = parseSnapshotId(id);
    if (parsed === undefined) return {}; // not an id this driver made: nothing to delete
    const volume = await meta.getVolume(parsed.volume);
    if (volume === null) return {};
    try {
      await meta.deleteSnapshot(volume.id, parsed.snapshot, volume.name);
    } catch (err) {
      if (err instanceof NotFoundError) return {};
      throw err;
    }
    this.options.startGc();
    this.options.log(`deleted snapshot ${id}`);
    return {};
  }

  async listSnapshots(req: Message): Promise<Message> {
    const { meta } = this.options;
    const wantId = typeof req['snapshot_id'] === 'string' ? req['snapshot_id'] : '';
    const wantSource = typeof req['source_volume_id'] === 'string' ? req['source_volume_id'] : '';
    const rows: Message[] = [];
    if (wantId !== '') {
      const parsed = parseSnapshotId(wantId);
      const volume = parsed === undefined ? null : await meta.getVolume(parsed.volume);
      const s = volume === null ? undefined : await this.findSnapshot(volume.name, parsed!.snapshot);
      if (volume !== null && s !== undefined && (wantSource === '' || wantSource === volume.name))
        rows.push(snapshotMessage(volume, s));
    } else {
      const volumes =
        wantSource === ''
          ? (await meta.listVolumes()).sort((a, b) => a.name.localeCompare(b.name))
          : [await meta.getVolume(wantSource)].filter((v): v is VolumeRecord => v !== null);
      for (const v of volumes) for (const s of await meta.listSnapshots(v.id)) rows.push(snapshotMessage(v, s));
    }
    const { entries, next } = page(rows, req, (r) => String(r['snapshot_id']));
    return { entries: entries.map((snapshot) => ({ snapshot })), next_token: next };
  }

  // ---- helpers ----

  private async findSnapshot(volumeName: string, snap: string): Promise<SnapshotRecord | undefined> {
    const volume = await this.options.meta.getVolume(volumeName);
    if (volume === null) return undefined;
    try {
      return (await this.options.meta.getSnapshot(volume.id, snap)) ?? undefined;
    } catch (err) {
      if (err instanceof CairnError && err.code === 'EINVAL') return undefined;
      throw err;
    }
  }

  private snapshot(volume: string, snap: string): Promise<SnapshotRecord> {
    return takeSnapshot(this.options.meta, volume, snap, {
      owner: this.options.owner,
      attachAndTake: () => this.options.withFrontend((f) => f.snapshot(volume, snap)),
    });
  }

  private grow(volume: string, sizeBytes: number): Promise<VolumeRecord> {
    return resizeVolume(this.options.meta, volume, sizeBytes, {
      owner: this.options.owner,
      attachAndResize: () => this.options.withFrontend((f) => f.resize(volume, sizeBytes)),
    });
  }
}

/** The capabilities a NodeStage or CreateVolume request asks for, for logs. */
export function describeCapability(c: Capability): string {
  return c.kind === 'block' ? `block, ${c.mode}` : `mount ${c.fsType || 'ext4'}, ${c.mode}`;
}

/**
 * The key-encryption key in a CreateVolume request's secrets (the StorageClass's provisioner
 * secret, key `kek`: 32 bytes as hex or base64), for an encrypted volume. Absent: none.
 */
function kekOfSecrets(secrets: unknown): { kek?: Kek } {
  const text = (secrets as Record<string, string> | null | undefined)?.['kek'];
  if (text === undefined || text === '') return {};
  try {
    return { kek: parseKek(Buffer.from(text), 'The provisioner secret\'s "kek"') };
  } catch (err) {
    throw new CsiError(status.INVALID_ARGUMENT, errorMessage(err));
  }
}
