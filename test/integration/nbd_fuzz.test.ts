// Seeded fuzzing of the NBD server over real sockets: an in-process NbdServer over memory exports,
// on TCP and a Unix socket, takes at least 100,000 malformed or random frames (handshakes, options,
// requests) from thousands of short connections, 8 at a time, while well-behaved clients (our raw
// client in this process, and libnbd's nbdsh as a subprocess) write and read verified data on
// other exports of the same server the whole time and must never see an error or a wrong byte.
// Afterwards the server still serves (nbdinfo over both transports), every connection is gone,
// every export handle closed, no BUG was logged, and this process's memory grew by a bounded amount.
//
// Every connection's bytes come from its own PRNG stream derived from the seed and its index, so a
// failure replays with the seed it prints:
//   CAIRN_NBD_FUZZ_SEED=N [CAIRN_NBD_FUZZ_FRAMES=M] node scripts/run_tests.mjs dist/test/integration/nbd_fuzz.test.js
// (scripts/fuzz_nbd.mjs runs many seeds that way.) Nothing waits on the wall clock: connections
// end when the server closes them (with a deadline that fails the test), loops end on conditions.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { NbdServer, nbdWire as wire } from '../../src/nbd/index.js';
import { MemoryExportProvider } from '../../src/sim/index.js';
import { connectPipe, nbdsh, RawNbdClient, runOk } from '../harness/nbd.js';
import { waitFor } from '../../src/dev/index.js';

const { commandType: cmd, optionCode: opt } = wire;
const KiB = 1024;
const MiB = 1024 * KiB;

const seed = Number(process.env['CAIRN_NBD_FUZZ_SEED'] ?? 20_261_121);
const framesMin = Number(process.env['CAIRN_NBD_FUZZ_FRAMES'] ?? 100_000);
/** Fuzz connections open at once. */
const concurrency = 8;
/** A connection the server has not closed this long after our last byte is a failure (a hang). */
const connectionDeadlineMs = 20_000;
/** Bounds on this process's growth over the run: rss at its peak, and the heap after a full GC. */
const rssGrowthBytesMax = 200 * MiB;
const heapGrowthBytesMax = 64 * MiB;

/** Exports only the fuzzer touches: small, so an in-range READ costs little. */
const fuzzExports = [
  { name: 'disk', sizeBytes: 64 * KiB, readOnly: false },
  { name: 'ro', sizeBytes: 16 * KiB, readOnly: true },
  { name: 'one', sizeBytes: 1, readOnly: false },
];
/** Exports of the well-behaved clients; the fuzzer never names them. */
const goodExport = { name: 'good', sizeBytes: 1 * MiB };
const libnbdExport = { name: 'good-libnbd', sizeBytes: 4 * MiB };

// ---------------------------------------------------------------------------------------------
// A small seeded PRNG (mulberry32), one stream per connection: its bytes do not depend on how the
// connections interleave.

class Rng {
  private state: number;

  constructor(...seeds: number[]) {
    let h = 0x811c9dc5;
    for (const s of seeds) {
      h = Math.imul(h ^ (s >>> 0), 0x01000193);
      h = Math.imul(h ^ Math.floor(s / 2 ** 32), 0x01000193);
    }
    this.state = h >>> 0;
  }

  u32(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** A whole number in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor((this.u32() / 2 ** 32) * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.u32() / 2 ** 32 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)] as T;
  }

  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.u32();
      for (let j = 0; j < 4 && i + j < n; j++) out[i + j] = (v >>> (8 * j)) & 0xff;
    }
    return out;
  }

  /** Runs one of the weighted choices. */
  weighted<T>(choices: readonly (readonly [number, () => T])[]): T {
    const total = choices.reduce((sum, [w]) => sum + w, 0);
    let at = (this.u32() / 2 ** 32) * total;
    for (const [w, f] of choices) {
      if (at < w) return f();
      at -= w;
    }
    return choices[choices.length - 1]![1]();
  }
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const u32be = (v: number): Uint8Array => {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, v >>> 0);
  return out;
};

