/**
 * The wasm SIMD codec, single-threaded: WasmKernel, a RowKernel on its own wasm memory, and
 * ExtentBuffer, the k+m shards of one extent laid out back to back in wasm memory so that
 * encode and reconstruct run where the bytes already are. Copying 1-4 MiB extents into and out
 * of wasm memory costs 22-44% on top of the coding itself (measured), so the hot path allocates
 * the extent in wasm memory first, fills it there (`data()` is the extent's bytes), and codes in
 * place; `mulRows` (the RowKernel path, used by wasmCodec()) is the copying convenience.
 *
 * What it keeps true:
 * - The kernel writes only the output shards of a call and its private workspace; every
 *   address is asserted to lie in the memory, outputs never over inputs or the workspace.
 * - Every arena is bounded: its bytes by the memory, its allocations by codecAllocationsMax.
 *   Running out is an operating failure (CodecCapacityError, retryable), not a crash.
 * - Parity is byte-identical to referenceCodec (and so to reed-solomon-erasure): the same
 *   coefficient matrices from gf256.ts, applied by the same primitive.
 *
 * Measured on the 2-core development VM (Node 20.20, Xeon with AVX-512; decimal MB/s of data
 * bytes, i.e. k * shardBytes per second, 1 MiB extents, in place, medians of interleaved runs):
 *
 *   profile  variant       encode  reconstruct (m data shards lost)
 *   8+3      relaxed-simd    8400   8000        @subspace/reed-solomon-erasure.wasm: 680
 *   8+3      simd            6000   5900
 *   4+2      relaxed-simd   12200  11400        @subspace: 990
 *   4+2      simd            9000   8600
 *
 * Left out: threads (pool.ts runs the same kernel calls on workers over one shared memory),
 * loading and verifying the module (kernel.ts).
 */
import {
  CairnError,
  type CairnErrorOptions,
  type Profile,
  assert,
  assertByteCount,
  checkProfile,
  codecMemoryBytesMax,
  formatBytes,
  formatProfile,
  TooFewShardsError,
} from '../core/index.js';
import {
  type ErasureCodec,
  type ReconstructionPlan,
  type RowKernel,
  SystematicCodec,
  planReconstruction,
} from './codec.js';
import { type Matrix, parityMatrix } from './gf256.js';
import {
  type KernelCall,
  KernelInstance,
  type KernelVariant,
  type WasmMemory,
  kernelWorkspaceBytes,
  loadKernel,
  wasmApi,
} from './kernel.js';

/**
 * Codec memory is full, or holds too many buffers. Retryable: releasing buffers (which
 * in-flight work does as it finishes) makes room.
 */
export class CodecCapacityError extends CairnError {
  override readonly name = 'CodecCapacityError';
  constructor(message: string, options: CairnErrorOptions = {}) {
    super('ECODECFULL', message, { retryable: true, ...options });
  }
}

/** Bytes in a wasm memory page. */
export const wasmPageBytes = 65536;
/**
 * Live allocations one arena tracks at most. Each ExtentBuffer is one allocation, so this
 * bounds the allocation map and the free list (free blocks sit between live ones, so there are
 * at most one more of them than of live blocks) while leaving room for far more extents in
 * flight than codec memory can hold at 1 MiB each.
 */
export const codecAllocationsMax = 65536;
/**
 * Allocation granularity. 64 bytes is a cache line, so two buffers never share one and two
 * threads coding neighbouring extents never contend for a line.
 */
const allocationAlignBytes = 64;
/**
 * Address 0 is never handed out: the first page stays unused so a zero address in a kernel
 * call (an uninitialised field) reads harmless zeros rather than somebody's shard.
 */
export const arenaReservedBytes = wasmPageBytes;

/**
 * A first-fit allocator over byte offsets [startAt, endAt) of a wasm memory. Free blocks are
 * kept sorted by offset and merged with their neighbours on release. A growable arena grows the
 * memory on demand (only safe while a single thread uses the memory: other threads' instances
 * learn a new size only asynchronously); a fixed one needs the memory to be endAt bytes already.
 */
