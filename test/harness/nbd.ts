/**
 * Helpers for NBD tests: an in-process NbdServer over a MemoryExportProvider on a free TCP port
 * and a Unix socket, real clients (nbdinfo, nbdcopy, nbdsh, qemu-io, fio) run as subprocesses
 * with a deadline and stopped by pid, and a small raw NBD client that speaks wire.ts over either a
 * socket or an in-memory Session (for unit tests that feed bytes in any split).
 *
 * Nothing here sleeps to wait: reads wait for bytes with a deadline, tools for their exit.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  NbdServer,
  Session,
  nbdWire as wire,
  type NbdLimitName,
  type NbdLimits,
  type SessionIo,
} from '../../src/nbd/index.js';
import { MemoryExportProvider } from '../../src/sim/memory_device.js';
import { freePort } from '../../src/dev/index.js';

// ---------------------------------------------------------------------------------------------
// In-process server.

export interface NbdTestServer {
  readonly server: NbdServer;
  readonly provider: MemoryExportProvider;
  readonly port: number;
  readonly socketPath: string;
  /** Every line the server logged. */
  readonly logs: string[];
  /** nbd://127.0.0.1:PORT/NAME */
  tcpUri(name?: string): string;
  /** nbd+unix:///NAME?socket=PATH */
  unixUri(name?: string): string;
  /** Lines that report bugs; tests assert this stays empty. */
  bugs(): string[];
  stop(): Promise<void>;
}

