/**
 * A codec worker thread (spawned by CodecPool; compiled to dist/src/codec/worker.js) and the
 * mailbox protocol it shares with the pool. The worker instantiates the kernel on the pool's
 * shared wasm memory, then serves its mailbox: a ring of job descriptors in that same memory.
 *
 * Why a mailbox in shared memory rather than postMessage: a MessagePort round trip costs about
 * 15 us of CPU per job here (measured with an echo worker), 12% of coding a 1 MiB extent, and on
 * a 2-core machine that CPU comes out of the workers' share. Atomics cost about half of that:
 * the worker sleeps in Atomics.wait on its request counter and the pool sleeps in
 * Atomics.waitAsync on one completion counter, and a busy worker takes the next job without
 * sleeping at all. Messages remain for start-up only (`ready`, `init-failed`).
 *
 * What it keeps true: jobs of one mailbox complete in the order they were posted, and each gets
 * exactly one status, done or failed with its error's name and message. A failed job leaves the
 * worker serving. Only the job's own output shards and this worker's workspace are written.
 *
 * Left out: choosing the worker and validating requests (the pool asserts what it posts, and
 * the worker checks addresses again before the kernel runs).
 */
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import { assert } from '../core/index.js';
import { KernelInstance, type LoadedKernel, type WasmMemory } from './kernel.js';
import { ExtentBuffer, encodeCall, reconstructCall } from './wasm_codec.js';

/**
 * Mailbox layout, in bytes from the mailbox's start. Each counter sits on a cache line of its
 * own because different threads write them. Counters are i32 job counts that wrap; only their
 * differences matter.
 *
 *   0    requestCount   jobs the pool has posted (written by the pool)
 *   64   sleeping       1 while the worker is (about to be) blocked in Atomics.wait
 *   128  doneCount      jobs the worker has finished (written by the worker)
 *   192  descriptors    mailboxSlots x descriptorBytes, job n in slot n % mailboxSlots
 */
export const mailboxSlots = 64;
export const descriptorBytes = 512;
const requestCountAt = 0;
const sleepingAt = 64;
const doneCountAt = 128;
const descriptorsAt = 192;
export const mailboxBytes = descriptorsAt + mailboxSlots * descriptorBytes;

/**
 * Descriptor layout, in i32 words from the descriptor's first word; error text (UTF-8,
 * truncated) fills the bytes after the header. Shard sets are bitmaps of 8 words: bit i & 31
 * of word i >> 5 for shard i (k+m <= 255).
 */
export const descriptorWord = {
  op: 0,
  k: 1,
  m: 2,
  address: 3,
  shardBytes: 4,
  status: 5,
  errorBytes: 6,
  present: 8,
  wanted: 16,
} as const;
const headerBytes = 128;
const errorTextBytesMax = descriptorBytes - headerBytes;

export const jobOp = { encode: 1, reconstruct: 2 } as const;
export const jobStatus = { pending: 0, done: 1, failed: 2 } as const;

/** What the pool passes as workerData. All offsets are bytes in `memory`. */
export interface WorkerInit {
  /** Marks workerData as a pool's: the pool imports this module too, which must not serve. */
  readonly codecWorker: true;
  readonly kernel: LoadedKernel;
  readonly memory: WasmMemory;
  /** This worker's private kernel workspace (kernelWorkspaceBytes). */
  readonly workspaceAt: number;
  /** This worker's mailbox (mailboxBytes). */
  readonly mailboxAt: number;
  /** The pool-wide completion counter (one i32), bumped after every finished job. */
  readonly completionsAt: number;
}

/** An error's identity, as it crosses the thread boundary. */
export interface ErrorSummary {
  readonly name: string;
  readonly message: string;
}

/** Start-up messages from a worker to the pool. */
export type WorkerReply = { readonly type: 'ready' } | { readonly type: 'init-failed'; readonly error: ErrorSummary };

/**
 * A worker's mailbox as either side sees it. Descriptor words are plain reads and writes: the
 * Atomics on requestCount and doneCount order them (a descriptor is written before the job is
 * posted and read after; its status is written before the job is marked done and read after).
 */
