/**
 * The ShardStore contract, as one mocha suite that runs against every implementation (memory,
 * file, node, s3). A store passes only if it keeps every promise in core/ports.ts.
 */
import { expect } from 'chai';
import {
  ChecksumMismatchError,
  InvalidArgumentError,
  ShardExistsError,
  ShardNotFoundError,
  type ShardStore,
} from '../../src/core/index.js';
import { seededBytes } from './bytes.js';

export interface ContractSubject {
  readonly store: ShardStore;
  /** Flips one bit of stored data byte `dataOffset` of `key` behind the store's back, if the test can. */
  corrupt?(key: string, dataOffset: number): Promise<void>;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject');
}

export function shardStoreContract(name: string, make: () => Promise<ContractSubject>): void {
  describe(`ShardStore contract: ${name}`, function () {
    let subject: ContractSubject;
    let store: ShardStore;
    let prefix: string;
    let counter = 0;

    beforeEach(async () => {
      subject = await make();
      store = subject.store;
      counter += 1;
      prefix = `t${Date.now().toString(36)}${counter}`;
    });

    it('stores and returns shards of 0, 1, 4095, 4096, 4097 and 1 MiB + 3 bytes', async () => {
      for (const size of [0, 1, 4095, 4096, 4097, 1048579]) {
        const data = seededBytes(size, size + 1);
        await store.put(`${prefix}/s${size}`, data);
        const back = await store.get(`${prefix}/s${size}`);
        expect(back.length, `size ${size}`).to.equal(size);
        expect(Buffer.from(back).equals(Buffer.from(data)), `size ${size}`).to.equal(true);
        expect(await store.head(`${prefix}/s${size}`)).to.deep.equal({ key: `${prefix}/s${size}`, dataBytes: size });
      }
    });

    it('reads byte ranges, across block boundaries, to the last byte, and of zero length', async () => {
      const data = seededBytes(10_000, 7);
      await store.put(`${prefix}/r`, data);
      for (const [offset, length] of [
        [0, 1],
        [4095, 2],
        [4000, 5000],
        [9999, 1],
        [8192, 1808],
        [5000, 0],
        [0, 10_000],
        [10_000, 0],
      ] as const) {
        const got = await store.get(`${prefix}/r`, { offset, length });
        expect(
          Buffer.from(got).equals(Buffer.from(data.subarray(offset, offset + length))),
          `[${offset}, +${length})`,
        ).to.equal(true);
        if (store.getInto !== undefined) {
          // getInto writes the same bytes at the offset asked, and nothing around them.
          const out = new Uint8Array(length + 20).fill(0xee);
          await store.getInto(`${prefix}/r`, { offset, length }, out, 10);
          expect(
            Buffer.from(out.subarray(10, 10 + length)).equals(Buffer.from(data.subarray(offset, offset + length))),
            `getInto [${offset}, +${length})`,
          ).to.equal(true);
          expect([...out.subarray(0, 10), ...out.subarray(10 + length)].every((b) => b === 0xee)).to.equal(true);
        }
      }
    });

    it('refuses a range one byte past the end', async () => {
      await store.put(`${prefix}/e`, seededBytes(100, 1));
      const err = await rejection(store.get(`${prefix}/e`, { offset: 50, length: 51 }));
      expect(err).to.be.instanceOf(InvalidArgumentError);
    });

    it('is create-only: a second put of the key fails and the first bytes stay', async () => {
      const first = seededBytes(5000, 1);
      await store.put(`${prefix}/c`, first);
      const err = await rejection(store.put(`${prefix}/c`, seededBytes(5000, 2)));
      expect(err).to.be.instanceOf(ShardExistsError);
      expect(Buffer.from(await store.get(`${prefix}/c`)).equals(Buffer.from(first))).to.equal(true);
    });

    it('lets exactly one of several concurrent puts of one key win', async () => {
      const results = await Promise.allSettled(
        [1, 2, 3, 4].map((s) => store.put(`${prefix}/race`, seededBytes(20_000, s))),
      );
      expect(results.filter((r) => r.status === 'fulfilled')).to.have.length(1);
      for (const r of results) if (r.status === 'rejected') expect(r.reason).to.be.instanceOf(ShardExistsError);
      const winner = [1, 2, 3, 4][results.findIndex((r) => r.status === 'fulfilled')]!;
      expect(Buffer.from(await store.get(`${prefix}/race`)).equals(Buffer.from(seededBytes(20_000, winner)))).to.equal(
        true,
      );
    });

    it('reports a missing shard as not found, and head() as null', async () => {
      expect(await rejection(store.get(`${prefix}/missing`))).to.be.instanceOf(ShardNotFoundError);
      expect(await store.head(`${prefix}/missing`)).to.equal(null);
    });

    it('deletes idempotently', async () => {
      await store.put(`${prefix}/d`, seededBytes(10, 1));
      await store.delete(`${prefix}/d`);
      await store.delete(`${prefix}/d`);
      expect(await store.head(`${prefix}/d`)).to.equal(null);
    });

    it('lists keys by prefix, sorted, with limit and startAfter', async () => {
      for (const k of ['b', 'a', 'c/1', 'c/2']) await store.put(`${prefix}/l/${k}`, seededBytes(1, 1));
      await store.put(`${prefix}/other`, seededBytes(1, 1));
      expect(await store.list(`${prefix}/l/`)).to.deep.equal(['a', 'b', 'c/1', 'c/2'].map((k) => `${prefix}/l/${k}`));
      expect(await store.list(`${prefix}/l/`, { limit: 2 })).to.deep.equal([`${prefix}/l/a`, `${prefix}/l/b`]);
      expect(await store.list(`${prefix}/l/`, { startAfter: `${prefix}/l/b` })).to.deep.equal([
        `${prefix}/l/c/1`,
        `${prefix}/l/c/2`,
      ]);
    });

    it('rejects keys that could escape their namespace', async () => {
      for (const key of ['', '../x', '/abs', 'a//b', 'a/../b', 'a b', 'a\\b', 'x'.repeat(513)]) {
        expect(await rejection(store.put(key, seededBytes(1, 1))), JSON.stringify(key)).to.be.instanceOf(
          InvalidArgumentError,
        );
        expect(await rejection(store.get(key)), JSON.stringify(key)).to.be.instanceOf(InvalidArgumentError);
      }
    });

    it('detects a flipped bit: whole and range reads of the bad block fail, other blocks still read', async function () {
      if (subject.corrupt === undefined) this.skip();
      const data = seededBytes(12_288, 3);
      await store.put(`${prefix}/rot`, data);
      await subject.corrupt!(`${prefix}/rot`, 5000);
      expect(await rejection(store.get(`${prefix}/rot`))).to.be.instanceOf(ChecksumMismatchError);
      expect(await rejection(store.get(`${prefix}/rot`, { offset: 4990, length: 20 }))).to.be.instanceOf(
        ChecksumMismatchError,
      );
      if (store.getInto !== undefined)
        expect(
          await rejection(store.getInto(`${prefix}/rot`, { offset: 4990, length: 20 }, new Uint8Array(20), 0)),
        ).to.be.instanceOf(ChecksumMismatchError);
      const clean = await store.get(`${prefix}/rot`, { offset: 8192, length: 4096 });
      expect(Buffer.from(clean).equals(Buffer.from(data.subarray(8192)))).to.equal(true);
    });
  });
}
