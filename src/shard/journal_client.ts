/**
 * JournalNodeClient: the journal of one storage node, spoken to over the journal wire protocol
 * (src/journal/wire.ts) on one persistent TCP connection. It implements the journal layer's
 * JournalReplica port; ReplicatedJournal (src/journal/replicated.ts) runs r of them in parallel.
 *
 * What it keeps true:
 * - One connection at a time, opened on first use with a HELLO (protocol version, the node's
 *   shared secret) and reopened on the next request after it fails. Requests are pipelined: each
 *   gets a request id, and answers are matched by id in whatever order they come.
 * - Every request has a deadline; a request without an answer by then fails with
 *   UnavailableError (its answer, if it comes later, is dropped). An APPEND that timed out may
 *   still have been applied: a retry of the same record is acknowledged by the node without a
 *   second copy (see JournalReplica.append).
 * - Failures are typed and name the node and its address: UnavailableError when the connection
 *   cannot be made or breaks (every request in flight on it fails with it), JournalFencedError
 *   (with the node's epoch) when the node has seen a higher epoch, AuthRejectedError for a wrong
 *   secret, JournalProtocolError when the node's answers do not parse, and the node's own errors
 *   mapped back by errorFromWire().
 * - Bounded: requests in flight (journalClientRequestsInFlightMax), answer sizes
 *   (journalResponseBytesMax).
 *
 * - With `tls` the connection is TLS (1.2 or newer), the node's certificate verified against
 *   `tls.ca`; a certificate either side refuses is an AuthRejectedError naming the CA source.
 *
 * What it leaves out: retries (the caller decides, from `retryable`), and connecting to more than
 * one address per node.
 */
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import {
  AssertionError,
  InvalidArgumentError,
  UnavailableError,
  assert,
  errorMessage,
  type CairnError,
} from '../core/index.js';
import {
  JournalProtocolError,
  decodeCountAnswer,
  decodeErrorAnswer,
  decodeFenceAnswer,
  decodeFrameHeader,
  decodeHelloAnswer,
  decodeListAnswer,
  decodeReadAnswer,
  decodeSegmentSpace,
  decodeShardGetAnswer,
  decodeStatsAnswer,
  encodeAppendRequest,
  encodeCreateRequest,
  encodeFenceRequest,
  encodeFrameHeader,
  encodeHelloRequest,
  encodeListRequest,
  encodeReadRequest,
  encodeShardGetRequest,
  encodeShardPutRequest,
  encodeTrimRequest,
  errorFromWire,
  frameStatus,
  journalConnectionBytesInFlightMax,
  journalFrameHeaderBytes,
  journalOps,
  journalProtocolVersion,
  journalResponseBytesMax,
  type AppendRequest,
  type CreateRequest,
  type HelloAnswer,
  type JournalFrameHeader,
  type JournalListAnswer,
  type JournalOpName,
  type JournalReplica,
  type JournalStats,
  type ReadAnswer,
  type ReadRequest,
  type SegmentSpace,
  type ShardGetAnswer,
  type ShardGetRequest,
  type TrimRequest,
} from '../journal/index.js';
import { parseHostPort } from './net.js';
import { tlsConnectOptions, transportError, type NodeClientTls } from './tls.js';

/** Requests are refused (retryably) while this much is queued unsent: the node's own per-connection budget. */
const journalClientUnsentBytesMax = journalConnectionBytesInFlightMax;

/** Per-request deadline by default: an fdatasync under load takes tens of ms; allow slow disks. */
export const journalRequestTimeoutMsDefault = 10_000;
/** Requests one client may have in flight; more fail at once (the caller is far ahead of the node). */
export const journalClientRequestsInFlightMax = 4096;

export interface JournalNodeClientOptions {
  /** The node's name, for messages: `node "b-1"`. */
  readonly name: string;
  /** host:port of its journal server (`journal` in its etcd target record). */
  readonly address: string;
  /** The node's shared secret, when it needs one. */
  readonly authSecret?: string;
  /** Deadline of each request, connecting included; default journalRequestTimeoutMsDefault. */
  readonly timeoutMs?: number;
  /** Who we are, for the node's logs; default `cairn pid <pid>`. */
  readonly clientName?: string;
  /** Set when the node speaks TLS (its etcd record says `tls: true`). */
  readonly tls?: NodeClientTls;
}

interface Pending {
  readonly op: JournalOpName;
  readonly what: string;
  /** The epoch the request carried, for JournalFencedError. */
  readonly epoch: number;
  readonly resolve: (payload: Uint8Array) => void;
  readonly reject: (err: unknown) => void;
  readonly timer: NodeJS.Timeout;
}

