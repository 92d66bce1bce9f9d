/**
 * The storage node's journal server: the wire protocol of src/journal/wire.ts on its own TCP
 * port, in front of a JournalStore. Each connection is persistent; requests are pipelined and
 * answered as each completes, in any order, matched by request id.
 *
 * What it keeps true:
 * - Everything a client sends is validated here, once: frame header (magic, reserved bytes,
 *   payload bound), op, payload fields, the record inside an APPEND (by the store). A malformed
 *   payload in a well-formed frame gets an error answer and the connection goes on; a frame
 *   header that cannot be trusted (the stream cannot be re-synced) gets one EPROTO answer, a log
 *   line with the reason, and the connection is closed. Nothing a client sends can throw out of
 *   a socket callback or stop the server serving other connections; a broken assertion (a bug)
 *   still ends the process, loudly.
 * - HELLO comes first: it carries the protocol version and, when the node has a shared secret,
 *   the secret (compared in constant time, as the shard API does). Any other op before a good
 *   HELLO is answered EAUTH and the connection closed; so is a wrong secret. A connection that
 *   says nothing for journalHelloDeadlineMs is closed.
 * - Bounded: request payloads (journalRequestBytesMax), bytes and requests in flight per
 *   connection (past either the server stops reading that socket until answers go out, so a
 *   client that never reads its answers holds a bounded amount); connections per server and per
 *   client (refused with a log line); a frame's payload must arrive at the node's minimum body
 *   rate, and a connection whose client leaves answers unread for the idle timeout is closed
 *   (so it cannot hold the node-wide answer budget); SHARD_PUT bodies count against the node's
 *   PUT budget, shared with the HTTP API, with the same per-client share.
 * - Answers go out with TCP_NODELAY: a commit waits for its answer, not for Nagle.
 *
 * - The same connection carries the node's shard store (SHARD_GET, SHARD_PUT): a frontend reads
 *   and writes shards without an HTTP request per shard, under the same HELLO, validation and
 *   budgets; a put's framed shard is verified block by block before it is stored.
 *
 * - With `tls` the port speaks TLS only (1.2 or newer); with `tls.ca` a client without a
 *   certificate the CA signed is refused in the handshake, before any byte of the protocol.
 *
 * What it leaves out: a per-client share of the answer budget (the unread-answer timeout frees it instead), and an
 * idle timeout: frontends keep their journal connections open while idle.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { performance } from 'node:perf_hooks';
import {
  AssertionError,
  CairnError,
  MiB,
  StorageIoError,
  UnavailableError,
  assert,
  errorMessage,
  tlsServerOptions,
  type ServerTls,
} from '../core/index.js';
import {
  JournalProtocolError,
  decodeAppendRequest,
  decodeCreateRequest,
  decodeFenceRequest,
  decodeFrameHeader,
  decodeHelloRequest,
  decodeListRequest,
  decodeReadRequest,
  decodeShardGetRequest,
  decodeShardPutRequest,
  decodeTrimRequest,
  journalOps,
  encodeCountAnswer,
  encodeErrorAnswer,
  encodeFenceAnswer,
  encodeFrameHeader,
  encodeHelloAnswer,
  encodeJsonAnswer,
  encodeReadAnswer,
  encodeSegmentSpace,
  encodeShardGetAnswer,
  frameStatus,
  journalConnectionBytesInFlightMax,
  journalConnectionRequestsInFlightMax,
  journalConnectionsMax,
  journalFrameHeaderBytes,
  journalHelloDeadlineMs,
  journalOpName,
  journalProtocolVersion,
  opLabel,
  journalReadBytesMax,
  journalRecordBytesMax,
  journalServerAnswerBytesMax,
  journalRequestBytesMax,
  journalResponseBytesMax,
  journalFrameOverheadBytes,
  wireErrorOf,
  type JournalFrameHeader,
  type JournalOpName,
  type JournalStats,
} from '../journal/index.js';
import { checkShardKey, formatHostPort, type FileShardStore } from '../shard/index.js';
import type { JournalStore } from './journal_store.js';
import { ClientBudget, LimitLog, clientOf } from './client_limits.js';
import { TlsRefusalLog } from './tls.js';
import { checkNodeLimits, type NodeLimitName, type NodeLimits } from './limits.js';
import { PayloadSlabs } from './payload_slabs.js';
import { sharedPutBudget, statusOf, type ShardRequestDone } from './server.js';

/**
 * Answer bytes a LIST reserves in its connection's budget before its answer exists (LIST answers
 * are JSON of at most some hundreds of KiB); a READ reserves the bytes it asked for.
 */
