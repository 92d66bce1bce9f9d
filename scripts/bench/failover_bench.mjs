#!/usr/bin/env node
// Failover benchmark: after a SIGKILL of the frontend that holds a volume, how long until a
// standby frontend serves that volume with every flushed byte (the target: under 2 s).
//
// Setup: `cairnctl dev up` (etcd, six storage nodes in zones a, b, c, the dev frontend), one volume.
// Each iteration i:
//   1. Two fresh frontends start and stay idle (nothing attached), both `cairnctl nbd serve
//      --force-takeover`: S, the standby a real deployment keeps running, and P, the peer.
//   2. The holder H (the dev frontend at first, later the previous iteration's P) has the volume
//      attached for writing through one nbdsh connection, which writes W fresh bytes at i*W and
//      flushes them, then stays connected: H holds the volume's etcd lock when it dies.
//   3. SIGKILL H by pid; at once a waiting nbdsh (started beforehand) connects to S in a tight
//      loop until a read of the last 4 KiB block just flushed returns exactly those bytes.
//      "takeover" = from the kill to that read's reply. It includes: S's attach (volume record,
//      targets and topology from etcd, the etcd lock taken over with a new fencing epoch while the
//      dead H's lease still lives, the extent map loaded, the repair watcher set up), the NBD
//      handshake (libnbd's connect_uri: structured replies, meta context, GO) and the first read
//      through the erasure-coded store. It leaves out Python's start-up (done before the kill).
//      Untimed, we then read every byte flushed so far through S and compare, and check that the
//      lock names S with a higher epoch.
//   4. S's client disconnects; once S has detached the volume (lock released), the same measure
//      on P: "fresh-attach-peer", the same attach with nobody holding the lock, no failover. The
//      ratio takeover/peer is what the failover itself costs.
//   5. S stops (SIGTERM); P, with its client still connected, is the next holder.
// Finally "wait-for-lease": H is killed and a frontend started without --force-takeover is
// asked for the volume. If it refuses while the dead H's lease (10 s TTL) lives, the line says
// skipped with the refusal; at full size we also keep the client retrying and report how long
// until it got in (clientRetryMs), which is the lease expiry plus the retry interval.
//
// Prints one JSON line per result: {"bench":"failover","mode":"takeover"|"fresh-attach-peer",
// "n","p50Ms","maxMs","minMs","samplesMs","verified","verifiedBytes",...}, the wait-for-lease
// line, then {"summary":"failover","failoverP50Ms","target":2000,"failoverOverPeerP50",...}.
// Progress goes to standard error. Every process started here is stopped by pid, also on error.
//
// Usage: node scripts/bench/failover_bench.mjs [--n N] [--write-size SIZE] [--tiny]
// Needs `make build`, etcd and nbdsh (make setup).
import { writeFileSync } from 'node:fs';
import { parseSize } from '../../dist/src/core/index.js';
import { killPid, pidRuns, waitFor } from '../../dist/src/dev/index.js';
import { nbdshProcess, seededBytes, sha256, startStack } from '../../dist/test/harness/stack.js';

const MiB = 1024 * 1024;
const blockBytes = 4096;
const volume = 'failover';
/** A takeover or attach slower than this is a failure, not a sample. */
const attachDeadlineS = 60;
/** The lock's lease TTL is 10 s (src/meta/etcd_meta.ts); a retrying client gets in after it. */
const leaseWaitDeadlineS = 45;
/** Pause between a client's failed attempts: short, so the poll notices success at once. */
const pollIntervalS = 0.002;
const targetMs = 2000;

function usage(message) {
  console.error(`failover_bench: ${message}`);
  console.error('usage: node scripts/bench/failover_bench.mjs [--n N] [--write-size SIZE] [--tiny]');
  process.exit(2);
}