/** One TCP connection and what is in flight on it. */
interface Connection {
  readonly socket: Socket;
  readonly pending: Map<number, Pending>;
  /** Resolves with the node's HELLO answer once the connection may carry requests. */
  readonly ready: Promise<HelloAnswer>;
  /** Set once `ready` resolved: requests then go out synchronously, in call order. */
  hello: HelloAnswer | undefined;
  failed: CairnError | undefined;
  /** True while the socket is corked until the end of the tick (see send()). */
  corked: boolean;
  header: Uint8Array;
  headerFill: number;
  frame: { header: JournalFrameHeader; payload: Uint8Array; fill: number } | undefined;
}

/**
 * @example
 * const node = new JournalNodeClient({ name: 'b-1', address: '10.0.0.7:4102', authSecret });
 * await node.append({ volume: vol.id, segment: 7, epoch, lsn: 42, record: encodeRecord(...) });
 * node.close();
 */
export class JournalNodeClient implements JournalReplica {
  readonly name: string;
  readonly address: string;
  readonly description: string;
  private readonly host: string;
  private readonly port: number;
  private readonly secret: string;
  private readonly timeoutMs: number;
  private readonly clientName: string;
  private readonly tls: NodeClientTls | undefined;
  private connection: Connection | undefined;
  private nextRequestId = 1;
  private inFlight = 0;
  private closed = false;

  constructor(options: JournalNodeClientOptions) {
    const { host, port } = parseHostPort(options.address, `journal address of node "${options.name}"`);
    this.name = options.name;
    this.address = options.address;
    this.host = host;
    this.port = port;
    this.description = `node "${options.name}"`;
    this.secret = options.authSecret ?? '';
    this.tls = options.tls;
    this.timeoutMs = options.timeoutMs ?? journalRequestTimeoutMsDefault;
    this.clientName = (options.clientName ?? `cairn pid ${process.pid}`).slice(0, 100);
    if (!Number.isSafeInteger(this.timeoutMs) || this.timeoutMs <= 0)
      throw new InvalidArgumentError(`Invalid timeout ${this.timeoutMs} ms for the journal of ${this.description}`);
  }

  /** Connects (if not connected) and returns what the node said in its HELLO answer. */
  async hello(): Promise<HelloAnswer> {
    const connection = await this.connected(`Cannot connect to the journal of ${this.description} at ${this.address}`);
    return connection.ready;
  }

  async create(request: CreateRequest): Promise<SegmentSpace> {
    const what = `Cannot create journal segment ${request.segment} of volume ${request.volume} on ${this.description}`;
    const answer = await this.call('create', encodeCreateRequest(request), what, request.epoch);
    return decodeSegmentSpace('create', answer);
  }

  async append(request: AppendRequest): Promise<SegmentSpace> {
    const what = `Cannot append lsn ${request.lsn} to journal segment ${request.segment} of volume ${request.volume} on ${this.description}`;
    const answer = await this.call('append', encodeAppendRequest(request), what, request.epoch);
    return decodeSegmentSpace('append', answer);
  }

  async fence(volume: string, epoch: number): Promise<number> {
    const what = `Cannot fence volume ${volume} at epoch ${epoch} on ${this.description}`;
    const answer = await this.call('fence', encodeFenceRequest({ volume, epoch }), what, epoch);
    return decodeFenceAnswer(answer);
  }

  async read(request: ReadRequest): Promise<ReadAnswer> {
    const what = `Cannot read journal segment ${request.segment} of volume ${request.volume} from ${this.description}`;
    return decodeReadAnswer(await this.call('read', encodeReadRequest(request), what, 0));
  }

  async trim(request: TrimRequest): Promise<number> {
    const what = `Cannot trim the journal of volume ${request.volume} on ${this.description}`;
    return decodeCountAnswer('trim', await this.call('trim', encodeTrimRequest(request), what, 0));
  }

  async list(volume?: string): Promise<JournalListAnswer> {
    const what = `Cannot list the journal${volume === undefined ? '' : ` of volume ${volume}`} on ${this.description}`;
    return decodeListAnswer(await this.call('list', encodeListRequest(volume), what, 0));
  }

  /**
   * The framed blocks of shard `key` covering `range` (the whole shard when absent), as the node
   * read and verified them; the caller verifies them again (unframeSpan) as it takes the data.
   */
  async shardGet(request: ShardGetRequest): Promise<ShardGetAnswer> {
    const what = `Cannot read shard ${request.key} from ${this.description}`;
    const withSeed = { ...request, withSeed: true };
    return decodeShardGetAnswer(await this.call('shardGet', encodeShardGetRequest(withSeed), what, 0), true);
  }

  /** Stores shard `key`, framed by the caller (encodeFrame); the node verifies every block. */
  async shardPut(key: string, framed: Uint8Array): Promise<void> {
    const what = `Cannot store shard ${key} on ${this.description}`;
    await this.call('shardPut', encodeShardPutRequest(key, framed), what, 0);
  }

