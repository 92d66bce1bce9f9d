/**
 * The journal on real cairnd processes with a real etcd: the journal address in the node's etcd
 * records, group commit under concurrency, acknowledged records and the fencing epoch surviving
 * a SIGKILL and restart, a torn tail written by hand and ignored, malformed frames answered
 * while other connections keep working, the shared secret, and ReplicatedJournal over three
 * nodes (all must acknowledge; a takeover fences the old writer; a lost node is named). Every
 * wait is for a condition, with a deadline.
 */
import { expect } from 'chai';
import { Etcd3 } from 'etcd3';
import { mkdtempSync, openSync, closeSync, rmSync, writeSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuthRejectedError, UnavailableError } from '../../src/core/index.js';
import {
  JournalFencedError,
  JournalReplicationError,
  ReplicatedJournal,
  decodeErrorAnswer,
  decodeFrameHeader,
  decodeShardGetAnswer,
  encodeFenceRequest,
  encodeFrameHeader,
  encodeHelloRequest,
  encodeReadRequest,
  encodeRecord,
  encodeShardGetRequest,
  encodeShardPutRequest,
  journalOps,
  readSegment,
  type JournalFrameHeader,
  type JournalOpName,
  type JournalRecord,
} from '../../src/journal/index.js';
import { decodeAlive, decodeTarget } from '../../src/meta/index.js';
import { journalDirName, segmentFileName } from '../../src/node/journal_store.js';
import { JournalNodeClient, encodeFrame, frameHeaderBytes } from '../../src/shard/index.js';
import { startCairnd, type CairndHandle, type CairndOptions } from '../harness/cairnd.js';
import { startEtcd, type EtcdHandle } from '../harness/etcd.js';
import { exited, waitFor } from '../../src/dev/index.js';
import { seededBytes } from '../support/bytes.js';

const segmentSize = '16MiB';

function recordOf(volume: string, epoch: number, lsn: number, dataBytes = 4096): JournalRecord {
  return { volume, epoch, lsn, ranges: [{ offset: lsn * 4096, length: dataBytes }], data: seededBytes(dataBytes, lsn) };
}

function appendOf(volume: string, segment: number, epoch: number, lsn: number, dataBytes = 4096) {
  return { volume, segment, epoch, lsn, record: encodeRecord(recordOf(volume, epoch, lsn, dataBytes)) };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject');
}

/** A raw socket speaking frames by hand, for what a well-behaved client never sends. */
class RawJournalSocket {
  private readonly socket: Socket;
  private buffer = Buffer.alloc(0);
  private readonly frames: { header: JournalFrameHeader; payload: Buffer }[] = [];
  closed = false;

  constructor(address: string) {
    const at = address.lastIndexOf(':');
    this.socket = connect({ host: address.slice(0, at), port: Number(address.slice(at + 1)) });
    this.socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      while (this.buffer.length >= 16) {
        const decoded = decodeFrameHeader(this.buffer, 1 << 26);
        if (!('header' in decoded)) throw new Error(`the node sent a bad frame: ${decoded.problem}`);
        const end = 16 + decoded.header.payloadBytes;
        if (this.buffer.length < end) break;
        this.frames.push({ header: decoded.header, payload: this.buffer.subarray(16, end) });
        this.buffer = this.buffer.subarray(end);
      }
    });
    this.socket.on('error', () => undefined);
    this.socket.on('close', () => (this.closed = true));
  }

  /** Stops reading from the socket: answers pile up in the node. */
  pause(): void {
    this.socket.pause();
  }

  write(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  frame(op: JournalOpName, requestId: number, payload: readonly Uint8Array[] = []): void {
    const payloadBytes = payload.reduce((s, p) => s + p.length, 0);
    this.write(encodeFrameHeader({ op: journalOps[op], status: 0, requestId, payloadBytes }));
    for (const p of payload) this.write(p);
  }

  async next(what: string): Promise<{ header: JournalFrameHeader; payload: Buffer }> {
    return waitFor(`the node's answer: ${what}`, () => this.frames.shift(), 10_000);
  }

  async closedByNode(): Promise<void> {
    await waitFor('the node to close the connection', () => this.closed, 10_000);
  }

  destroy(): void {
    this.socket.destroy();
  }
}