function parseArgs(argv) {
  const o = { n: undefined, writeBytes: undefined, tiny: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => argv[++i] ?? usage(`${a} needs a value`);
    if (a === '--n') {
      o.n = Number(value());
      if (!Number.isSafeInteger(o.n) || o.n < 1) usage('--n must be a whole number >= 1');
    } else if (a === '--write-size') {
      try {
        o.writeBytes = parseSize(value(), '--write-size');
      } catch (err) {
        usage(err.message);
      }
      if (o.writeBytes < blockBytes || o.writeBytes % blockBytes !== 0)
        usage('--write-size must be whole 4 KiB blocks');
    } else if (a === '--tiny') o.tiny = true;
    else usage(`unknown option ${a}`);
  }
  // Tiny: what the test suite runs so the script never rots; the numbers mean nothing.
  o.n ??= o.tiny ? 2 : 5;
  o.writeBytes ??= o.tiny ? 64 * 1024 : 4 * MiB;
  // Every iteration writes its own range, so the volume holds them all.
  o.volumeBytes = Math.max(16 * MiB, Math.ceil((o.n * o.writeBytes) / MiB) * MiB);
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const log = (line) => process.stderr.write(`failover_bench: ${line}\n`);
let stdoutGone = false;
process.stdout.on('error', (err) => {
  if (err.code !== 'EPIPE') throw err;
  stdoutGone = true;
});
const emit = (row) => {
  if (!stdoutGone) process.stdout.write(`${JSON.stringify(row)}\n`);
};
const round = (x) => Math.round(x * 10) / 10;
const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
function summary(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    n: samples.length,
    p50Ms: round(percentile(sorted, 50)),
    maxMs: round(sorted.at(-1)),
    minMs: round(sorted[0]),
    samplesMs: samples.map(round),
  };
}

// ------------------------------------------------------------------------------------------------
// One nbdsh (libnbd) process per NBD client, driven by JSON lines on stdin and answering with JSON
// lines on stdout. It is started (Python and libnbd loaded) before anything is timed.

const clientScript = String.raw`
import hashlib, time
import nbd

def say(o):
    sys.stdout.write(json.dumps(o) + "\n")
    sys.stdout.flush()

cur = None

def drop(h):
    if h is None:
        return
    try:
        h.shutdown()
    except Exception:
        pass

def read_all(h, offset, length):
    parts = []
    at = offset
    while at < offset + length:
        n = min(4 << 20, offset + length - at)
        parts.append(h.pread(n, at))
        at += n
    return b"".join(parts)

say({"ready": True})
for line in sys.stdin:
    c = json.loads(line)
    op = c["op"]
    try:
        if op == "connect":
            drop(cur)
            cur = None
            h = nbd.NBD()
            h.connect_uri(c["uri"])
            cur = h
            say({"ok": True})
        elif op == "write":
            with open(c["path"], "rb") as f:
                data = f.read()
            at = 0
            while at < len(data):
                n = min(4 << 20, len(data) - at)
                cur.pwrite(data[at:at + n], c["offset"] + at)
                at += n
            cur.flush()
            say({"ok": True})
        elif op == "verify":
            data = read_all(cur, c["offset"], c["length"])
            say({"ok": hashlib.sha256(data).hexdigest() == c["sha256"], "error": "the bytes read differ from those flushed"})
        elif op == "poll":
            # Connect and read until the read returns the expected bytes; on success the
            # connection stays open as the current one.
            drop(cur)
            cur = None
            deadline = time.monotonic() + c["deadlineS"]
            attempts = 0
            first = None
            last = None
            while True:
                attempts += 1
                h = nbd.NBD()
                try:
                    h.connect_uri(c["uri"])
                    data = h.pread(c["length"], c["offset"])
                    if hashlib.sha256(data).hexdigest() == c["sha256"]:
                        cur = h
                        say({"ok": True, "attempts": attempts, "firstError": first})
                        break
                    # Wrong bytes after a successful read are lost data, not a transient state.
                    drop(h)
                    say({"ok": False, "attempts": attempts, "error": "the read returned other bytes than were flushed", "firstError": first})
                    break
                except nbd.Error as e:
                    err = str(e)
                drop(h)
                first = err if first is None else first
                last = err
                if attempts >= c.get("maxAttempts", 1 << 30) or time.monotonic() > deadline:
                    say({"ok": False, "attempts": attempts, "error": last, "firstError": first})
                    break
                time.sleep(c["intervalS"])
        elif op == "close":
            drop(cur)
            cur = None
            say({"ok": True})
        else:
            say({"ok": False, "error": "unknown op " + op})
    except Exception as e:
        say({"ok": False, "error": repr(e)})
`;

