/**
 * CodecPool: the wasm kernel on N worker threads that all import ONE shared wasm memory, so an
 * extent is never copied between threads. The caller allocates an ExtentBuffer in that memory,
 * fills its data shards there, and asks for encode or reconstruct; a worker codes it in place.
 * Per job the main thread checks the arguments and writes an 80-byte descriptor (operation,
 * profile, address, shard length, shard sets) into the least-busy worker's mailbox in the
 * shared memory (see worker.ts for why not postMessage); the worker plans the coefficients and
 * codes. The main thread does no byte work on the zero-copy path.
 *
 * What it keeps true:
 * - Every job's promise settles: resolved when its worker marks it done; rejected with
 *   CodecWorkerError when the worker reports a failure or dies (then a fresh worker takes its
 *   place, at most workerRestartsMax times per slot), and with CodecPoolClosedError on close().
 * - Bounded: jobs (codecJobsInFlightMax; mailboxSlots per worker, the rest wait in order),
 *   buffers and bytes (CodecArena over a memory fixed at start, so workers never see it grow),
 *   threads (codecThreadsMax).
 * - A buffer has at most one job at a time, and is not released while one runs (asserted).
 * - Idle workers do not keep the process alive; a worker is ref'd only while it has jobs.
 *
 * Measured on the 2-core development VM, 1 MiB extents in place, 3 jobs in flight per worker,
 * relaxed SIMD: 2 workers code 8+3 at 14000 MB/s (1.65x one thread on the main thread), 4+2 at
 * 19000 MB/s (1.55x). The rest of two cores goes to waking the pool (about 7 us of main-thread
 * CPU per job) and to the two cores sharing cache and memory bandwidth. With one job in flight
 * per worker, workers idle while the pool turns each completion into the next post.
 *
 * Left out: priorities and fairness between callers (jobs run in the order they come).
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import {
  CairnError,
  type CairnErrorOptions,
  InvalidArgumentError,
  type Profile,
  TooFewShardsError,
  assert,
  checkProfile,
  codecMemoryBytesMax,
  codecThreadsMax,
  formatBytes,
  formatProfile,
} from '../core/index.js';
import {
  type KernelVariant,
  type LoadedKernel,
  type WasmMemory,
  kernelWorkspaceBytes,
  loadKernel,
  wasmApi,
} from './kernel.js';
import {
  CodecArena,
  CodecCapacityError,
  ExtentBuffer,
  arenaReservedBytes,
  reconstructionTargets,
  wasmPageBytes,
} from './wasm_codec.js';
import {
  type ErrorSummary,
  Mailbox,
  type WorkerInit,
  type WorkerReply,
  descriptorWord,
  jobOp,
  jobStatus,
  mailboxBytes,
  mailboxSlots,
} from './worker.js';

/** The pool was closed; its jobs and buffers are gone. Not retryable on this pool. */
export class CodecPoolClosedError extends CairnError {
  override readonly name = 'CodecPoolClosedError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('ECLOSED', message, { ...options, retryable: false });
  }
}

/**
 * A codec worker failed a job. Retryable when the worker died (a fresh one replaces it);
 * not when the kernel call itself threw, which points at a bug and would throw again.
 */
export class CodecWorkerError extends CairnError {
  override readonly name = 'CodecWorkerError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('EWORKER', message, options);
  }
}

/**
 * Default shared memory of a pool: room for four 64 MiB extents (extentBytesMax) with parity,
 * or hundreds of 1 MiB ones. Pages are reserved, not touched: memory use grows with the
 * extents actually coded.
 */
export const codecPoolMemoryBytesDefault = 256 * 1024 * 1024;
/**
 * Jobs in flight across all workers. A job holds a buffer, so buffers bound jobs already; this
 * caps the job map even when callers submit faster than the workers drain.
 */
export const codecJobsInFlightMax = 4096;
/** Replacements of a dead worker per slot, so a worker that always crashes cannot loop forever. */
export const workerRestartsMax = 8;