export class CodecArena {
  private readonly free: { at: number; bytes: number }[];
  private readonly live = new Map<number, number>();
  private liveBytesTotal = 0;

  constructor(
    private readonly memory: WasmMemory,
    readonly startAt: number,
    readonly endAt: number,
    private readonly growable: boolean,
  ) {
    assertByteCount(startAt, 'arena start');
    assertByteCount(endAt, 'arena end');
    assert(startAt % allocationAlignBytes === 0 && startAt < endAt, 'arena bounds are not aligned and ordered');
    assert(growable || memory.buffer.byteLength >= endAt, 'a fixed arena needs its whole memory up front');
    this.free = [{ at: startAt, bytes: endAt - startAt }];
  }

  /** Bytes currently handed out (rounded up to the alignment). */
  get liveBytes(): number {
    return this.liveBytesTotal;
  }

  /** Number of live allocations. */
  get liveCount(): number {
    return this.live.size;
  }

  /**
   * Returns the offset of `bytes` (> 0) fresh bytes, 64-byte aligned. Their contents are
   * whatever the previous owner left. Throws CodecCapacityError when no free block is large
   * enough, when codecAllocationsMax allocations are live, or when the memory cannot grow.
   */
  allocate(bytes: number, what: string): number {
    assertByteCount(bytes, 'allocation size');
    assert(bytes > 0, 'zero-byte allocations are not tracked');
    const size = Math.ceil(bytes / allocationAlignBytes) * allocationAlignBytes;
    if (this.live.size >= codecAllocationsMax) {
      throw new CodecCapacityError(`Cannot allocate codec memory for ${what}: ${codecAllocationsMax} buffers are live`);
    }
    const index = this.free.findIndex((block) => block.bytes >= size);
    const block = this.free[index];
    if (block === undefined) {
      const freeBytes = this.endAt - this.startAt - this.liveBytesTotal;
      throw new CodecCapacityError(
        `Cannot allocate ${formatBytes(bytes)} of codec memory for ${what}: ${formatBytes(freeBytes)} free in ${this.free.length} pieces of ${formatBytes(this.endAt - this.startAt)}`,
      );
    }
    const at = block.at;
    if (this.growable) this.ensureMemory(at + size, what);
    if (block.bytes === size) this.free.splice(index, 1);
    else {
      block.at += size;
      block.bytes -= size;
    }
    this.live.set(at, size);
    this.liveBytesTotal += size;
    return at;
  }

  /** Returns an allocation to the free list. Asserts `at` is live. */
  release(at: number): void {
    const size = this.live.get(at);
    assert(size !== undefined, `codec memory at ${at} is not allocated (double release?)`);
    this.live.delete(at);
    this.liveBytesTotal -= size;
    // Insert in offset order, then merge with the neighbours it touches.
    let index = this.free.findIndex((b) => b.at > at);
    if (index === -1) index = this.free.length;
    this.free.splice(index, 0, { at, bytes: size });
    const next = this.free[index + 1];
    const self = this.free[index]!;
    if (next !== undefined && self.at + self.bytes === next.at) {
      self.bytes += next.bytes;
      this.free.splice(index + 1, 1);
    }
    const previous = this.free[index - 1];
    if (previous !== undefined && previous.at + previous.bytes === self.at) {
      previous.bytes += self.bytes;
      this.free.splice(index, 1);
    }
  }

  private ensureMemory(endAt: number, what: string): void {
    const currentBytes = this.memory.buffer.byteLength;
    if (endAt <= currentBytes) return;
    // Grow at least twofold, so n allocations cost O(log n) grows, but never past the arena.
    const targetBytes = Math.min(this.endAt, Math.max(endAt, 2 * currentBytes));
    const pages = Math.ceil((targetBytes - currentBytes) / wasmPageBytes);
    try {
      this.memory.grow(pages);
    } catch (err) {
      throw new CodecCapacityError(`Cannot grow codec memory to ${formatBytes(targetBytes)} for ${what}`, {
        cause: err,
      });
    }
  }
}