class NbdClient {
  constructor(label) {
    this.label = label;
    this.proc = nbdshProcess(clientScript, {}, { deadlineMs: 30 * 60_000 });
    this.lines = [];
    this.waiter = null;
    let partial = '';
    this.proc.child.stdout.on('data', (chunk) => {
      partial += chunk.toString();
      for (let nl = partial.indexOf('\n'); nl >= 0; nl = partial.indexOf('\n')) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        this.lines.push({ at: performance.now(), value: JSON.parse(line) });
        const w = this.waiter;
        this.waiter = null;
        w?.();
      }
    });
    this.proc.child.once('close', () => {
      const w = this.waiter;
      this.waiter = null;
      w?.();
    });
  }

  /** The next line the client prints, with the time it arrived. */
  async next(deadlineMs) {
    const until = Date.now() + deadlineMs;
    while (this.lines.length === 0) {
      if (!this.proc.running())
        throw new Error(`nbdsh client ${this.label} exited: ${this.proc.stderr().slice(-2000)}`);
      const left = until - Date.now();
      if (left <= 0) throw new Error(`nbdsh client ${this.label} did not answer in ${deadlineMs} ms`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.lines.shift();
  }

  static async start(label) {
    const c = new NbdClient(label);
    const first = await c.next(30_000);
    if (first.value.ready !== true) throw new Error(`nbdsh client ${label} printed ${JSON.stringify(first.value)}`);
    return c;
  }

  send(command) {
    this.proc.write(`${JSON.stringify(command)}\n`);
  }

  /** Sends a command and waits for its answer; throws unless it says ok. */
  async call(command, deadlineMs = (attachDeadlineS + 30) * 1000) {
    this.send(command);
    const { value } = await this.next(deadlineMs);
    if (value.ok !== true)
      throw new Error(`nbdsh client ${this.label}: ${command.op} failed: ${JSON.stringify(value)}`);
    return value;
  }

  kill() {
    this.proc.kill('SIGKILL');
    return this.proc.exit();
  }
}

// ------------------------------------------------------------------------------------------------

let stack;
let cleaning = null;
async function cleanup() {
  cleaning ??= (async () => {
    if (stack === undefined) return;
    const problems = await stack.down();
    for (const p of problems) log(`cleanup: ${p}`);
    log(`dev cluster down${problems.length > 0 ? ' with problems' : ''}`);
  })();
  return cleaning;
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    log(`${signal}: stopping everything started here`);
    void cleanup().finally(() => process.exit(130));
  });
}

async function startFrontend(role, options = {}) {
  const fe = await stack.startFrontend(options);
  log(`frontend ${fe.label} (pid ${fe.pid}): ${role}`);
  return fe;
}

/** Data written so far, for the untimed check of every flushed byte. */
const written = [];
const expectedAll = () => Buffer.concat(written);

/** Writes iteration i's bytes through `client` (attached to the holder) and flushes them. */
async function writeAndFlush(client, i) {
  const data = seededBytes(`failover-${i}`, opts.writeBytes);
  const path = stack.path(`data-${i}.bin`);
  writeFileSync(path, data);
  await client.call({ op: 'write', path, offset: i * opts.writeBytes });
  written.push(data);
  const lastBlock = data.subarray(data.length - blockBytes);
  return { offset: (i + 1) * opts.writeBytes - blockBytes, length: blockBytes, sha256: sha256(lastBlock) };
}

