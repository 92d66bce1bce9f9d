/**
 * A real kernel filesystem on a Cairn volume: nbdfuse exposes the NBD export as a file, losetup
 * makes it a block device, mkfs.ext4 and mount put ext4 on it (kernel NBD is not available on
 * these machines, INFRA.md §3). Files written through it must survive unmount, a stop of the
 * frontend (SIGTERM: it flushes), and a new frontend: same sha256, and fsck finds nothing.
 */
import { expect } from 'chai';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  NbdLoopDevice,
  describeResult,
  filesystemUnsupported,
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
    const why = filesystemUnsupported();
    if (why !== undefined) {
      if (this.test !== undefined) this.test.title += ` (skipped: ${why})`;
      this.skip();
      return;
    }
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
});
