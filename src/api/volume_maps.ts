/**
 * A volume's extent map as the control plane reads and changes it: the copy-on-write page tree
 * (extent/map_tree.ts) whose pages are replicated on the shard targets, under the root etcd keeps
 * at `maproots/<volume id>`. Repair, scrub, census, gc and health go through it; a writer's
 * engine uses TreeExtentMapStore (volume/) over the same pages and root.
 *
 * What it keeps true: replaceExtent() is a compare-and-swap on one extent's record (it publishes
 * only when the extent still holds the record it was given, whatever else changed meanwhile), by
 * a root swap that does not need the volume's lock; a writer whose own swap it overtook rebuilds
 * its commit on the new root. Pages it writes are named by an epoch it takes from the volume's
 * epoch counter, so no other writer or repair ever writes a page of the same name.
 */
import { MapRootMovedError, errorMessage, type ExtentRecord, type ShardStore } from '../core/index.js';
import {
  MapTree,
  ReplicatedMapPages,
  extentCount,
  mapLevelsFor,
  mapPageMatches,
  mapPageReplicasDefault,
  type MapRoot,
} from '../extent/index.js';
import type { EtcdMeta, TargetRecord, VolumeRecord } from '../meta/index.js';
import { reachableTargets } from './cluster.js';
import { environmentSecrets, storeForTarget, type SecretSource } from './stores.js';
import { keyHolders } from '../shard/index.js';

/** Rounds of a replaceExtent() that found the root moved by someone else before giving up. */
const replaceRoundsMax = 16;

/** What repairPages() found and did for one volume's map. */
export interface MapPagesReport {
  /** Pages the root reaches. */
  readonly pages: number;
  /** Copies short of the full count (before the repair added them). */
  readonly copiesMissing: number;
  /** Copies that failed their checksum (verify only); deleted and counted as missing. */
  readonly copiesCorrupt: number;
  readonly copiesWritten: number;
  readonly errors: readonly string[];
}

/** A record's identity for compare-and-swap: two records are the same when this is. */
export function recordToken(record: ExtentRecord): string {
  return JSON.stringify(record);
}

export class VolumeMaps {
  private static readonly byMeta = new WeakMap<EtcdMeta, VolumeMaps>();
  private readonly stores = new Map<string, { record: TargetRecord; store: ShardStore }>();
  private usable: ReadonlySet<string> | undefined;
  private readonly trees = new Map<string, MapTree>();
  private readonly volumes = new Map<string, VolumeRecord>();
  /** Page generations this process writes, per volume: an epoch of the volume's counter, then a count. */
  private readonly generations = new Map<string, { epoch: number; counter: number }>();
  readonly pages: ReplicatedMapPages;

  constructor(
    private readonly meta: EtcdMeta,
    private readonly secrets: SecretSource = environmentSecrets(),
  ) {
    this.pages = new ReplicatedMapPages({
      targets: () => new Map([...this.stores].map(([name, t]) => [name, t.store])),
      usable: () => this.usable,
      zoneOf: (name) => this.stores.get(name)?.record.zone,
    });
  }

  /** One per EtcdMeta (its stores and page cache shared by every caller), closed with it. */
  static of(meta: EtcdMeta): VolumeMaps {
    let maps = VolumeMaps.byMeta.get(meta);
    if (maps === undefined) {
      const made = new VolumeMaps(meta);
      VolumeMaps.byMeta.set(meta, made);
      meta.onClose(() => {
        made.close();
        VolumeMaps.byMeta.delete(meta);
      });
      maps = made;
    }
    return maps;
  }

  /** Re-reads the registered targets (for the page copies) and which of them are reachable. */
  async refreshTargets(): Promise<void> {
    const [records, reachable] = await Promise.all([this.meta.listTargets(), reachableTargets(this.meta)]);
    const names = new Set(records.map((r) => r.name));
    for (const [name, t] of this.stores)
      if (!names.has(name)) {
        t.store.close?.();
        this.stores.delete(name);
      }
    for (const record of records) {
      const old = this.stores.get(record.name);
      if (old !== undefined && JSON.stringify(old.record) === JSON.stringify(record)) continue;
      old?.store.close?.();
      try {
        this.stores.set(record.name, { record, store: storeForTarget(record, this.secrets) });
      } catch {
        // A target this process has no credentials for holds no copy it can read or write.
        this.stores.delete(record.name);
      }
    }
    this.usable = new Set(
      [...reachable].filter((n) => this.stores.has(n) && !records.find((r) => r.name === n)?.draining),
    );
  }