/**
 * The k+m shards of one extent, back to back in wasm memory: shard i is the shardBytes bytes at
 * address + i * shardBytes, so the data shards together are the extent's bytes (padded to
 * k * shardBytes). Allocated by WasmKernel.allocate() or CodecPool.allocate(), and valid until
 * released there; after release, views obtained from it must not be used (the memory goes to
 * the next extent). While a pool job on it is pending, nobody may touch its bytes.
 */
export class ExtentBuffer implements Profile {
  readonly k: number;
  readonly m: number;
  /** Bytes in each shard. */
  readonly shardBytes: number;
  /** Byte offset of shard 0 in the memory. */
  readonly address: number;
  /** @internal The WasmKernel or CodecPool that allocated it; only that owner codes it. */
  readonly owner: object;
  private readonly memory: WasmMemory;
  private released = false;
  private busyWith: string | undefined;

  /** @internal Use WasmKernel.allocate() or CodecPool.allocate(). */
  constructor(owner: object, memory: WasmMemory, profile: Profile, shardBytes: number, address: number) {
    const { k, m } = checkProfile(profile);
    assertByteCount(shardBytes, 'shard length');
    assertByteCount(address, 'buffer address');
    this.k = k;
    this.m = m;
    this.shardBytes = shardBytes;
    this.address = address;
    this.owner = owner;
    this.memory = memory;
  }

  /** Bytes of all k+m shards. */
  get totalBytes(): number {
    return (this.k + this.m) * this.shardBytes;
  }

  /** Bytes of the k data shards: the extent's bytes, padded to a multiple of k. */
  get dataBytes(): number {
    return this.k * this.shardBytes;
  }

  get isReleased(): boolean {
    return this.released;
  }

  /** A view of shard `index` (in [0, k+m)) in wasm memory; writes go straight to the buffer. */
  shard(index: number): Uint8Array {
    assert(Number.isInteger(index) && index >= 0 && index < this.k + this.m, `shard index ${index} out of range`);
    return this.view(index * this.shardBytes, this.shardBytes);
  }

  /** A view of the k data shards as one run of dataBytes bytes: the extent. */
  data(): Uint8Array {
    return this.view(0, this.dataBytes);
  }

  /** A view of all k+m shards as one run of totalBytes bytes. */
  bytes(): Uint8Array {
    return this.view(0, this.totalBytes);
  }

  /** The kernel address of shard `index`. */
  shardAddress(index: number): number {
    return this.address + index * this.shardBytes;
  }

  /** @internal Marks the buffer as being coded; asserts it is live and not coded already. */
  claim(what: string): void {
    assert(!this.released, `cannot ${what}: the extent buffer was released`);
    assert(this.busyWith === undefined, `cannot ${what}: the extent buffer is busy with ${this.busyWith}`);
    this.busyWith = what;
  }

  /** @internal Ends claim(). */
  unclaim(): void {
    assert(this.busyWith !== undefined, 'unclaim without claim');
    this.busyWith = undefined;
  }

  /** @internal Marks the buffer released; asserts no job is running on it. */
  markReleased(): void {
    assert(!this.released, 'extent buffer released twice');
    assert(this.busyWith === undefined, `cannot release an extent buffer busy with ${this.busyWith}`);
    this.released = true;
  }

  private view(offset: number, length: number): Uint8Array {
    assert(!this.released, 'extent buffer used after release');
    // memory.buffer is re-read: a growable memory replaces its buffer object when it grows.
    return new Uint8Array(this.memory.buffer, this.address + offset, length);
  }
}

const parityCoefficientsCacheMax = 256;
const parityCoefficientsCache = new Map<string, Uint8Array>();