  /** The node's journal counters (appends, fsyncs, ...). */
  async stats(): Promise<JournalStats> {
    return decodeStatsAnswer(await this.call('stats', [], `Cannot read the journal stats of ${this.description}`, 0));
  }

  /** Closes the connection; requests in flight fail with UnavailableError. Further calls fail too. */
  close(): void {
    this.closed = true;
    const connection = this.connection;
    if (connection !== undefined)
      this.fail(connection, new UnavailableError(`The journal client of ${this.description} was closed`));
  }

  // ---------------------------------------------------------------------------------------------

  private async call(
    op: JournalOpName,
    parts: readonly Uint8Array[],
    what: string,
    epoch: number,
  ): Promise<Uint8Array> {
    if (this.closed) throw new UnavailableError(`${what}: the client was closed`);
    if (this.inFlight >= journalClientRequestsInFlightMax)
      throw new UnavailableError(`${what}: ${journalClientRequestsInFlightMax} requests already in flight`);
    this.inFlight += 1;
    const deadline = Date.now() + this.timeoutMs;
    try {
      // On a connection that said HELLO the request is written before this returns, so requests
      // reach the node in the order of the calls (a writer pipelines rising LSNs). While a
      // connection opens, requests wait for the same HELLO and go out in the same order.
      const current = this.connection;
      const connection =
        current !== undefined && current.failed === undefined && current.hello !== undefined
          ? current
          : await this.connected(what, deadline);
      return await this.send(connection, op, parts, what, epoch, Math.max(1, deadline - Date.now()));
    } finally {
      this.inFlight -= 1;
    }
  }

  /** Resolves with a connection that has said HELLO, opening one when there is none (or it failed). */
  private async connected(what: string, deadline = Date.now() + this.timeoutMs): Promise<Connection> {
    if (this.closed) throw new UnavailableError(`${what}: the client was closed`);
    let connection = this.connection;
    if (connection === undefined || connection.failed !== undefined) connection = this.open(what, deadline);
    try {
      await connection.ready;
    } catch (err) {
      throw withAction(what, err);
    }
    return connection;
  }

  private open(what: string, deadline: number): Connection {
    const socket =
      this.tls === undefined
        ? connect({ host: this.host, port: this.port, noDelay: true, keepAlive: true })
        : tlsConnect({ host: this.host, port: this.port, ...tlsConnectOptions(this.tls, this.host) });
    if (this.tls !== undefined) socket.setNoDelay(true).setKeepAlive(true);
    let onReady: (hello: HelloAnswer) => void = () => undefined;
    let onFailed: (err: unknown) => void = () => undefined;
    const ready = new Promise<HelloAnswer>((resolve, reject) => {
      onReady = resolve;
      onFailed = reject;
    });
    ready.catch(() => undefined); // callers await it; a connection nobody waits on must not warn
    const connection: Connection = {
      socket,
      pending: new Map(),
      ready,
      hello: undefined,
      failed: undefined,
      corked: false,
      header: new Uint8Array(journalFrameHeaderBytes),
      headerFill: 0,
      frame: undefined,
    };
    this.connection = connection;
    const where = `the journal of ${this.description} at ${this.address}`;
    socket.on('data', (chunk: Buffer) => {
      try {
        this.onData(connection, chunk);
      } catch (err) {
        if (err instanceof AssertionError) throw err;
        this.fail(connection, new JournalProtocolError(`${where}: ${errorMessage(err)}`, { cause: err }));
      }
    });
    socket.on('error', (err) => this.fail(connection, transportError(where, err, this.tls)));
    socket.on('close', () => this.fail(connection, new UnavailableError(`${where}: the connection closed`)));
    ready.catch((err: unknown) => this.fail(connection, err as CairnError));
    const hello = this.send(
      connection,
      'hello',
      encodeHelloRequest({ protocolVersion: journalProtocolVersion, clientName: this.clientName, secret: this.secret }),
      what,
      0,
      Math.max(1, deadline - Date.now()),
    );
    hello.then(
      (payload) => {
        try {
          const answer = decodeHelloAnswer(payload);
          if (answer.protocolVersion !== journalProtocolVersion)
            throw new JournalProtocolError(
              `${where} speaks journal protocol ${answer.protocolVersion}, this client ${journalProtocolVersion}`,
            );
          connection.hello = answer;
          onReady(answer);
        } catch (err) {
          onFailed(err);
        }
      },
      (err: unknown) => onFailed(err),
    );
    return connection;
  }