/** Options of CodecPool.start(). */
export interface CodecPoolOptions {
  /** Worker threads, 1..codecThreadsMax. Default: os.availableParallelism(), capped. */
  readonly threads?: number;
  /**
   * Bytes of the shared memory: workspaces plus room for buffers. A multiple of 64 KiB, at
   * most codecMemoryBytesMax. Default codecPoolMemoryBytesDefault.
   */
  readonly memoryBytes?: number;
  /** The kernel build to run; default loadKernel()'s choice (see kernel.ts). */
  readonly variant?: KernelVariant;
  /**
   * Start the workers at the first encode or reconstruct instead of in start(): for short-lived
   * commands that may never code (reading a healthy volume needs no codec). Each worker costs
   * about 130 ms of CPU to instantiate its kernel, on a core the command itself wants. A worker
   * that then fails to start fails the jobs posted to it, as a crashed one does.
   */
  readonly lazy?: boolean;
}

interface Slot {
  readonly index: number;
  readonly workspaceAt: number;
  readonly mailbox: Mailbox;
  worker: Worker | undefined;
  state: 'starting' | 'ready' | 'dead';
  /** Jobs posted to the mailbox and not yet settled, oldest first (at most mailboxSlots). */
  readonly posted: Job[];
  /** Number of the next job to post to the mailbox; wraps as an i32, like the counters. */
  nextJob: number;
  restarts: number;
  /** The last uncaught error the worker reported, to explain its exit. */
  lastError: unknown;
}

interface Job {
  /** 'encode' or 'reconstruct'; error messages add the profile (built only on failure). */
  readonly verb: string;
  readonly op: number;
  readonly buf: ExtentBuffer;
  readonly present: readonly boolean[];
  readonly targets: readonly number[];
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

/** Atomics.waitAsync (ES2024; Node 16+), which the ES2022 lib does not declare. */
const waitAsync = (
  Atomics as unknown as {
    waitAsync(array: Int32Array, index: number, value: number): { async: boolean; value: Promise<unknown> | string };
  }
).waitAsync;

/**
 * A pool of codec worker threads over one shared wasm memory.
 *
 * Ownership: allocate() hands the caller an ExtentBuffer; the caller may read and write its
 * views except while an encode() or reconstruct() on it is pending, and must release() it
 * exactly once, after which its views must not be used. The *Arrays methods copy the caller's
 * arrays in and out and retain nothing.
 *
 * @example
 * const pool = await CodecPool.start({ threads: 2 });
 * const buf = pool.allocate({ k: 8, m: 3 }, 131072);   // a 1 MiB extent plus parity
 * buf.data().set(extentBytes);
 * await pool.encode(buf);                              // parity in buf.shard(8..10)
 * pool.release(buf);
 * await pool.close();
 */
export class CodecPool {
  /** Worker threads. */
  readonly threads: number;
  /** Bytes of the shared memory. */
  readonly memoryBytes: number;
  readonly variant: KernelVariant;
  private readonly memory: WasmMemory;
  private readonly words: Int32Array;
  private readonly completionsIndex: number;
  private readonly arena: CodecArena;
  private readonly slots: Slot[] = [];
  /** Jobs waiting for room in a mailbox, oldest first. */
  private readonly waiting: Job[] = [];
  private readonly kernel: LoadedKernel;
  /** Jobs posted or waiting; at most codecJobsInFlightMax. */
  private jobCount = 0;
  /** Jobs posted to mailboxes and not yet settled, over all slots. */
  private postedCount = 0;
  /** Whether an Atomics.waitAsync on the completion counter is pending. */
  private armed = false;
  private closing = false;
  /** Whether the workers were started (at start(), or at the first job when lazy). */
  private spawned = false;

  /**
   * Starts the workers and resolves once every one has its kernel instantiated. Throws
   * InvalidArgumentError for bad options, the errors of loadKernel(), and CodecWorkerError
   * when a worker fails to start (the others are stopped again).
   */
  static async start(options: CodecPoolOptions = {}): Promise<CodecPool> {
    const threads = options.threads ?? Math.min(os.availableParallelism(), codecThreadsMax);
    if (!Number.isSafeInteger(threads) || threads < 1 || threads > codecThreadsMax) {
      throw new InvalidArgumentError(`Invalid codec pool size ${threads}: expected 1 to ${codecThreadsMax} threads`);
    }
    const memoryBytes = options.memoryBytes ?? codecPoolMemoryBytesDefault;
    const arenaAt = arenaStart(threads);
    if (
      !Number.isSafeInteger(memoryBytes) ||
      memoryBytes % wasmPageBytes !== 0 ||
      memoryBytes <= arenaAt ||
      memoryBytes > codecMemoryBytesMax
    ) {
      throw new InvalidArgumentError(
        `Invalid codec pool memory ${memoryBytes} bytes: expected a multiple of 64 KiB above ${formatBytes(arenaAt)} and at most ${formatBytes(codecMemoryBytesMax)}`,
      );
    }
    const pool = new CodecPool(threads, memoryBytes, options.variant);
    if (options.lazy === true) return pool;
    pool.spawned = true;
    try {
      await Promise.all(pool.slots.map((slot) => pool.spawn(slot)));
    } catch (err) {
      await pool.close();
      throw err;
    }
    return pool;
  }

