/**
 * FileShardStore: the ShardStore contract over a real directory, plus what only a file store
 * can get wrong: temp files left behind, a full disk (a real 1 MiB tmpfs, mounted here because
 * these machines run tests as root; skipped with the reason where mounting is not allowed),
 * key order across subdirectories, keys that collide with directories, and usage accounting.
 */
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  mkdirSync,
  openSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ChecksumMismatchError,
  InvalidArgumentError,
  ShardExistsError,
  StorageIoError,
} from '../../../src/core/index.js';
import { DiskFullError, ShardNotFoundError } from '../../../src/core/index.js';
import { FileShardStore, InlineReads, encodeFrame, frameHeaderBytes, framedBytes } from '../../../src/shard/index.js';
import { seededBytes } from '../../support/bytes.js';
import { shardStoreContract } from '../../support/shard_store_contract.js';

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-file-store-'));
  dirs.push(dir);
  return dir;
}
after(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** Every file under `dir`, relative, sorted. */
function filesUnder(dir: string, rel = ''): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(join(dir, rel), { withFileTypes: true })) {
    const path = rel === '' ? entry.name : `${rel}/${entry.name}`;
    if (entry.isDirectory()) out.push(...filesUnder(dir, path));
    else out.push(path);
  }
  return out.sort();
}

/** Flips bit 0 of data byte `dataOffset` in the shard file (framed: header, then [crc, block]...). */
function flipDataByte(file: string, dataOffset: number): void {
  const bytes = readFileSync(file);
  const block = Math.floor(dataOffset / 4096);
  const at = frameHeaderBytes + block * 4100 + 4 + (dataOffset % 4096);
  bytes[at] = bytes[at]! ^ 1;
  writeFileSync(file, bytes);
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject');
}

shardStoreContract('file', async () => {
  const store = await FileShardStore.open(tempDir());
  return {
    store,
    async corrupt(key, dataOffset) {
      flipDataByte(store.fileOf(key), dataOffset);
    },
  };
});

