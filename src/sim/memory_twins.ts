/**
 * In-memory twins of the volume engine's ports: an extent map with a fencing switch, a set of
 * memory shard stores that can be taken down, and a round-robin placer. For unit tests and the
 * simulator; never instead of etcd, nodes or S3 in integration tests.
 */
import { FencedError, UnavailableError, type ExtentRecord, type ShardStore } from '../core/index.js';
import { MemoryShardStore } from '../shard/index.js';
import type { MapRoot } from '../extent/index.js';
import type { ExtentMapStore, MapRootStore, ShardPlacer, TargetStores } from '../volume/index.js';

/**
 * The extent map as etcd keeps it: commits apply in batches of `batchExtentsMax` (etcd's
 * transactions are bounded), each batch fenced on its own, so a writer fenced between two
 * batches has published the first and not the second, exactly as ExtentMapStore says.
 */
export class MemoryExtentMap implements ExtentMapStore {
  readonly records = new Map<number, ExtentRecord>();
  /** Set to make every later commit fail as a fenced writer's would. */
  fenced = false;
  /** Extents per batch, as meta's extentsPerTxnMax. */
  batchExtentsMax = 100;
  /** Called before each batch after the first: a test may set `fenced` there (a takeover). */
  betweenBatches: (() => void) | undefined;
  commits = 0;

  async load(): Promise<Map<number, ExtentRecord>> {
    return new Map(this.records);
  }

  async commit(updates: readonly { index: number; record: ExtentRecord | null }[]): Promise<void> {
    const published: number[] = [];
    for (let start = 0; start < updates.length; start += this.batchExtentsMax) {
      if (start > 0) this.betweenBatches?.();
      if (this.fenced) {
        throw new FencedError(
          `Cannot commit extents: this writer no longer holds its lock (${published.length} of ${updates.length} published before)`,
          { published },
        );
      }
      const batch = updates.slice(start, start + this.batchExtentsMax);
      for (const u of batch) {
        if (u.record === null) this.records.delete(u.index);
        else this.records.set(u.index, u.record);
        published.push(u.index);
      }
    }
    this.commits += 1;
  }
}

/**
 * A volume's map root in memory, as etcd will hold it: swap() publishes only over the root it was
 * given (another writer's swap in between fences this one) and while `fenced` is false.
 */
export class MemoryMapRoots implements MapRootStore {
  root: MapRoot;
  /** Set to make every later swap fail as a fenced writer's would. */
  fenced = false;
  swaps = 0;

  constructor(levels: number) {
    this.root = { levels, page: undefined };
  }

  async read(): Promise<MapRoot> {
    return this.root;
  }

  async swap(expected: MapRoot, next: MapRoot): Promise<void> {
    const same =
      expected.levels === this.root.levels &&
      expected.page?.generation === this.root.page?.generation &&
      expected.page?.checksum === this.root.page?.checksum;
    if (this.fenced || !same)
      throw new FencedError(
        `Cannot publish the map root: ${this.fenced ? 'this writer no longer holds its lock' : 'another writer published a root since'}`,
        { published: [] },
      );
    this.root = next;
    this.swaps += 1;
  }
}

/**
 * Memory stores by name; `down` makes a store's calls fail as an unreachable node's would, and
 * `stalled` makes its reads never answer. `zones` gives targets a zone (none by default); `gets` counts the get() calls each target
 * answered or refused, so a test can see which shards a read touched.
 */
export class MemoryTargets implements TargetStores {
  readonly stores = new Map<string, MemoryShardStore>();
  readonly down = new Set<string>();
  /** Targets whose get() never settles: a node that took the request and never answers. */
  readonly stalled = new Set<string>();
  readonly zones: Map<string, string>;
  /** get() calls per target, answered or refused. */
  readonly gets = new Map<string, number>();
  /** Bytes returned by get() per target. */
  readonly getBytes = new Map<string, number>();

  constructor(names: readonly string[], zones: Readonly<Record<string, string>> = {}) {
    for (const n of names) this.stores.set(n, new MemoryShardStore(n));
    this.zones = new Map(Object.entries(zones));
  }

  zoneOf(target: string): string | undefined {
    return this.stores.has(target) ? this.zones.get(target) : undefined;
  }

  store(target: string): ShardStore {
    const store = this.stores.get(target);
    if (store === undefined) throw new UnavailableError(`No shard target named "${target}"`);
    const countGet = () => this.gets.set(target, (this.gets.get(target) ?? 0) + 1);
    if (!this.down.has(target)) {
      return {
        description: store.description,
        capabilities: () => store.capabilities(),
        put: (key, data, options) => store.put(key, data, options),
        get: async (key, range, expect) => {
          countGet();
          if (this.stalled.has(target)) return new Promise<never>(() => undefined);
          const bytes = await store.get(key, range, expect);
          this.getBytes.set(target, (this.getBytes.get(target) ?? 0) + bytes.length);
          return bytes;
        },
        head: (key) => store.head(key),
        delete: (key) => store.delete(key),
        list: (prefix, options) => store.list(prefix, options),
      };
    }
    const fail = async (): Promise<never> => {
      throw new UnavailableError(`Cannot reach memory target "${target}": it is down`);
    };
    return {
      description: store.description,
      capabilities: () => store.capabilities(),
      put: fail,
      get: async () => {
        countGet();
        return fail();
      },
      head: fail,
      delete: fail,
      list: fail,
    };
  }
}

/** Shard i of extent e on target (e + i) mod n: distinct targets whenever n >= k + m. */
export function roundRobinPlacer(names: readonly string[], shardCount: number): ShardPlacer {
  return { place: (extent) => Array.from({ length: shardCount }, (_, i) => names[(extent + i) % names.length]!) };
}