/** The m x k parity coefficients of a profile, row-major; cached (at most 256 profiles). */
export function parityCoefficients(profile: Profile): Uint8Array {
  const key = formatProfile(profile);
  let cached = parityCoefficientsCache.get(key);
  if (cached === undefined) {
    if (parityCoefficientsCache.size >= parityCoefficientsCacheMax) parityCoefficientsCache.clear();
    cached = parityMatrix(profile.k, profile.m).data;
    parityCoefficientsCache.set(key, cached);
  }
  return cached;
}

/** The kernel call that fills buf's m parity shards from its k data shards; null if none. */
export function encodeCall(buf: ExtentBuffer): KernelCall | null {
  const { k, m, shardBytes } = buf;
  if (m === 0 || shardBytes === 0) return null;
  return {
    coefficients: parityCoefficients(buf),
    rows: m,
    cols: k,
    inputAddresses: Uint32Array.from({ length: k }, (_, i) => buf.shardAddress(i)),
    outputAddresses: Uint32Array.from({ length: m }, (_, r) => buf.shardAddress(k + r)),
    lengthBytes: shardBytes,
  };
}

/**
 * The shards a reconstruction writes: `wanted` (default: every shard not present) without the
 * present ones and without repeats, in the order given. Asserts `present` has k+m flags and
 * every index is in range; throws TooFewShardsError when fewer than k shards are present.
 */
export function reconstructionTargets(
  profile: Profile,
  present: readonly boolean[],
  wanted?: readonly number[],
): number[] {
  const { k, m } = profile;
  assert(present.length === k + m, `expected ${k + m} presence flags, got ${present.length}`);
  const presentCount = present.reduce((n, p) => (p ? n + 1 : n), 0);
  if (presentCount < k) throw new TooFewShardsError(k, presentCount);
  const targets: number[] = [];
  for (const w of wanted ?? present.flatMap((p, i) => (p ? [] : [i]))) {
    assert(Number.isInteger(w) && w >= 0 && w < k + m, `shard index ${w} out of range`);
    if (!present[w] && !targets.includes(w)) targets.push(w);
  }
  return targets;
}

/**
 * Reconstruction plans by profile, presence and targets. Inverting a k x k matrix costs more
 * than coding a small extent (about 5 us for 8+3 in TypeScript), and a degraded volume asks
 * for the same plan extent after extent. Cleared when full.
 */
const planCacheMax = 64;
const planCache = new Map<string, ReconstructionPlan>();

/**
 * The kernel call that rebuilds shards of buf in place. `present[i]` says whether shard i holds
 * good bytes; `wanted` lists the shards to rebuild (default: every shard not present). Wanted
 * shards that are present are left as they are. Throws TooFewShardsError when fewer than k
 * shards are present. Returns null when there is nothing to compute.
 */
export function reconstructCall(
  buf: ExtentBuffer,
  present: readonly boolean[],
  wanted?: readonly number[],
): KernelCall | null {
  const { k, m, shardBytes } = buf;
  const targets = reconstructionTargets(buf, present, wanted);
  if (targets.length === 0 || shardBytes === 0) return null;
  const key = `${k}+${m}:${present.map((p) => (p ? 1 : 0)).join('')}:${targets.join(',')}`;
  let plan = planCache.get(key);
  if (plan === undefined) {
    // Only lengths matter to the plan; views of the present shards carry them.
    plan = planReconstruction(
      buf,
      present.map((p, i) => (p ? buf.shard(i) : null)),
      targets,
    );
    if (planCache.size >= planCacheMax) planCache.clear();
    planCache.set(key, plan);
  }
  return {
    coefficients: plan.coefficients.data,
    rows: plan.wanted.length,
    cols: k,
    inputAddresses: Uint32Array.from(plan.present, (i) => buf.shardAddress(i)),
    outputAddresses: Uint32Array.from(plan.wanted, (w) => buf.shardAddress(w)),
    lengthBytes: shardBytes,
  };
}

