/**
 * The CSI Node service: a volume staged on this node (its NBD export attached as a block device,
 * formatted on first use and mounted at the staging path, or kept raw for volumeMode: Block),
 * published into pods (a bind mount of the staging mount, or of the device onto a file), and
 * undone exactly. Every call is idempotent: staging a staged volume at the same path, or
 * unpublishing what is not published, succeeds.
 *
 * What a staged volume is lives in `<state dir>/<volume>.json` (the device, how it was attached,
 * where it is mounted), written before the call answers, so a restarted plugin unstages what an
 * earlier one staged. The frontend (a DaemonSet of its own) holds the volume's lock; a pod moved
 * to another node stages it there, and that node's frontend takes it over (fencing the old one).
 */
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  rmdirSync,
  statSync,
  statfsSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { execFile } from 'node:child_process';
import { errorMessage } from '../core/index.js';
import { parseKek } from '../crypt/index.js';
import { zoneTopologyKey } from './controller.js';
import { isMountPoint, mountTable, runHost, type AttachedDevice, type Attacher } from './host.js';
import { CsiError, capability, invalid, required, unsupported } from './requests.js';
import { status } from './status.js';

type Message = Record<string, unknown>;

/** What `<state dir>/<volume>.json` holds for a staged volume. */
export interface StagedVolume {
  readonly volume: string;
  readonly staging: string;
  readonly kind: 'block' | 'mount';
  readonly fsType?: string;
  readonly readOnly: boolean;
  readonly attached: AttachedDevice;
}

export interface NodeOptions {
  readonly nodeId: string;
  /** This node's zone, offered as topology (`topology.cairn.io/zone`). */
  readonly zone?: string;
  /** Where staged volumes are recorded (under /run: gone with a reboot, as the devices are). */
  readonly stateDir: string;
  readonly attacher: Attacher;
  readonly log: (line: string) => void;
  /** Whether the cluster has this volume (NodeStageVolume of a missing one is NOT_FOUND). */
  readonly volumeExists?: (volume: string) => Promise<boolean>;
  /**
   * Where a volume's key-encryption key from its node-stage secret (key `kek`) is put while it is
   * staged (`<volume>.kek`, 0600 in a 0700 directory), for the frontend on this node, which reads
   * the directory at each attach (CAIRN_KEK_DIR). Absent: node-stage secrets are not used.
   */
  readonly kekDir?: string;
}

export class CsiNode {
  constructor(private readonly options: NodeOptions) {
    mkdirSync(options.stateDir, { recursive: true });
  }

  nodeGetInfo(): Message {
    return {
      node_id: this.options.nodeId,
      max_volumes_per_node: '0',
      ...(this.options.zone === undefined
        ? {}
        : { accessible_topology: { segments: { [zoneTopologyKey]: this.options.zone } } }),
    };
  }

  nodeGetCapabilities(): Message {
    return {
      capabilities: ['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME'].map((type) => ({ rpc: { type } })),
    };
  }

  /**
   * Grows a staged volume's filesystem to its device (resize2fs for ext4, xfs_growfs for xfs; a
   * block volume has nothing to grow). The device shows the volume's size as of its attach: NBD
   * tells a connected client of no size change, so a volume grown while staged is grown here
   * after it is staged again (the plugin offers OFFLINE expansion, which is what the CO does).
   */
  async nodeExpandVolume(req: Message): Promise<Message> {
    const volume = required(req['volume_id'], 'volume_id');
    const path = required(req['volume_path'], 'volume_path');
    const known = this.read(volume);
    if (known === undefined) throw new CsiError(status.NOT_FOUND, `Volume "${volume}" is not staged here`);
    if (!existsSync(path)) throw new CsiError(status.NOT_FOUND, `volume_path ${path} does not exist`);
    const size = Number((await runHost('/usr/sbin/blockdev', ['--getsize64', known.attached.device])).stdout.trim());
    const range = req['capacity_range'] as { required_bytes?: unknown } | null | undefined;
    const wanted = range === null || range === undefined ? 0 : Number(range.required_bytes ?? 0);
    if (wanted > size)
      throw new CsiError(
        status.FAILED_PRECONDITION,
        `Volume "${volume}" shows ${size} bytes on ${known.attached.device}, less than the ${wanted} asked: unstage and stage it again to see its new size`,
      );
    if (known.kind === 'mount') {
      if (known.fsType === 'xfs') await runHost('/usr/sbin/xfs_growfs', [known.staging]);
      else await this.growExt4(known);
      this.options.log(`volume ${volume}: ${known.fsType ?? 'ext4'} grown to ${size} bytes`);
    }
    return { capacity_bytes: String(size) };
  }

