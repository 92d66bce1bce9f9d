/**
 * Map pages kept as objects on shard targets, replicated: each page on `replicas` targets chosen
 * by rendezvous hashing of its key (the same targets for the same key and target list, spread
 * evenly, and a target's loss moves only its own pages), read from the first copy that passes the
 * tree's checksum.
 *
 * What it keeps true: put() resolves only when every copy is durable (a store's put is); a copy
 * that is missing, unreadable or wrong (lost, torn, stale) is skipped by get(), which fails only
 * when no target holds a good copy, naming what each said. Replication rather than erasure coding
 * for pages: they are small (6-20 KiB), read whole and often, and a page read must not wait for k
 * targets. Three copies by default, as many failures as a 4+2 volume survives and one more.
 */
import { createHash } from 'node:crypto';
import { assert, errorMessage, UnavailableError, type ShardStore } from '../core/index.js';
import type { MapPageStore } from './map_tree.js';

/** Copies of each page by default. */
export const mapPageReplicasDefault = 3;

export interface ReplicatedMapPagesOptions {
  /** The targets, by name (the names are hashed: keep them stable). */
  readonly targets: ReadonlyMap<string, ShardStore>;
  readonly replicas?: number;
}

export class ReplicatedMapPages implements MapPageStore {
  private readonly replicas: number;

  constructor(private readonly options: ReplicatedMapPagesOptions) {
    this.replicas = options.replicas ?? mapPageReplicasDefault;
    assert(Number.isSafeInteger(this.replicas) && this.replicas >= 1, `map page replicas ${this.replicas}`);
  }

  /** Every target name, best first for `key` (rendezvous hashing). */
  order(key: string): string[] {
    const weight = (name: string): string => createHash('sha256').update(`${name}\0${key}`).digest('hex');
    return [...this.options.targets.keys()]
      .map((name) => ({ name, w: weight(name) }))
      .sort((a, b) => (a.w < b.w ? 1 : a.w > b.w ? -1 : 0))
      .map((t) => t.name);
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    const names = this.order(key);
    if (names.length < this.replicas)
      throw new UnavailableError(
        `Cannot store map page ${key}: ${this.replicas} copies need ${this.replicas} targets, ${names.length} known`,
      );
    const chosen = names.slice(0, this.replicas);
    const results = await Promise.allSettled(chosen.map((name) => this.options.targets.get(name)!.put(key, bytes)));
    const failed = results.flatMap((r, i) =>
      r.status === 'rejected' ? [`${chosen[i]}: ${errorMessage(r.reason)}`] : [],
    );
    if (failed.length > 0)
      throw new UnavailableError(
        `Cannot store map page ${key}: ${failed.length} of ${this.replicas} copies failed (${failed.join('; ')})`,
      );
  }

  async get(key: string, accept: (bytes: Uint8Array) => boolean): Promise<Uint8Array> {
    const said: string[] = [];
    // The page's own targets first, then the rest (a copy left behind by a target list that changed).
    for (const name of this.order(key)) {
      try {
        const bytes = await this.options.targets.get(name)!.get(key);
        if (accept(bytes)) return bytes;
        said.push(`${name}: a copy that fails its checksum`);
      } catch (err) {
        said.push(`${name}: ${errorMessage(err)}`);
      }
    }
    throw new UnavailableError(`Cannot read map page ${key}: no good copy (${said.join('; ')})`);
  }
}