  close(): void {
    for (const t of this.stores.values()) t.store.close?.();
    this.stores.clear();
    this.trees.clear();
  }

  /**
   * The tree of `volume` at its size (one per volume and size, so its decoded pages are shared;
   * a resized volume, or a snapshot of another size, gets a tree of its own height).
   */
  tree(volume: Pick<VolumeRecord, 'id' | 'sizeBytes' | 'extentBytes'>): MapTree {
    const extents = extentCount(volume);
    const key = `${volume.id}/${extents}`;
    let tree = this.trees.get(key);
    if (tree === undefined) {
      tree = new MapTree({ volumeId: volume.id, extents, store: this.pages });
      this.trees.set(key, tree);
    }
    return tree;
  }

  async root(volume: VolumeRecord): Promise<MapRoot> {
    return this.meta.readMapRoot(volume.id, mapLevelsFor(extentCount(volume)));
  }

  /** Every record of the volume (reads every page of its tree; cached pages are not re-read). */
  async listExtents(volumeId: string): Promise<Map<number, ExtentRecord>> {
    const out = new Map<number, ExtentRecord>();
    const current = await this.volumeAndRoot(volumeId);
    if (current === undefined) return out;
    if (this.stores.size === 0) await this.refreshTargets();
    const { volume, root } = current;
    for await (const item of this.tree(volume).walk(root)) if ('record' in item) out.set(item.extent, item.record);
    return out;
  }

  /** The record of one extent and a token replaceExtent() compares (null: no record). */
  async getExtentWithRevision(
    volumeId: string,
    index: number,
  ): Promise<{ record: ExtentRecord; modRevision: string } | null> {
    const current = await this.volumeAndRoot(volumeId);
    if (current === undefined) return null;
    if (this.stores.size === 0) await this.refreshTargets();
    const { volume, root } = current;
    if (index >= extentCount(volume)) return null;
    const record = await this.tree(volume).lookup(root, index);
    return record === undefined ? null : { record, modRevision: recordToken(record) };
  }

  /**
   * Replaces extent `index`'s record with `record` if it still holds the one `modRevision` names
   * (a repair moves shards of one generation and must never overwrite a newer generation a
   * writer published). Returns false, publishing nothing, when the record changed.
   */
  async replaceExtent(volumeId: string, index: number, modRevision: string, record: ExtentRecord): Promise<boolean> {
    const [published] = await this.replaceExtents(volumeId, [{ index, modRevision, record }]);
    return published ?? false;
  }

  /**
   * replaceExtent() for many extents of one volume in one commit (one root swap): each is
   * published if and only if it still holds the record its `modRevision` names. Returns, in
   * order, whether each was published.
   */
  async replaceExtents(
    volumeId: string,
    replacements: readonly { readonly index: number; readonly modRevision: string; readonly record: ExtentRecord }[],
  ): Promise<boolean[]> {
    let volume = await this.volume(volumeId);
    if (volume === undefined || replacements.length === 0) return replacements.map(() => false);
    if (this.stores.size === 0) await this.refreshTargets();
    for (let round = 0; round < replaceRoundsMax; round++) {
      // Read together each round: a resize (new size, new height) may land between two rounds.
      const fresh = await this.volumeAndRoot(volumeId);
      if (fresh === undefined) return replacements.map(() => false);
      volume = fresh.volume;
      const { root } = fresh;
      const tree = this.tree(volume);
      const extents = extentCount(volume);
      const current = await Promise.all(
        replacements.map((r) => (r.index < extents ? tree.lookup(root, r.index) : Promise.resolve(undefined))),
      );
      const still = replacements.map((r, i) => current[i] !== undefined && recordToken(current[i]) === r.modRevision);
      const changes = new Map(replacements.filter((_, i) => still[i]).map((r) => [r.index, r.record] as const));
      if (changes.size === 0) return still;
      const { root: next } = await tree.commit(root, changes, await this.nextGeneration(volume));
      if (await this.meta.replaceMapRoot(volume.id, root, next)) return still;
      // The root moved (a writer's commit, another repair): look at the extents again.
    }
    throw new MapRootMovedError(
      `Cannot publish ${replacements.length} extents of volume "${volume.name}": its map root changed ${replaceRoundsMax} times in a row`,
    );
  }