describe('cairnd journal (processes) with a real etcd', function () {
  this.timeout(120_000);
  let etcd: EtcdHandle;
  let meta: Etcd3;
  const nodes: CairndHandle[] = [];
  const clients: JournalNodeClient[] = [];
  const dirs: string[] = [];

  const start = async (name: string, zone: string, extra: Partial<CairndOptions> = {}): Promise<CairndHandle> => {
    const node = await startCairnd({
      etcd: etcd.endpoint,
      name,
      zone,
      ...extra,
      extraArgs: ['--journal-segment-size', segmentSize, ...(extra.extraArgs ?? [])],
    });
    nodes.push(node);
    return node;
  };
  const clientOf = (
    node: CairndHandle,
    options: { authSecret?: string; timeoutMs?: number } = {},
  ): JournalNodeClient => {
    const client = new JournalNodeClient({
      name: node.name,
      address: node.journalAddress,
      timeoutMs: options.timeoutMs ?? 10_000,
      ...(options.authSecret === undefined ? {} : { authSecret: options.authSecret }),
    });
    clients.push(client);
    return client;
  };
  const tempDir = (): string => {
    const dir = mkdtempSync(join(tmpdir(), 'cairn-journal-node-'));
    dirs.push(dir);
    return dir;
  };

  before(async () => {
    etcd = await startEtcd();
    meta = new Etcd3({ hosts: etcd.endpoint });
  });

  after(async () => {
    for (const client of clients) client.close();
    for (const node of nodes) await node.stop();
    meta?.close();
    await etcd?.stop();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('registers its journal address in targets/<name> and alive/<name>', async () => {
    const node = await start('jr-1', 'a');
    expect(node.journalAddress).to.match(/^127\.0\.0\.1:\d+$/);
    const target = decodeTarget('t', (await meta.get('cairn/v1/targets/jr-1').string())!);
    expect(target.journal).to.equal(node.journalAddress);
    const alive = decodeAlive('a', (await meta.get('cairn/v1/alive/jr-1').string())!);
    expect(alive.journal).to.equal(node.journalAddress);
    const hello = await clientOf(node).hello();
    expect(hello).to.include({ protocolVersion: 1, node: 'jr-1', zone: 'a', segmentBytes: 16 * 1024 * 1024 });
  });

  it('group-commits concurrent appends: fewer fdatasyncs than appends, every append durable when acknowledged', async () => {
    const node = await start('jg-1', 'a');
    const client = clientOf(node);
    const before = await client.stats();
    // Issued at once on a connection that is still opening, to a segment not yet created, at an
    // epoch not yet recorded: they must still be taken in LSN order.
    const writer = clientOf(node);
    const count = 256;
    await Promise.all(Array.from({ length: count }, (_, i) => writer.append(appendOf('group', 1, 1, i + 1))));
    const after = await client.stats();
    const appends = after.appends - before.appends;
    const fsyncs = after.fsyncs - before.fsyncs;
    expect(appends).to.equal(count);
    expect(fsyncs).to.be.at.least(1);
    expect(fsyncs, `${fsyncs} fdatasyncs for ${appends} appends`).to.be.below(appends / 2);
    const segment = (await client.list('group')).volumes[0]!.segments[0]!;
    expect(segment).to.include({ records: count, firstLsn: 1, lastLsn: count, tail: 'clean' });
  });

  describe('a node SIGKILLed and restarted', () => {
    const volume = 'crash0123456789a';
    let node: CairndHandle;
    let client: JournalNodeClient;
    let acked: number[];
    let tornSegmentRecords: number;

    before(async () => {
      const dataDir = tempDir();
      node = await start('jk-1', 'b', { dataDir });
      client = clientOf(node);
      // Segment 1: 100 appends in flight at once, each acknowledged only once durable.
      acked = [];
      await Promise.all(
        Array.from({ length: 100 }, (_, i) =>
          client.append(appendOf(volume, 1, 1, i + 1)).then(() => acked.push(i + 1)),
        ),
      );
      // A takeover fences epoch 1 out; the new writer (epoch 2) starts segment 2.
      expect(await client.fence(volume, 2)).to.equal(2);
      for (let lsn = 101; lsn <= 103; lsn++) await client.append(appendOf(volume, 2, 2, lsn));
      tornSegmentRecords = 3;
      const usedBytes = (await client.list(volume)).volumes[0]!.segments.find((s) => s.segment === 2)!.usedBytes;

      process.kill(node.pid, 'SIGKILL');
      await exited(node.process);
      // A crash in the middle of writing record 104: only its first 3000 bytes reached the disk.
      const file = join(dataDir, journalDirName, volume, segmentFileName(2));
      const torn = encodeRecord(recordOf(volume, 2, 104)).subarray(0, 3000);
      const fd = openSync(file, 'r+');
      writeSync(fd, torn, 0, torn.length, usedBytes);
      closeSync(fd);
      // The killed instance's alive key would hold the name for up to a lease TTL; a test need not wait.
      await meta.delete().key('cairn/v1/alive/jk-1');
      node = await start('jk-1', 'b', { dataDir, port: node.port, journalPort: node.journalPort });
    });

    it('returns every acknowledged record, byte for byte (the client reconnects by itself)', async () => {
      const seen = new Map<number, JournalRecord>();
      const summary = await readSegment(client, { volume, segment: 1, fromLsn: 0, pageBytes: 100_000 }, (r) => {
        seen.set(r.lsn, { ...r, data: r.data.slice() });
      });
      expect(summary).to.include({ records: 100, nextLsn: 101, tail: 'clean' });
      expect(acked).to.have.length(100);
      for (const lsn of acked) {
        const record = seen.get(lsn);
        expect(record, `lsn ${lsn}`).to.not.equal(undefined);
        expect(record!.epoch).to.equal(1);
        expect(Buffer.from(record!.data).equals(Buffer.from(seededBytes(4096, lsn))), `data of lsn ${lsn}`).to.equal(
          true,
        );
      }
    });

    it('still refuses the fenced epoch: the epoch survived the crash', async () => {
      const err = await rejection(client.append(appendOf(volume, 3, 1, 200)));
      expect(err).to.be.instanceOf(JournalFencedError).and.include({ epoch: 1, nodeEpoch: 2, retryable: false });
      expect((err as Error).message).to.match(/node "jk-1"/);
      expect((await client.list(volume)).volumes[0]!.epoch).to.equal(2);
    });

    it('ignores the torn tail: the valid records are returned, the torn one is not, and appends go on', async () => {
      const lsns: number[] = [];
      const summary = await readSegment(client, { volume, segment: 2, fromLsn: 0 }, (r) => {
        lsns.push(r.lsn);
      });
      expect(lsns).to.deep.equal([101, 102, 103]);
      expect(summary.tail).to.equal('torn');
      expect(lsns).to.have.length(tornSegmentRecords);
      expect((await client.stats()).tornTails).to.equal(1);
      await client.append(appendOf(volume, 2, 2, 104, 100)); // the retried record, shorter this time
      const again: number[] = [];
      await readSegment(client, { volume, segment: 2, fromLsn: 0 }, (r) => {
        again.push(r.data.length);
      });
      expect(again).to.deep.equal([4096, 4096, 4096, 100]);
    });
  });

  it('answers malformed frames with errors while another connection keeps appending', async () => {
    const node = await start('jm-1', 'c');
    const good = clientOf(node);
    let stop = false;
    let goodAppends = 0;
    const appending = (async () => {
      for (let lsn = 1; !stop; lsn++) {
        await good.append(appendOf('steady', 1, 1, lsn, 512));
        goodAppends += 1;
      }
    })();
    try {
      await waitFor('the good client to append', () => goodAppends > 0);

      // A well-formed frame with a malformed payload: EINVAL for that request, the connection stays.
      const soft = new RawJournalSocket(node.journalAddress);
      soft.frame('hello', 1, encodeHelloRequest({ protocolVersion: 1, clientName: 'raw', secret: '' }));
      expect((await soft.next('HELLO')).header).to.include({ requestId: 1, status: 0 });
      const fence = Buffer.concat(encodeFenceRequest({ volume: 'v1', epoch: 3 }));
      soft.frame('fence', 2, [fence.subarray(0, fence.length - 2)]);
      const refused = await soft.next('truncated FENCE');
      expect(refused.header).to.include({ requestId: 2, status: 1, op: journalOps.fence });
      expect(decodeErrorAnswer('fence', refused.payload)).to.include({ code: 'EINVAL', retryable: false });
      soft.frame('stats', 3);
      expect((await soft.next('STATS after the bad one')).header).to.include({ requestId: 3, status: 0 });
      soft.frame('read', 4, [new Uint8Array([0xff, 0xff])]);
      expect(decodeErrorAnswer('read', (await soft.next('garbage READ')).payload).code).to.equal('EINVAL');
      // Shard ops: a put whose framed block was damaged is refused (nothing stored), a get with a
      // key that could escape the store and a truncated get are EINVAL; the connection stays.
      const framed = encodeFrame(new Uint8Array(9000).fill(7));
      const damaged = Buffer.from(framed);
      damaged[frameHeaderBytes + 4 + 100]! ^= 1;
      soft.frame('shardPut', 10, encodeShardPutRequest('v1/e0/g1/s0', damaged));
      expect(decodeErrorAnswer('shardPut', (await soft.next('damaged SHARD_PUT')).payload)).to.include({
        code: 'ECHECKSUM',
      });
      soft.frame('shardGet', 11, encodeShardGetRequest({ key: 'v1/e0/g1/s0' }));
      expect(decodeErrorAnswer('shardGet', (await soft.next('SHARD_GET of nothing')).payload).code).to.equal('ENOENT');
      soft.frame('shardPut', 12, encodeShardPutRequest('v1/e0/g1/s0', framed));
      expect((await soft.next('SHARD_PUT')).header).to.include({ requestId: 12, status: 0 });
      soft.frame('shardGet', 13, encodeShardGetRequest({ key: 'v1/e0/g1/s0', range: { offset: 4000, length: 200 } }));
      // A client from before seeds does not ask for the seed, and gets the answer it knew.
      const got = decodeShardGetAnswer((await soft.next('SHARD_GET')).payload, false);
      expect(got).to.include({ dataBytes: 9000, firstBlock: 0, blockBytes: 4096, seed: 0 });
      expect(got.framed.length).to.equal(got.end - got.start);
      soft.frame(
        'shardPut',
        16,
        encodeShardPutRequest('v1/e0/g1/s1', encodeFrame(new Uint8Array(9000).fill(8), 0xabc)),
      );
      expect((await soft.next('seeded SHARD_PUT')).header).to.include({ requestId: 16, status: 0 });
      soft.frame('shardGet', 17, encodeShardGetRequest({ key: 'v1/e0/g1/s1', withSeed: true }));
      const seeded = decodeShardGetAnswer((await soft.next('SHARD_GET with seed')).payload, true);
      expect(seeded).to.include({ dataBytes: 9000, seed: 0xabc, start: frameHeaderBytes });
      soft.frame('shardGet', 14, encodeShardGetRequest({ key: '../etc/passwd' }));
      expect(decodeErrorAnswer('shardGet', (await soft.next('escaping key')).payload).code).to.equal('EINVAL');
      const get = Buffer.concat(encodeShardGetRequest({ key: 'v1/e0/g1/s0' }));
      soft.frame('shardGet', 15, [get.subarray(0, get.length - 3)]);
      expect(decodeErrorAnswer('shardGet', (await soft.next('truncated SHARD_GET')).payload).code).to.equal('EINVAL');
      const unknownOp = encodeFrameHeader({ op: 99, status: 0, requestId: 5, payloadBytes: 3 });
      soft.write(Buffer.concat([unknownOp, Buffer.from([1, 2, 3])]));
      expect(decodeErrorAnswer('stats', (await soft.next('op 99')).payload).code).to.equal('EPROTO');
      expect(soft.closed).to.equal(false);
      soft.destroy();

      // A frame header that cannot be trusted: one EPROTO answer, then the node closes the connection.
      const garbage = new RawJournalSocket(node.journalAddress);
      garbage.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
      const last = await garbage.next('bad magic');
      expect(last.header).to.include({ status: 1, requestId: 0 });
      expect(decodeErrorAnswer('hello', last.payload).message).to.match(/bad frame magic/);
      await garbage.closedByNode();

      const huge = new RawJournalSocket(node.journalAddress);
      huge.write(encodeFrameHeader({ op: journalOps.append, status: 0, requestId: 77, payloadBytes: 0xffff_fff0 }));
      const tooBig = await huge.next('oversized frame');
      expect(tooBig.header).to.include({ status: 1, requestId: 77 });
      expect(decodeErrorAnswer('append', tooBig.payload).code).to.equal('EPROTO');
      await huge.closedByNode();

      // Anything before HELLO: refused and closed.
      const rude = new RawJournalSocket(node.journalAddress);
      rude.frame('fence', 9, encodeFenceRequest({ volume: 'steady', epoch: 99 }));
      expect(decodeErrorAnswer('fence', (await rude.next('FENCE before HELLO')).payload).code).to.equal('EAUTH');
      await rude.closedByNode();
      const stranger = new RawJournalSocket(node.journalAddress);
      stranger.write(encodeFrameHeader({ op: 99, status: 0, requestId: 3, payloadBytes: 0 }));
      expect(decodeErrorAnswer('hello', (await stranger.next('op 99 before HELLO')).payload).code).to.equal('EAUTH');
      await stranger.closedByNode();

      const before = goodAppends;
      await waitFor('the good client to keep appending', () => goodAppends >= before + 20);
      const stats = await good.stats();
      expect(stats.badFrames).to.be.at.least(5);
      expect((await good.list('steady')).volumes[0]!.epoch).to.equal(1); // the rude FENCE was not applied
    } finally {
      stop = true;
      await appending;
    }
    expect(node.process.exitCode).to.equal(null);
  });

  it('bounds what a client that never reads its answers can make the node hold', async () => {
    const node = await start('jb-1', 'a');
    const other = clientOf(node);
    const mib = new Uint8Array(1 << 20);
    for (let lsn = 1; lsn <= 12; lsn++)
      await other.append({
        volume: 'big',
        segment: 1,
        epoch: 1,
        lsn,
        record: encodeRecord({ volume: 'big', epoch: 1, lsn, ranges: [{ offset: 0, length: mib.length }], data: mib }),
      });
    const before = (await other.stats()).reads;
    // 100 READs of 16 MiB each, pipelined, and not one answer read: 1.6 GB if the node served them all.
    const hog = new RawJournalSocket(node.journalAddress);
    hog.pause();
    hog.frame('hello', 1, encodeHelloRequest({ protocolVersion: 1, clientName: 'hog', secret: '' }));
    for (let id = 2; id < 102; id++)
      hog.frame('read', id, encodeReadRequest({ volume: 'big', segment: 1, fromLsn: 0, maxBytes: 16 << 20 }));
    // Each READ reserves its 16 MiB in the connection's 64 MiB budget before it runs: the node
    // takes four, and reads no more from that socket until their answers leave.
    await waitFor('the node to serve the first READs', async () => (await other.stats()).reads - before >= 4);
    for (let lsn = 13; lsn <= 22; lsn++) await other.append(appendOf('big', 2, 1, lsn, 512)); // others go on
    expect((await other.stats()).reads - before).to.equal(4);
    hog.destroy();
  });

  it('refuses a journal client without the shared secret, and serves one with it', async () => {
    const secret = 'journal-secret-0123456789';
    const node = await start('js-1', 'a', { env: { ...process.env, CAIRN_NODE_SECRET: secret } });
    const err = await rejection(clientOf(node).append(appendOf('sec', 1, 1, 1)));
    expect(err).to.be.instanceOf(AuthRejectedError);
    expect((err as Error).message).to.match(/no shared secret/);
    const wrong = await rejection(clientOf(node, { authSecret: 'wrong-secret-0123456789' }).hello());
    expect((wrong as Error).message).to.match(/wrong shared secret/);
    await clientOf(node, { authSecret: secret }).append(appendOf('sec', 1, 1, 1));
  });

  it('ReplicatedJournal: all three nodes acknowledge; a takeover fences the old writer; a lost node is named', async () => {
    const trio = [await start('jx-a', 'a'), await start('jx-b', 'b'), await start('jx-c', 'c')];
    const volume = 'repl';
    const old = new ReplicatedJournal({ volume, epoch: 1, segment: 1, replicas: trio.map((n) => clientOf(n)) });
    await old.create();
    const data = seededBytes(4096, 9);
    for (let lsn = 1; lsn <= 10; lsn++) {
      const ack = await old.append({ lsn, ranges: [{ offset: lsn * 4096, length: 4096 }], data });
      expect(ack.spaces).to.have.length(3);
    }
    // Each node holds all ten, durably.
    for (const node of trio) {
      const seg = (await clientOf(node).list(volume)).volumes[0]!.segments[0]!;
      expect(seg, node.name).to.include({ records: 10, lastLsn: 10 });
    }

    const fresh = new ReplicatedJournal({ volume, epoch: 2, segment: 2, replicas: trio.map((n) => clientOf(n)) });
    expect((await fresh.fence()).fenced).to.have.members(['jx-a', 'jx-b', 'jx-c']);
    const fenced = await rejection(old.append({ lsn: 11, ranges: [{ offset: 0, length: 4096 }], data }));
    expect(fenced).to.be.instanceOf(JournalFencedError).and.include({ epoch: 1, nodeEpoch: 2 });
    await fresh.append({ lsn: 11, ranges: [{ offset: 0, length: 4096 }], data });

    await trio[2]!.stop({ graceMs: 10_000 });
    const lost = await rejection(fresh.append({ lsn: 12, ranges: [{ offset: 0, length: 4096 }], data }));
    expect(lost).to.be.instanceOf(JournalReplicationError);
    const e = lost as JournalReplicationError;
    expect(e.acked).to.have.members(['jx-a', 'jx-b']);
    expect(e.failures.map((f) => f.replica)).to.deep.equal(['jx-c']);
    expect(e.failures[0]!.error).to.be.instanceOf(UnavailableError);
    expect(e.retryable).to.equal(true);
    expect(e.message).to.match(/node "jx-c"/);
  });
});
