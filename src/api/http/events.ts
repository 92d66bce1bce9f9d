/**
 * Events for the dashboard and GET /events: changes made through the API (their audit entries)
 * and storage nodes going up or down, seen by watching etcd's leased `alive/` keys. In memory, per
 * server: each replica watches etcd itself, so each sees every node transition; a change made on
 * another replica reaches this one through the audit log (GET /events reads it from etcd).
 *
 * What it keeps true: at most eventsKeptMax events are kept, and at most eventSubscribersMax
 * listeners; a listener that throws is dropped, never the publisher.
 */
import { errorMessage } from '../../core/index.js';
import { keys, type EtcdMeta } from '../../meta/index.js';
import { eventSubscribersMax, eventsKeptMax } from './limits.js';

export interface ApiEvent {
  /** `audit`, `node-up`, `node-down`, `job` (a background drain or repair started or ended). */
  readonly type: string;
  /** ISO 8601. */
  readonly at: string;
  readonly [field: string]: unknown;
}

export class EventHub {
  private readonly recentEvents: ApiEvent[] = [];
  private readonly listeners = new Set<(event: ApiEvent) => void>();

  /** Calls `listener` with every event from now on; returns the function that stops it. */
  subscribe(listener: (event: ApiEvent) => void): () => void {
    if (this.listeners.size >= eventSubscribersMax)
      throw new Error(`Too many event subscribers (${eventSubscribersMax}); close some event streams`);
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get subscribers(): number {
    return this.listeners.size;
  }

  publish(event: ApiEvent): void {
    this.recentEvents.push(event);
    if (this.recentEvents.length > eventsKeptMax) this.recentEvents.splice(0, this.recentEvents.length - eventsKeptMax);
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch {
        this.listeners.delete(listener);
      }
    }
  }

  /** The events kept, oldest first. */
  recent(): ApiEvent[] {
    return [...this.recentEvents];
  }
}

/**
 * Watches `alive/` and publishes node-up when a key appears, node-down when one goes (its lease
 * expired or the node stopped). Returns the function that stops watching.
 */
export async function watchNodes(
  meta: EtcdMeta,
  hub: EventHub,
  log: (line: string) => void,
): Promise<() => Promise<void>> {
  const prefix = keys.alivePrefix();
  const watcher = await meta.client.watch().prefix(prefix).create();
  const at = () => new Date().toISOString();
  watcher.on('put', (kv) => {
    // A refresh of a live node's record is a put too; only a creation is a transition.
    if (String(kv.version) !== '1') return;
    hub.publish({ type: 'node-up', at: at(), node: kv.key.toString().slice(prefix.length) });
  });
  watcher.on('delete', (kv) =>
    hub.publish({ type: 'node-down', at: at(), node: kv.key.toString().slice(prefix.length) }),
  );
  watcher.on('error', (err) => log(JSON.stringify({ msg: 'watching alive/ failed', error: errorMessage(err) })));
  return async () => {
    await watcher.cancel();
  };
}