  private constructor(threads: number, memoryBytes: number, variant: KernelVariant | undefined) {
    this.kernel = loadKernel(variant);
    const pages = memoryBytes / wasmPageBytes;
    // Fixed size (initial = maximum): a shared memory grown by one thread reaches the others'
    // instances only asynchronously, and the mailboxes' views are taken once.
    this.memory = new wasmApi.Memory({ initial: pages, maximum: pages, shared: true });
    this.words = new Int32Array(this.memory.buffer);
    this.completionsIndex = completionsAt / 4;
    this.threads = threads;
    this.memoryBytes = memoryBytes;
    this.variant = this.kernel.variant;
    for (let index = 0; index < threads; index++) {
      const slotAt = slotsAt + index * slotBytes;
      this.slots.push({
        index,
        workspaceAt: slotAt,
        mailbox: new Mailbox(this.memory, slotAt + kernelWorkspaceBytes),
        worker: undefined,
        state: 'starting',
        posted: [],
        nextJob: 0,
        restarts: 0,
        lastError: undefined,
      });
    }
    this.arena = new CodecArena(this.memory, arenaStart(threads), memoryBytes, false);
  }

  /** Whether the workers were started (always after start(), unless lazy and nothing coded yet). */
  get workersStarted(): boolean {
    return this.spawned;
  }

  /** Whether close() was called. */
  get closed(): boolean {
    return this.closing;
  }

  /** Bytes handed out to live buffers. */
  get allocatedBytes(): number {
    return this.arena.liveBytes;
  }

  /**
   * A buffer in the shared memory for one extent of `profile` with shards of `shardBytes`
   * bytes (0 allowed); contents unspecified. Throws CodecCapacityError when the memory is full
   * (retry after releasing buffers) and CodecPoolClosedError after close().
   */
  allocate(profile: Profile, shardBytes: number): ExtentBuffer {
    this.throwIfClosed('allocate an extent buffer');
    const { k, m } = checkProfile(profile);
    assert(Number.isSafeInteger(shardBytes) && shardBytes >= 0, `bad shard length ${shardBytes}`);
    const bytes = (k + m) * shardBytes;
    const at = bytes === 0 ? 0 : this.arena.allocate(bytes, `a ${formatProfile(profile)} extent`);
    return new ExtentBuffer(this, this.memory, { k, m }, shardBytes, at);
  }

  /** Frees a buffer from allocate(). Asserts it belongs to this pool and has no pending job. */
  release(buf: ExtentBuffer): void {
    assert(buf.owner === this, 'extent buffer released to a pool that did not allocate it');
    buf.markReleased();
    if (buf.totalBytes > 0) this.arena.release(buf.address);
  }

  /**
   * Fills buf's m parity shards from its k data shards, in place, on a worker. Resolves when
   * the parity is written. Rejects with CodecWorkerError, CodecCapacityError (too many jobs in
   * flight) or CodecPoolClosedError.
   */
  async encode(buf: ExtentBuffer): Promise<void> {
    this.check(buf, 'encode');
    if (buf.m === 0 || buf.shardBytes === 0) return;
    return this.run({ op: jobOp.encode, buf, present: [], targets: [], verb: 'encode' });
  }

  /**
   * Rebuilds shards of buf in place on a worker. `present[i]` (k+m flags) says whether shard i
   * holds good bytes; `wanted` lists the shards to rebuild (default: every one not present);
   * wanted shards that are present are left as they are. Present shards are only read. Rejects
   * with TooFewShardsError when fewer than k are present, and as encode() does.
   */
  async reconstruct(buf: ExtentBuffer, present: readonly boolean[], wanted?: readonly number[]): Promise<void> {
    this.check(buf, 'reconstruct');
    const targets = reconstructionTargets(buf, present, wanted);
    if (targets.length === 0 || buf.shardBytes === 0) return;
    return this.run({ op: jobOp.reconstruct, buf, present: [...present], targets, verb: 'reconstruct' });
  }

