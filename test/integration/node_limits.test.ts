/**
 * The storage node's limits against hostile clients (src/node/limits.ts), each tried with a real
 * ShardServer or JournalServer on loopback and raw sockets as the hostile client. The hostile
 * client connects from 127.0.0.1 and the well-behaved one from 127.0.0.2 (all of 127/8 is
 * loopback on Linux), so per-client shares are per address as in production. Durations are
 * configured small; every wait is for a condition, with a deadline.
 */
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MiB, crc32Of } from '../../src/core/index.js';
import { waitFor } from '../../src/dev/index.js';
import {
  encodeFrameHeader,
  encodeHelloRequest,
  encodeShardGetRequest,
  encodeShardPutRequest,
  journalOps,
  journalProtocolVersion,
} from '../../src/journal/index.js';
import {
  JournalServer,
  JournalStore,
  ShardServer,
  nodeConnectionRequestsPipelinedMax,
  type NodeLimitName,
  type NodeLimits,
} from '../../src/node/index.js';
import { FileShardStore, encodeFrame } from '../../src/shard/index.js';

const hostile = '127.0.0.1';
const friendly = '127.0.0.2';

/** A raw TCP client: what it received, and whether the server closed it. */
interface RawClient {
  readonly socket: Socket;
  received(): string;
  readonly closed: () => boolean;
}

function rawClient(port: number, localAddress = hostile): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let closed = false;
    const socket = connect({ host: '127.0.0.1', port, localAddress }, () =>
      resolve({ socket, received: () => Buffer.concat(chunks).toString('latin1'), closed: () => closed }),
    );
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined);
    socket.on('close', () => (closed = true));
    socket.once('error', reject);
  });
}

/** A PUT of raw data from `localAddress` on a connection of its own; resolves with the status. */
function put(port: number, key: string, data: Buffer, localAddress = friendly): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        localAddress,
        agent: false,
        method: 'PUT',
        path: `/v1/shards/${key}`,
        headers: { 'content-length': data.length, 'x-cairn-crc32': crc32Of(data).toString(16) },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

/** A GET from `localAddress` on a connection of its own; resolves with the status and body. */
function get(port: number, path: string, localAddress = friendly): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, localAddress, agent: false, path }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function healthInFlight(port: number): Promise<number> {
  const { status, body } = await get(port, '/v1/health');
  expect(status).to.equal(200);
  return (JSON.parse(body.toString('utf8')) as { requestsInFlight: number }).requestsInFlight;
}

/** A PUT's request head declaring `length` body bytes (raw data with a CRC that will not match). */
function putHead(key: string, length: number): string {
  return `PUT /v1/shards/${key} HTTP/1.1\r\nhost: x\r\ncontent-length: ${length}\r\nx-cairn-crc32: 0\r\n\r\n`;
}