export class Mailbox {
  /** The whole memory as i32 words; descriptor(job) + descriptorWord.x indexes it. */
  readonly words: Int32Array;
  private readonly bytes: Uint8Array;
  private readonly requestCountIndex: number;
  private readonly sleepingIndex: number;
  private readonly doneCountIndex: number;

  /** The memory must not grow afterwards: the views are taken once. */
  constructor(
    memory: WasmMemory,
    readonly at: number,
  ) {
    assert(at % 64 === 0, 'mailbox must be 64-byte aligned');
    this.words = new Int32Array(memory.buffer);
    this.bytes = new Uint8Array(memory.buffer);
    this.requestCountIndex = (at + requestCountAt) / 4;
    this.sleepingIndex = (at + sleepingAt) / 4;
    this.doneCountIndex = (at + doneCountAt) / 4;
  }

  /** Index in `words` of the first word of job `job`'s descriptor. */
  descriptor(job: number): number {
    // job & (mailboxSlots - 1) is job mod mailboxSlots for negative (wrapped) numbers too.
    return (this.at + descriptorsAt + (job & (mailboxSlots - 1)) * descriptorBytes) / 4;
  }

  get requestCount(): number {
    return Atomics.load(this.words, this.requestCountIndex);
  }

  get doneCount(): number {
    return Atomics.load(this.words, this.doneCountIndex);
  }

  /** Zeroes the counters, for a fresh worker (no thread may be using the mailbox). */
  reset(): void {
    Atomics.store(this.words, this.requestCountIndex, 0);
    Atomics.store(this.words, this.sleepingIndex, 0);
    Atomics.store(this.words, this.doneCountIndex, 0);
  }

  /**
   * Pool side: publishes job `job`, whose descriptor is written, and wakes the worker if it
   * sleeps. Either the pool sees `sleeping` set here, or the worker sees the new count before
   * it waits (both sides use sequentially consistent Atomics), so no post goes unnoticed.
   */
  post(job: number): void {
    Atomics.store(this.words, this.requestCountIndex, (job + 1) | 0);
    if (Atomics.load(this.words, this.sleepingIndex) !== 0) Atomics.notify(this.words, this.requestCountIndex, 1);
  }

  /** Worker side: blocks while requestCount is `seen`. */
  waitForRequest(seen: number): void {
    Atomics.store(this.words, this.sleepingIndex, 1);
    if (Atomics.load(this.words, this.requestCountIndex) === seen)
      Atomics.wait(this.words, this.requestCountIndex, seen);
    Atomics.store(this.words, this.sleepingIndex, 0);
  }

  /** Worker side: marks job `job` finished. Its status word must be written already. */
  finish(job: number): void {
    Atomics.store(this.words, this.doneCountIndex, (job + 1) | 0);
  }

  /** A shard set (the bitmap at `field` of job `job`) as shardCount flags. */
  readShardSet(job: number, field: number, shardCount: number): boolean[] {
    const at = this.descriptor(job) + field;
    return Array.from({ length: shardCount }, (_, i) => ((this.words[at + (i >> 5)]! >>> (i & 31)) & 1) === 1);
  }

  /** Writes the shards listed (indexes below 256) as the bitmap at `field` of job `job`. */
  writeShardSet(job: number, field: number, shards: readonly number[]): void {
    const at = this.descriptor(job) + field;
    this.words.fill(0, at, at + 8);
    for (const i of shards) this.words[at + (i >> 5)]! |= 1 << (i & 31);
  }

  /** Worker side: stores a failure's text (UTF-8, truncated to fit the descriptor). */
  writeError(job: number, error: ErrorSummary): void {
    const text = new TextEncoder().encode(`${error.name}: ${error.message}`).subarray(0, errorTextBytesMax);
    const at = this.descriptor(job);
    this.bytes.set(text, at * 4 + headerBytes);
    this.words[at + descriptorWord.errorBytes] = text.length;
  }