  /**
   * Copying convenience: computes the m parity shards of k data shards (all of one length, 0
   * allowed) into `parity`. `data` is only read; nothing is retained. The copies run on the
   * calling thread. Rejects as encode() does, and with CodecCapacityError when the memory cannot
   * hold the copy.
   */
  async encodeArrays(profile: Profile, data: readonly Uint8Array[], parity: readonly Uint8Array[]): Promise<void> {
    const { k, m } = checkProfile(profile);
    assert(data.length === k, `encode needs ${k} data shards, got ${data.length}`);
    assert(parity.length === m, `encode needs ${m} parity buffers, got ${parity.length}`);
    const shardBytes = data[0]?.length ?? 0;
    for (const s of data) assert(s.length === shardBytes, 'data shards differ in length');
    for (const p of parity) assert(p.length === shardBytes, 'parity buffer length differs from data shards');
    if (m === 0 || shardBytes === 0) return;
    const buf = this.allocate({ k, m }, shardBytes);
    try {
      data.forEach((d, i) => buf.shard(i).set(d));
      await this.encode(buf);
      parity.forEach((p, r) => p.set(buf.shard(k + r)));
    } finally {
      this.release(buf);
    }
  }

  /**
   * Copying convenience with ErasureCodec.reconstruct()'s contract: `shards` has k+m slots,
   * null for a missing one; every index in `wanted` (default: every missing one) receives a new
   * buffer. Present shards are only read. The copies run on the calling thread. Rejects with
   * TooFewShardsError when fewer than k are present, and as encodeArrays() does.
   */
  async reconstructArrays(profile: Profile, shards: (Uint8Array | null)[], wanted?: readonly number[]): Promise<void> {
    const { k, m } = checkProfile(profile);
    assert(shards.length === k + m, `expected ${k + m} shard slots, got ${shards.length}`);
    const want = [...new Set(wanted ?? shards.flatMap((s, i) => (s === null ? [i] : [])))];
    for (const w of want) assert(Number.isInteger(w) && w >= 0 && w < k + m, `shard index ${w} out of range`);
    // Only the first k present shards feed the plan (codec.ts picks those), so only they are
    // copied in; the other present ones count as missing inside the buffer.
    const inputs = shards.flatMap((s, i) => (s === null ? [] : [i])).slice(0, k);
    if (inputs.length < k) throw new TooFewShardsError(k, inputs.length);
    const shardBytes = shards[inputs[0]!]!.length;
    const present = shards.map((_, i) => inputs.includes(i));
    const buf = this.allocate({ k, m }, shardBytes);
    try {
      for (const i of inputs) {
        const shard = shards[i]!;
        assert(shard.length === shardBytes, 'present shards differ in length');
        buf.shard(i).set(shard);
      }
      // Wanted shards the caller has get a copy of their own bytes; only missing ones are coded.
      await this.reconstruct(
        buf,
        present,
        want.filter((w) => shards[w] === null),
      );
      for (const w of want) shards[w] = shards[w]?.slice() ?? buf.shard(w).slice();
    } finally {
      this.release(buf);
    }
  }