/** Reads every byte flushed so far through the client's current connection and compares. */
async function verifyAll(client) {
  const all = expectedAll();
  await client.call({ op: 'verify', offset: 0, length: all.length, sha256: sha256(all) });
  return all.length;
}

function poll(uri, block, extra = {}) {
  return { op: 'poll', uri, ...block, deadlineS: attachDeadlineS, intervalS: pollIntervalS, ...extra };
}

/** SIGKILLs the holder by pid and returns the moment the signal was sent. */
function killHolder(holder) {
  if (!pidRuns(holder.pid, holder.needle)) throw new Error(`holder ${holder.label} (pid ${holder.pid}) is not running`);
  const t0 = performance.now();
  process.kill(holder.pid, 'SIGKILL');
  return t0;
}

async function lockOwnerPid() {
  const lock = await stack.lockOf(volume);
  return lock === undefined ? undefined : { pid: Number(lock.owner.split('/').at(-1)), epoch: lock.epoch };
}

async function main() {
  log(`dev up; volume ${volume} of ${opts.volumeBytes} bytes; ${opts.n} iterations of ${opts.writeBytes} bytes`);
  stack = await startStack();
  const dev = stack.cluster.frontend;
  log(`dev cluster in ${stack.dir}: etcd pid ${stack.cluster.etcdPid}, dev frontend pid ${dev.pid}`);
  await stack.createVolume(volume, String(opts.volumeBytes));
  let holder = {
    label: 'dev frontend',
    pid: dev.pid,
    needle: dev.socket,
    uri: stack.uri(volume),
    client: await NbdClient.start('writer-0'),
  };
  await holder.client.call({ op: 'connect', uri: holder.uri });

  const takeovers = [];
  const peers = [];
  const attempts = { takeover: [], peer: [] };
  let verifiedBytes = 0;
  let epochs = 0;
  for (let i = 0; i < opts.n; i++) {
    // 1. A standby and a peer, started and idle before anything is timed.
    const standby = await startFrontend('standby', { forceTakeover: true });
    const peer = await startFrontend('peer', { forceTakeover: true });
    const standbyClient = await NbdClient.start(`standby-${i}`);
    const peerClient = await NbdClient.start(`peer-${i}`);

    // 2. Fresh bytes through the holder, flushed; its connection stays open.
    const block = await writeAndFlush(holder.client, i);
    const before = await lockOwnerPid();
    if (before?.pid !== holder.pid)
      throw new Error(`the lock is not held by ${holder.label}: ${JSON.stringify(before)}`);

    // 3. The failover, timed.
    const t0 = killHolder(holder);
    standbyClient.send(poll(standby.uri(volume), block));
    const reply = await standbyClient.next((attachDeadlineS + 30) * 1000);
    if (reply.value.ok !== true)
      throw new Error(
        `takeover ${i}: no read of the flushed bytes through the standby: ${JSON.stringify(reply.value)}`,
      );
    takeovers.push(reply.at - t0);
    attempts.takeover.push(reply.value.attempts);
    log(`takeover ${i}: ${round(reply.at - t0)} ms (${reply.value.attempts} attempts) from ${holder.label}`);
    await killPid(holder.pid, holder.label);
    await holder.client.kill();
    verifiedBytes = await verifyAll(standbyClient);
    const after = await lockOwnerPid();
    if (after?.pid !== standby.pid || !(after.epoch > before.epoch))
      throw new Error(`after takeover ${i} the lock is ${JSON.stringify(after)}, was ${JSON.stringify(before)}`);
    epochs += 1;

    // 4. The peer: the same attach when nobody holds the volume.
    await standbyClient.call({ op: 'close' });
    // The standby detaches (and releases the lock) detachLingerMs after its last client left.
    await waitFor(
      `frontend ${standby.label} to release the lock of ${volume}`,
      async () => (await stack.lockOf(volume)) === undefined,
      30_000,
    );
    await standbyClient.kill();
    const p0 = performance.now();
    const peerReply = await peerClient.call(poll(peer.uri(volume), block));
    peers.push(performance.now() - p0);
    attempts.peer.push(peerReply.attempts);
    log(`fresh attach ${i}: ${round(performance.now() - p0)} ms`);
    await verifyAll(peerClient);

    // 5. The standby goes; the peer, still connected, holds the volume for the next round.
    await standby.stop();
    holder = {
      label: `peer frontend ${i}`,
      pid: peer.pid,
      needle: peer.socket,
      uri: peer.uri(volume),
      client: peerClient,
    };
  }

  const takeover = summary(takeovers);
  const fresh = summary(peers);
  const common = { writeBytes: opts.writeBytes, verifiedBytes, verified: verifiedBytes === opts.n * opts.writeBytes };
  emit({
    bench: 'failover',
    mode: 'takeover',
    ...takeover,
    attempts: attempts.takeover,
    epochBumps: epochs,
    ...common,
  });
  emit({ bench: 'failover', mode: 'fresh-attach-peer', ...fresh, attempts: attempts.peer, ...common });

  // Wait-for-lease: the holder dies and a frontend without --force-takeover is asked.
  const waiter = await startFrontend('waiter (no --force-takeover)');
  const waitClient = await NbdClient.start('wait-for-lease');
  const lastBlock = {
    offset: opts.n * opts.writeBytes - blockBytes,
    length: blockBytes,
    sha256: sha256(written.at(-1).subarray(opts.writeBytes - blockBytes)),
  };
  const mark = waiter.logText().length;
  const w0 = killHolder(holder);
  // Tiny: one attempt says whether the frontend waits or refuses. Full: the client retries.
  // Each refused attempt costs the frontend a lease grant and revoke in etcd: retry every 50 ms.
  waitClient.send(
    poll(waiter.uri(volume), lastBlock, {
      deadlineS: leaseWaitDeadlineS,
      intervalS: 0.05,
      ...(opts.tiny ? { maxAttempts: 1 } : {}),
    }),
  );
  const waitReply = await waitClient.next((leaseWaitDeadlineS + 30) * 1000);
  const waitMs = waitReply.at - w0;
  await killPid(holder.pid, holder.label);
  await holder.client.kill();
  // The refusal as the frontend logged it (plain or JSON lines), else as the client saw it.
  const refusal =
    waiter
      .logText()
      .slice(mark)
      .replaceAll('\\"', '"')
      .match(/Volume "[^"\n]*" is attached by [^\n"]*/)?.[0] ?? waitReply.value.firstError;
  if (waitReply.value.ok === true && waitReply.value.attempts === 1) {
    // The frontend itself waited for the lease: a real measurement.
    emit({ bench: 'failover', mode: 'wait-for-lease', ...summary([waitMs]), leaseTtlS: 10 });
  } else {
    const row = {
      bench: 'failover',
      mode: 'wait-for-lease',
      skipped: `the frontend refuses a volume whose dead holder's lease still lives instead of waiting for it: ${String(refusal).trim()}`,
      leaseTtlS: 10,
    };
    if (waitReply.value.ok === true) {
      // A client that retries gets in once the lease expires.
      row.clientRetryMs = round(waitMs);
      row.clientRetryAttempts = waitReply.value.attempts;
      await verifyAll(waitClient);
      row.verifiedBytes = expectedAll().length;
    }
    emit(row);
  }
  await waitClient.kill();

  emit({
    summary: 'failover',
    failoverP50Ms: takeover.p50Ms,
    failoverMaxMs: takeover.maxMs,
    freshAttachP50Ms: fresh.p50Ms,
    failoverOverPeerP50: Math.round((takeover.p50Ms / fresh.p50Ms) * 100) / 100,
    target: targetMs,
    meetsTarget: takeover.maxMs < targetMs,
  });
}

try {
  await main();
} catch (err) {
  log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
} finally {
  await cleanup();
}
