/**
 * The codec as the simulator hands it to the volume engine: either the real worker-thread
 * CodecPool behind a gate, or the wasm kernel on the calling thread.
 *
 * Why a gate: a pool job completes when a worker thread says so, at a wall-clock moment that
 * differs between runs; if the engine saw completions in that order, two runs of one seed could
 * interleave differently. The gate holds every completion and hands them out in submission order,
 * only when the scheduler asks (when nothing else can run), so the engine observes the same order
 * on every run while the bytes are still coded by the real pool.
 *
 * What it keeps true: every job the engine submits settles exactly as the pool settled it, in
 * submission order; pool rejections are never left unhandled while held.
 * What it leaves out: parallel coding inside one simulation (the gate releases one job at a time).
 */
import { assert, type Codec } from '../core/index.js';
import type { CodecPool, ExtentBuffer, WasmKernel } from '../codec/index.js';

/** What VolumeEngine uses of a codec: the core Codec port. */
export type EngineCodec = Codec;

/** A codec whose completions the scheduler releases. */
export interface SimCodec extends EngineCodec {
  /** Completions held, waiting for release. */
  readonly held: number;
  /** Waits for the oldest held job's real completion and settles it; no-op when none is held. */
  releaseOldest(): Promise<void>;
  /** Jobs submitted so far (for the trace). */
  readonly jobs: number;
}

/** Jobs held by the gate at once; the engine codes at most a few extents per persist or read. */
export const gateHeldMax = 10_000;

interface Held {
  readonly outcome: Promise<{ ok: true } | { ok: false; error: unknown }>;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/** The real pool, with completions released in submission order by the scheduler. */
export class GatedPool implements SimCodec {
  private readonly queue: Held[] = [];
  jobs = 0;

  constructor(private readonly pool: CodecPool) {}

  get held(): number {
    return this.queue.length;
  }

  allocate(...args: Parameters<CodecPool['allocate']>): ExtentBuffer {
    return this.pool.allocate(...args);
  }

  release(buf: ExtentBuffer): void {
    this.pool.release(buf);
  }

  encode(buf: ExtentBuffer): Promise<void> {
    return this.hold(() => this.pool.encode(buf));
  }

  reconstruct(buf: ExtentBuffer, present: readonly boolean[], wanted?: readonly number[]): Promise<void> {
    return this.hold(() => this.pool.reconstruct(buf, present, wanted));
  }

  private hold(start: () => Promise<void>): Promise<void> {
    assert(this.queue.length < gateHeldMax, `more than ${gateHeldMax} codec jobs held`);
    this.jobs += 1;
    // Attach the handlers now: a job that fails at once must not count as an unhandled rejection
    // while it waits in the queue.
    const outcome = start().then(
      () => ({ ok: true }) as const,
      (error: unknown) => ({ ok: false, error }) as const,
    );
    return new Promise<void>((resolve, reject) => this.queue.push({ outcome, resolve, reject }));
  }

  async releaseOldest(): Promise<void> {
    const job = this.queue.shift();
    if (job === undefined) return;
    const result = await job.outcome;
    if (result.ok) job.resolve();
    else job.reject(result.error);
  }
}

/**
 * The wasm kernel on this thread, held like the pool: a job is coded when the scheduler releases
 * it, so a seed interleaves exactly as it does over the pool and both give one trace. Needs no
 * worker threads, and is faster than the pool for the small extents the simulator uses.
 */
export class KernelCodec implements SimCodec {
  private readonly queue: {
    readonly run: () => void;
    readonly resolve: () => void;
    readonly reject: (e: unknown) => void;
  }[] = [];
  jobs = 0;

  constructor(private readonly kernel: WasmKernel) {}

  get held(): number {
    return this.queue.length;
  }

  allocate(...args: Parameters<CodecPool['allocate']>): ExtentBuffer {
    return this.kernel.allocate(...args);
  }

  release(buf: ExtentBuffer): void {
    this.kernel.release(buf);
  }

  encode(buf: ExtentBuffer): Promise<void> {
    return this.hold(() => this.kernel.encodeInPlace(buf));
  }

  reconstruct(buf: ExtentBuffer, present: readonly boolean[], wanted?: readonly number[]): Promise<void> {
    return this.hold(() => this.kernel.reconstructInPlace(buf, present, wanted));
  }

  private hold(run: () => void): Promise<void> {
    assert(this.queue.length < gateHeldMax, `more than ${gateHeldMax} codec jobs held`);
    this.jobs += 1;
    return new Promise<void>((resolve, reject) => this.queue.push({ run, resolve, reject }));
  }

  async releaseOldest(): Promise<void> {
    const job = this.queue.shift();
    if (job === undefined) return;
    try {
      job.run();
      job.resolve();
    } catch (err) {
      job.reject(err);
    }
  }
}
