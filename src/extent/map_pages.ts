/**
 * Map pages kept as objects on shard targets, replicated: each page on `replicas` targets chosen
 * by rendezvous hashing of its key (the same targets for the same key and target list, spread
 * evenly, and a target's loss moves only its own pages), read from the first copy that passes the
 * tree's checksum.
 *
 * What it keeps true: put() resolves only when every copy is durable (a store's put is); a target
 * that is down or refuses is passed over for the next in the page's order, so a dead node does not
 * stop commits; a copy that is missing, unreadable or wrong (lost, torn, stale) is skipped by
 * get(), which tries every target in the page's order and fails only when none holds a good copy,
 * naming what each said. A cluster with fewer targets than `replicas` keeps one copy per target. Replication rather than erasure coding
 * for pages: they are small (6-20 KiB), read whole and often, and a page read must not wait for k
 * targets. Three copies by default, as many failures as a 4+2 volume survives and one more.
 */
import { createHash } from 'node:crypto';
import { assert, errorMessage, UnavailableError, type ShardStore } from '../core/index.js';
import type { MapPageStore } from './map_tree.js';

/** Copies of each page by default. */
export const mapPageReplicasDefault = 3;

export interface ReplicatedMapPagesOptions {
  /** The targets, by name (the names are hashed: keep them stable); a function for a list that changes. */
  readonly targets: ReadonlyMap<string, ShardStore> | (() => ReadonlyMap<string, ShardStore>);
  readonly replicas?: number;
  /** Targets that may take new copies now (up, not avoided); every target when absent or undefined. */
  readonly usable?: () => ReadonlySet<string> | undefined;
  /** Told that a target refused a copy (a placer leaves it out for a while). */
  readonly refused?: (target: string, err: unknown) => void;
  /** The zone of a target: copies go to distinct zones first, so a zone's loss leaves a copy. */
  readonly zoneOf?: (target: string) => string | undefined;
}

export class ReplicatedMapPages implements MapPageStore {
  private readonly replicas: number;

  constructor(private readonly options: ReplicatedMapPagesOptions) {
    this.replicas = options.replicas ?? mapPageReplicasDefault;
    assert(Number.isSafeInteger(this.replicas) && this.replicas >= 1, `map page replicas ${this.replicas}`);
  }

  private targets(): ReadonlyMap<string, ShardStore> {
    const t = this.options.targets;
    return typeof t === 'function' ? t() : t;
  }

  /** Every target name, best first for `key` (rendezvous hashing). */
  order(key: string): string[] {
    const weight = (name: string): string => createHash('sha256').update(`${name}\0${key}`).digest('hex');
    return [...this.targets().keys()]
      .map((name) => ({ name, w: weight(name) }))
      .sort((a, b) => (a.w < b.w ? 1 : a.w > b.w ? -1 : 0))
      .map((t) => t.name);
  }

  /**
   * Where copies of `key` go, best first: usable targets before the rest (a last resort), and
   * within each, the first target of each zone (in the page's order) before a second of any zone.
   */
  placementOrder(key: string): string[] {
    const usable = this.options.usable?.();
    const all = this.order(key);
    const spread = (names: string[]): string[] => {
      const zoneOf = this.options.zoneOf;
      if (zoneOf === undefined) return names;
      const seen = new Set<string>();
      const firsts: string[] = [];
      const rest: string[] = [];
      for (const n of names) {
        const zone = zoneOf(n) ?? `target:${n}`;
        if (seen.has(zone)) rest.push(n);
        else {
          seen.add(zone);
          firsts.push(n);
        }
      }
      return [...firsts, ...rest];
    };
    return usable === undefined
      ? spread(all)
      : [...spread(all.filter((n) => usable.has(n))), ...spread(all.filter((n) => !usable.has(n)))];
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    const targets = this.targets();
    const names = this.placementOrder(key);
    const wanted = Math.min(this.replicas, names.length);
    if (wanted === 0) throw new UnavailableError(`Cannot store map page ${key}: no shard target is registered`);
    let next = 0;
    let stored = 0;
    const failed: string[] = [];
    // Each lane stores one copy, moving down the order past targets that refuse.
    const lane = async (): Promise<void> => {
      while (next < names.length) {
        const name = names[next++]!;
        try {
          await targets.get(name)!.put(key, bytes);
          stored += 1;
          return;
        } catch (err) {
          this.options.refused?.(name, err);
          failed.push(`${name}: ${errorMessage(err)}`);
        }
      }
    };
    await Promise.all(Array.from({ length: wanted }, lane));
    if (stored < wanted)
      throw new UnavailableError(
        `Cannot store map page ${key}: ${stored} of ${wanted} copies stored (${failed.join('; ')})`,
      );
  }

  async get(key: string, accept: (bytes: Uint8Array) => boolean): Promise<Uint8Array> {
    const said: string[] = [];
    // The page's own targets first, then the rest (a copy left behind by a target list that changed).
    for (const name of this.order(key)) {
      try {
        const bytes = await this.targets().get(name)!.get(key);
        if (accept(bytes)) return bytes;
        said.push(`${name}: a copy that fails its checksum`);
      } catch (err) {
        said.push(`${name}: ${errorMessage(err)}`);
      }
    }
    throw new UnavailableError(`Cannot read map page ${key}: no good copy (${said.join('; ')})`);
  }
}
