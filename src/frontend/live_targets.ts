/**
 * The shard stores of every registered target, re-read from etcd on refresh(): a target added
 * while the frontend runs becomes usable, a changed address gets a new client, a removed target's
 * client is closed. Implements the engine's TargetStores port, zones included.
 *
 * What it keeps true: store() never returns a closed client; an unknown target is an
 * UnavailableError naming it and how old the list is.
 */
import { UnavailableError, systemClock, type Clock, type ShardStore } from '../core/index.js';
import type { EtcdMeta, TargetRecord } from '../meta/index.js';
import { storeForTarget, type SecretSource } from '../api/index.js';
import type { TargetStores } from '../volume/index.js';

export /** Shard stores for every registered target, refreshed from etcd. */
class LiveTargets implements TargetStores {
  private stores = new Map<string, { record: TargetRecord; store: ShardStore }>();
  private refreshedAt = 0;

  constructor(
    private readonly meta: EtcdMeta,
    private readonly secrets: SecretSource,
    private readonly clock: Clock = systemClock,
  ) {}

  async refresh(): Promise<void> {
    const records = await this.meta.listTargets();
    const next = new Map<string, { record: TargetRecord; store: ShardStore }>();
    for (const record of records) {
      const old = this.stores.get(record.name);
      if (old !== undefined && JSON.stringify(old.record) === JSON.stringify(record)) next.set(record.name, old);
      else {
        old?.store.close?.();
        next.set(record.name, { record, store: storeForTarget(record, this.secrets) });
      }
    }
    for (const [name, old] of this.stores) if (!next.has(name)) old.store.close?.();
    this.stores = next;
    this.refreshedAt = this.clock.now();
  }

  store(target: string): ShardStore {
    const entry = this.stores.get(target);
    if (entry === undefined)
      throw new UnavailableError(
        `Shard target "${target}" is not registered (targets last read ${Math.round(this.clock.now() - this.refreshedAt)} ms ago)`,
      );
    return entry.store;
  }

  /** Every registered target's store, by name, as of the last refresh(). */
  all(): ReadonlyMap<string, ShardStore> {
    return new Map([...this.stores].map(([name, t]) => [name, t.store]));
  }

  /** The zone `target` was registered in at the last refresh(), or undefined when unknown. */
  zoneOf(target: string): string | undefined {
    return this.stores.get(target)?.record.zone;
  }

  close(): void {
    for (const { store } of this.stores.values()) store.close?.();
    this.stores.clear();
  }
}