/** An option frame whose header claims `length` bytes, followed by `data` (which may be shorter). */
function optionFrame(option: number, length: number, data: Uint8Array, magic = true): Uint8Array {
  const header = new Uint8Array(wire.optionHeaderBytes);
  const view = new DataView(header.buffer);
  if (magic) view.setBigUint64(0, wire.optionMagic);
  else header.set(new Rng(option, length).bytes(8));
  view.setUint32(8, option >>> 0);
  view.setUint32(12, length >>> 0);
  return concat([header, data]);
}

// ---------------------------------------------------------------------------------------------
// What one fuzz connection sends.

type Ending =
  /** Half-close after the last byte; the server must then close within the deadline. */
  | { readonly kind: 'end' }
  /** Drop the connection right after writing, as a crashed client would. */
  | { readonly kind: 'destroy' }
  /** Half-close, then drop the connection in the middle of the replies. */
  | { readonly kind: 'destroy-after'; readonly replyBytes: number };

interface FuzzConnection {
  readonly index: number;
  readonly kind: string;
  readonly transport: 'tcp' | 'unix';
  /** The bytes, in the writes they go out in (cut at random places). */
  readonly writes: readonly Uint8Array[];
  readonly frames: number;
  readonly ending: Ending;
}

/** An export name as raw bytes: real ones, unknown ones, too long, not UTF-8, with NULs. */
const exportName = (rng: Rng): Uint8Array =>
  rng.weighted<Uint8Array>([
    [6, () => utf8('disk')],
    [1, () => utf8('ro')],
    [1, () => utf8('one')],
    [1, () => new Uint8Array(0)],
    [1, () => utf8('no-such-export')],
    [1, () => utf8('x'.repeat(rng.int(200, 5000)))],
    [1, () => rng.bytes(rng.int(0, 40))],
  ]);

const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);

function validClientFlags(rng: Rng): Uint8Array {
  return wire.encodeClientFlags(rng.pick([3, 3, 3, 1, 2, 0]));
}

/** Option data laid out as the option expects (with raw, possibly invalid strings), or cut short. */
function structuredOptionData(rng: Rng, option: number): Uint8Array {
  const name = exportName(rng).subarray(0, 4000);
  let data: Uint8Array;
  if (option === opt.info || option === opt.go) {
    const count = rng.int(0, 5);
    const requests = new Uint8Array(2 + 2 * count);
    const view = new DataView(requests.buffer);
    view.setUint16(0, rng.chance(0.9) ? count : rng.int(0, 0xffff));
    for (let i = 0; i < count; i++) view.setUint16(2 + 2 * i, rng.chance(0.8) ? rng.int(0, 3) : rng.int(0, 0xffff));
    data = concat([u32be(rng.chance(0.9) ? name.length : rng.u32()), name, requests]);
  } else if (option === opt.listMetaContext || option === opt.setMetaContext) {
    const queries = Array.from({ length: rng.int(0, 4) }, () =>
      rng.chance(0.8)
        ? utf8(rng.pick(['base:allocation', 'base:', 'qemu:dirty-bitmap:x', '', 'x'.repeat(rng.int(0, 300))]))
        : rng.bytes(rng.int(0, 20)),
    );
    data = concat([
      u32be(name.length),
      name,
      u32be(rng.chance(0.9) ? queries.length : rng.u32()),
      ...queries.flatMap((q) => [u32be(rng.chance(0.95) ? q.length : rng.u32()), q]),
    ]);
  } else if (option === opt.exportName) {
    return name;
  } else {
    return rng.bytes(rng.int(0, 32));
  }
  return rng.chance(0.2) ? data.subarray(0, rng.int(0, data.length)) : data;
}

const knownOptions = [2, 3, 4, 5, 6, 8, 9, 10, 11];

/** One random option frame. */
interface Frame {
  readonly bytes: Uint8Array;
  /** Nothing sensible can follow (a truncated payload, a wrong magic, DISC). */
  readonly last: boolean;
}

