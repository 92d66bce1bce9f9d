/**
 * Placement of one volume's new shards over the live topology (re-read on refresh()), leaving out
 * for a while the targets that lately refused a shard (a full disk, a node whose lease has not
 * expired yet). Implements the engine's ShardPlacer port.
 *
 * What it keeps true: a policy that cannot be met over the current topology fails place() loudly
 * with the reason; it never places on a stale topology.
 */
import { DiskFullError, UnavailableError, errorMessage, systemClock, type Clock } from '../core/index.js';
import type { EtcdMeta, VolumeRecord } from '../meta/index.js';
import { createPlacer, type Placer, type Topology } from '../placement/index.js';
import { policyOf, readTopology } from '../api/index.js';
import type { ShardPlacer } from '../volume/index.js';
import { refusedTargetAvoidMs } from './limits.js';

export /** Placement over the live topology for one volume. */
class LivePlacer implements ShardPlacer {
  private placer: Placer | undefined;
  private lastError: unknown;
  private topology: Topology | undefined;
  /** Targets that refused a shard put lately, until when (ms) placement leaves them out. */
  private readonly avoided = new Map<string, number>();

  constructor(
    private readonly meta: EtcdMeta,
    private readonly volume: VolumeRecord,
    private readonly clock: Clock = systemClock,
  ) {}

  async refresh(): Promise<void> {
    try {
      this.topology = await readTopology(this.meta);
      this.rebuild();
    } catch (err) {
      // Keep placing with the last good topology only if there is none to replace it: a policy
      // that cannot be met now must fail writes loudly, not place on stale targets.
      this.topology = undefined;
      this.placer = undefined;
      this.lastError = err;
    }
  }

  /** Targets up in the last topology, in the volume's zones, and not avoided for a recent refusal; undefined before a refresh. */
  usableTargets(): ReadonlySet<string> | undefined {
    if (this.topology === undefined) return undefined;
    const now = this.clock.now();
    // A volume pinned to zones keeps its map pages there too.
    const zones = this.volume.allowedZones;
    const allowed = (zone: string): boolean => zones === undefined || zones.length === 0 || zones.includes(zone);
    return new Set(
      this.topology.targets
        .filter((t) => t.up && allowed(t.zone) && !((this.avoided.get(t.id) ?? 0) > now))
        .map((t) => t.id),
    );
  }

  /** A full disk (507) or an unreachable node: leave it out of placement for a while. */
  refused(target: string, err: unknown): void {
    if (!(err instanceof DiskFullError || err instanceof UnavailableError)) return;
    this.avoided.set(target, this.clock.now() + refusedTargetAvoidMs);
    if (this.topology !== undefined) this.rebuild();
  }

  /** A placer over the topology minus avoided targets; over the whole topology if that cannot meet the policy. */
  private rebuild(): void {
    const topology = this.topology;
    if (topology === undefined) return;
    const now = this.clock.now();
    for (const [t, until] of this.avoided) if (until <= now) this.avoided.delete(t);
    const policy = policyOf(this.volume);
    if (this.avoided.size > 0) {
      try {
        this.placer = createPlacer(
          { targets: topology.targets.map((t) => (this.avoided.has(t.id) ? { ...t, up: false } : t)) },
          policy,
        );
        this.lastError = undefined;
        return;
      } catch {
        // Too few targets left without the avoided ones: place over all of them.
      }
    }
    try {
      this.placer = createPlacer(topology, policy);
      this.lastError = undefined;
    } catch (err) {
      this.placer = undefined;
      this.lastError = err;
    }
  }

  place(extent: number): readonly string[] {
    if (this.placer === undefined) {
      throw new UnavailableError(
        `Cannot place extent ${extent} of volume "${this.volume.name}": ${errorMessage(this.lastError ?? 'topology not read yet')}`,
      );
    }
    return this.placer.place(this.volume.id, extent).map((p) => p.target);
  }
}