  /** Pool side: the failure text of job `job`. */
  readError(job: number): string {
    const at = this.descriptor(job);
    const length = Math.min(this.words[at + descriptorWord.errorBytes]!, errorTextBytesMax);
    // slice() copies out of the shared memory: TextDecoder refuses shared views.
    return new TextDecoder().decode(this.bytes.slice(at * 4 + headerBytes, at * 4 + headerBytes + length));
  }
}

/**
 * Longest a worker with more jobs queued lets finished ones go unannounced. 0.2 ms is 20 wakes'
 * worth of pool CPU, so batching costs at most 5%; jobs longer than that are announced singly.
 */
const notifyIntervalMs = 0.2;

function summary(err: unknown): ErrorSummary {
  if (err instanceof Error) return { name: err.name, message: err.message };
  return { name: 'Error', message: String(err) };
}

/** Owner of the ExtentBuffer views the worker builds; never released through a kernel. */
const workerOwner = {};

function runJob(instance: KernelInstance, memory: WasmMemory, mailbox: Mailbox, job: number): void {
  const { words } = mailbox;
  const at = mailbox.descriptor(job);
  const k = words[at + descriptorWord.k]!;
  const m = words[at + descriptorWord.m]!;
  const shardBytes = words[at + descriptorWord.shardBytes]!;
  const buf = new ExtentBuffer(workerOwner, memory, { k, m }, shardBytes, words[at + descriptorWord.address]! >>> 0);
  const op = words[at + descriptorWord.op];
  let call;
  if (op === jobOp.encode) {
    call = encodeCall(buf);
  } else if (op === jobOp.reconstruct) {
    const present = mailbox.readShardSet(job, descriptorWord.present, k + m);
    const wanted = mailbox.readShardSet(job, descriptorWord.wanted, k + m).flatMap((w, i) => (w ? [i] : []));
    call = reconstructCall(buf, present, wanted);
  } else {
    throw new Error(`unknown codec job op ${op}`);
  }
  if (call !== null) instance.run(call);
}

function serve(port: MessagePort): void {
  const post = (reply: WorkerReply): void => port.postMessage(reply);
  let instance: KernelInstance;
  let init: WorkerInit;
  try {
    init = workerData as WorkerInit;
    instance = new KernelInstance(init.kernel, init.memory, init.workspaceAt);
  } catch (err) {
    post({ type: 'init-failed', error: summary(err) });
    return;
  }
  const mailbox = new Mailbox(init.memory, init.mailboxAt);
  const { words } = mailbox;
  const completions = init.completionsAt / 4;
  post({ type: 'ready' });
  // From here on this thread never returns to its event loop: it serves the mailbox until the
  // pool terminates it (termination interrupts Atomics.wait).
  let job = mailbox.doneCount;
  let notifiedAt = performance.now();
  for (;;) {
    if (mailbox.requestCount === job) {
      mailbox.waitForRequest(job);
      continue;
    }
    const status = mailbox.descriptor(job) + descriptorWord.status;
    try {
      runJob(instance, init.memory, mailbox, job);
      words[status] = jobStatus.done;
    } catch (err) {
      mailbox.writeError(job, summary(err));
      words[status] = jobStatus.failed;
    }
    mailbox.finish(job);
    job = (job + 1) | 0;
    Atomics.add(words, completions, 1);
    // Waking the pool costs it about 10 us of CPU, so with a queue of short jobs one wake
    // settles several: wake it when this worker is about to run dry (one job or none left) or
    // when the last wake is notifyIntervalMs old. A finished job thus waits at most that long
    // plus one job before the pool hears of it (sooner if the pool posts meanwhile: it settles
    // finished jobs whenever it runs).
    const now = performance.now();
    if (((mailbox.requestCount - job) | 0) <= 1 || now - notifiedAt >= notifyIntervalMs) {
      Atomics.notify(words, completions);
      notifiedAt = now;
    }
  }
}

// The pool imports this module for the mailbox protocol; only a thread started by the pool
// (workerData marked codecWorker) serves.
if (parentPort !== null && (workerData as Partial<WorkerInit> | null)?.codecWorker === true) serve(parentPort);