const listAnswerReserveBytes = 1 * MiB;
/** Error lines one connection may log; after that they are counted and summed up at close. */
const connectionErrorLogLinesMax = 50;
/** After we end a connection, a client that does not close its side is dropped after this long. */
const closeLingerMs = 2_000;
/** TCP keepalive probes start after this much silence: a vanished writer frees its socket. */
const keepAliveDelayMs = 30_000;

export interface JournalServerOptions {
  readonly store: JournalStore;
  /** The node's name and zone, sent in the HELLO answer and used in messages. */
  readonly name: string;
  readonly zone: string;
  /** When set, HELLO must carry this secret. */
  readonly authSecret?: string;
  /** When set the port speaks TLS only; with `tls.ca`, clients need a certificate it signed. */
  readonly tls?: ServerTls;
  /** One line per notable event (without a trailing newline). */
  readonly log: (line: string) => void;
  readonly helloDeadlineMs?: number;
  /** The node's shard store, served by SHARD_GET and SHARD_PUT; without it those are refused. */
  readonly shards?: FileShardStore;
  /** Told of every shard op done, as the HTTP API reports its requests (for the node's metrics). */
  readonly onShardRequestDone?: (done: ShardRequestDone) => void;
  /**
   * Bounds against clients (limits.ts): connections (at most journalConnectionsMax), the body
   * rate for frame payloads, the idle timeout for unread answers. Absent fields take defaults.
   */
  readonly limits?: Partial<NodeLimits>;
  /** The node's PUT budget, shared with the shard API (sharedPutBudget); else its own. */
  readonly putBudget?: ClientBudget;
  /** Told every time a limit refuses or cuts a client (metrics); the log line is rate-limited. */
  readonly onLimit?: (limit: NodeLimitName) => void;
}

export class JournalServer {
  private readonly server: Server;
  private readonly options: JournalServerOptions;
  private readonly secretDigest: Buffer | undefined;
  private readonly connections = new Set<JournalConnection>();
  private nextConnectionId = 1;
  private badFrames = 0;
  /** SHARD_PUT bytes being stored, across connections and the shard API (reservePutBytes). */
  private readonly putBudget: ClientBudget;
  private readonly connectionCount: ClientBudget;
  /** @internal for JournalConnection */
  readonly limits: NodeLimits;
  /** Shared memory SHARD_PUT payloads are received into (payload_slabs.ts). */
  readonly payloadSlabs = new PayloadSlabs();
  /** @internal for JournalConnection */
  readonly limitLog: LimitLog;
  /** READ and LIST answer bytes reserved across connections (journalServerAnswerBytesMax). */
  private answerBytesReserved = 0;
  private draining = false;
  private idle: (() => void) | undefined;

  constructor(options: JournalServerOptions) {
    this.options = options;
    this.secretDigest = options.authSecret === undefined ? undefined : digest(options.authSecret);
    this.limits = checkNodeLimits(options.limits);
    this.putBudget = options.putBudget ?? sharedPutBudget(this.limits);
    const connectionsMax = Math.min(this.limits.connectionsMax, journalConnectionsMax);
    this.connectionCount = new ClientBudget(
      connectionsMax,
      Math.min(this.limits.connectionsPerClientMax, connectionsMax),
    );
    this.limitLog = new LimitLog((line) => options.log(`journal on node "${options.name}": ${line}`), options.onLimit);
    const netOptions = { noDelay: true, keepAlive: true, keepAliveInitialDelay: keepAliveDelayMs };
    if (options.tls === undefined) {
      this.server = createServer(netOptions, (socket) => this.accept(socket));
    } else {
      const server = createTlsServer({ ...netOptions, ...tlsServerOptions(options.tls, true) }, (socket) =>
        this.accept(socket),
      );
      const refusals = new TlsRefusalLog(`journal on node "${options.name}"`, options.log);
      server.on('tlsClientError', (err, socket) => refusals.note(err, socket));
      this.server = server;
    }
  }