  /**
   * Brings every page the volume's root reaches back to its full count of copies on reachable
   * targets (a node that died took its copies with it), and with `verify` reads every copy and
   * rewrites those that fail the checksum their parent holds (a copy its node serves intact, but
   * wrong). A page with no good copy left is reported, never guessed at.
   */
  async repairPages(
    volume: VolumeRecord,
    options: { verify?: boolean; dryRun?: boolean } = {},
  ): Promise<MapPagesReport> {
    await this.refreshTargets();
    const usable = [...(this.usable ?? [])];
    const errors: string[] = [];
    const report = { pages: 0, copiesMissing: 0, copiesCorrupt: 0, copiesWritten: 0, errors };
    let listed: Map<string, string[]>;
    try {
      listed = await keyHolders(
        usable.map((name) => [name, this.stores.get(name)!.store] as const),
        `${volume.id}/map/`,
      );
    } catch (err) {
      // A target that could not be listed holds copies we cannot count: add none blindly.
      errors.push(`listing the map pages: ${errorMessage(err)}`);
      return report;
    }
    const root = await this.root(volume);
    const wanted = Math.min(mapPageReplicasDefault, usable.length);
    for await (const item of this.tree(volume).walk(root)) {
      if (!('pageKey' in item)) continue;
      report.pages += 1;
      const key = item.pageKey;
      let good = listed.get(key) ?? [];
      let source: Uint8Array | undefined;
      if (options.verify) {
        const checked: string[] = [];
        for (const name of good) {
          const bytes = await this.stores
            .get(name)!
            .store.get(key)
            .catch(() => undefined);
          if (bytes !== undefined && mapPageMatches(bytes, item.checksum)) {
            checked.push(name);
            source ??= bytes;
          } else {
            report.copiesCorrupt += 1;
            if (!options.dryRun)
              await this.stores
                .get(name)!
                .store.delete(key)
                .catch(() => undefined);
          }
        }
        good = checked;
      }
      if (good.length >= wanted) continue;
      report.copiesMissing += wanted - good.length;
      if (options.dryRun) continue;
      try {
        source ??= await this.pages.get(key, (b) => mapPageMatches(b, item.checksum));
        // Zones that hold no good copy first, so the copies end up spread as put() spreads them.
        const zones = new Set(good.map((n) => this.stores.get(n)?.record.zone));
        const order = this.pages.placementOrder(key).filter((n) => usable.includes(n) && !good.includes(n));
        const byZone = [
          ...order.filter((n) => !zones.has(this.stores.get(n)?.record.zone)),
          ...order.filter((n) => zones.has(this.stores.get(n)?.record.zone)),
        ];
        for (const name of byZone) {
          if (good.length >= wanted) break;
          try {
            await this.stores.get(name)!.store.put(key, source);
            good = [...good, name];
            report.copiesWritten += 1;
          } catch (err) {
            errors.push(`${key} on ${name}: ${errorMessage(err)}`);
          }
        }
      } catch (err) {
        errors.push(`${key}: ${errorMessage(err)}`);
      }
    }
    return report;
  }

  private async nextGeneration(volume: VolumeRecord): Promise<number> {
    let g = this.generations.get(volume.id);
    if (g === undefined || g.counter >= 2 ** 32 - 1) {
      g = { epoch: await this.meta.allocateEpoch(volume.name), counter: 0 };
      this.generations.set(volume.id, g);
    }
    g.counter += 1;
    return g.epoch * 2 ** 32 + g.counter;
  }

  /**
   * The volume's record and its map root, read so that they agree on the map's height: a record
   * this process read before a resize is read again.
   */
  private async volumeAndRoot(volumeId: string): Promise<{ volume: VolumeRecord; root: MapRoot } | undefined> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const volume = await this.volume(volumeId, attempt > 0);
      if (volume === undefined) return undefined;
      const root = await this.root(volume);
      if (root.page === undefined || root.levels === mapLevelsFor(extentCount(volume))) return { volume, root };
    }
    throw new MapRootMovedError(`The map of volume ${volumeId} changed height while it was read (a resize); try again`);
  }

  private async volume(volumeId: string, reload = false): Promise<VolumeRecord | undefined> {
    let v = reload ? undefined : this.volumes.get(volumeId);
    if (v === undefined) {
      for (const r of await this.meta.listVolumes()) this.volumes.set(r.id, r);
      v = this.volumes.get(volumeId);
    }
    return v;
  }
}
