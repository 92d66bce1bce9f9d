/**
 * Creates shard files in batches, on a worker thread: the store's create-only put (temp file,
 * fsync, link, unlink, directory fsync) as one synchronous pass over every put that is waiting.
 *
 * Why a thread of its own: done with fs/promises, one put is about thirteen round trips between
 * the event loop and libuv's thread pool (mkdir, open, write, fsync, close, link, unlink, then
 * open, fsync and close for each directory), and on this VM those wake-ups, not the disk, were
 * half of a node's main-thread time while it stored shards (profile of the 1M sequential write:
 * openFileHandle, writeBuffer, fsync, mkdir, close, unlink and link together 48 % of its busy
 * samples). Here a batch costs one message each way.
 *
 * Why batches: puts that arrive while a batch runs are stored by the next one, phase by phase:
 * every file written and fsynced, then every name linked, then each directory that changed
 * fsynced once, parents first. The first fsync of a batch commits the file system journal
 * transaction that holds the others' metadata too, and directories shared by several puts (a
 * volume's, an extent's) are fsynced once. A put is answered when its whole batch is done.
 *
 * What it keeps true (the same as FileShardStore's put on its own): a name appears only after
 * its bytes are durable (fsync before link); link() is the create-only step, so of racing puts
 * one wins; on any failure the temp file is removed; the answer comes after the directories
 * holding the new name (and any directory mkdir created) are fsynced.
 */
import { Worker } from 'node:worker_threads';
import { assert } from '../core/index.js';

/** One put for the worker. `temp` is in the same directory as `path`. */
export interface WriteJob {
  readonly path: string;
  readonly temp: string;
  readonly data: Uint8Array;
}

/**
 * How a put failed, in words the store turns into its errors: `prefix` (a shard exists at a
 * prefix of the key: mkdir or open met a file), `under` (the name is a directory of longer keys),
 * `exists` (another put won the name), `io` (anything else, with its errno code).
 */
export type WriteOutcome =
  | { readonly ok: true }
  | {
      readonly ok: false;
      readonly kind: 'prefix' | 'under' | 'exists' | 'io';
      readonly code?: string;
      readonly message: string;
    };

interface BatchRequest {
  readonly id: number;
  readonly jobs: readonly WriteJob[];
}

interface BatchAnswer {
  readonly id: number;
  readonly outcomes: readonly WriteOutcome[];
}

/** Puts one batch carries at most, and bytes: bounds the worker's copy of the data. */
const batchJobsMax = 64;
const batchBytesMax = 64 * 1024 * 1024;

interface Waiting {
  readonly job: WriteJob;
  readonly resolve: (outcome: WriteOutcome) => void;
}

/**
 * The main thread's side: queues puts, sends one batch at a time to its worker, answers each put
 * with its outcome. The worker starts on the first put and keeps the process alive only while a
 * batch is in flight.
 */
export class ShardFileWriter {
  private worker: Worker | undefined;
  private readonly queue: Waiting[] = [];
  private running: { readonly id: number; readonly batch: readonly Waiting[] } | undefined;
  private nextId = 1;
  private closed = false;
  /** Batches sent, and puts they carried (for tests and the curious). */
  readonly stats = { batches: 0, puts: 0 };

  write(job: WriteJob): Promise<WriteOutcome> {
    if (this.closed) return Promise.resolve({ ok: false, kind: 'io', message: 'the shard store is closed' });
    return new Promise((resolve) => {
      this.queue.push({ job, resolve });
      this.pump();
    });
  }

  /** Stops the worker once the batch in flight is answered; later puts fail. */
  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.queue.splice(0)) w.resolve({ ok: false, kind: 'io', message: 'the shard store is closed' });
    const worker = this.worker;
    if (worker === undefined) return;
    if (this.running !== undefined)
      await new Promise<void>((resolve) => {
        worker.once('message', () => resolve());
        worker.once('exit', () => resolve());
      });
    this.worker = undefined;
    await worker.terminate();
  }

  private start(): Worker {
    const worker = new Worker(new URL('./file_writer_worker.js', import.meta.url));
    worker.on('message', (answer: BatchAnswer) => this.answered(answer));
    worker.on('error', (err) => this.failed(err));
    worker.on('exit', (code) => {
      if (this.worker === worker) this.failed(new Error(`the shard writer thread exited with code ${code}`));
    });
    return worker;
  }

  private pump(): void {
    if (this.running !== undefined || this.queue.length === 0 || this.closed) return;
    const batch: Waiting[] = [];
    let bytes = 0;
    while (this.queue.length > 0 && batch.length < batchJobsMax) {
      const next = this.queue[0]!;
      if (batch.length > 0 && bytes + next.job.data.length > batchBytesMax) break;
      batch.push(this.queue.shift()!);
      bytes += next.job.data.length;
    }
    this.worker ??= this.start();
    // Referenced while a batch is in flight (a process must not exit under a put it awaits), not
    // while idle (an idle writer must not keep a process alive).
    this.worker.ref();
    const id = this.nextId++;
    this.running = { id, batch };
    this.stats.batches += 1;
    this.stats.puts += batch.length;
    // Bytes in shared memory (a node's payload slots) go as they are: the thread reads them in
    // place, and their holder keeps them unchanged until the put settles. Other bytes go as the
    // worker's own copy, moved rather than cloned a second time: the caller keeps its buffer (it
    // may be a view into a larger one). (new Uint8Array(view) copies; Buffer's slice() would
    // not, and moving its memory would empty the caller's buffer, or the pool it came from.)
    const jobs = batch.map((w) => ({
      ...w.job,
      data: w.job.data.buffer instanceof SharedArrayBuffer ? w.job.data : new Uint8Array(w.job.data),
    }));
    const request: BatchRequest = { id, jobs };
    this.worker.postMessage(
      request,
      jobs.filter((j) => !(j.data.buffer instanceof SharedArrayBuffer)).map((j) => j.data.buffer as ArrayBuffer),
    );
  }

  private answered(answer: BatchAnswer): void {
    const running = this.running;
    assert(running !== undefined && running.id === answer.id, 'a shard writer answer for no batch in flight');
    assert(answer.outcomes.length === running.batch.length, 'a shard writer answer of the wrong length');
    this.running = undefined;
    running.batch.forEach((w, i) => w.resolve(answer.outcomes[i]!));
    this.pump();
    if (this.running === undefined) this.worker?.unref();
  }

  /** The worker died (a bug, or out of memory): the batch in flight fails, a new worker takes the rest. */
  private failed(err: Error): void {
    this.worker = undefined;
    const running = this.running;
    this.running = undefined;
    for (const w of running?.batch ?? [])
      w.resolve({ ok: false, kind: 'io', message: `the shard writer thread failed: ${err.message}` });
    this.pump();
  }
}