  /** Starts listening; resolves with the bound address (port 0 picks a free port). */
  listen(host: string, port: number): Promise<{ host: string; port: number; address: string }> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void =>
        reject(
          new StorageIoError(`Cannot listen for the journal on ${formatHostPort(host, port)}: ${errorMessage(err)}`, {
            cause: err,
          }),
        );
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        const bound = this.server.address() as AddressInfo;
        resolve({ host, port: bound.port, address: formatHostPort(host, bound.port) });
      });
    });
  }

  /** Counters of the store and of this server. */
  stats(): JournalStats {
    const store = this.options.store.stats();
    return {
      appends: store.appends,
      appendedBytes: store.appendedBytes,
      fsyncs: store.fsyncs,
      creates: store.creates,
      fences: store.fences,
      fencedRefusals: store.fencedRefusals,
      reads: store.reads,
      trims: store.trims,
      tornTails: store.tornTails,
      spares: store.spares,
      sparesTaken: store.sparesTaken,
      queuedBytes: store.queuedBytes,
      connections: this.connections.size,
      badFrames: this.badFrames,
    };
  }

  /**
   * Stops accepting connections; requests already received finish for up to `drainMs` (new ones
   * are answered EUNAVAILABLE, retryable); then every connection is closed. Resolves with the
   * number of requests cut off.
   */
  async close(drainMs: number): Promise<number> {
    this.draining = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.requestsInFlight() > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => (this.idle = resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, drainMs))),
      ]);
      clearTimeout(timer);
    }
    const cut = this.requestsInFlight();
    for (const connection of this.connections) connection.destroy();
    await closed;
    return cut;
  }

  // ---------------------------------------------------------------------------------------------

  private requestsInFlight(): number {
    let n = 0;
    for (const c of this.connections) n += c.requestsInFlight;
    return n;
  }

  private accept(socket: Socket): void {
    const client = clientOf(socket);
    const refusal = this.connectionCount.take(client, 1);
    if (refusal !== undefined) {
      const limit: NodeLimitName = refusal === 'client' ? 'connections_per_client' : 'connections';
      const cap = refusal === 'client' ? this.connectionCount.perClientMax : this.connectionCount.max;
      this.limitLog.hit(
        limit,
        `refused a connection from ${client}: ${cap} ${refusal === 'client' ? 'from that client' : 'in total'} are open`,
      );
      socket.on('error', () => undefined);
      socket.destroy();
      return;
    }
    try {
      const connection = new JournalConnection(this, socket, this.nextConnectionId++, client);
      this.connections.add(connection);
      socket.once('close', () => {
        this.connections.delete(connection);
        this.connectionCount.give(client, 1);
        connection.closed();
        this.onRequestDone();
      });
    } catch (err) {
      if (err instanceof AssertionError) throw err;
      this.options.log(`journal: cannot accept a connection: ${errorMessage(err)}`);
      this.connectionCount.give(client, 1);
      socket.destroy();
    }
  }

  /** @internal for JournalConnection */
  onRequestDone(): void {
    if (this.draining && this.requestsInFlight() === 0) this.idle?.();
  }

  /** @internal: false when `bytes` more answer bytes would pass the node-wide bound. */
  reserveAnswer(bytes: number): boolean {
    if (this.answerBytesReserved > 0 && this.answerBytesReserved + bytes > journalServerAnswerBytesMax) return false;
    this.answerBytesReserved += bytes;
    return true;
  }

  /** @internal */
  releaseAnswer(bytes: number): void {
    this.answerBytesReserved -= bytes;
    assert(this.answerBytesReserved >= 0, 'journal answer reservations went negative');
  }

  /**
   * @internal Runs a shard op on the node's shard store and reports it as the HTTP API reports a
   * request (same route, method and status words), so the node's metrics count both.
   */
  async shardOp(
    method: 'GET' | 'PUT',
    work: (shards: FileShardStore) => Promise<{ answer: Answer; dataBytesStored?: number; framedBytesSent?: number }>,
  ): Promise<Answer> {
    const shards = this.options.shards;
    if (shards === undefined)
      throw new CairnError('ENOTSUP', `Node "${this.options.name}" serves no shards on its journal connection`);
    const started = performance.now();
    let status = 0;
    let bytes = 0;
    let stored = 0;
    try {
      const { answer, dataBytesStored, framedBytesSent } = await work(shards);
      status = method === 'PUT' ? 201 : 200;
      bytes = framedBytesSent ?? 0;
      stored = dataBytesStored ?? 0;
      return answer;
    } catch (err) {
      status = statusOf(err).status;
      throw err;
    } finally {
      try {
        this.options.onShardRequestDone?.({
          route: 'shard',
          method,
          status,
          durationMs: performance.now() - started,
          bytesWritten: stored,
          bytesRead: method === 'GET' && status === 200 ? bytes : 0,
        });
      } catch (err) {
        this.options.log(`reporting a shard ${method}: ${errorMessage(err)}`);
      }
    }
  }

  /**
   * @internal Counts a SHARD_PUT's bytes against the node's PUT budget and the client's share of
   * it, or refuses it (retryable).
   */
  reservePutBytes(client: string, bytes: number): void {
    const refusal = this.putBudget.take(client, bytes);
    if (refusal === undefined) return;
    const line =
      refusal === 'client'
        ? `Node "${this.options.name}" is receiving too many shards from ${client} at once (${this.putBudget.usedBy(client)} bytes, its share is ${this.putBudget.perClientMax}); retry`
        : `Node "${this.options.name}" is receiving too many shards at once (${this.putBudget.inUse} bytes); retry`;
    this.limitLog.hit(refusal === 'client' ? 'put_bytes_per_client' : 'put_bytes', line);
    throw new UnavailableError(line);
  }

  /** @internal */
  releasePutBytes(client: string, bytes: number): void {
    this.putBudget.give(client, bytes);
  }

  /** @internal */
  countBadFrame(): void {
    this.badFrames += 1;
  }

  /** @internal */
  get isDraining(): boolean {
    return this.draining;
  }

  /** @internal */
  get config(): JournalServerOptions {
    return this.options;
  }

  /** @internal: true when `given` is the node's secret (or the node has none). */
  secretMatches(given: string): boolean {
    if (this.secretDigest === undefined) return true;
    return timingSafeEqual(digest(given), this.secretDigest);
  }

  /** @internal */
  get needsSecret(): boolean {
    return this.secretDigest !== undefined;
  }
}