export async function startNbdServer(
  options: {
    readOnly?: boolean;
    handshakeDeadlineMs?: number;
    closeDeadlineMs?: number;
    provider?: MemoryExportProvider;
    limits?: Partial<NbdLimits>;
    onLimit?: (limit: NbdLimitName) => void;
  } = {},
): Promise<NbdTestServer> {
  const provider = options.provider ?? new MemoryExportProvider();
  const logs: string[] = [];
  const server = new NbdServer({
    provider,
    log: (line) => logs.push(line),
    ...(options.readOnly === undefined ? {} : { readOnly: options.readOnly }),
    ...(options.handshakeDeadlineMs === undefined ? {} : { handshakeDeadlineMs: options.handshakeDeadlineMs }),
    ...(options.closeDeadlineMs === undefined ? {} : { closeDeadlineMs: options.closeDeadlineMs }),
    ...(options.limits === undefined ? {} : { limits: options.limits }),
    ...(options.onLimit === undefined ? {} : { onLimit: options.onLimit }),
  });
  const dir = mkdtempSync(join(tmpdir(), 'cairn-nbd-'));
  const socketPath = join(dir, 'nbd.sock');
  // freePort() can race with another process; listening on port 0 cannot.
  const { port } = await server.listenTcp('127.0.0.1', 0);
  await server.listenUnix(socketPath);
  return {
    server,
    provider,
    port,
    socketPath,
    logs,
    tcpUri: (name = '') => `nbd://127.0.0.1:${port}/${encodeURIComponent(name)}`,
    unixUri: (name = '') => `nbd+unix:///${encodeURIComponent(name)}?socket=${socketPath}`,
    bugs: () => logs.filter((l) => l.startsWith('BUG')),
    stop: async () => {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export { freePort };

// ---------------------------------------------------------------------------------------------
// Real clients as subprocesses.

export interface ToolResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `command` with `args`, collecting its output. After `timeoutMs` it is killed by pid
 * (SIGKILL) and the promise rejects with what it printed. /usr/bin comes first on PATH because
 * nbdsh needs Debian's python3 (with the nbd module), not a pyenv one.
 */
export function runTool(
  command: string,
  args: readonly string[],
  options: { timeoutMs?: number; input?: Uint8Array | string; cwd?: string } = {},
): Promise<ToolResult> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, PATH: `/usr/bin:${process.env['PATH'] ?? ''}`, LIBNBD_DEBUG: '0' },
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} did not finish in ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`Cannot run ${command}: ${err.message} (run make setup to install the NBD tools)`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

/** runTool that insists on exit code 0 and returns stdout. */
export async function runOk(
  command: string,
  args: readonly string[],
  options: { timeoutMs?: number } = {},
): Promise<string> {
  const result = await runTool(command, args, options);
  if (result.code !== 0) {
    throw new Error(
      `${command} ${args.join(' ')} exited ${result.code ?? result.signal}:\n${result.stdout}\n${result.stderr}`,
    );
  }
  return result.stdout;
}

/**
 * Runs a Python script in nbdsh (libnbd). Without `uri` the script gets an unconnected handle
 * `h` and connects itself (to add meta contexts or use opt mode first).
 */
export function nbdsh(script: string, options: { uri?: string; timeoutMs?: number } = {}): Promise<string> {
  const args = options.uri === undefined ? [] : ['-u', options.uri];
  return runOk('/usr/bin/nbdsh', [...args, '-c', script], options);
}

// ---------------------------------------------------------------------------------------------
// Raw client plumbing: a byte pipe over a socket or over an in-memory session.

export interface BytePipe {
  write(bytes: Uint8Array): void;
  /** Exactly n bytes, or rejects when the peer closes first or the deadline passes. */
  read(n: number, deadlineMs?: number): Promise<Uint8Array>;
  /** Resolves when the peer closed the connection. */
  readonly closed: Promise<void>;
  isClosed(): boolean;
  end(): void;
  /** Drops the connection at once, as a crashed client would. */
  destroy(): void;
}

/** Collects incoming bytes and hands out exact-size reads. */
class Inbox {
  private chunks: Uint8Array[] = [];
  private held = 0;
  private waiter: (() => void) | null = null;
  ended = false;

  push(chunk: Uint8Array): void {
    this.chunks.push(chunk.slice());
    this.held += chunk.length;
    this.wake();
  }

  end(): void {
    this.ended = true;
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  async read(n: number, deadlineMs: number): Promise<Uint8Array> {
    const deadline = Date.now() + deadlineMs;
    while (this.held < n) {
      if (this.ended) throw new Error(`connection closed with ${this.held} of ${n} bytes read`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} bytes (${this.held} arrived)`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const first = this.chunks[0]!;
      const count = Math.min(first.length, n - filled);
      out.set(first.subarray(0, count), filled);
      filled += count;
      this.held -= count;
      if (count === first.length) this.chunks.shift();
      else this.chunks[0] = first.subarray(count);
    }
    return out;
  }
}

/** Connects over TCP (from `localAddress`, any of 127/8, to play another host) or a Unix socket. */
export async function connectPipe(
  target: { port: number; localAddress?: string } | { path: string },
): Promise<BytePipe> {
  const socket: Socket =
    'port' in target
      ? createConnection({
          host: '127.0.0.1',
          port: target.port,
          ...(target.localAddress === undefined ? {} : { localAddress: target.localAddress }),
        })
      : createConnection(target);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const inbox = new Inbox();
  let isClosed = false;
  socket.on('data', (c: Buffer) => inbox.push(c));
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) =>
    socket.once('close', () => {
      isClosed = true;
      inbox.end();
      resolve();
    }),
  );
  socket.on('end', () => inbox.end());
  return {
    write: (bytes) => {
      if (!socket.destroyed) socket.write(bytes);
    },
    read: (n, deadlineMs = 10_000) => inbox.read(n, deadlineMs),
    closed,
    isClosed: () => isClosed,
    end: () => socket.end(),
    destroy: () => socket.destroy(),
  };
}

/** How the in-memory pipe cuts the client's bytes before the session sees them. */
export type Split = 'whole' | 'bytes' | { seed: number };

export interface SessionPipe extends BytePipe {
  readonly session: Session;
  readonly logs: string[];
  /** True while the session has asked for input to be paused. */
  inputPaused(): boolean;
  /** Bytes written while paused wait here, as they would in a socket buffer. */
  pendingBytes(): number;
}

/**
 * A Session wired to an in-memory pipe: what the client writes is delivered in pieces chosen by
 * `split` (all at once, one byte at a time, or seeded random cuts), honouring pauseInput() like a
 * socket would. Replies are "sent" at once.
 */
export function sessionPipe(
  provider: MemoryExportProvider,
  options: { split?: Split; readOnly?: boolean } = {},
): SessionPipe {
  const inbox = new Inbox();
  const logs: string[] = [];
  let paused = false;
  let gone = false;
  let closedResolve!: () => void;
  const closed = new Promise<void>((r) => (closedResolve = r));
  const waiting: Uint8Array[] = [];
  let random = options.split !== undefined && typeof options.split === 'object' ? options.split.seed | 0 || 1 : 1;
  const nextCut = (max: number): number => {
    random ^= random << 13;
    random ^= random >>> 17;
    random ^= random << 5;
    return 1 + ((random >>> 0) % max);
  };

  const disconnect = (): void => {
    if (gone) return;
    gone = true;
    inbox.end();
    // Like a socket's 'close' event: asynchronous, after the close call returns.
    queueMicrotask(() => {
      session.connectionClosed();
      closedResolve();
    });
  };
  const io: SessionIo = {
    send: (parts, sent) => {
      if (!gone) for (const p of parts) inbox.push(p);
      // A socket calls back later; doing the same exercises the session's re-entry paths.
      queueMicrotask(() => sent?.());
    },
    pauseInput: () => {
      paused = true;
    },
    resumeInput: () => {
      paused = false;
      queueMicrotask(deliver);
    },
    close: () => disconnect(),
  };
  const session = new Session(io, {
    provider,
    readOnly: options.readOnly ?? false,
    log: (line) => logs.push(line),
    label: 'test',
  });

  let ending = false;
  let endDelivered = false;
  function deliver(): void {
    while (!paused && !gone && waiting.length > 0) {
      const next = waiting[0]!;
      const split = options.split ?? 'whole';
      const cut = split === 'whole' ? next.length : split === 'bytes' ? 1 : Math.min(next.length, nextCut(64));
      const piece = next.subarray(0, cut);
      if (cut === next.length) waiting.shift();
      else waiting[0] = next.subarray(cut);
      session.receive(piece.slice());
    }
    // Like a socket, the end of input arrives after every byte, and not while paused.
    if (ending && !endDelivered && !paused && !gone && waiting.length === 0) {
      endDelivered = true;
      session.inputEnded();
    }
  }

  session.start();
  return {
    session,
    logs,
    write: (bytes) => {
      if (gone) return;
      waiting.push(bytes.slice());
      deliver();
    },
    read: (n, deadlineMs = 10_000) => inbox.read(n, deadlineMs),
    closed,
    isClosed: () => gone,
    end: () => {
      ending = true;
      deliver();
    },
    destroy: () => disconnect(),
    inputPaused: () => paused,
    pendingBytes: () => waiting.reduce((sum, c) => sum + c.length, 0),
  };
}

// ---------------------------------------------------------------------------------------------
// Raw NBD client.

export interface OptionReply {
  readonly option: number;
  readonly replyType: number;
  readonly data: Uint8Array;
}

export interface Reply {
  readonly cookie: bigint;
  /** 0 on success. */
  readonly errno: number;
  /** READ data, reassembled from chunks (holes as zeros). */
  readonly data: Uint8Array | null;
  /** Chunk types seen, in order (structured replies only). */
  readonly chunkTypes: number[];
  readonly descriptors: wire.BlockStatusDescriptor[];
  readonly message: string;
  readonly structured: boolean;
}

function expectOk<T>(decoded: wire.Decoded<T>): T {
  if (!decoded.ok) throw new Error(decoded.error);
  return decoded.value;
}

/**
 * Speaks the protocol step by step with no checks beyond decoding, so tests can send anything.
 * It remembers pending READs to know which simple replies carry data.
 */
export class RawNbdClient {
  private nextCookie = 1n;
  private readonly pendingReads = new Map<bigint, { offset: number; length: number }>();
  structured = false;

  constructor(readonly pipe: BytePipe) {}

  /** Reads the greeting and sends client flags (fixed newstyle + NO_ZEROES by default). */
  async greet(clientFlags = wire.clientFlag.fixedNewstyle | wire.clientFlag.noZeroes): Promise<number> {
    const greeting = expectOk(wire.decodeServerGreeting(await this.pipe.read(wire.serverGreetingBytes)));
    this.pipe.write(wire.encodeClientFlags(clientFlags));
    return greeting.flags;
  }

  sendOption(option: number, data: Uint8Array = new Uint8Array(0)): void {
    this.pipe.write(wire.encodeOption(option, data));
  }

  async readOptionReply(): Promise<OptionReply> {
    const header = expectOk(wire.decodeOptionReplyHeader(await this.pipe.read(wire.optionReplyHeaderBytes)));
    const data = header.length === 0 ? new Uint8Array(0) : await this.pipe.read(header.length);
    return { option: header.option, replyType: header.replyType, data };
  }

  /** Reads replies to one option up to and including the final ACK or error. */
  async readOptionReplies(): Promise<OptionReply[]> {
    const replies: OptionReply[] = [];
    for (;;) {
      const reply = await this.readOptionReply();
      replies.push(reply);
      if (reply.replyType === wire.optionReplyCode.ack || wire.isOptionReplyError(reply.replyType)) return replies;
    }
  }

  async option(option: number, data?: Uint8Array): Promise<OptionReply[]> {
    this.sendOption(option, data);
    return this.readOptionReplies();
  }

  /** Structured replies, base:allocation for `name`, then GO. Returns size and flags. */
  async go(
    name: string,
    options: { structured?: boolean; allocation?: boolean; infos?: number[] } = {},
  ): Promise<{ sizeBytes: number; flags: number; infos: wire.InfoReply[] }> {
    if (options.structured ?? true) {
      const sr = await this.option(wire.optionCode.structuredReply);
      if (sr.at(-1)?.replyType !== wire.optionReplyCode.ack) throw new Error('structured replies refused');
      this.structured = true;
      if (options.allocation ?? true) {
        const set = await this.option(
          wire.optionCode.setMetaContext,
          wire.encodeMetaContextRequest({ exportName: name, queries: ['base:allocation'] }),
        );
        if (set.at(-1)?.replyType !== wire.optionReplyCode.ack) throw new Error('SET_META_CONTEXT refused');
      }
    }
    const replies = await this.option(
      wire.optionCode.go,
      wire.encodeInfoRequest({ name, requests: options.infos ?? [] }),
    );
    const last = replies.at(-1)!;
    if (last.replyType !== wire.optionReplyCode.ack) {
      throw new Error(`GO refused with 0x${last.replyType.toString(16)}: ${new TextDecoder().decode(last.data)}`);
    }
    const infos = replies
      .filter((r) => r.replyType === wire.optionReplyCode.info)
      .map((r) => expectOk(wire.decodeInfoReply(r.data)));
    const exportInfo = infos.find((i) => i.kind === 'export');
    if (exportInfo === undefined || exportInfo.kind !== 'export') throw new Error('GO without NBD_INFO_EXPORT');
    return { sizeBytes: exportInfo.sizeBytes, flags: exportInfo.flags, infos };
  }

  /** Sends a request (and its payload) and returns its cookie. */
  send(request: Omit<wire.RequestToEncode, 'cookie'> & { cookie?: bigint }, payload?: Uint8Array): bigint {
    const cookie = request.cookie ?? this.nextCookie++;
    if (request.type === wire.commandType.read) {
      this.pendingReads.set(cookie, { offset: Number(request.offset ?? 0), length: request.length ?? 0 });
    }
    const header = wire.encodeRequestHeader({ ...request, cookie });
    if (payload === undefined) this.pipe.write(header);
    else {
      const both = new Uint8Array(header.length + payload.length);
      both.set(header);
      both.set(payload, header.length);
      this.pipe.write(both);
    }
    return cookie;
  }

  /** Reads one whole reply (all chunks of a structured one). Replies to pipelined requests may come in any order. */
  async readReply(deadlineMs = 10_000): Promise<Reply> {
    const start = expectOk(wire.decodeReplyStart(await this.pipe.read(wire.simpleReplyBytes, deadlineMs)));
    if (start.kind === 'simple') {
      const read = this.pendingReads.get(start.cookie);
      this.pendingReads.delete(start.cookie);
      // Only a successful READ carries data in a simple reply.
      const data = read !== undefined && start.errno === 0 ? await this.pipe.read(read.length, deadlineMs) : null;
      return {
        cookie: start.cookie,
        errno: start.errno,
        data,
        chunkTypes: [],
        descriptors: [],
        message: '',
        structured: false,
      };
    }
    return this.readChunks(start, deadlineMs);
  }

  private async readChunks(first: Extract<wire.ReplyStart, { kind: 'chunk' }>, deadlineMs: number): Promise<Reply> {
    const cookie = first.cookie;
    const read = this.pendingReads.get(cookie);
    const data = read === undefined ? null : new Uint8Array(read.length);
    const chunkTypes: number[] = [];
    const descriptors: wire.BlockStatusDescriptor[] = [];
    let errno = 0;
    let message = '';
    let head: { flags: number; type: number; cookie: bigint } = first;
    for (;;) {
      if (head.cookie !== cookie)
        throw new Error('chunks of two replies interleaved (this client reads one at a time)');
      const length = new DataView((await this.pipe.read(4, deadlineMs)).buffer).getUint32(0);
      const payload = length === 0 ? new Uint8Array(0) : await this.pipe.read(length, deadlineMs);
      chunkTypes.push(head.type);
      switch (head.type) {
        case wire.chunkType.offsetData: {
          const chunk = expectOk(wire.decodeOffsetDataPayload(payload));
          if (data === null || read === undefined) throw new Error('OFFSET_DATA for a request that is not a READ');
          if (chunk.offset < read.offset || chunk.offset + chunk.data.length > read.offset + read.length) {
            throw new Error('OFFSET_DATA outside the request');
          }
          data.set(chunk.data, chunk.offset - read.offset);
          break;
        }
        case wire.chunkType.offsetHole: {
          const hole = expectOk(wire.decodeOffsetHolePayload(payload));
          if (
            read === undefined ||
            hole.offset < read.offset ||
            hole.offset + hole.length > read.offset + read.length
          ) {
            throw new Error('OFFSET_HOLE outside the request');
          }
          break;
        }
        case wire.chunkType.blockStatus:
          descriptors.push(...expectOk(wire.decodeBlockStatusPayload(payload)).descriptors);
          break;
        case wire.chunkType.none:
          break;
        default: {
          const error = expectOk(wire.decodeErrorPayload(payload));
          errno = error.errno;
          message = error.message;
        }
      }
      if ((head.flags & wire.chunkFlag.done) !== 0) break;
      const next = expectOk(wire.decodeReplyStart(await this.pipe.read(wire.simpleReplyBytes, deadlineMs)));
      if (next.kind !== 'chunk') throw new Error('simple reply inside a structured one');
      head = next;
    }
    this.pendingReads.delete(cookie);
    return { cookie, errno, data: errno === 0 ? data : null, chunkTypes, descriptors, message, structured: true };
  }

  /** Sends one request and waits for its reply. */
  async call(request: Omit<wire.RequestToEncode, 'cookie'>, payload?: Uint8Array): Promise<Reply> {
    const cookie = this.send(request, payload);
    const reply = await this.readReply();
    if (reply.cookie !== cookie) throw new Error(`reply for cookie ${reply.cookie}, expected ${cookie}`);
    return reply;
  }

  read(offset: number, length: number, flags = 0): Promise<Reply> {
    return this.call({ type: wire.commandType.read, offset, length, flags });
  }

  write(offset: number, data: Uint8Array, flags = 0): Promise<Reply> {
    return this.call({ type: wire.commandType.write, offset, length: data.length, flags }, data);
  }

  disconnect(): void {
    this.send({ type: wire.commandType.disc });
  }
}
