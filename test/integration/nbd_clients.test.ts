// Real NBD clients against the in-process server over TCP and a Unix socket: nbdinfo (flags,
// --list, --map, --can), nbdcopy both ways and with several connections, qemu-io with patterns,
// qemu-img compare against a file, and fio with crc32c verification, one job and two at once.
import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runOk, runTool, startNbdServer, type NbdTestServer } from '../harness/nbd.js';
import { seededBytes } from '../support/bytes.js';

const MiB = 1 << 20;

interface NbdinfoExport {
  'export-name': string;
  description?: string;
  'export-size': number;
  contexts: string[];
  is_read_only: boolean;
  can_flush: boolean;
  can_fua: boolean;
  can_trim: boolean;
  can_zero: boolean;
  can_multi_conn: boolean;
  can_cache: boolean;
  can_fast_zero: boolean;
  block_size_minimum: number;
  block_size_preferred: number;
  block_size_maximum: number;
}

describe('NbdServer with real clients', function () {
  this.timeout(180_000);
  let server: NbdTestServer;
  let dir: string;

  before(async () => {
    server = await startNbdServer();
    server.provider.create('disk', 64 * MiB, { description: 'Cairn test disk' });
    server.provider.create('copy', 64 * MiB);
    server.provider.create('ro', 4 * MiB, { readOnly: true });
    server.provider.create('plain', 4 * MiB, { capabilities: { multiConn: false, fua: false, trim: false } });
    dir = mkdtempSync(join(tmpdir(), 'cairn-nbd-clients-'));
  });

  after(async () => {
    await server?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  afterEach(() => {
    expect(server.bugs()).to.deep.equal([]);
  });

  describe('nbdinfo', () => {
    for (const transport of ['tcp', 'unix'] as const) {
      it(`reports size, description, block sizes and every capability (${transport})`, async () => {
        const uri = transport === 'tcp' ? server.tcpUri('disk') : server.unixUri('disk');
        const info = JSON.parse(await runOk('nbdinfo', ['--json', uri])) as {
          structured: boolean;
          exports: NbdinfoExport[];
        };
        expect(info.structured).to.equal(true);
        const disk = info.exports[0]!;
        expect(disk).to.include({
          'export-name': 'disk',
          description: 'Cairn test disk',
          'export-size': 64 * MiB,
          is_read_only: false,
          can_flush: true,
          can_fua: true,
          can_trim: true,
          can_zero: true,
          can_multi_conn: true,
          can_cache: true,
          can_fast_zero: false,
          block_size_minimum: 1,
          block_size_preferred: 4096,
          block_size_maximum: 32 * MiB,
        });
        expect(disk.contexts).to.deep.equal(['base:allocation']);
      });
    }

    it('answers --can and --is probes from the advertised flags', async () => {
      const can = async (what: string, name: string): Promise<number | null> =>
        (await runTool('nbdinfo', ['--can', what, server.tcpUri(name)])).code;
      for (const what of ['fua', 'trim', 'zero', 'multi-conn', 'flush', 'cache', 'df'])
        expect(await can(what, 'disk'), what).to.equal(0);
      expect(await can('fast-zero', 'disk')).to.equal(2);
      expect(await can('multi-conn', 'plain')).to.equal(2);
      expect(await can('fua', 'plain')).to.equal(2);
      expect(await can('trim', 'plain')).to.equal(2);
      expect(await can('trim', 'ro')).to.equal(2);
      expect(await can('zero', 'ro')).to.equal(2);
      expect((await runTool('nbdinfo', ['--is', 'readonly', server.tcpUri('ro')])).code).to.equal(0);
      expect((await runTool('nbdinfo', ['--is', 'readonly', server.tcpUri('disk')])).code).to.equal(2);
    });

    it('lists every export with --list', async () => {
      const list = JSON.parse(await runOk('nbdinfo', ['--list', '--json', server.unixUri()])) as {
        exports: NbdinfoExport[];
      };
      expect(list.exports.map((e) => e['export-name'])).to.deep.equal(['copy', 'disk', 'plain', 'ro']);
      expect(list.exports.find((e) => e['export-name'] === 'ro')!.is_read_only).to.equal(true);
    });

    it('maps the holes of a thin export with --map', async () => {
      const thin = server.provider.create('thin', 16 * MiB);
      await thin.write(MiB, seededBytes(64 * 1024, 4));
      await thin.writeZeroes(4 * MiB, MiB, { noHole: true });
      const map = JSON.parse(await runOk('nbdinfo', ['--map', '--json', server.tcpUri('thin')])) as {
        offset: number;
        length: number;
        type: number;
        description: string;
      }[];
      expect(map.map((e) => [e.offset, e.length, e.description])).to.deep.equal([
        [0, MiB, 'hole,zero'],
        [MiB, 64 * 1024, 'data'],
        [MiB + 64 * 1024, 3 * MiB - 64 * 1024, 'hole,zero'],
        [4 * MiB, MiB, 'zero'],
        [5 * MiB, 11 * MiB, 'hole,zero'],
      ]);
    });

    it('reports an unknown export as an error naming it', async () => {
      const result = await runTool('nbdinfo', [server.tcpUri('missing')]);
      expect(result.code).to.not.equal(0);
      expect(result.stderr).to.match(/missing/);
    });
  });

  describe('nbdcopy', () => {
    it('copies random data into the export over TCP and back out over the Unix socket', async () => {
      const source = join(dir, 'source.bin');
      const back = join(dir, 'back.bin');
      const data = seededBytes(24 * MiB, 5);
      writeFileSync(source, data);
      await runOk('nbdcopy', [source, server.tcpUri('disk')]);
      await runOk('nbdcopy', [server.unixUri('disk'), back]);
      const copied = readFileSync(back);
      expect(copied.length).to.equal(64 * MiB);
      expect(copied.subarray(0, data.length).equals(Buffer.from(data))).to.equal(true);
      expect(copied.subarray(data.length).every((b) => b === 0)).to.equal(true);
    });

    it('copies export to export with four connections each (multi-conn)', async () => {
      const acceptedBefore = server.server.acceptedCount;
      await runOk('nbdcopy', [
        '--connections=4',
        '--threads=4',
        '--requests=16',
        server.tcpUri('disk'),
        server.unixUri('copy'),
      ]);
      expect(server.server.acceptedCount - acceptedBefore).to.be.at.least(8);
      const compare = await runTool('qemu-img', [
        'compare',
        '-f',
        'raw',
        '-F',
        'raw',
        server.tcpUri('disk'),
        server.unixUri('copy'),
      ]);
      expect(compare.stdout).to.match(/Images are identical/);
      expect(compare.code).to.equal(0);
    });
  });

  describe('qemu', () => {
    it('writes, reads, discards and zeroes with qemu-io patterns', async () => {
      const device = server.provider.create('qemu', 16 * MiB);
      const out = await runOk('qemu-io', [
        '-f',
        'raw',
        '-c',
        'write -P 0xab 1M 64k',
        '-c',
        'read -P 0xab 1M 64k',
        '-c',
        'write -P 0xcd -f 2M 4k', // -f: with FUA
        '-c',
        'read -P 0xcd 2M 4k',
        '-c',
        'discard 1M 32k',
        '-c',
        'read -P 0 1M 32k',
        '-c',
        'read -P 0xab 1056k 32k',
        '-c',
        'write -z 3M 64k',
        '-c',
        'read -P 0 3M 64k',
        '-c',
        'flush',
        server.tcpUri('qemu'),
      ]);
      expect(out).to.not.match(/Pattern verification failed|error|failed/i);
      expect(device.peek(MiB + 40 * 1024, 1)[0]).to.equal(0xab);
      expect(device.peek(2 * MiB, 1)[0]).to.equal(0xcd);
      expect(device.dirtyBytes).to.equal(0); // the final flush reached the device
      expect(device.stats.fuaWrites).to.be.at.least(1);
    });

    it('qemu-img compare finds the export identical to a file, and a changed byte different', async () => {
      const image = join(dir, 'image.raw');
      writeFileSync(image, seededBytes(8 * MiB, 6));
      const device = server.provider.create('image', 8 * MiB);
      await runOk('nbdcopy', [image, server.unixUri('image')]);
      const same = await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', image, server.tcpUri('image')]);
      expect(same.code, same.stderr).to.equal(0);
      await device.write(5 * MiB + 7, Uint8Array.of(device.peek(5 * MiB + 7, 1)[0]! ^ 0xff));
      const differ = await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', image, server.tcpUri('image')]);
      expect(differ.code).to.equal(1);
      // qemu-img reports the 512-byte sector holding the changed byte.
      expect(differ.stdout).to.match(/Content mismatch at offset 5242880/);
    });
  });

  describe('fio', () => {
    interface FioJob {
      error: number;
      write: { io_bytes: number };
      read: { io_bytes: number };
    }
    const runFio = async (uri: string, extra: string[]): Promise<FioJob[]> => {
      const output = join(dir, `fio-${Date.now()}.json`);
      await runOk(
        'fio',
        [
          '--name=cairn',
          '--ioengine=nbd',
          `--uri=${uri}`,
          '--rw=randwrite',
          '--bs=4k',
          '--iodepth=32',
          '--verify=crc32c',
          '--do_verify=1',
          '--verify_fatal=1',
          `--directory=${dir}`,
          '--output-format=json',
          `--output=${output}`,
          ...extra,
        ],
        { timeoutMs: 120_000 },
      );
      return (JSON.parse(readFileSync(output, 'utf8')) as { jobs: FioJob[] }).jobs;
    };

    it('random 4k writes at queue depth 32 verify with crc32c over TCP', async () => {
      server.provider.create('fio', 32 * MiB);
      const jobs = await runFio(server.tcpUri('fio'), ['--size=16M']);
      expect(jobs.map((j) => j.error)).to.deep.equal([0]);
      expect(jobs[0]!.write.io_bytes).to.equal(16 * MiB);
      expect(jobs[0]!.read.io_bytes).to.equal(16 * MiB);
    });

    it('two jobs on two connections at once verify over the Unix socket', async () => {
      server.provider.create('fio2', 32 * MiB);
      const jobs = await runFio(server.unixUri('fio2'), ['--size=8M', '--numjobs=2', '--offset_increment=16M']);
      expect(jobs.map((j) => j.error)).to.deep.equal([0, 0]);
      for (const job of jobs) expect(job.read.io_bytes).to.equal(8 * MiB);
    });
  });
});