/** What an op handler returns: the answer's payload parts. */
type Answer = readonly Uint8Array[];

/**
 * One request's share of its connection's in-flight budget: its payload, and the answer bytes it
 * reserved before its answer existed. Both stay counted until the kernel has taken the answer.
 */
interface Ticket {
  readonly requestBytes: number;
  answerReserveBytes: number;
}

/** One client connection: the frame parser, the dispatcher, and the in-flight accounting. */
class JournalConnection {
  requestsInFlight = 0;
  private bytesInFlight = 0;
  private helloDone = false;
  private ending = false;
  /** True while the socket is corked until the end of the tick (see send()). */
  private corked = false;
  private readonly header = new Uint8Array(journalFrameHeaderBytes);
  private headerFill = 0;
  private frame: { header: JournalFrameHeader; payload: Uint8Array; fill: number } | undefined;
  /** Bytes received while the budget was spent, parsed once answers free it. */
  private stash: Uint8Array[] = [];
  private paused = false;
  private errorLines = 0;
  private errorsUnlogged = 0;
  private readonly helloTimer: NodeJS.Timeout;
  /** Checks, once a window, that a frame being received moves at the minimum body rate. */
  private readonly rateTimer: NodeJS.Timeout;
  /** The frame (and its fill) the last rate check saw; a frame gets one window of grace. */
  private rateMark: { frame: object | undefined; fill: number } = { frame: undefined, fill: 0 };
  private readonly peer: string;
  private clientName = '';