describe('storage node limits against hostile clients', function () {
  this.timeout(60_000);
  let dir: string;
  let store: FileShardStore;
  let server: ShardServer | undefined;
  let journal: JournalServer | undefined;
  let journalStore: JournalStore | undefined;
  const clients: RawClient[] = [];
  let lines: string[] = [];
  let hits: NodeLimitName[] = [];

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cairn-limits-'));
    store = await FileShardStore.open(join(dir, 'shards'), { description: 'node "n1"' });
    lines = [];
    hits = [];
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.socket.destroy();
    await server?.close(0);
    await journal?.close(0);
    await journalStore?.close();
    await store.close();
    server = undefined;
    journal = undefined;
    journalStore = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  async function startShardServer(limits: Partial<NodeLimits>): Promise<number> {
    server = new ShardServer({
      store,
      name: 'n1',
      zone: 'a',
      log: (line) => lines.push(line),
      limits,
      onLimit: (limit) => hits.push(limit),
    });
    return (await server.listen('127.0.0.1', 0)).port;
  }

  async function open(port: number, count: number, localAddress = hostile): Promise<RawClient[]> {
    const opened = await Promise.all(Array.from({ length: count }, () => rawClient(port, localAddress)));
    clients.push(...opened);
    return opened;
  }

  it('aborts a body slower than the minimum rate with 408 and releases its budget, while a normal PUT succeeds', async () => {
    const port = await startShardServer({ bodyRateWindowMs: 200, bodyRateMinBytesPerS: 64 * 1024 });
    const slow = await open(port, 4);
    slow.forEach((c, i) => c.socket.write(`${putHead(`slow/${i}`, 4 * MiB)}x`));
    await waitFor('the slow bodies to be admitted', () => server!.stats().putBytesInFlight === 16 * MiB || undefined);
    expect(await put(port, 'good/1', Buffer.alloc(64 * 1024, 7))).to.equal(201);
    await waitFor('every slow body to be answered 408 and closed', () =>
      slow.every((c) => c.closed() && c.received().startsWith('HTTP/1.1 408')),
    );
    for (const c of slow) expect(c.received()).to.contain('ESLOWBODY');
    await waitFor('the PUT budget to be released', () => server!.stats().putBytesInFlight === 0);
    expect(hits).to.include('slow_body');
    expect(lines.some((l) => l.includes('limit slow_body'))).to.equal(true);
  });

  it("holds one client's bodies to its share of the PUT budget, so another client's PUT succeeds", async () => {
    const port = await startShardServer({
      putBytesMax: 8 * MiB,
      putBytesPerClientMax: 4 * MiB,
      bodyRateWindowMs: 600_000,
    });
    // 16 connections each declare 1 MiB and send 1 byte: only the client's 4 MiB share is held.
    const slow = await open(port, 16);
    slow.forEach((c, i) => c.socket.write(`${putHead(`slow/${i}`, MiB)}x`));
    await waitFor('twelve of them to be refused', () =>
      slow.filter((c) => c.received().startsWith('HTTP/1.1 503')).length === 12 ? true : undefined,
    );
    expect(slow.filter((c) => c.received().includes('EBUSY')).length).to.equal(12);
    expect(server!.stats().putBytesInFlight).to.equal(4 * MiB);
    expect(await put(port, 'good/1', Buffer.alloc(2 * MiB, 7))).to.equal(201);
    expect(hits).to.include('put_bytes_per_client');
    expect(lines.some((l) => l.includes('limit put_bytes_per_client'))).to.equal(true);
  });

  it('refuses connections past the per-client and total caps with a 503 and a log line', async () => {
    const port = await startShardServer({ connectionsMax: 8, connectionsPerClientMax: 4 });
    await open(port, 4);
    await waitFor('four connections', () => server!.stats().connections === 4);
    const [fifth] = await open(port, 1);
    await waitFor('the fifth to be refused', () => fifth!.closed() || undefined);
    expect(fifth!.received()).to.match(/^HTTP\/1.1 503/);
    expect(lines.some((l) => l.includes('limit connections_per_client'))).to.equal(true);
    // Another client is still served, and may open up to the total.
    expect(await healthInFlight(port)).to.equal(0);
    await open(port, 4, friendly);
    await waitFor('eight connections', () => server!.stats().connections === 8);
    const [ninth] = await open(port, 1, '127.0.0.3');
    await waitFor('the ninth to be refused', () => ninth!.closed() || undefined);
    expect(ninth!.received()).to.contain('EBUSY');
    expect(hits).to.include.members(['connections_per_client', 'connections']);
  });

  it('closes a connection idle for the idle timeout', async () => {
    const port = await startShardServer({ idleTimeoutMs: 300 });
    const [idle] = await open(port, 1);
    await waitFor('the idle connection to be closed', () => idle!.closed() || undefined);
    await waitFor('it to be uncounted', () => server!.stats().connections === 0);
    expect(hits).to.include('idle');
  });

  it('bounds the responses a client leaves unread, cuts it after the idle timeout, and serves others meanwhile', async () => {
    const port = await startShardServer({ responseBytesPerClientMax: 12 * MiB, idleTimeoutMs: 1_000 });
    await store.put('big/0', Buffer.alloc(4 * MiB, 3));
    const greedy = await open(port, 10);
    const getHead = 'GET /v1/shards/big/0 HTTP/1.1\r\nhost: x\r\n\r\n';
    for (const c of greedy) {
      c.socket.pause(); // it reads nothing
      c.socket.write(getHead.repeat(10));
    }
    await waitFor('the greedy client to hold answers', () => server!.stats().responseBytesInFlight > 0 || undefined);
    const during = await get(port, '/v1/shards/big/0');
    expect(during.status).to.equal(200);
    expect(during.body.length).to.be.greaterThan(4 * MiB);
    let heldMax = 0;
    // The client reads nothing, so it would not see the close: look from the server's side.
    await waitFor('the unread connections to be cut', () => {
      heldMax = Math.max(heldMax, server!.stats().responseBytesInFlight);
      return server!.stats().connections === 0 || undefined;
    });
    // At most the greedy client's share (two framed 4 MiB answers fit it) and the other client's
    // one answer, if it was not yet released, were held at any time we looked.
    expect(heldMax).to.be.at.most(12 * MiB + during.body.length);
    expect(hits).to.include('unread_responses');
    await waitFor('everything to be released', () => {
      const s = server!.stats();
      return (s.requestsInFlight === 0 && s.responseBytesInFlight === 0) || undefined;
    });
    const { status, body } = await get(port, '/v1/shards/big/0');
    expect(status).to.equal(200);
    expect(body.length).to.be.greaterThan(4 * MiB);
  });

  it('uncounts pipelined requests whose connection closed (requestsInFlight returns to 0, drain is immediate)', async () => {
    const port = await startShardServer({});
    await store.put('big/0', Buffer.alloc(4 * MiB, 3));
    const pipelining = await open(port, 10);
    const getHead = 'GET /v1/shards/big/0 HTTP/1.1\r\nhost: x\r\n\r\n';
    for (const c of pipelining) {
      c.socket.pause();
      c.socket.write(getHead.repeat(10));
    }
    await waitFor('the requests to arrive', async () => (await healthInFlight(port)) > 0 || undefined);
    for (const c of pipelining) c.socket.destroy();
    await waitFor('requestsInFlight to return to 0', async () => (await healthInFlight(port)) === 0 || undefined);
    expect(await server!.close(60_000)).to.equal(0);
    server = undefined;
  });

  it('closes a connection that pipelines more requests than it may have waiting', async () => {
    const port = await startShardServer({});
    await store.put('big/0', Buffer.alloc(4 * MiB, 3));
    const [greedy] = await open(port, 1);
    greedy!.socket.pause();
    greedy!.socket.write(
      'GET /v1/shards/big/0 HTTP/1.1\r\nhost: x\r\n\r\n'.repeat(nodeConnectionRequestsPipelinedMax + 10),
    );
    await waitFor('the connection to be closed', () => server!.stats().connections === 0 || undefined);
    await waitFor('its requests to be uncounted', () => server!.stats().requestsInFlight === 0 || undefined);
    expect(hits).to.include('pipelined_requests');
  });

  describe('the journal connection', () => {
    async function startJournal(limits: Partial<NodeLimits>): Promise<number> {
      journalStore = await JournalStore.open(join(dir, 'journal'), { description: 'node "n1"', log: () => undefined });
      journal = new JournalServer({
        store: journalStore,
        shards: store,
        name: 'n1',
        zone: 'a',
        log: (line) => lines.push(line),
        limits,
        onLimit: (limit) => hits.push(limit),
      });
      return (await journal.listen('127.0.0.1', 0)).port;
    }

    it('refuses connections past the per-client cap with a log line', async () => {
      const port = await startJournal({ connectionsPerClientMax: 2 });
      await open(port, 2);
      await waitFor('two connections', () => journal!.stats().connections === 2);
      const [third] = await open(port, 1);
      await waitFor('the third to be refused', () => third!.closed() || undefined);
      expect(lines.some((l) => l.includes('limit connections_per_client'))).to.equal(true);
      const [other] = await open(port, 1, friendly);
      await waitFor('another client to be admitted', () => journal!.stats().connections === 3);
      expect(other!.closed()).to.equal(false);
    });

    /** The frames of a HELLO request (id 1), for a raw client. */
    function helloFrames(): Buffer {
      const hello = Buffer.concat(
        encodeHelloRequest({ protocolVersion: journalProtocolVersion, clientName: 'raw', secret: '' }),
      );
      return Buffer.concat([
        encodeFrameHeader({ op: journalOps.hello, status: 0, requestId: 1, payloadBytes: hello.length }),
        hello,
      ]);
    }

    it('closes a connection that leaves its answers unread for the idle timeout', async () => {
      const port = await startJournal({ idleTimeoutMs: 500 });
      await store.put('big/0', Buffer.alloc(4 * MiB, 3));
      const [greedy] = await open(port, 1);
      greedy!.socket.pause(); // it reads nothing
      const get = Buffer.concat(encodeShardGetRequest({ key: 'big/0' }));
      const gets = Array.from({ length: 20 }, (_, i) =>
        Buffer.concat([
          encodeFrameHeader({ op: journalOps.shardGet, status: 0, requestId: i + 2, payloadBytes: get.length }),
          get,
        ]),
      );
      greedy!.socket.write(Buffer.concat([helloFrames(), ...gets]));
      await waitFor(
        'the connection to be cut',
        () => (hits.includes('unread_responses') && journal!.stats().connections === 0) || undefined,
      );
      expect(lines.some((l) => l.includes('limit unread_responses'))).to.equal(true);
    });

    it('receives SHARD_PUTs into shared payload slots and frees each: stored, refused, or cut off mid-payload', async () => {
      const port = await startJournal({});
      const [client] = await open(port, 1);
      const shardPut = (id: number, key: string, framed: Uint8Array) => {
        const payload = Buffer.concat(encodeShardPutRequest(key, framed));
        return Buffer.concat([
          encodeFrameHeader({ op: journalOps.shardPut, status: 0, requestId: id, payloadBytes: payload.length }),
          payload,
        ]);
      };
      const data = Buffer.alloc(MiB, 5);
      const framed = encodeFrame(data, 9);
      const damaged = Buffer.from(framed);
      damaged[framed.length - 1]! ^= 1;
      client!.socket.write(
        Buffer.concat([helloFrames(), shardPut(2, 'v/0/1/0', framed), shardPut(3, 'v/0/1/1', damaged)]),
      );
      await waitFor('the good shard to be stored', async () => (await store.head('v/0/1/0')) !== null || undefined);
      await waitFor('both slots to be free', () => journal!.payloadSlabs.inUse === 0 || undefined);
      expect(Buffer.from(await store.get('v/0/1/0')).equals(data)).to.equal(true);
      expect(await store.head('v/0/1/1'), 'the damaged shard').to.equal(null);
      // Half a SHARD_PUT, then the connection drops: its slot comes back.
      const [cut] = await open(port, 1);
      const half = shardPut(2, 'v/0/1/2', framed);
      cut!.socket.write(Buffer.concat([helloFrames(), half.subarray(0, half.length >> 1)]));
      await waitFor('the half frame to hold a slot', () => journal!.payloadSlabs.inUse === 1 || undefined);
      cut!.socket.destroy();
      await waitFor('its slot to be free', () => journal!.payloadSlabs.inUse === 0 || undefined);
      expect(await store.head('v/0/1/2')).to.equal(null);
    });

    it('closes a connection whose frame payload arrives slower than the minimum rate', async () => {
      const port = await startJournal({ bodyRateWindowMs: 200 });
      const [slow] = await open(port, 1);
      const hello = Buffer.concat(
        encodeHelloRequest({ protocolVersion: journalProtocolVersion, clientName: 'slow', secret: '' }),
      );
      slow!.socket.write(
        encodeFrameHeader({ op: journalOps.hello, status: 0, requestId: 1, payloadBytes: hello.length }),
      );
      slow!.socket.write(hello.subarray(0, 1));
      await waitFor('the slow frame to be cut', () => slow!.closed() || undefined);
      expect(hits).to.include('slow_body');
      expect(lines.some((l) => l.includes('slower than'))).to.equal(true);
    });
  });
});
