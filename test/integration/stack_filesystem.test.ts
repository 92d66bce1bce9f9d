/**
 * A real kernel filesystem on a Cairn volume: nbdfuse exposes the NBD export as a file, losetup
 * makes it a block device, mkfs.ext4 and mount put ext4 on it (kernel NBD is not available on
 * these machines, INFRA.md §3). Files written through it must survive unmount, a stop of the
 * frontend (SIGTERM: it flushes), and a new frontend: same sha256, and fsck finds nothing.
 */
import { expect } from 'chai';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import {
  NbdLoopDevice,
  describeResult,
  skipWithoutFilesystem,
  runClient,
  runOk,
  seededBytes,
  sha256,
  useStack,
} from '../harness/stack.js';

const MiB = 1024 * 1024;

describe('Full stack: ext4 on a volume through nbdfuse and a loop device', function () {
  this.timeout(150_000);
  const stack = useStack();

  it('keeps files intact (sha256) across unmount, a frontend stop and a new frontend; fsck.ext4 -n is clean', async function () {
    if (skipWithoutFilesystem(this)) return;
    const s = stack();
    await s.createVolume('fs', '256MiB', { extentSize: '1MiB' });
    const fuseDir = s.path('fuse');
    const mountDir = s.path('ext4');
    mkdirSync(fuseDir);
    mkdirSync(mountDir);

    // First life: through the dev frontend.
    let dev = await NbdLoopDevice.attach(s.uri('fs'), fuseDir, mountDir);
    s.defer('detach the first loop device', () => dev.detach());
    await runOk('mkfs.ext4', '/usr/sbin/mkfs.ext4', ['-q', '-F', dev.device], { deadlineMs: 120_000 });
    await dev.mount();
    const files = new Map<string, string>();
    const sizes = [1 * MiB, 3 * MiB + 123, 8 * MiB, 16 * MiB + 4095, 12345];
    mkdirSync(join(mountDir, 'dir', 'sub'), { recursive: true });
    for (const [i, size] of sizes.entries()) {
      const name = i % 2 === 0 ? `file-${i}.bin` : join('dir', 'sub', `file-${i}.bin`);
      const bytes = seededBytes(`fs-${i}`, size);
      writeFileSync(join(mountDir, name), bytes);
      files.set(name, sha256(bytes));
    }
    await runOk('sync', '/usr/bin/sync', []);
    await dev.detach();

    // Stop the frontend that served it (SIGTERM: it flushes and releases the lock), start another.
    await s.stopDevFrontend('SIGTERM');
    const fe = await s.startFrontend();

    dev = await NbdLoopDevice.attach(fe.uri('fs'), fuseDir, mountDir);
    const fsck = await runClient('/usr/sbin/fsck.ext4', ['-n', '-f', dev.device], { deadlineMs: 120_000 });
    expect(
      fsck.code,
      `fsck.ext4 -n -f through the new frontend must find a clean filesystem: ${describeResult(fsck)}`,
    ).to.equal(0);
    await dev.mount();
    const seen = new Map<string, string>();
    for (const name of files.keys()) {
      try {
        seen.set(name, sha256(readFileSync(join(mountDir, name))));
      } catch (err) {
        seen.set(name, `unreadable: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    expect(Object.fromEntries(seen), 'sha256 of each file after remounting through a new frontend').to.deep.equal(
      Object.fromEntries(files),
    );
    await dev.detach();
    await fe.stop();
  });

  it('after a SIGKILL of the frontend under an ext4 with many fsyncs, a takeover frontend serves a filesystem that mounts, fsck -n finds clean, and holds every fsynced file', async function () {
    if (skipWithoutFilesystem(this)) return;
    const s = stack();
    await s.createVolume('fsj', '256MiB', { extentSize: '1MiB' });
    const fuseDir = s.path('fuse-j');
    const mountDir = s.path('ext4-j');
    mkdirSync(fuseDir);
    mkdirSync(mountDir);
    const a = await s.startFrontend();
    let dev = await NbdLoopDevice.attach(a.uri('fsj'), fuseDir, mountDir);
    s.defer('detach the loop device', () => dev.detach());
    await runOk('mkfs.ext4', '/usr/sbin/mkfs.ext4', ['-q', '-F', dev.device], { deadlineMs: 120_000 });
    await dev.mount();
    // A database-like workload: many small files, each made durable with fsync (its data, then the
    // directory), which reach the frontend as NBD FLUSHes and go to the journal.
    const synced = new Map<string, string>();
    mkdirSync(join(mountDir, 'db'));
    const dirFd = openSync(join(mountDir, 'db'), 'r');
    for (let i = 0; i < 60; i++) {
      const bytes = seededBytes(`fsj-${i}`, 1024 + ((i * 7919) % (96 * 1024)));
      const name = join('db', `row-${i}.bin`);
      const fd = openSync(join(mountDir, name), 'w');
      writeSync(fd, bytes);
      fsyncSync(fd);
      closeSync(fd);
      fsyncSync(dirFd);
      synced.set(name, sha256(bytes));
    }
    closeSync(dirFd);
    // And some that were never synced: they may or may not survive, and must not break anything.
    for (let i = 0; i < 5; i++) writeFileSync(join(mountDir, `unsynced-${i}.bin`), seededBytes(`u-${i}`, 50_000));
    await a.kill();
    // The device below the mount is dead: undo what can be undone (umount may report I/O errors).
    await dev.detach().catch(() => undefined);
    if (dev.mounted) await runClient('/usr/bin/umount', ['-l', mountDir], { deadlineMs: 60_000 });

    const b = await s.startFrontend({ forceTakeover: true });
    dev = await NbdLoopDevice.attach(b.uri('fsj'), fuseDir, mountDir);
    // Mounting replays ext4's own journal (the crash left it needing recovery); then fsck.
    await dev.mount();
    await dev.unmount();
    const fsck = await runClient('/usr/sbin/fsck.ext4', ['-n', '-f', dev.device], { deadlineMs: 120_000 });
    expect(fsck.code, `fsck.ext4 -n -f after the crash and takeover: ${describeResult(fsck)}`).to.equal(0);
    await dev.mount();
    const seen = new Map<string, string>();
    for (const name of synced.keys()) {
      try {
        seen.set(name, sha256(readFileSync(join(mountDir, name))));
      } catch (err) {
        seen.set(name, `unreadable: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    expect(Object.fromEntries(seen), 'every fsynced file, byte for byte').to.deep.equal(Object.fromEntries(synced));
    expect(b.logText()).to.match(/replayed \d+ journal records/);
    await dev.detach();
    await b.stop();
  });
});