/** Options of a WasmKernel. */
export interface WasmKernelOptions {
  /** The kernel build to run; default loadKernel()'s choice (see kernel.ts). */
  readonly variant?: KernelVariant;
  /** Bytes the kernel's memory may grow to; a multiple of 64 KiB. Default codecMemoryBytesMax. */
  readonly memoryBytesMax?: number;
}

/** Copying-path staging kept between mulRows calls at most; larger staging is freed after use. */
const stagingKeepBytesMax = 16 * 1024 * 1024;

/**
 * The wasm kernel on the calling thread, with its own growable memory. It is a RowKernel (the
 * copying path) and codes ExtentBuffers it allocated in place (the zero-copy path). All methods
 * are synchronous and run on the calling thread; for parallel coding use CodecPool.
 *
 * @example
 * const kernel = new WasmKernel();
 * const buf = kernel.allocate({ k: 8, m: 3 }, 131072);
 * buf.data().set(extentBytes);          // extentBytes.length <= buf.dataBytes
 * kernel.encodeInPlace(buf);            // buf.shard(8..10) now hold parity
 * kernel.release(buf);
 */
export class WasmKernel implements RowKernel {
  readonly variant: KernelVariant;
  private readonly memory: WasmMemory;
  private readonly instance: KernelInstance;
  private readonly arena: CodecArena;
  private staging: { at: number; bytes: number } | undefined;

  constructor(options: WasmKernelOptions = {}) {
    const memoryBytesMax = options.memoryBytesMax ?? codecMemoryBytesMax;
    assertByteCount(memoryBytesMax, 'memory size');
    assert(memoryBytesMax % wasmPageBytes === 0 && memoryBytesMax <= codecMemoryBytesMax, 'bad kernel memory size');
    const arenaAt = arenaReservedBytes + kernelWorkspaceBytes;
    assert(arenaAt < memoryBytesMax, 'kernel memory too small for its workspace');
    const kernel = loadKernel(options.variant);
    // Start with the workspace and one more page; the arena grows the memory as extents come.
    const initialPages = Math.ceil(arenaAt / wasmPageBytes) + 1;
    this.memory = new wasmApi.Memory({ initial: initialPages, maximum: memoryBytesMax / wasmPageBytes, shared: true });
    this.instance = new KernelInstance(kernel, this.memory, arenaReservedBytes);
    this.arena = new CodecArena(this.memory, arenaAt, memoryBytesMax, true);
    this.variant = kernel.variant;
  }

  /**
   * A fresh ExtentBuffer for `profile` with shards of `shardBytes` (0 allowed), contents
   * unspecified. The caller owns it until release(). Throws CodecCapacityError when the memory
   * is full.
   */
  allocate(profile: Profile, shardBytes: number): ExtentBuffer {
    const { k, m } = checkProfile(profile);
    assertByteCount(shardBytes, 'shard length');
    const bytes = (k + m) * shardBytes;
    const at = bytes === 0 ? 0 : this.arena.allocate(bytes, `a ${formatProfile(profile)} extent`);
    return new ExtentBuffer(this, this.memory, { k, m }, shardBytes, at);
  }

  /** Frees a buffer from allocate(); its views must not be used afterwards. */
  release(buf: ExtentBuffer): void {
    assert(buf.owner === this, 'extent buffer released to a kernel that did not allocate it');
    buf.markReleased();
    if (buf.totalBytes > 0) this.arena.release(buf.address);
  }

  /** Computes buf's m parity shards from its k data shards, in place. */
  encodeInPlace(buf: ExtentBuffer): void {
    this.runOn(buf, 'encode', () => encodeCall(buf));
  }