  constructor(
    private readonly server: JournalServer,
    private readonly socket: Socket,
    private readonly id: number,
    private readonly client: string,
  ) {
    this.peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.guard(() => this.onData(chunk)));
    socket.on('error', (err) => this.guard(() => this.note(`socket error: ${errorMessage(err)}`)));
    // Inactivity with answers unsent means the client stopped reading them: they hold the
    // node-wide answer budget, so the connection goes. Idle with nothing unsent is fine.
    socket.setTimeout(this.server.limits.idleTimeoutMs);
    socket.on('timeout', () => this.guard(() => this.onTimeout()));
    const { bodyRateMinBytesPerS, bodyRateWindowMs } = this.server.limits;
    this.rateTimer = setInterval(
      () => this.guard(() => this.checkRate(Math.ceil((bodyRateMinBytesPerS * bodyRateWindowMs) / 1000))),
      bodyRateWindowMs,
    );
    this.rateTimer.unref();
    this.helloTimer = setTimeout(
      () =>
        this.guard(() =>
          this.fatal(`no HELLO within ${this.server.config.helloDeadlineMs ?? journalHelloDeadlineMs} ms`),
        ),
      this.server.config.helloDeadlineMs ?? journalHelloDeadlineMs,
    );
    this.helloTimer.unref();
  }

  destroy(): void {
    this.socket.destroy();
  }

  closed(): void {
    // A frame cut off mid-payload gives its slot back; a dispatched one does when it settles.
    const partial = this.frame;
    this.frame = undefined;
    if (partial !== undefined) this.releasePayload(partial.payload);
    clearTimeout(this.helloTimer);
    clearInterval(this.rateTimer);
    if (this.errorsUnlogged > 0)
      this.server.config.log(
        `journal connection ${this.id} from ${this.peer}: ${this.errorsUnlogged} more errors not logged`,
      );
  }

  /** Runs a socket callback: a bug ends the process loudly; anything else closes this connection only. */
  private guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      if (err instanceof AssertionError) {
        this.server.config.log(`BUG in journal connection ${this.id}: ${err.stack ?? err.message}`);
        process.nextTick(() => {
          throw err;
        });
        return;
      }
      this.server.config.log(`journal connection ${this.id} from ${this.peer}: ${errorMessage(err)}; closing it`);
      this.socket.destroy();
    }
  }

  private note(line: string): void {
    if (this.errorLines >= connectionErrorLogLinesMax) {
      this.errorsUnlogged += 1;
      return;
    }
    this.errorLines += 1;
    const who = this.clientName === '' ? this.peer : `${this.peer} (${this.clientName})`;
    this.server.config.log(`journal connection ${this.id} from ${who}: ${line}`);
  }

  private onTimeout(): void {
    if (this.socket.writableLength === 0 || this.ending) return;
    this.server.limitLog.hit(
      'unread_responses',
      `closed connection ${this.id} from ${this.peer}: ${this.socket.writableLength} answer bytes unread for ${this.server.limits.idleTimeoutMs} ms`,
    );
    this.socket.destroy();
  }

  /**
   * A frame whose payload brought fewer than `perWindow` bytes (or the rest of it) since the
   * last check is too slow: it holds its payload buffer and in-flight budget for nothing.
   * Not while this server itself stopped reading the socket.
   */
  private checkRate(perWindow: number): void {
    const frame = this.frame;
    const mark = this.rateMark;
    this.rateMark = { frame, fill: frame?.fill ?? 0 };
    if (frame === undefined || mark.frame !== frame || this.paused || this.ending) return;
    if (frame.fill - mark.fill >= Math.min(perWindow, frame.payload.length - mark.fill)) return;
    this.server.limitLog.hit('slow_body', `connection ${this.id} from ${this.peer}: a frame payload stalled`);
    this.fatal(
      `a ${frame.payload.length}-byte payload came slower than ${this.server.limits.bodyRateMinBytesPerS} bytes/s (${frame.fill} bytes arrived)`,
      frame.header.requestId,
    );
  }

  private onData(chunk: Uint8Array): void {
    if (this.ending) return; // after a fatal frame: discard
    if (this.paused) {
      this.stash.push(chunk);
      return;
    }
    this.parse(chunk);
  }

  private overBudget(): boolean {
    return (
      this.requestsInFlight > 0 &&
      (this.bytesInFlight >= journalConnectionBytesInFlightMax ||
        this.requestsInFlight >= journalConnectionRequestsInFlightMax)
    );
  }

  /** Parses frames out of `chunk`; stops (stashing the rest) when the in-flight budget is spent. */
  private parse(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length && !this.ending) {
      if (this.frame === undefined) {
        if (this.headerFill === 0 && this.overBudget()) {
          this.stash.push(chunk.subarray(at));
          this.pause();
          return;
        }
        const n = Math.min(journalFrameHeaderBytes - this.headerFill, chunk.length - at);
        this.header.set(chunk.subarray(at, at + n), this.headerFill);
        this.headerFill += n;
        at += n;
        if (this.headerFill < journalFrameHeaderBytes) return;
        this.headerFill = 0;
        const decoded = decodeFrameHeader(this.header, journalRequestBytesMax);
        if ('problem' in decoded) return this.fatal(decoded.problem, decoded.requestId);
        if (decoded.header.status !== frameStatus.request)
          return this.fatal('a frame with an answer status sent to the server', decoded.header.requestId);
        this.bytesInFlight += decoded.header.payloadBytes;
        this.frame = { header: decoded.header, payload: this.payloadFor(decoded.header), fill: 0 };
      }
      const frame = this.frame;
      const n = Math.min(frame.payload.length - frame.fill, chunk.length - at);
      frame.payload.set(chunk.subarray(at, at + n), frame.fill);
      frame.fill += n;
      at += n;
      if (frame.fill === frame.payload.length) {
        this.frame = undefined;
        this.dispatch(frame.header, frame.payload);
      }
    }
  }

  /** A SHARD_PUT is received into a slot of the node's shared payload memory when one is free. */
  private payloadFor(header: JournalFrameHeader): Uint8Array {
    const bytes = header.payloadBytes;
    if (header.op === journalOps.shardPut) {
      const slot = this.server.payloadSlabs.take(bytes);
      if (slot !== undefined) return slot;
    }
    return new Uint8Array(bytes);
  }

  private releasePayload(payload: Uint8Array): void {
    if (this.server.payloadSlabs.owns(payload)) this.server.payloadSlabs.give(payload);
  }

  private pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.socket.pause();
  }

  private maybeResume(): void {
    if (!this.paused || this.overBudget() || this.ending) return;
    this.paused = false;
    const stash = this.stash;
    this.stash = [];
    for (let i = 0; i < stash.length; i++) {
      if (this.paused) {
        this.stash.push(...stash.slice(i));
        return;
      }
      this.parse(stash[i]!);
    }
    if (!this.paused) this.socket.resume();
  }

  /**
   * The frame header cannot be trusted, so the stream cannot be followed further: answer once
   * (EPROTO, naming the request when its id was readable), log why, and close.
   */
  private fatal(reason: string, requestId = 0): void {
    if (this.ending) return;
    this.server.countBadFrame();
    this.note(`closing: ${reason}`);
    const answer = encodeErrorAnswer(
      wireErrorOf(new JournalProtocolError(`Journal protocol error: ${reason}; closing the connection`)),
    );
    this.send({ op: 0, status: frameStatus.error, requestId }, answer, undefined);
    this.end();
  }

  private end(): void {
    if (this.ending) return;
    this.ending = true;
    this.stash = [];
    this.socket.end();
    setTimeout(() => this.socket.destroy(), closeLingerMs).unref();
  }

  private dispatch(header: JournalFrameHeader, payload: Uint8Array): void {
    this.requestsInFlight += 1;
    const op = journalOpName(header.op);
    const ticket: Ticket = { requestBytes: payload.length, answerReserveBytes: 0 };
    // handle() runs synchronously up to its first await, so a reservation it makes counts before
    // parse() looks at the budget for the next frame.
    const settled = this.handle(header, op, payload, ticket);
    // A SHARD_PUT's answer holds nothing of its payload: the slot is free once the put settled.
    void settled.then(
      () => this.releasePayload(payload),
      () => this.releasePayload(payload),
    );
    void settled.then(
      (answer) => this.send({ ...header, status: frameStatus.ok }, answer, ticket),
      (err: unknown) => {
        if (err instanceof AssertionError) {
          this.server.config.log(`BUG in journal ${op ?? header.op}: ${err.stack ?? err.message}`);
          process.nextTick(() => {
            throw err;
          });
          return;
        }
        const wire = wireErrorOf(err);
        if (wire.code === 'EINVAL' || wire.code === 'EPROTO') this.server.countBadFrame();
        if (wire.code !== 'EFENCED' || this.errorLines === 0)
          this.note(
            `${op === undefined ? `OP ${header.op}` : opLabel(op)} request ${header.requestId} -> ${wire.code}: ${wire.message}`,
          );
        this.send({ ...header, status: frameStatus.error }, encodeErrorAnswer(wire), ticket);
        if (wire.code === 'EAUTH' || (op === 'hello' && !this.helloDone)) this.end();
      },
    );
  }

  /**
   * Reserves answer bytes for a request whose answer may be large (see Ticket), or refuses it as
   * retryable when the node as a whole is sending too much.
   */
  private reserve(ticket: Ticket, bytes: number): void {
    if (!this.server.reserveAnswer(bytes))
      throw new UnavailableError(
        `Node "${this.server.config.name}" is already sending ${journalServerAnswerBytesMax} bytes of journal reads; retry`,
      );
    ticket.answerReserveBytes += bytes;
    this.bytesInFlight += bytes;
  }

  private async handle(
    header: JournalFrameHeader,
    op: JournalOpName | undefined,
    payload: Uint8Array,
    ticket: Ticket,
  ): Promise<Answer> {
    const { store, name, zone } = this.server.config;
    if (op !== 'hello' && !this.helloDone)
      throw new CairnError(
        'EAUTH',
        `Node "${name}" refused ${op === undefined ? `op ${header.op}` : opLabel(op)}: say HELLO first`,
      );
    if (op === undefined) throw new JournalProtocolError(`Journal op ${header.op} does not exist on node "${name}"`);
    if (this.server.isDraining)
      throw new UnavailableError(`Node "${name}" is shutting down its journal; retry elsewhere`);
    switch (op) {
      case 'hello': {
        const hello = decodeHelloRequest(payload);
        if (this.helloDone) throw new JournalProtocolError(`Node "${name}": HELLO was already said on this connection`);
        if (hello.protocolVersion !== journalProtocolVersion)
          throw new JournalProtocolError(
            `Node "${name}" speaks journal protocol ${journalProtocolVersion}, the client ${hello.protocolVersion}`,
          );
        if (!this.server.secretMatches(hello.secret))
          throw new CairnError(
            'EAUTH',
            `Node "${name}" refused the journal connection: ${hello.secret === '' ? 'no' : 'wrong'} shared secret`,
          );
        this.helloDone = true;
        this.clientName = hello.clientName.replace(/[^\x20-\x7e]/g, '?');
        clearTimeout(this.helloTimer);
        return encodeHelloAnswer({
          protocolVersion: journalProtocolVersion,
          node: name,
          zone,
          segmentBytes: store.segmentBytes,
          recordBytesMax: journalRecordBytesMax,
          readBytesMax: journalReadBytesMax,
        });
      }
      case 'create':
        return encodeSegmentSpace(await store.create(decodeCreateRequest(payload)));
      case 'append':
        return encodeSegmentSpace(await store.append(decodeAppendRequest(payload)));
      case 'fence': {
        const req = decodeFenceRequest(payload);
        return encodeFenceAnswer(await store.fence(req.volume, req.epoch));
      }
      case 'read': {
        const req = decodeReadRequest(payload);
        this.reserve(ticket, Math.min(req.maxBytes, journalReadBytesMax));
        return encodeReadAnswer(await store.read(req));
      }
      case 'trim':
        return encodeCountAnswer(await store.trim(decodeTrimRequest(payload)));
      case 'list': {
        const volume = decodeListRequest(payload);
        this.reserve(ticket, listAnswerReserveBytes);
        return encodeJsonAnswer(await store.list(volume));
      }
      case 'stats':
        if (payload.length !== 0) throw new JournalProtocolError('Malformed STATS request: it has no payload');
        return encodeJsonAnswer(this.server.stats());
      case 'shardGet':
        return this.server.shardOp('GET', async (shards) => {
          const req = decodeShardGetRequest(payload);
          checkShardKey(req.key);
          // Refused or reserved once its size is known, before the node reads a byte of it.
          const read = await shards.getFramed(req.key, req.range, (framedBytes) => {
            if (framedBytes > journalResponseBytesMax - journalFrameOverheadBytes)
              throw new CairnError(
                'ETOOLARGE',
                `Cannot read shard ${req.key} from node "${name}": ${framedBytes} framed bytes do not fit one frame; use the HTTP API`,
              );
            this.reserve(ticket, framedBytes);
          });
          return {
            answer: encodeShardGetAnswer(
              {
                blockBytes: read.header.blockBytes,
                dataBytes: read.header.dataBytes,
                firstBlock: read.span.firstBlock,
                start: read.span.start,
                end: read.span.end,
                seed: read.header.seed,
                framed: read.framed,
              },
              req.withSeed === true,
            ),
            framedBytesSent: read.framed.length,
          };
        });
      case 'shardPut':
        return this.server.shardOp('PUT', async (shards) => {
          const req = decodeShardPutRequest(payload);
          checkShardKey(req.key);
          // Across connections, shard bodies held at once are bounded as the HTTP API's are.
          this.server.reservePutBytes(this.client, payload.length);
          try {
            const header = await shards.putFramed(req.key, req.framed);
            return { answer: [], dataBytesStored: header.dataBytes };
          } finally {
            this.server.releasePutBytes(this.client, payload.length);
          }
        });
      default:
        assert(false, `op ${op} has no handler`);
    }
  }

  /**
   * Writes one answer frame. `ticket` is the request it answers (undefined for the answer to a
   * frame that was never dispatched): the request and its answer stay counted in flight until
   * the kernel has taken the answer.
   */
  private send(
    frame: { readonly op: number; readonly status: number; readonly requestId: number },
    answer: Answer,
    ticket: Ticket | undefined,
  ): void {
    const payloadBytes = answer.reduce((sum, part) => sum + part.length, 0);
    // What the answer takes beyond what the request reserved for it.
    const extra = Math.max(0, payloadBytes - (ticket?.answerReserveBytes ?? 0));
    this.bytesInFlight += extra;
    const release = (): void => {
      this.bytesInFlight -= extra + (ticket === undefined ? 0 : ticket.requestBytes + ticket.answerReserveBytes);
      if (ticket !== undefined) this.server.releaseAnswer(ticket.answerReserveBytes);
      if (ticket !== undefined) this.requestsInFlight -= 1;
      assert(this.bytesInFlight >= 0 && this.requestsInFlight >= 0, 'journal in-flight accounting went negative');
      this.server.onRequestDone();
      this.maybeResume();
    };
    if (this.socket.destroyed || !this.socket.writable) {
      release();
      return;
    }
    const parts = [encodeFrameHeader({ ...frame, payloadBytes }), ...answer.filter((p) => p.length > 0)];
    // Answers ready in one tick leave in one write: the first corks the socket until the tick ends.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    parts.forEach((part, i) => {
      if (i < parts.length - 1) this.socket.write(part);
      else this.socket.write(part, () => release());
    });
  }
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}
