/**
 * CryptPool: encryption off the event loop. A few worker threads run the byte work of units.ts;
 * a job smaller than cryptInlineBytesMax runs on the calling thread instead, where a round trip to
 * a worker (about 50 us) would cost more than the cipher (4 KiB: about 6 us).
 *
 * What it keeps true: every job's promise settles (a worker that fails a job rejects it; a worker
 * that dies rejects all of its jobs and is replaced at the next job); idle workers do not keep the
 * process alive; bytes in a SharedArrayBuffer (codec memory) are worked in place, others are
 * copied out and back (a copy of 4 MiB is about 0.3 ms against 6 ms of XTS).
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { CairnError } from '../core/index.js';
import { ctrRecord, xtsUnits, type UnitPosition } from './units.js';

/** Jobs at or below this many bytes run inline: a worker round trip costs more than they do. */
export const cryptInlineBytesMax = 64 * 1024;
/** Worker threads at most: the machines we run on have few cores, and the codec wants them too. */
export const cryptThreadsMax = 4;

export type CryptJob =
  | {
      readonly id: number;
      readonly op: 'encrypt' | 'decrypt';
      readonly key: Uint8Array;
      readonly at: UnitPosition;
      readonly buffer: ArrayBuffer | SharedArrayBuffer;
      readonly offset: number;
      readonly length: number;
    }
  | {
      readonly id: number;
      readonly op: 'ctr';
      readonly key: Uint8Array;
      readonly epoch: number;
      readonly lsn: number;
      readonly buffer: ArrayBuffer | SharedArrayBuffer;
      readonly offset: number;
      readonly length: number;
    };

export type CryptReply =
  | { readonly id: number; readonly ok: true; readonly buffer: ArrayBuffer | SharedArrayBuffer }
  | { readonly id: number; readonly ok: false; readonly error: string };

type JobSpec =
  | { readonly op: 'encrypt' | 'decrypt'; readonly key: Uint8Array; readonly at: UnitPosition }
  | { readonly op: 'ctr'; readonly key: Uint8Array; readonly epoch: number; readonly lsn: number };

export class CryptWorkerError extends CairnError {
  override readonly name = 'CryptWorkerError';
  constructor(message: string) {
    super('ECRYPT', message, { retryable: false });
  }
}

interface Slot {
  worker: Worker | undefined;
  readonly pending: Map<number, (reply: CryptReply) => void>;
}

export class CryptPool {
  private readonly slots: Slot[];
  private nextId = 1;
  private closed = false;
  /** Jobs run (inline, in workers): for tests and status. */
  readonly stats = { inline: 0, offloaded: 0 };

  constructor(threads = Math.max(1, Math.min(cryptThreadsMax, os.availableParallelism()))) {
    this.slots = Array.from({ length: threads }, () => ({ worker: undefined, pending: new Map() }));
  }

  /** Enciphers or deciphers `bytes` in place as units starting at `at` (units.ts). */
  xts(op: 'encrypt' | 'decrypt', key: Uint8Array, bytes: Uint8Array, at: UnitPosition): Promise<void> {
    if (bytes.length <= cryptInlineBytesMax || this.closed) {
      this.stats.inline += 1;
      xtsUnits(key, bytes, at, op === 'encrypt');
      return Promise.resolve();
    }
    return this.run({ op, key, at }, bytes);
  }

  /** Enciphers or deciphers a journal record's bytes in place (units.ts). */
  ctr(key: Uint8Array, bytes: Uint8Array, epoch: number, lsn: number): Promise<void> {
    if (bytes.length <= cryptInlineBytesMax || this.closed) {
      this.stats.inline += 1;
      bytes.set(ctrRecord(key, bytes, epoch, lsn));
      return Promise.resolve();
    }
    return this.run({ op: 'ctr', key, epoch, lsn }, bytes);
  }

  private async run(spec: JobSpec, bytes: Uint8Array): Promise<void> {
    this.stats.offloaded += 1;
    const shared = bytes.buffer instanceof SharedArrayBuffer;
    // Not shared: a copy the worker owns, transferred there and back.
    const own = shared ? bytes : bytes.slice();
    const slot = this.leastBusy();
    const worker = this.workerOf(slot);
    const id = this.nextId++;
    const reply = await new Promise<CryptReply>((resolve) => {
      slot.pending.set(id, resolve);
      if (slot.pending.size === 1) worker.ref();
      const job = { ...spec, id, buffer: own.buffer, offset: own.byteOffset, length: own.length } as CryptJob;
      worker.postMessage(job, shared ? [] : [own.buffer as ArrayBuffer]);
    });
    if (!reply.ok) throw new CryptWorkerError(`Encryption worker failed: ${reply.error}`);
    if (!shared) bytes.set(new Uint8Array(reply.buffer, 0, bytes.length));
  }

  private leastBusy(): Slot {
    let best = this.slots[0]!;
    for (const s of this.slots) if (s.pending.size < best.pending.size) best = s;
    return best;
  }

  private workerOf(slot: Slot): Worker {
    if (slot.worker !== undefined) return slot.worker;
    const worker = new Worker(new URL('./worker.js', import.meta.url));
    worker.unref();
    const settle = (reply: CryptReply): void => {
      const done = slot.pending.get(reply.id);
      if (done === undefined) return;
      slot.pending.delete(reply.id);
      if (slot.pending.size === 0) worker.unref();
      done(reply);
    };
    worker.on('message', settle);
    const fail = (why: string): void => {
      if (slot.worker === worker) slot.worker = undefined;
      for (const id of [...slot.pending.keys()]) settle({ id, ok: false, error: why });
    };
    worker.on('error', (err) => fail(err.message));
    worker.on('exit', (code) => fail(`worker exited with code ${code}`));
    slot.worker = worker;
    return worker;
  }

  /** Stops the workers; jobs still pending are rejected, later ones run inline. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker?.terminate()));
  }
}