  private send(
    connection: Connection,
    op: JournalOpName,
    parts: readonly Uint8Array[],
    what: string,
    epoch: number,
    timeoutMs: number,
  ): Promise<Uint8Array> {
    if (connection.failed !== undefined) return Promise.reject(withAction(what, connection.failed));
    if (connection.socket.writableLength > journalClientUnsentBytesMax)
      return Promise.reject(
        new UnavailableError(
          `${what} at ${this.address}: ${connection.socket.writableLength} bytes already wait to be sent (the node is not reading)`,
        ),
      );
    const requestId = this.allocateId(connection);
    return new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (connection.pending.get(requestId)?.timer !== timer) return;
        connection.pending.delete(requestId);
        reject(new UnavailableError(`${what} at ${this.address}: no answer within ${timeoutMs} ms`));
        // A node that does not answer in time is stuck or gone: drop the connection, and with it
        // whatever still waits in its send buffer (a stalled node stops reading; frames that
        // timed out would pile up here and run there later). The next request reconnects.
        this.fail(
          connection,
          new UnavailableError(`${this.description} at ${this.address} did not answer within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      connection.pending.set(requestId, { op, what, epoch, resolve, reject, timer });
      const payloadBytes = parts.reduce((sum, p) => sum + p.length, 0);
      const socket = connection.socket;
      // Frames sent in one tick leave in one write: the first corks the socket until the tick ends.
      if (!connection.corked) {
        connection.corked = true;
        socket.cork();
        process.nextTick(() => {
          connection.corked = false;
          socket.uncork();
        });
      }
      socket.write(encodeFrameHeader({ op: journalOps[op], status: frameStatus.request, requestId, payloadBytes }));
      for (const part of parts) if (part.length > 0) socket.write(part);
    });
  }

  private allocateId(connection: Connection): number {
    assert(connection.pending.size < 0xffff_ffff, 'request ids exhausted');
    for (;;) {
      const id = this.nextRequestId;
      this.nextRequestId = id >= 0xffff_ffff ? 1 : id + 1;
      if (!connection.pending.has(id)) return id;
    }
  }

  private onData(connection: Connection, chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length && connection.failed === undefined) {
      if (connection.frame === undefined) {
        const n = Math.min(journalFrameHeaderBytes - connection.headerFill, chunk.length - at);
        connection.header.set(chunk.subarray(at, at + n), connection.headerFill);
        connection.headerFill += n;
        at += n;
        if (connection.headerFill < journalFrameHeaderBytes) return;
        connection.headerFill = 0;
        const decoded = decodeFrameHeader(connection.header, journalResponseBytesMax);
        if ('problem' in decoded) throw new JournalProtocolError(`the node sent a bad frame: ${decoded.problem}`);
        connection.frame = {
          header: decoded.header,
          payload: new Uint8Array(decoded.header.payloadBytes),
          fill: 0,
        };
      }
      const frame = connection.frame;
      const n = Math.min(frame.payload.length - frame.fill, chunk.length - at);
      frame.payload.set(chunk.subarray(at, at + n), frame.fill);
      frame.fill += n;
      at += n;
      if (frame.fill < frame.payload.length) return;
      connection.frame = undefined;
      this.answer(connection, frame.header, frame.payload);
    }
  }

  private answer(connection: Connection, header: JournalFrameHeader, payload: Uint8Array): void {
    const pending = connection.pending.get(header.requestId);
    if (pending === undefined) {
      // A request that timed out, or the node's last word before it closes (EPROTO with id 0).
      if (header.status === frameStatus.error && header.requestId === 0) {
        const wire = safeDecodeError(payload);
        if (wire !== undefined) this.fail(connection, errorFromWire(wire));
      }
      return;
    }
    connection.pending.delete(header.requestId);
    clearTimeout(pending.timer);
    if (header.op !== journalOps[pending.op]) {
      pending.reject(new JournalProtocolError(`${pending.what}: the node answered op ${header.op} to ${pending.op}`));
      return;
    }
    if (header.status === frameStatus.ok) {
      pending.resolve(payload);
      return;
    }
    try {
      pending.reject(errorFromWire(decodeErrorAnswer(pending.op, payload), pending.epoch));
    } catch (err) {
      pending.reject(err);
    }
  }

  /** Fails the connection and everything in flight on it; the next request opens a new one. */
  private fail(connection: Connection, err: CairnError): void {
    if (connection.failed !== undefined) return;
    connection.failed = err;
    connection.socket.destroy();
    for (const [id, pending] of connection.pending) {
      connection.pending.delete(id);
      clearTimeout(pending.timer);
      pending.reject(withAction(pending.what, err));
    }
  }
}

function safeDecodeError(payload: Uint8Array): ReturnType<typeof decodeErrorAnswer> | undefined {
  try {
    return decodeErrorAnswer('hello', payload);
  } catch {
    return undefined;
  }
}

/** `err` with `what` in front of its message when it does not already say it (a shared connection error). */
function withAction(what: string, err: unknown): unknown {
  if (!(err instanceof UnavailableError) || err.message.startsWith(what)) return err;
  return new UnavailableError(`${what}: ${err.message}`, { cause: err });
}