function randomOption(rng: Rng): Frame {
  const option = rng.weighted([
    [70, () => rng.pick(knownOptions)],
    [3, () => opt.go],
    [2, () => opt.exportName],
    [15, () => rng.u32()],
    [5, () => rng.pick([0, 0xffffffff, 0x80000000, 12, 13])],
  ]);
  return rng.weighted<Frame>([
    // Wrong magic: the server must hang up.
    [2, () => ({ bytes: optionFrame(option, 0, new Uint8Array(0), false), last: true })],
    [
      35,
      () => {
        const data = structuredOptionData(rng, option);
        return { bytes: optionFrame(option, data.length, data), last: false };
      },
    ],
    [
      40,
      () => {
        const data = rng.bytes(rng.int(0, 48));
        return { bytes: optionFrame(option, data.length, data), last: false };
      },
    ],
    // A length that does not match the data: the stream goes out of step.
    [
      8,
      () => {
        const data = rng.bytes(rng.int(0, 48));
        return { bytes: optionFrame(option, rng.int(0, 64), data), last: false };
      },
    ],
    // Longer than the server buffers, but complete: ERR_TOO_BIG, and negotiation goes on.
    [
      2,
      () => {
        const data = rng.bytes(rng.int(4097, 6000));
        return { bytes: optionFrame(option, data.length, data), last: false };
      },
    ],
    // Huge lengths with a truncated payload.
    [
      13,
      () => {
        const length = rng.pick([4097, 65_536, MiB, MiB + 1, 0x7fffffff, 0xffffffff, rng.u32()]);
        return { bytes: optionFrame(option, length, rng.bytes(rng.int(0, 64))), last: true };
      },
    ],
  ]);
}

/** One random request frame for an export of `sizeBytes`. */
function randomRequest(rng: Rng, cookie: bigint, sizeBytes: number): Frame {
  if (rng.chance(0.01)) return { bytes: rng.bytes(wire.requestHeaderBytes), last: true }; // wrong magic
  const type = rng.weighted([
    [30, () => cmd.read],
    [25, () => cmd.write],
    [1, () => cmd.disc],
    [8, () => cmd.flush],
    [8, () => cmd.trim],
    [6, () => cmd.cache],
    [8, () => cmd.writeZeroes],
    [8, () => cmd.blockStatus],
    [6, () => rng.int(8, 0xffff)],
  ]);
  const flags = rng.weighted([
    [60, () => 0],
    [25, () => rng.int(0, 0x3f)],
    [15, () => rng.int(0, 0xffff)],
  ]);
  const offset: number | bigint = rng.weighted<number | bigint>([
    [55, () => rng.int(0, sizeBytes)],
    [15, () => rng.pick([sizeBytes - 1, sizeBytes, sizeBytes + 1, 2 ** 53 - 1, 2 ** 32])],
    [10, () => rng.pick([2n ** 53n, 2n ** 63n, 2n ** 64n - 1n])],
    [20, () => rng.u64()],
  ]);
  const length = rng.weighted([
    [55, () => rng.int(0, 512)],
    [15, () => rng.int(0, sizeBytes)],
    [15, () => rng.pick([0, 1, sizeBytes, sizeBytes + 1, 32 * MiB, 32 * MiB + 1, 0xffffffff])],
    [15, () => rng.u32()],
  ]);
  const header = wire.encodeRequestHeader({ type, flags, cookie, offset, length });
  if (type !== cmd.write || length === 0) return { bytes: header, last: type === cmd.disc };
  // A WRITE carries its payload whatever the server thinks of it. Small ones are sent whole;
  // big ones are cut short, so they end the connection's frames.
  if (length <= 4 * KiB || (length <= sizeBytes && rng.chance(0.5))) {
    return { bytes: concat([header, rng.bytes(length)]), last: false };
  }
  return { bytes: concat([header, rng.bytes(rng.int(0, 256))]), last: true };
}

/** Cuts `bytes` into 1 to 4 writes at random places. */
function cut(rng: Rng, bytes: Uint8Array): Uint8Array[] {
  const points = Array.from({ length: rng.int(0, 3) }, () => rng.int(0, bytes.length)).sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let at = 0;
  for (const p of [...points, bytes.length]) {
    if (p > at) out.push(bytes.subarray(at, p));
    at = Math.max(at, p);
  }
  return out.length === 0 ? [bytes] : out;
}

