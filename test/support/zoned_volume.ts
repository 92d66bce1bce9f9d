/**
 * A small written volume for read tests: one memory target per shard, shard i of every extent on
 * a target in zones[i], so which shards a read touched shows per target. Two extents (the second
 * 7000 bytes short) are written by an engine without a zone, then the volume is opened by a
 * reader in the zone asked for, with the targets' read counters cleared.
 */
import { expect } from 'chai';
import type { Codec, ManualClock, Profile } from '../../src/core/index.js';
import { MemoryExtentMap, MemoryTargets } from '../../src/sim/index.js';
import { VolumeEngine } from '../../src/volume/index.js';
import { seededBytes } from './bytes.js';

/** Shard bytes of every such volume: not a multiple of the 4 KiB checksum block. */
export const zonedShardBytes = 10_000;

export interface ZonedVolume {
  /** The reader. */
  readonly engine: VolumeEngine;
  readonly targets: MemoryTargets;
  /** Target of shard i (the same for every extent). */
  readonly names: readonly string[];
  /** The bytes written to each extent. */
  readonly images: readonly Uint8Array[];
  /** get() calls on the targets of `shards` since the reader opened. */
  getsOf(shards: readonly number[]): number;
  /** Reads [offset, offset + length) of extent e and expects the bytes written there. */
  expectRange(e: number, offset: number, length: number): Promise<void>;
  /** Closes the writer and the reader. */
  close(): Promise<void>;
}

export async function writeZonedVolume(options: {
  readonly codec: Codec;
  readonly profile: Profile;
  readonly zones: readonly string[];
  /** The reader's zone; absent: no zone. */
  readonly zone?: string;
  /** The reader's clock (its read hedge); the system clock when absent. */
  readonly clock?: ManualClock;
}): Promise<ZonedVolume> {
  const { profile, zones } = options;
  const { k, m } = profile;
  expect(zones.length).to.equal(k + m);
  const names = zones.map((z, i) => `${z}-${i}`);
  const targets = new MemoryTargets(names, Object.fromEntries(names.map((n, i) => [n, zones[i]!])));
  const extentBytes = k * zonedShardBytes;
  const volume = { id: 'vz', name: 'zones', sizeBytes: 2 * extentBytes - 7000, extentBytes, k, profile };
  const map = new MemoryExtentMap();
  const common = { volume, map, targets, placer: { place: () => names }, pool: options.codec };
  const writer = await VolumeEngine.open({ ...common, epoch: 1 });
  const images = [seededBytes(extentBytes, 11), seededBytes(extentBytes - 7000, 12)];
  await writer.persist(images.map((data, extent) => ({ extent, data })));
  const engine = await VolumeEngine.open({
    ...common,
    epoch: 0,
    ...(options.zone === undefined ? {} : { zone: options.zone }),
    ...(options.clock === undefined ? {} : { clock: options.clock }),
  });
  targets.gets.clear();
  targets.getBytes.clear();
  return {
    engine,
    targets,
    names,
    images,
    getsOf: (shards) => shards.reduce((sum, i) => sum + (targets.gets.get(names[i]!) ?? 0), 0),
    async expectRange(e, offset, length) {
      const bytes = await engine.readRange(e, offset, length);
      const want = images[e]!.subarray(offset, offset + length);
      expect(Buffer.from(bytes).equals(Buffer.from(want)), `extent ${e} [${offset}, ${offset + length})`).to.equal(
        true,
      );
    },
    async close() {
      await writer.close();
      await engine.close();
    },
  };
}
