/**
 * What the API server needs from layers it may not import (frontend/, repair/): the service that
 * starts it (src/cli/api.ts) builds these from the same functions the CLI commands use.
 *
 * Every port may take long (it attaches a volume, or moves shards); the server awaits the
 * snapshot and resize ports within the request and runs drain and repair as background jobs.
 */
import type { SnapshotRecord, VolumeRecord } from '../../meta/index.js';

/** What a drain or repair pass did (repair/'s RepairReport, the fields the API shows). */
export interface RepairSummary {
  readonly extentsTotal: number;
  readonly shardsRebuilt: number;
  readonly bytesWritten: number;
  readonly failed: number;
  readonly unrecoverable: number;
  readonly errors: readonly string[];
}

export interface ApiPorts {
  /** Who the server is in locks and requests, e.g. "host/pid (cairnctl api)". */
  readonly owner: string;
  /**
   * Takes snapshot `snapshot` of a volume no frontend holds, by attaching it in this process for
   * the moment it takes (as `cairnctl snapshot create` does). Throws VolumeLockedError when a
   * writer attached meanwhile.
   */
  attachAndSnapshot(volume: string, snapshot: string): Promise<SnapshotRecord>;
  /** Resizes a volume no frontend holds, attaching it here (as `cairnctl volume resize` does). */
  attachAndResize(volume: string, sizeBytes: number, allowShrink: boolean): Promise<VolumeRecord>;
  /** Moves every shard off a node already marked draining; resolves when the pass ends. */
  drain(node: string): Promise<RepairSummary>;
  /** One repair pass over every volume (as `cairnctl repair`); resolves when it ends. */
  repair(): Promise<RepairSummary>;
  /** Starts gc in the background, to free what a deletion left; returns its pid, or null. */
  startGc(): number | null;
}
