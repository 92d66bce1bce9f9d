/**
 * An encrypted volume's engine: every generation is enciphered before it is encoded, so no shard
 * holds a 4 KiB block of what was written, and every kind of read (a direct range, a degraded
 * read, a decode in the reader's zone) deciphers back the bytes written, unaligned ranges too.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { CodecPool } from '../../../src/codec/index.js';
import { CryptPool, VolumeCipher } from '../../../src/crypt/index.js';
import { MemoryExtentMap, MemoryTargets } from '../../../src/sim/index.js';
import { VolumeEngine } from '../../../src/volume/index.js';
import { seededBytes } from '../../support/bytes.js';

const unit = 4096;
const shardBytes = 4 * unit;

describe('VolumeEngine with a cipher', function () {
  let pool: CodecPool;
  const crypt = new CryptPool(1);
  before(async () => {
    pool = await CodecPool.start({ threads: 1, memoryBytes: 16 * 1024 * 1024 });
  });
  after(async () => {
    await pool?.close();
    await crypt.close();
  });

  async function setup(zones = ['a', 'b', 'c', 'a', 'b', 'c']) {
    const names = zones.map((z, i) => `${z}-${i}`);
    const targets = new MemoryTargets(names, Object.fromEntries(names.map((n, i) => [n, zones[i]!])));
    const profile = { k: 4, m: 2 };
    const volume = { id: 've', name: 'enc', sizeBytes: 2 * 4 * shardBytes, extentBytes: 4 * shardBytes, k: 4, profile };
    const map = new MemoryExtentMap();
    const cipher = new VolumeCipher(randomBytes(64), crypt);
    const common = { volume, map, targets, placer: { place: () => names }, pool, cipher };
    const writer = await VolumeEngine.open({ ...common, epoch: 1 });
    return { targets, names, writer, common };
  }

  /** Every byte every target holds, concatenated per shard. */
  async function allShards(targets: MemoryTargets): Promise<Uint8Array[]> {
    const out: Uint8Array[] = [];
    for (const store of targets.stores.values()) for (const key of await store.list('')) out.push(await store.get(key));
    return out;
  }

  it('stores no 4 KiB block of the plaintext on any shard, and reads every range back', async () => {
    const { targets, names, writer, common } = await setup();
    const images = [seededBytes(4 * shardBytes, 21), seededBytes(4 * shardBytes, 22)];
    // A block that repeats: the same bytes in two places must not give the same ciphertext.
    images[1]!.set(images[1]!.subarray(0, unit), 5 * unit);
    await writer.persist(images.map((data, extent) => ({ extent, data })));
    const shards = await allShards(targets);
    expect(shards.length).to.equal(12);
    for (const image of images)
      for (let off = 0; off < image.length; off += unit) {
        const block = Buffer.from(image.subarray(off, off + unit));
        for (const s of shards) expect(Buffer.from(s).indexOf(block), `block at ${off} found in a shard`).to.equal(-1);
      }
    const reader = await VolumeEngine.open({ ...common, epoch: 0 });
    await reader.prepare([0, 1]);
    for (const [e, offset, length] of [
      [0, 0, 4 * shardBytes],
      [0, 1000, 9000],
      [1, 4095, 2],
      [1, 3 * shardBytes - 100, 300],
    ] as const) {
      const got = await reader.readRange(e, offset, length);
      expect(
        Buffer.from(got).equals(Buffer.from(images[e]!.subarray(offset, offset + length))),
        `[${offset}, +${length})`,
      ).to.equal(true);
    }
    // A small read stays small: the one unit around it, from the one data shard holding it.
    targets.getBytes.clear();
    await reader.readRange(1, 2 * shardBytes + 5000, 100);
    expect([...targets.getBytes.values()].reduce((a, b) => a + b, 0)).to.equal(unit);
    // Degraded: a data shard's target down, the extent rebuilt from parity, then deciphered.
    targets.down.add(names[1]!);
    const degraded = await reader.readRange(0, unit + 7, 3 * shardBytes);
    expect(
      Buffer.from(degraded).equals(Buffer.from(images[0]!.subarray(unit + 7, unit + 7 + 3 * shardBytes))),
    ).to.equal(true);
    expect(reader.stats.degradedReads).to.be.greaterThan(0);
    await writer.close();
    await reader.close();
  });

  it('gives a new generation of the same bytes different ciphertext, and decodes in the zone', async () => {
    const { targets, writer, common } = await setup(['a', 'b', 'a', 'a', 'a', 'c']);
    const image = seededBytes(4 * shardBytes, 23);
    await writer.persist([{ extent: 0, data: image }]);
    const first = (await allShards(targets)).map((s) => Buffer.from(s).toString('hex'));
    await writer.persist([{ extent: 0, data: image }]);
    const second = (await allShards(targets)).map((s) => Buffer.from(s).toString('hex'));
    const fresh = second.filter((s) => !first.includes(s));
    expect(fresh.length, 'every shard of the new generation differs from the old').to.equal(6);
    // A reader in zone a, which holds four shards: a range of shard 1 (zone b) decodes from them.
    const reader = await VolumeEngine.open({ ...common, epoch: 0, zone: 'a' });
    await reader.prepare([0]);
    const got = await reader.readRange(0, shardBytes + 10, 100);
    expect(Buffer.from(got).equals(Buffer.from(image.subarray(shardBytes + 10, shardBytes + 110)))).to.equal(true);
    expect(reader.stats.zoneDecodedReads).to.equal(1);
    await writer.close();
    await reader.close();
  });
});