describe('FileShardStore', () => {
  it('leaves no temp file behind after a put that lost to an existing shard', async () => {
    const dir = tempDir();
    const store = await FileShardStore.open(dir);
    await store.put('v/1/1/0', seededBytes(9000, 1));
    expect(await rejection(store.put('v/1/1/0', seededBytes(9000, 2)))).to.be.instanceOf(ShardExistsError);
    expect(filesUnder(dir)).to.deep.equal(['v/1/1/0']);
  });

  it('removes temp files a crash left behind when it opens, and counts existing shards as used', async () => {
    const dir = tempDir();
    const first = await FileShardStore.open(dir);
    await first.put('v/1/1/0', seededBytes(10_000, 1));
    writeFileSync(join(dir, 'v/1/1/0~0123456789abcdef.tmp'), 'half a shard');
    const again = await FileShardStore.open(dir);
    expect(filesUnder(dir)).to.deep.equal(['v/1/1/0']);
    expect((await again.usage()).usedBytes).to.equal(framedBytes(10_000));
    expect(await again.list('')).to.deep.equal(['v/1/1/0']);
  });

  it('tracks usedBytes through puts and deletes, and reports the file system size as capacity', async () => {
    const store = await FileShardStore.open(tempDir());
    const before = await store.usage();
    expect(before.usedBytes).to.equal(0);
    expect(before.capacityBytes).to.be.greaterThan(0);
    await store.put('a/b', seededBytes(5000, 1));
    await store.put('a/c', seededBytes(1, 1));
    expect((await store.usage()).usedBytes).to.equal(framedBytes(5000) + framedBytes(1));
    await Promise.all([store.delete('a/b'), store.delete('a/b')]);
    expect((await store.usage()).usedBytes).to.equal(framedBytes(1));
  });

  it('refuses a put beyond a configured capacity with DiskFullError, storing nothing', async () => {
    const dir = tempDir();
    const store = await FileShardStore.open(dir, { capacityBytes: 10_000, description: 'node "b-1"' });
    await store.put('x/1', seededBytes(6000, 1));
    const err = await rejection(store.put('x/2', seededBytes(6000, 2)));
    expect(err).to.be.instanceOf(DiskFullError).and.instanceOf(StorageIoError);
    expect((err as Error).message).to.match(/^Cannot store shard x\/2 on node "b-1": disk full \(ENOSPC\)/);
    expect(filesUnder(dir)).to.deep.equal(['x/1']);
    expect(await store.usage()).to.deep.equal({ capacityBytes: 10_000, usedBytes: framedBytes(6000) });
  });

  describe('on a full disk (a real 1 MiB tmpfs)', () => {
    let mountDir: string | undefined;

    before(function () {
      const dir = tempDir();
      try {
        execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { stdio: 'pipe' });
        mountDir = dir;
      } catch (err) {
        // Without CAP_SYS_ADMIN there is no honest full disk to test against.
        console.log(`      (skipped: cannot mount a tmpfs: ${(err as Error).message.split('\n')[0]})`);
        this.skip();
      }
    });

    after(() => {
      if (mountDir !== undefined) execFileSync('umount', [mountDir]);
    });

    it('fails with DiskFullError naming the shard and node, and leaves no partial or temp file', async () => {
      const store = await FileShardStore.open(join(mountDir!, 'shards'), { description: 'node "b-1"' });
      await store.put('v/1/1/0', seededBytes(600 * 1024, 1));
      const err = await rejection(store.put('v/1/1/1', seededBytes(600 * 1024, 2)));
      expect(err).to.be.instanceOf(DiskFullError).and.instanceOf(StorageIoError);
      expect((err as Error).message).to.equal('Cannot store shard v/1/1/1 on node "b-1": disk full (ENOSPC)');
      expect(filesUnder(join(mountDir!, 'shards'))).to.deep.equal(['v/1/1/0']);
      expect((await store.usage()).usedBytes).to.equal(framedBytes(600 * 1024));
      // The disk is still usable, and the first shard still reads back.
      await store.put('v/1/1/2', seededBytes(1000, 3));
      expect(Buffer.from(await store.get('v/1/1/0')).equals(Buffer.from(seededBytes(600 * 1024, 1)))).to.equal(true);
      await store.close(); // its open shard files would keep the tmpfs busy
    });

    it('fails cleanly when a shard is larger than the whole disk', async () => {
      const store = await FileShardStore.open(join(mountDir!, 'big'));
      const err = await rejection(store.put('big/0', seededBytes(2 * 1024 * 1024, 1)));
      expect(err).to.be.instanceOf(DiskFullError);
      expect(filesUnder(join(mountDir!, 'big'))).to.deep.equal([]);
    });
  });

  it('reads through its open-file cache: a deleted and re-written key reads its new bytes; 300 shards all read', async () => {
    const store = await FileShardStore.open(tempDir());
    await store.put('c/1/1/0', seededBytes(5000, 1));
    expect(
      Buffer.from(await store.get('c/1/1/0', { offset: 10, length: 100 })).equals(
        Buffer.from(seededBytes(5000, 1).subarray(10, 110)),
      ),
    ).to.equal(true);
    await store.delete('c/1/1/0');
    expect(await rejection(store.get('c/1/1/0'))).to.be.instanceOf(ShardNotFoundError);
    await store.put('c/1/1/0', seededBytes(7000, 2));
    expect(Buffer.from(await store.get('c/1/1/0')).equals(Buffer.from(seededBytes(7000, 2)))).to.equal(true);
    // A read racing a delete may see the old bytes, but must not leave the unlinked file cached.
    for (let i = 0; i < 20; i++) {
      await store.put('c/3/1/0', seededBytes(5000, 10 + i));
      const deleting = store.delete('c/3/1/0');
      const racing = store.get('c/3/1/0').catch(() => undefined);
      await Promise.all([deleting, racing]);
      expect(await rejection(store.get('c/3/1/0')), `round ${i}`).to.be.instanceOf(ShardNotFoundError);
    }
    await store.put('c/3/1/0', seededBytes(6000, 99));
    expect(Buffer.from(await store.get('c/3/1/0')).equals(Buffer.from(seededBytes(6000, 99)))).to.equal(true);
    // More shards than the cache keeps open, read twice, concurrently: every one reads its own bytes.
    const keys = Array.from({ length: 300 }, (_, i) => `c/2/${i}/0`);
    await Promise.all(keys.map((k, i) => store.put(k, seededBytes(100 + i, i))));
    for (let round = 0; round < 2; round++) {
      const got = await Promise.all(keys.map((k) => store.get(k)));
      got.forEach((g, i) =>
        expect(Buffer.from(g).equals(Buffer.from(seededBytes(100 + i, i))), keys[i]).to.equal(true),
      );
    }
    await store.close();
  });

  it('stores concurrent puts in batches: each lands once, racing puts of one key have one winner, each directory is fsynced', async () => {
    const store = await FileShardStore.open(tempDir());
    try {
      // 40 shards across 8 generations of 2 extents, and 3 racing puts of one key with different bytes.
      const keys = Array.from({ length: 40 }, (_, i) => `vol/${i % 2}/${Math.floor(i / 5)}/${i}`);
      const bytes = keys.map((_, i) => seededBytes(3000 + i, i + 1));
      const racers = [1, 2, 3].map((i) => seededBytes(4096, 100 + i));
      const results = await Promise.allSettled([
        ...keys.map((k, i) => store.put(k, bytes[i]!)),
        ...racers.map((r) => store.put('vol/race/1/0', r)),
      ]);
      expect(results.slice(0, 40).every((r) => r.status === 'fulfilled')).to.equal(true);
      const raced = results.slice(40);
      expect(raced.filter((r) => r.status === 'fulfilled')).to.have.length(1);
      for (const r of raced) if (r.status === 'rejected') expect(r.reason).to.be.instanceOf(ShardExistsError);
      const winner = raced.findIndex((r) => r.status === 'fulfilled');
      expect(Buffer.from(await store.get('vol/race/1/0')).equals(Buffer.from(racers[winner]!))).to.equal(true);
      for (const [i, k] of keys.entries())
        expect(Buffer.from(await store.get(k)).equals(Buffer.from(bytes[i]!))).to.equal(true);
      const { batches, puts } = store.putBatches;
      expect(puts).to.equal(43);
      expect(batches, 'puts waiting while a batch runs go together').to.be.below(puts);
      expect(readdirSync(join(store.dir, 'vol', 'race', '1'))).to.deep.equal(['0']);
    } finally {
      await store.close();
    }
  });

  it("leaves the caller's buffer whole: a framed Buffer is copied to the writer's thread, not moved", async () => {
    const store = await FileShardStore.open(tempDir());
    try {
      const data = seededBytes(100_000, 3);
      // A Buffer outside Node's pool, as an HTTP body is: moving its memory would empty it.
      const encoded = encodeFrame(data);
      const framed = Buffer.allocUnsafeSlow(encoded.length);
      framed.set(encoded);
      const copy = Buffer.from(framed);
      await store.putFramed('vol/0/1/0', framed);
      expect(framed.length, 'the caller keeps its bytes').to.equal(copy.length);
      expect(framed.equals(copy)).to.equal(true);
      expect((await store.usage()).usedBytes).to.equal(framed.length);
      expect(Buffer.from(await store.get('vol/0/1/0')).equals(Buffer.from(data))).to.equal(true);
    } finally {
      await store.close();
    }
  });

  it('reads small ranges on its own thread and large ones through the thread pool, the same bytes either way', async () => {
    const store = await FileShardStore.open(tempDir());
    try {
      const data = seededBytes(512 * 1024, 11);
      await store.put('vol/0/1/0', data);
      const before = store.inlineReadStats.inline;
      for (const offset of [0, 4096, 100_000, 512 * 1024 - 10])
        expect(
          Buffer.from(await store.get('vol/0/1/0', { offset, length: 10 })).equals(
            Buffer.from(data.subarray(offset, offset + 10)),
          ),
        ).to.equal(true);
      expect(store.inlineReadStats.inline - before, 'small reads inline').to.equal(4);
      expect(Buffer.from(await store.get('vol/0/1/0')).equals(Buffer.from(data))).to.equal(true);
      expect(store.inlineReadStats.inline - before, 'a 512 KiB read is not').to.equal(4);
    } finally {
      await store.close();
    }
  });

  it('sends small reads to the thread pool for a second once several inline reads were slow, then tries again', () => {
    const dir = tempDir();
    const path = join(dir, 'f');
    writeFileSync(path, Buffer.alloc(8192, 1));
    let clock = 0;
    let step = 0; // ms each reading of the clock moves it: 2 makes every read slow
    const reads = new InlineReads(() => (clock += step));
    const fd = openSync(path, 'r');
    try {
      const readOnce = () => expect(reads.read(fd, 0, 4096, 'test')).to.have.length(4096);
      for (let i = 0; i < 10; i++) readOnce(); // fast: stays inline
      expect(reads.use(4096)).to.equal(true);
      expect(reads.use(65 * 1024), 'a large read never runs inline').to.equal(false);
      step = 2;
      readOnce();
      expect(reads.use(4096), 'one slow read is not enough').to.equal(true);
      for (let i = 0; i < 3; i++) readOnce();
      expect(reads.stats.slow).to.equal(4);
      step = 0;
      expect(reads.use(4096), 'four recent slow reads: to the pool').to.equal(false);
      clock += 999;
      expect(reads.use(4096)).to.equal(false);
      clock += 2;
      expect(reads.use(4096), 'after a second, inline again').to.equal(true);
      for (let i = 0; i < 500; i++) readOnce(); // fast again: the slow ones decay
      step = 11;
      readOnce();
      step = 0;
      expect(reads.use(4096), 'one read ten times too slow: to the pool at once').to.equal(false);
    } finally {
      closeSync(fd);
    }
  });

  it('fails puts after close(), and close() waits for the batch in flight', async () => {
    const store = await FileShardStore.open(tempDir());
    const inFlight = store.put('vol/0/1/0', seededBytes(5000, 7));
    await store.close();
    await inFlight;
    let failure: unknown;
    await store.put('vol/0/1/1', seededBytes(10, 8)).catch((err: unknown) => (failure = err));
    expect(failure).to.be.instanceOf(StorageIoError);
    expect((failure as Error).message).to.match(/closed/);
  });

  it('lists keys in string order across subdirectories ("a-c" < "a.x" < "a/b" < "a0")', async () => {
    const store = await FileShardStore.open(tempDir());
    const keys = ['a0', 'a/b', 'a.x', 'a-c', 'a/b0', 'a/a/z', 'b'];
    for (const key of keys) await store.put(key, seededBytes(1, 1));
    expect(await store.list('')).to.deep.equal([...keys].sort());
    expect(await store.list('a/')).to.deep.equal(['a/a/z', 'a/b', 'a/b0']);
    expect(await store.list('a/b')).to.deep.equal(['a/b', 'a/b0']);
    expect(await store.list('', { startAfter: 'a/a/z', limit: 2 })).to.deep.equal(['a/b', 'a/b0']);
    expect(await store.list('', { startAfter: 'a/', limit: 1 })).to.deep.equal(['a/a/z']);
    expect(await store.list('', { limit: 0 })).to.deep.equal([]);
  });

  it('refuses a key that is the directory of another, and one whose path runs through a shard', async () => {
    const store = await FileShardStore.open(tempDir());
    await store.put('p/a', seededBytes(1, 1));
    expect(await rejection(store.put('p/a/b', seededBytes(1, 1)))).to.be.instanceOf(InvalidArgumentError);
    await store.put('q/a/b', seededBytes(1, 1));
    expect(await rejection(store.put('q/a', seededBytes(1, 1)))).to.be.instanceOf(InvalidArgumentError);
    expect(await store.head('q/a')).to.equal(null);
    expect(await store.head('p/a/b')).to.equal(null);
  });

  it('refuses a key segment too long to be a file name', async () => {
    const store = await FileShardStore.open(tempDir());
    expect(await rejection(store.put(`v/${'x'.repeat(240)}`, seededBytes(1, 1)))).to.be.instanceOf(
      InvalidArgumentError,
    );
  });

  it('reports a truncated shard file as a checksum mismatch', async () => {
    const store = await FileShardStore.open(tempDir());
    await store.put('t/1', seededBytes(10_000, 1));
    truncateSync(store.fileOf('t/1'), 5000);
    expect(await rejection(store.get('t/1'))).to.be.instanceOf(ChecksumMismatchError);
    expect(
      Buffer.from(await store.get('t/1', { offset: 0, length: 100 })).equals(
        Buffer.from(seededBytes(10_000, 1).subarray(0, 100)),
      ),
    ).to.equal(true);
  });

  it('removes directories a delete leaves empty, but not the root', async () => {
    const dir = tempDir();
    const store = await FileShardStore.open(dir);
    await store.put('v/1/1/0', seededBytes(1, 1));
    await store.put('v/2/1/0', seededBytes(1, 1));
    await store.delete('v/1/1/0');
    expect(readdirSync(join(dir, 'v'))).to.deep.equal(['2']);
    await store.delete('v/2/1/0');
    expect(readdirSync(dir)).to.deep.equal([]);
    expect(statSync(dir).isDirectory()).to.equal(true);
  });

  it('refuses to open a path that is a file', async () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'file'), 'x');
    expect(await rejection(FileShardStore.open(join(dir, 'file')))).to.be.instanceOf(StorageIoError);
  });
});