  async nodeStageVolume(req: Message): Promise<Message> {
    const volume = required(req['volume_id'], 'volume_id');
    const staging = required(req['staging_target_path'], 'staging_target_path');
    if (req['volume_capability'] === undefined || req['volume_capability'] === null)
      throw invalid('volume_capability', 'required');
    const cap = capability(req['volume_capability'], 'volume_capability');
    const why = unsupported(cap);
    if (why !== undefined) throw invalid('volume_capability', why);
    const readOnly = cap.mode === 'SINGLE_NODE_READER_ONLY' || cap.mode === 'MULTI_NODE_READER_ONLY';
    if (this.options.volumeExists !== undefined && !(await this.options.volumeExists(volume)))
      throw new CsiError(status.NOT_FOUND, `No volume "${volume}"`);
    const known = this.read(volume);
    if (known !== undefined) {
      if (known.staging !== staging || known.kind !== cap.kind)
        throw new CsiError(
          status.ALREADY_EXISTS,
          `Volume "${volume}" is staged already at ${known.staging} (${known.kind}); unstage it first`,
        );
      if (known.kind === 'block' || isMountPoint(staging)) return {};
      // Recorded but not mounted (a reboot of the mount namespace): stage it again below.
      await this.options.attacher.detach(known.attached).catch(() => undefined);
      this.forget(volume);
    }
    // The key first: the frontend unwraps the volume's data key when the attach reaches it.
    const kekFile = this.putKek(volume, req['secrets']);
    let attached: AttachedDevice;
    try {
      attached = await this.options.attacher.attach(volume, { readOnly, workDir: this.workDir(volume) });
    } catch (err) {
      if (kekFile !== undefined) rmSync(kekFile, { force: true });
      throw err;
    }
    try {
      let fsType: string | undefined;
      if (cap.kind === 'mount') {
        fsType = await this.formatIfEmpty(attached.device, cap.fsType === '' ? 'ext4' : cap.fsType, readOnly, volume);
        mkdirSync(staging, { recursive: true });
        await runHost('/usr/bin/mount', [
          '-t',
          fsType,
          ...(readOnly || cap.mountFlags.length > 0
            ? ['-o', [...(readOnly ? ['ro'] : []), ...cap.mountFlags].join(',')]
            : []),
          attached.device,
          staging,
        ]);
      } else {
        mkdirSync(staging, { recursive: true });
      }
      this.record({ volume, staging, kind: cap.kind, ...(fsType === undefined ? {} : { fsType }), readOnly, attached });
      this.options.log(
        `staged volume ${volume} at ${staging} (${attached.device}, ${cap.kind}${fsType ? ` ${fsType}` : ''})`,
      );
      return {};
    } catch (err) {
      await this.options.attacher.detach(attached).catch(() => undefined);
      if (kekFile !== undefined) rmSync(kekFile, { force: true });
      throw err;
    }
  }