function randomEnding(rng: Rng): Ending {
  return rng.weighted<Ending>([
    [60, () => ({ kind: 'end' })],
    [20, () => ({ kind: 'destroy' })],
    [20, () => ({ kind: 'destroy-after', replyBytes: rng.int(1, 2000) })],
  ]);
}

/** The frames of connection `index`: a pure function of the seed and the index. */
function fuzzConnection(index: number): FuzzConnection {
  const rng = new Rng(seed, index);
  const transport = rng.chance(0.5) ? 'tcp' : 'unix';
  const build = rng.weighted<{ kind: string; parts: Uint8Array[]; frames: number }>([
    // Random bytes where the handshake should be.
    [
      8,
      () => {
        const n = rng.int(1, 3);
        return { kind: 'random-bytes', parts: Array.from({ length: n }, () => rng.bytes(rng.int(1, 64))), frames: n };
      },
    ],
    // A valid handshake cut off anywhere, then garbage.
    [
      8,
      () => {
        const go = wire.encodeInfoRequest({ name: 'disk', requests: [] });
        const frames = [
          validClientFlags(rng),
          optionFrame(opt.structuredReply, 0, new Uint8Array(0)),
          optionFrame(opt.go, go.length, go),
          wire.encodeRequestHeader({ type: cmd.read, cookie: 1n, offset: 0, length: 512 }),
        ];
        const whole = concat(frames);
        const at = rng.int(0, whole.length - 1);
        let complete = 0;
        for (let sum = 0, i = 0; i < frames.length; i++) {
          sum += frames[i]!.length;
          if (sum <= at) complete += 1;
        }
        return {
          kind: 'handshake-prefix',
          parts: [whole.subarray(0, at), rng.bytes(rng.int(1, 64))],
          frames: complete + 1,
        };
      },
    ],
    // Client flags (rarely with unknown bits), then random options.
    [
      34,
      () => {
        const parts = [rng.chance(0.03) ? wire.encodeClientFlags(rng.u32()) : validClientFlags(rng)];
        const count = rng.int(5, 60);
        for (let i = 0; i < count; i++) {
          const o = randomOption(rng);
          parts.push(o.bytes);
          if (o.last) break;
        }
        return { kind: 'options', parts, frames: parts.length };
      },
    ],
    // A valid negotiation into transmission, then random requests.
    [
      50,
      () => {
        const structured = rng.chance(0.6);
        const target = rng.weighted([
          [8, () => fuzzExports[0]!],
          [1, () => fuzzExports[1]!],
          [1, () => fuzzExports[2]!],
        ]);
        const parts = [validClientFlags(rng)];
        if (structured) {
          parts.push(optionFrame(opt.structuredReply, 0, new Uint8Array(0)));
          if (rng.chance(0.7)) {
            const d = wire.encodeMetaContextRequest({ exportName: target.name, queries: ['base:allocation'] });
            parts.push(optionFrame(opt.setMetaContext, d.length, d));
          }
        }
        if (rng.chance(0.8)) {
          const d = wire.encodeInfoRequest({ name: target.name, requests: rng.chance(0.5) ? [] : [1, 2, 3] });
          parts.push(optionFrame(opt.go, d.length, d));
        } else {
          const d = utf8(target.name);
          parts.push(optionFrame(opt.exportName, d.length, d));
        }
        const count = rng.int(10, 100);
        for (let i = 0; i < count; i++) {
          const r = randomRequest(rng, BigInt(i + 1), target.sizeBytes);
          parts.push(r.bytes);
          if (r.last) break;
        }
        return { kind: 'requests', parts, frames: parts.length };
      },
    ],
  ]);
  return {
    index,
    kind: build.kind,
    transport,
    writes: cut(rng, concat(build.parts)),
    frames: build.frames,
    ending: randomEnding(rng),
  };
}