  /**
   * Stops every worker, then settles the jobs still pending: those a worker finished resolve,
   * the rest reject with CodecPoolClosedError. Buffers stay readable and may still be released;
   * nothing new can be allocated or coded. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    // Stop the workers before settling their jobs, so no worker still writes into a buffer
    // whose job its caller already saw fail.
    await Promise.all(this.slots.map((slot) => slot.worker?.terminate()));
    this.drain();
    const error = (job: Job): CodecPoolClosedError =>
      new CodecPoolClosedError(`Cannot ${what(job)}: the codec pool was closed`);
    for (const slot of this.slots) {
      slot.state = 'dead';
      slot.worker = undefined;
      for (const job of slot.posted.splice(0)) this.settle(job, error(job));
    }
    this.postedCount = 0;
    for (const job of this.waiting.splice(0)) this.settle(job, error(job));
    // Wake the pending Atomics.waitAsync, if any, so it does not outlive the pool.
    Atomics.notify(this.words, this.completionsIndex);
  }

  private throwIfClosed(what: string): void {
    if (this.closing) throw new CodecPoolClosedError(`Cannot ${what}: the codec pool is closed`);
  }

  private check(buf: ExtentBuffer, what: string): void {
    this.throwIfClosed(`${what} an extent`);
    assert(buf.owner === this, `cannot ${what}: the extent buffer belongs to another pool or kernel`);
    assert(!buf.isReleased, `cannot ${what}: the extent buffer was released`);
    // Descriptors carry addresses as i32 words; the pool memory (at most 1 GiB) keeps them positive.
    assert(
      buf.address + buf.totalBytes <= this.memoryBytes,
      `cannot ${what}: the extent buffer lies outside the pool memory`,
    );
  }

  /**
   * Queues a job on its buffer; the promise settles when a worker has finished it. The buffer
   * is claimed from here until settle(), which every way out of the pool goes through.
   */
  private run(job: Omit<Job, 'resolve' | 'reject'>): Promise<void> {
    if (this.jobCount >= codecJobsInFlightMax) {
      return Promise.reject(
        new CodecCapacityError(`Cannot ${what(job)}: ${codecJobsInFlightMax} codec jobs are in flight`),
      );
    }
    job.buf.claim(job.verb);
    if (!this.spawned) {
      // Lazy: the workers start now; jobs posted meanwhile wait in their mailboxes, and a
      // worker that fails to start fails its jobs (spawn's failSlot).
      this.spawned = true;
      for (const slot of this.slots) this.spawn(slot).catch(() => undefined);
    }
    return new Promise<void>((resolve, reject) => {
      this.jobCount += 1;
      this.waiting.push({ ...job, resolve, reject });
      this.pump();
    });
  }

  private settle(job: Job, error?: Error): void {
    this.jobCount -= 1;
    assert(this.jobCount >= 0, 'codec job count went negative');
    job.buf.unclaim();
    if (error === undefined) job.resolve();
    else job.reject(error);
  }

  /**
   * The pool's one scheduling step, run after every change (a job queued, a wake-up, a worker
   * replaced): settle finished jobs, post waiting ones where mailboxes have room, and keep one
   * Atomics.waitAsync pending on the completion counter while jobs are posted. The counter is
   * read before draining, so a job finishing meanwhile changes it and the wait returns at once
   * ('not-equal') rather than sleeping through that completion. Never throws.
   */
  private pump(): void {
    for (;;) {
      const seen = Atomics.load(this.words, this.completionsIndex);
      this.drain();
      this.fill();
      if (this.armed || this.closing || this.postedCount === 0) return;
      const result = waitAsync(this.words, this.completionsIndex, seen);
      if (typeof result.value !== 'string') {
        this.armed = true;
        void result.value.then(() => {
          this.armed = false;
          if (!this.closing) this.pump();
        });
        return;
      }
    }
  }

  /** Posts waiting jobs, oldest first, each to the least-busy live worker with room. */
  private fill(): void {
    while (this.waiting.length > 0) {
      let slot: Slot | undefined;
      for (const s of this.slots) {
        if (s.state !== 'dead' && (slot === undefined || s.posted.length < slot.posted.length)) slot = s;
      }
      if (slot === undefined) {
        const err = (job: Job): CodecWorkerError =>
          new CodecWorkerError(`Cannot ${what(job)}: no codec worker is running`);
        for (const job of this.waiting.splice(0)) this.settle(job, err(job));
        return;
      }
      if (slot.posted.length >= mailboxSlots) return;
      this.post(slot, this.waiting.shift()!);
    }
  }

  private post(slot: Slot, job: Job): void {
    const { mailbox } = slot;
    const { words } = mailbox;
    const { buf } = job;
    const n = slot.nextJob;
    const at = mailbox.descriptor(n);
    words[at + descriptorWord.op] = job.op;
    words[at + descriptorWord.k] = buf.k;
    words[at + descriptorWord.m] = buf.m;
    words[at + descriptorWord.address] = buf.address;
    words[at + descriptorWord.shardBytes] = buf.shardBytes;
    words[at + descriptorWord.status] = jobStatus.pending;
    words[at + descriptorWord.errorBytes] = 0;
    if (job.op === jobOp.reconstruct) {
      mailbox.writeShardSet(
        n,
        descriptorWord.present,
        job.present.flatMap((p, i) => (p ? [i] : [])),
      );
      mailbox.writeShardSet(n, descriptorWord.wanted, job.targets);
    }
    slot.posted.push(job);
    this.postedCount += 1;
    slot.nextJob = (n + 1) | 0;
    if (slot.posted.length === 1) slot.worker?.ref();
    mailbox.post(n);
  }