  /**
   * Writes the `kek` of a node-stage secret to kekDir for the frontend (parsed first: a bad one is
   * INVALID_ARGUMENT before anything is attached); returns the file, or undefined when there is
   * no such secret or no kekDir.
   */
  private putKek(volume: string, secrets: unknown): string | undefined {
    const text = (secrets as Record<string, string> | null | undefined)?.['kek'];
    if (text === undefined || text === '' || this.options.kekDir === undefined) return undefined;
    try {
      parseKek(Buffer.from(text), 'The node-stage secret\'s "kek"');
    } catch (err) {
      throw new CsiError(status.INVALID_ARGUMENT, errorMessage(err));
    }
    mkdirSync(this.options.kekDir, { recursive: true, mode: 0o700 });
    const file = join(this.options.kekDir, `${volume}.kek`);
    writeFileSync(`${file}.tmp`, text, { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
    return file;
  }

  async nodeUnstageVolume(req: Message): Promise<Message> {
    const volume = required(req['volume_id'], 'volume_id');
    const staging = required(req['staging_target_path'], 'staging_target_path');
    const known = this.read(volume);
    if (isMountPoint(staging)) await runHost('/usr/bin/umount', [staging]);
    if (known !== undefined) {
      await this.options.attacher.detach(known.attached);
      this.forget(volume);
      this.options.log(`unstaged volume ${volume} from ${staging}`);
    }
    // The key leaves the node with the volume.
    if (this.options.kekDir !== undefined) rmSync(join(this.options.kekDir, `${volume}.kek`), { force: true });
    return {};
  }

  async nodePublishVolume(req: Message): Promise<Message> {
    const volume = required(req['volume_id'], 'volume_id');
    const staging = required(req['staging_target_path'], 'staging_target_path');
    const target = required(req['target_path'], 'target_path');
    if (req['volume_capability'] === undefined || req['volume_capability'] === null)
      throw invalid('volume_capability', 'required');
    const cap = capability(req['volume_capability'], 'volume_capability');
    const known = this.read(volume);
    if (known === undefined || known.staging !== staging)
      throw new CsiError(status.FAILED_PRECONDITION, `Volume "${volume}" is not staged at ${staging}: stage it first`);
    if (known.kind !== cap.kind)
      throw new CsiError(status.ALREADY_EXISTS, `Volume "${volume}" is staged as ${known.kind}, not ${cap.kind}`);
    if (isMountPoint(target)) return {};
    const readOnly = req['readonly'] === true;
    if (cap.kind === 'mount') {
      mkdirSync(target, { recursive: true });
      await runHost('/usr/bin/mount', ['--bind', staging, target]);
    } else {
      mkdirSync(dirname(target), { recursive: true });
      if (!existsSync(target)) writeFileSync(target, '');
      await runHost('/usr/bin/mount', ['--bind', known.attached.device, target]);
    }
    if (readOnly) await runHost('/usr/bin/mount', ['-o', 'remount,bind,ro', target]);
    this.options.log(`published volume ${volume} at ${target}${readOnly ? ' (read-only)' : ''}`);
    return {};
  }

  async nodeUnpublishVolume(req: Message): Promise<Message> {
    const volume = required(req['volume_id'], 'volume_id');
    const target = required(req['target_path'], 'target_path');
    if (isMountPoint(target)) await runHost('/usr/bin/umount', [target]);
    // Only an empty directory or the file a block volume was bound onto: never anything with data.
    if (existsSync(target)) {
      if (statSync(target).isDirectory()) rmdirSync(target);
      else unlinkSync(target);
    }
    this.options.log(`unpublished volume ${volume} from ${target}`);
    return {};
  }

  async nodeGetVolumeStats(req: Message): Promise<Message> {
    const volume = required(req['volume_id'], 'volume_id');
    const path = required(req['volume_path'], 'volume_path');
    if (!existsSync(path)) throw new CsiError(status.NOT_FOUND, `volume_path ${path} does not exist`);
    if (this.read(volume) === undefined) throw new CsiError(status.NOT_FOUND, `Volume "${volume}" is not staged here`);
    if (statSync(path).isBlockDevice()) {
      // A block volume: the device bound onto a file (stat sees the device).
      const size = (await runHost('/usr/sbin/blockdev', ['--getsize64', path])).stdout.trim();
      return { usage: [{ unit: 'BYTES', total: size }] };
    }
    const s = statfsSync(path);
    const bytes = (n: number): string => String(n * s.bsize);
    return {
      usage: [
        { unit: 'BYTES', total: bytes(s.blocks), available: bytes(s.bavail), used: bytes(s.blocks - s.bfree) },
        { unit: 'INODES', total: String(s.files), available: String(s.ffree), used: String(s.files - s.ffree) },
      ],
    };
  }

  /**
   * resize2fs while mounted (the kernel's online resize); where the kernel refuses that (some
   * sandboxes deny the ioctl) and no pod has the volume published, offline: unmount the
   * staging path, check, grow, mount again.
   */
  private async growExt4(v: StagedVolume): Promise<void> {
    const device = v.attached.device;
    try {
      await runHost('/usr/sbin/resize2fs', [device]);
      return;
    } catch (err) {
      const users = [...mountTable()].filter(([point, source]) => source === device && point !== v.staging);
      if (users.length > 0) throw err;
      this.options.log(`volume ${v.volume}: online resize refused (${errorMessage(err)}); growing it unmounted`);
    }
    await runHost('/usr/bin/umount', [v.staging]);
    try {
      await runHost('/usr/sbin/e2fsck', ['-f', '-p', device]);
      await runHost('/usr/sbin/resize2fs', [device]);
    } finally {
      await runHost('/usr/bin/mount', ['-t', 'ext4', ...(v.readOnly ? ['-o', 'ro'] : []), device, v.staging]);
    }
  }

  /** Volumes this node has staged, from its state directory. */
  staged(): StagedVolume[] {
    return readdirSync(this.options.stateDir)
      .filter((f) => f.endsWith('.json'))
      .map((f) => this.read(f.slice(0, -'.json'.length)))
      .filter((v): v is StagedVolume => v !== undefined);
  }

  // ---- helpers ----

  private workDir(volume: string): string {
    const dir = join(this.options.stateDir, volume);
    mkdirSync(dir, { recursive: true });
    return dir;
  }

  private read(volume: string): StagedVolume | undefined {
    const path = join(this.options.stateDir, `${volume}.json`);
    if (!existsSync(path)) return undefined;
    try {
      return JSON.parse(readFileSync(path, 'utf8')) as StagedVolume;
    } catch (err) {
      throw new CsiError(
        status.INTERNAL,
        `The state of volume "${volume}" (${path}) cannot be read: ${errorMessage(err)}`,
      );
    }
  }

  /** Written to a temporary file and renamed: a crash never leaves half a record. */
  private record(v: StagedVolume): void {
    const path = join(this.options.stateDir, `${v.volume}.json`);
    writeFileSync(`${path}.tmp`, JSON.stringify(v));
    renameSync(`${path}.tmp`, path);
  }

  private forget(volume: string): void {
    rmSync(join(this.options.stateDir, `${volume}.json`), { force: true });
    rmSync(join(this.options.stateDir, volume), { recursive: true, force: true });
  }

  /**
   * The filesystem on `device`: made when the device holds none (a new volume), kept when it
   * holds the one asked for; another one is refused rather than overwritten.
   */
  private async formatIfEmpty(device: string, fsType: string, readOnly: boolean, volume: string): Promise<string> {
    const found = await filesystemOn(device);
    if (found === fsType) return found;
    if (found !== '')
      throw new CsiError(
        status.FAILED_PRECONDITION,
        `Volume "${volume}" holds a ${found} filesystem, not ${fsType}; it is left as it is`,
      );
    if (readOnly)
      throw new CsiError(status.FAILED_PRECONDITION, `Volume "${volume}" has no filesystem and is staged read-only`);
    if (fsType === 'xfs') await runHost('/usr/sbin/mkfs.xfs', ['-q', device]);
    // nodiscard: a new volume reads zeros already; trimming all of it would only cost time.
    else
      await runHost('/usr/sbin/mkfs.ext4', [
        '-q',
        '-F',
        '-E',
        'nodiscard,lazy_itable_init=1,lazy_journal_init=1',
        device,
      ]);
    this.options.log(`volume ${volume}: made a ${fsType} filesystem on ${device}`);
    return fsType;
  }
}

/**
 * The filesystem type blkid finds on `device`, '' for none (blkid's exit 2). Any other failure is
 * an error, never taken for an empty device: that would format over data.
 */
function filesystemOn(device: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      '/usr/sbin/blkid',
      ['-p', '-o', 'value', '-s', 'TYPE', device],
      { timeout: 60_000 },
      (err, stdout, stderr) => {
        if (err === null) resolve(stdout.trim());
        else if (err.code === 2) resolve('');
        else
          reject(
            new CsiError(status.INTERNAL, `blkid ${device} failed: ${String(stderr).trim() || errorMessage(err)}`),
          );
      },
    );
  });
}