// ---------------------------------------------------------------------------------------------
// Running connections.

interface Target {
  readonly port: number;
  readonly path: string;
}

/** Sends one fuzz connection's bytes; resolves when the socket is closed, or rejects on a hang. */
function runFuzzConnection(target: Target, c: FuzzConnection): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket =
      c.transport === 'tcp'
        ? createConnection({ host: '127.0.0.1', port: target.port })
        : createConnection({ path: target.path });
    let received = 0;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new Error(
          `fuzz connection ${c.index} (${c.kind}, ${c.transport}, ending ${c.ending.kind}) was not closed by the server ` +
            `within ${connectionDeadlineMs} ms of its last byte (${received} reply bytes received)`,
        ),
      );
    }, connectionDeadlineMs);
    // Resets and broken pipes are what hanging up on the server, or being hung up on, looks like.
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (c.ending.kind === 'destroy-after' && received >= c.ending.replyBytes) socket.destroy();
    });
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once('connect', () => {
      for (const w of c.writes) socket.write(w);
      if (c.ending.kind === 'destroy') socket.destroy();
      else socket.end();
    });
  });
}

interface FuzzStats {
  connections: number;
  frames: number;
  byKind: Record<string, number>;
  rssPeakBytes: number;
}

/** Runs fuzz connections, `concurrency` at a time, until framesMin frames went out or keepGoing() fails. */
async function fuzz(target: Target, keepGoing: () => boolean): Promise<FuzzStats> {
  const stats: FuzzStats = { connections: 0, frames: 0, byKind: {}, rssPeakBytes: process.memoryUsage.rss() };
  let next = 0;
  let failure: unknown;
  const worker = async (): Promise<void> => {
    while (failure === undefined && keepGoing() && stats.frames < framesMin) {
      const c = fuzzConnection(next++);
      stats.frames += c.frames;
      stats.connections += 1;
      stats.byKind[c.kind] = (stats.byKind[c.kind] ?? 0) + c.frames;
      try {
        await runFuzzConnection(target, c);
      } catch (err) {
        failure ??= err;
      }
      if (stats.connections % 64 === 0) stats.rssPeakBytes = Math.max(stats.rssPeakBytes, process.memoryUsage.rss());
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  if (failure !== undefined) throw failure;
  return stats;
}

// ---------------------------------------------------------------------------------------------
// Well-behaved clients.

/**
 * Our raw client on `good`, alternating TCP and Unix, one connection per round, checking every
 * read against a byte-array model, until `done()`. Any error or wrong byte throws.
 */
async function wellBehavedRaw(target: Target, done: () => boolean): Promise<{ rounds: number; ops: number }> {
  const rng = new Rng(seed, 0xbeef);
  const model = new Uint8Array(goodExport.sizeBytes);
  let rounds = 0;
  let ops = 0;
  const check = (what: string, errno: number): void => {
    if (errno !== 0)
      throw new Error(`well-behaved client, round ${rounds} op ${ops}: ${what} failed with errno ${errno}`);
  };
  while (!done()) {
    const pipe = await connectPipe(rounds % 2 === 0 ? { port: target.port } : { path: target.path });
    const client = new RawNbdClient(pipe);
    await client.greet();
    const structured = rng.chance(0.5);
    await client.go(goodExport.name, { structured, allocation: structured });
    for (let i = 0; i < 40; i++, ops++) {
      const offset = rng.int(0, goodExport.sizeBytes - 1);
      const length = rng.int(1, Math.min(64 * KiB, goodExport.sizeBytes - offset));
      const what = rng.int(0, 9);
      if (what < 4) {
        const data = rng.bytes(length);
        check(`WRITE ${offset}+${length}`, (await client.write(offset, data)).errno);
        model.set(data, offset);
      } else if (what < 8) {
        const reply = await client.read(offset, length);
        check(`READ ${offset}+${length}`, reply.errno);
        const expected = model.subarray(offset, offset + length);
        if (reply.data === null || Buffer.compare(Buffer.from(reply.data), Buffer.from(expected)) !== 0) {
          throw new Error(
            `well-behaved client, round ${rounds}: READ ${offset}+${length} returned other bytes than written`,
          );
        }
      } else if (what < 9) {
        check('FLUSH', (await client.call({ type: cmd.flush })).errno);
      } else {
        // Pipelined reads, answered in any order.
        const reads = new Map<bigint, { offset: number; length: number }>();
        for (let j = 0; j < 4; j++) {
          const o = rng.int(0, goodExport.sizeBytes - 4 * KiB);
          reads.set(client.send({ type: cmd.read, offset: o, length: 4 * KiB }), { offset: o, length: 4 * KiB });
        }
        for (let j = 0; j < 4; j++) {
          const reply = await client.readReply();
          const r = reads.get(reply.cookie);
          if (r === undefined) throw new Error(`well-behaved client: reply for unknown cookie ${reply.cookie}`);
          check(`pipelined READ ${r.offset}`, reply.errno);
          if (
            Buffer.compare(Buffer.from(reply.data!), Buffer.from(model.subarray(r.offset, r.offset + r.length))) !== 0
          )
            throw new Error(`well-behaved client: pipelined READ ${r.offset} returned other bytes than written`);
        }
      }
    }
    client.disconnect();
    await pipe.closed;
    rounds += 1;
  }
  return { rounds, ops };
}

/** libnbd (nbdsh) on `good-libnbd`: write, flush, read back and compare, over and over, until done(). */
async function wellBehavedLibnbd(tcpUri: string, unixUri: string, done: () => boolean): Promise<{ runs: number }> {
  const script = [
    'import os',
    'size = h.get_size()',
    'for i in range(16):',
    '    n = 4096 * (1 + i % 8)',
    '    off = (i * 262144 + 512 * i) % (size - n)',
    '    data = os.urandom(n)',
    '    h.pwrite(data, off)',
    '    h.flush()',
    '    back = h.pread(n, off)',
    '    assert back == data, "libnbd read back other bytes at %d" % off',
    'print("ok")',
  ].join('\n');
  let runs = 0;
  while (!done()) {
    const out = await nbdsh(script, { uri: runs % 2 === 0 ? tcpUri : unixUri, timeoutMs: 30_000 });
    if (out.trim() !== 'ok') throw new Error(`nbdsh run ${runs} printed ${JSON.stringify(out)}`);
    runs += 1;
  }
  return { runs };
}

/** A function that runs a full GC: global.gc when node runs with --expose-gc, else V8's own. */
function gcFunction(): () => void {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (exposed !== undefined) return exposed;
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

// ---------------------------------------------------------------------------------------------

describe('NBD server fuzzing over real sockets', function () {
  this.timeout(180_000);
  let dir = '';
  let server: NbdServer;
  let provider: MemoryExportProvider;
  let target: Target;
  let tcpUri: (name: string) => string;
  let unixUri: (name: string) => string;
  /** Log lines are counted, not kept (there are tens of thousands); BUG lines are kept whole. */
  const logCounts = { lines: 0, violations: 0 };
  const bugs: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cairn-nbd-fuzz-'));
    provider = new MemoryExportProvider();
    for (const e of fuzzExports) provider.create(e.name, e.sizeBytes, { readOnly: e.readOnly });
    provider.create(goodExport.name, goodExport.sizeBytes);
    provider.create(libnbdExport.name, libnbdExport.sizeBytes);
    server = new NbdServer({
      provider,
      log: (line) => {
        logCounts.lines += 1;
        if (line.includes('protocol violation')) logCounts.violations += 1;
        if (line.startsWith('BUG')) bugs.push(line);
      },
    });
    const { port } = await server.listenTcp('127.0.0.1', 0);
    const path = join(dir, 'nbd.sock');
    await server.listenUnix(path);
    target = { port, path };
    tcpUri = (name) => `nbd://127.0.0.1:${port}/${name}`;
    unixUri = (name) => `nbd+unix:///${name}?socket=${path}`;
  });

  after(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it(`survives ${framesMin} seeded malformed frames while well-behaved clients are served correctly (seed ${seed})`, async () => {
    try {
      const gc = gcFunction();
      gc();
      const before = process.memoryUsage();
      const started = Date.now();

      // The well-behaved clients run until the fuzzer is done; if one fails, the fuzzer stops, so
      // the failure is reported at once.
      let fuzzing = true;
      let goodFailure: unknown;
      const stopOnFailure = <T>(p: Promise<T>): Promise<T | undefined> =>
        p.catch((err: unknown) => {
          goodFailure ??= err;
          fuzzing = false;
          return undefined;
        });
      const good = stopOnFailure(wellBehavedRaw(target, () => !fuzzing));
      const libnbd = stopOnFailure(
        wellBehavedLibnbd(tcpUri(libnbdExport.name), unixUri(libnbdExport.name), () => !fuzzing),
      );
      let stats: FuzzStats | undefined;
      let fuzzFailure: unknown;
      try {
        stats = await fuzz(target, () => fuzzing);
      } catch (err) {
        fuzzFailure = err;
      } finally {
        fuzzing = false;
      }
      const [goodStats, libnbdStats] = await Promise.all([good, libnbd]);
      if (goodFailure !== undefined) throw goodFailure;
      if (fuzzFailure !== undefined) throw fuzzFailure;
      if (stats === undefined || goodStats === undefined || libnbdStats === undefined) throw new Error('unreachable');
      const fuzzMs = Date.now() - started;

      // The server still serves a new client on both transports.
      for (const uri of [tcpUri('disk'), unixUri(goodExport.name)]) {
        const out = await runOk('nbdinfo', ['--size', uri], { timeoutMs: 30_000 });
        expect(Number(out.trim()), uri).to.be.above(0);
      }
      await waitFor('every connection to close', () => server.connectionCount === 0, 15_000);
      expect(provider.openHandles(), 'export handles still open').to.equal(0);
      expect(bugs, 'BUG lines').to.deep.equal([]);
      expect(stats.frames).to.be.at.least(framesMin);

      gc();
      const after = process.memoryUsage();
      const rssGrowth = Math.max(stats.rssPeakBytes, after.rss) - before.rss;
      const heapGrowth = after.heapUsed - before.heapUsed;
      console.log(
        `      nbd fuzz seed ${seed}: ${stats.frames} frames on ${stats.connections} connections in ${fuzzMs} ms ` +
          `(${Object.entries(stats.byKind)
            .map(([k, v]) => `${k} ${v}`)
            .join(', ')}); ${logCounts.lines} server log lines, ${logCounts.violations} protocol violations; ` +
          `fuzz exports saw ${fuzzExports
            .map(({ name }) => {
              const st = provider.device(name).stats;
              return `${st.reads + st.writes + st.flushes + st.trims + st.writeZeroes + st.blockStatus} device calls on ${name}`;
            })
            .join(', ')}; ` +
          `well-behaved: ${goodStats.rounds} rounds / ${goodStats.ops} ops raw, ${libnbdStats.runs} nbdsh runs; ` +
          `rss peak +${(rssGrowth / MiB).toFixed(1)} MiB, heap after GC ${heapGrowth >= 0 ? '+' : ''}${(heapGrowth / MiB).toFixed(1)} MiB`,
      );
      expect(goodStats.rounds, 'well-behaved raw client rounds').to.be.above(0);
      expect(libnbdStats.runs, 'nbdsh runs').to.be.above(0);
      expect(rssGrowth, 'rss growth in bytes').to.be.below(rssGrowthBytesMax);
      expect(heapGrowth, 'heap growth after GC in bytes').to.be.below(heapGrowthBytesMax);
    } catch (err) {
      const replay = `Replay: CAIRN_NBD_FUZZ_SEED=${seed} CAIRN_NBD_FUZZ_FRAMES=${framesMin} node scripts/run_tests.mjs dist/test/integration/nbd_fuzz.test.js`;
      if (err instanceof Error) {
        err.message = `${err.message}\n${replay}`;
        throw err;
      }
      throw new Error(`${String(err)}\n${replay}`);
    }
  });
});
