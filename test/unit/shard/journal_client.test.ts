/**
 * JournalNodeClient against an in-process node that answers HELLO and then nothing: a request
 * that times out drops its connection (and what waits unsent in it), and the next request opens
 * a new one. Before, the connection stayed and timed-out frames piled up in its send buffer.
 */
import { expect } from 'chai';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { UnavailableError } from '../../../src/core/index.js';
import {
  decodeFrameHeader,
  encodeFrameHeader,
  encodeHelloAnswer,
  frameStatus,
  journalOps,
} from '../../../src/journal/index.js';
import { JournalNodeClient, encodeFrame } from '../../../src/shard/index.js';

/** Answers HELLO on every connection, then reads and ignores every other frame. */
function silentNode(): Promise<{ server: Server; address: string; connections: () => number }> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    connections += 1;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      while (buffer.length >= 16) {
        const decoded = decodeFrameHeader(buffer, 64 << 20);
        if (!('header' in decoded)) return socket.destroy();
        const end = 16 + decoded.header.payloadBytes;
        if (buffer.length < end) return;
        if (decoded.header.op === journalOps.hello) {
          const answer = Buffer.concat(
            encodeHelloAnswer({
              protocolVersion: 1,
              node: 'silent',
              zone: 'a',
              segmentBytes: 64 << 20,
              recordBytesMax: 8 << 20,
              readBytesMax: 16 << 20,
            }),
          );
          socket.write(
            encodeFrameHeader({
              op: journalOps.hello,
              status: frameStatus.ok,
              requestId: decoded.header.requestId,
              payloadBytes: answer.length,
            }),
          );
          socket.write(answer);
        }
        buffer = buffer.subarray(end);
      }
    });
  });
  server.on('close', () => sockets.forEach((s) => s.destroy()));
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        server,
        address: `127.0.0.1:${port}`,
        connections: () => connections,
      });
    }),
  );
}

describe('JournalNodeClient', function () {
  it('drops a connection whose request timed out, and reconnects for the next one', async () => {
    const node = await silentNode();
    const client = new JournalNodeClient({ name: 'silent', address: node.address, timeoutMs: 200 });
    try {
      const framed = encodeFrame(new Uint8Array(10_000));
      for (let i = 0; i < 3; i++) {
        const err = await client.shardPut(`v/1/${i}/0`, framed).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err, `put ${i}`).to.be.instanceOf(UnavailableError);
        expect((err as Error).message).to.match(/no answer within \d+ ms/);
      }
      expect(node.connections(), 'one connection per timed-out request').to.equal(3);
    } finally {
      client.close();
      node.server.close();
    }
  });
});