  /** Settles every job the workers have finished, in each mailbox's order. */
  private drain(): void {
    for (const slot of this.slots) {
      if (slot.state === 'dead') continue;
      const { mailbox } = slot;
      const done = mailbox.doneCount;
      while (slot.posted.length > 0) {
        const n = (slot.nextJob - slot.posted.length) | 0;
        if (n === done) break;
        const job = slot.posted.shift()!;
        this.postedCount -= 1;
        if (mailbox.words[mailbox.descriptor(n) + descriptorWord.status] === jobStatus.done) this.settle(job);
        else {
          const text = mailbox.readError(n);
          this.settle(
            job,
            new CodecWorkerError(`Cannot ${what(job)}: codec worker ${slot.index} failed: ${text}`, {
              retryable: false,
            }),
          );
        }
      }
      if (slot.posted.length === 0) slot.worker?.unref();
    }
  }

  /**
   * Starts a worker in `slot` and resolves when it is ready. Rejects with CodecWorkerError if it
   * fails to start; a worker that dies after starting is replaced (see the exit handler).
   */
  private spawn(slot: Slot): Promise<void> {
    slot.mailbox.reset();
    slot.nextJob = 0;
    const init: WorkerInit = {
      codecWorker: true,
      kernel: this.kernel,
      memory: this.memory,
      workspaceAt: slot.workspaceAt,
      mailboxAt: slot.mailbox.at,
      completionsAt,
    };
    const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: init });
    slot.worker = worker;
    slot.state = 'starting';
    slot.lastError = undefined;
    return new Promise<void>((resolve, reject) => {
      worker.on('message', (reply: WorkerReply) => {
        if (reply.type === 'ready') {
          if (slot.worker !== worker) return;
          slot.state = 'ready';
          if (slot.posted.length === 0) worker.unref();
          resolve();
        } else {
          const err = new CodecWorkerError(`Cannot start codec worker ${slot.index}: ${describe(reply.error)}`, {
            retryable: false,
          });
          this.failSlot(slot, err);
          void worker.terminate();
          reject(err);
          this.pump();
        }
      });
      worker.on('error', (err) => {
        slot.lastError = err;
      });
      worker.on('exit', (code) => {
        if (this.closing || slot.worker !== worker) return;
        const why = slot.lastError === undefined ? `exited with code ${code}` : `died: ${describe(slot.lastError)}`;
        const wasReady = slot.state === 'ready';
        const err = new CodecWorkerError(`Codec worker ${slot.index} ${why}`, {
          retryable: true,
          cause: slot.lastError,
        });
        // Jobs it finished before dying keep their results.
        this.drain();
        this.failSlot(slot, err);
        reject(err);
        if (wasReady && slot.restarts < workerRestartsMax) {
          slot.restarts += 1;
          // A replacement that fails to start leaves the slot dead; later jobs go to the others.
          this.spawn(slot).catch(() => undefined);
        }
        this.pump();
      });
    });
  }

  /** Marks a slot dead and rejects the jobs posted to it with `err`, naming each job. */
  private failSlot(slot: Slot, err: CodecWorkerError): void {
    slot.state = 'dead';
    slot.worker = undefined;
    this.postedCount -= slot.posted.length;
    for (const job of slot.posted.splice(0)) {
      this.settle(
        job,
        new CodecWorkerError(`Cannot ${what(job)}: ${err.message}`, { retryable: err.retryable, cause: err }),
      );
    }
  }
}

/**
 * Shared memory layout, in bytes:
 *   [0, 64 KiB)         reserved, never handed out (see arenaReservedBytes)
 *   completionsAt       the pool-wide completion counter, on a cache line of its own
 *   slotsAt + i * slotBytes
 *                       worker i: kernel workspace, then mailbox
 *   arenaStart(threads) extent buffers, to the end of the memory
 */
const completionsAt = arenaReservedBytes;
const slotsAt = completionsAt + 64;
const slotBytes = Math.ceil((kernelWorkspaceBytes + mailboxBytes) / 64) * 64;

function arenaStart(threads: number): number {
  return slotsAt + threads * slotBytes;
}

/** What a job does, for error messages: "encode a 8+3 extent". */
function what(job: Omit<Job, 'resolve' | 'reject'>): string {
  return `${job.verb} a ${formatProfile(job.buf)} extent`;
}

function describe(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'message' in err) {
    const { name, message } = err as Partial<ErrorSummary>;
    return `${String(name ?? 'Error')}: ${String(message)}`;
  }
  return String(err);
}