  /**
   * Rebuilds shards of buf in place from k present ones (see reconstructCall for `present` and
   * `wanted`). Present shards are only read. Throws TooFewShardsError.
   */
  reconstructInPlace(buf: ExtentBuffer, present: readonly boolean[], wanted?: readonly number[]): void {
    this.runOn(buf, 'reconstruct', () => reconstructCall(buf, present, wanted));
  }

  private runOn(buf: ExtentBuffer, what: string, plan: () => KernelCall | null): void {
    assert(buf.owner === this, `cannot ${what}: the extent buffer belongs to another kernel or pool`);
    buf.claim(what);
    try {
      const call = plan();
      if (call !== null) this.instance.run(call);
    } finally {
      buf.unclaim();
    }
  }

  /**
   * RowKernel: outputs[r] = XOR over i of coefficients[r][i] * inputs[i]. Arrays that are views
   * of this kernel's memory (shards of its ExtentBuffers) are used where they are; others are
   * copied through staging memory. Throws CodecCapacityError when staging does not fit.
   */
  mulRows(coefficients: Matrix, inputs: readonly Uint8Array[], outputs: readonly Uint8Array[]): void {
    const rows = outputs.length;
    const cols = inputs.length;
    assert(
      coefficients.rows === rows && coefficients.cols === cols,
      'coefficient matrix shape differs from the shard counts',
    );
    const lengthBytes = inputs[0]?.length ?? outputs[0]?.length ?? 0;
    for (const s of inputs) assert(s.length === lengthBytes, 'input shards differ in length');
    for (const s of outputs) assert(s.length === lengthBytes, 'output shards differ in length');
    if (rows === 0 || lengthBytes === 0) return;
    if (cols === 0) {
      for (const out of outputs) out.fill(0);
      return;
    }
    const own = this.memory.buffer;
    const copied = [...inputs, ...outputs].filter((s) => s.buffer !== own).length;
    const stagingAt = this.stagingFor(copied * lengthBytes);
    let next = stagingAt;
    const addressOf = (s: Uint8Array, copyIn: boolean): number => {
      if (s.buffer === own) return s.byteOffset;
      const at = next;
      next += lengthBytes;
      if (copyIn) new Uint8Array(this.memory.buffer, at, lengthBytes).set(s);
      return at;
    };
    const call: KernelCall = {
      coefficients: coefficients.data,
      rows,
      cols,
      inputAddresses: Uint32Array.from(inputs, (s) => addressOf(s, true)),
      outputAddresses: Uint32Array.from(outputs, (s) => addressOf(s, false)),
      lengthBytes,
    };
    this.instance.run(call);
    outputs.forEach((out, r) => {
      if (out.buffer !== own) out.set(new Uint8Array(this.memory.buffer, call.outputAddresses[r]!, lengthBytes));
    });
    if (this.staging !== undefined && this.staging.bytes > stagingKeepBytesMax) {
      this.arena.release(this.staging.at);
      this.staging = undefined;
    }
  }

  /** Offset of at least `bytes` staging bytes, reusing the last staging block when it fits. */
  private stagingFor(bytes: number): number {
    if (bytes === 0) return 0;
    if (this.staging !== undefined && this.staging.bytes >= bytes) return this.staging.at;
    if (this.staging !== undefined) this.arena.release(this.staging.at);
    this.staging = undefined;
    const at = this.arena.allocate(bytes, 'staging copies of shards');
    this.staging = { at, bytes };
    return at;
  }
}

let defaultKernel: WasmKernel | undefined;

/** The calling thread's shared WasmKernel, created on first use. */
export function defaultWasmKernel(): WasmKernel {
  return (defaultKernel ??= new WasmKernel());
}

/**
 * A synchronous ErasureCodec running the wasm kernel on the calling thread, copying shards in
 * and out of wasm memory (shards that are views of `kernel`'s ExtentBuffers are not copied).
 */
export function wasmCodec(profile: Profile, kernel: WasmKernel = defaultWasmKernel()): ErasureCodec {
  return new SystematicCodec(profile, kernel);
}
