/**
 * Loads the committed Reed-Solomon wasm kernel (wasm/cairn_rs_*.wasm, built from wasm/kernel.ts
 * by wasm/build.mjs) and runs single kernel calls on a memory the caller provides.
 *
 * What it keeps true:
 * - A module runs only if its sha256 matches its line in wasm/SHA256SUMS, so the bytes that
 *   run are the bytes the build reproduces and the tests checked.
 * - The variant is chosen once per process and thread: relaxed SIMD when the engine accepts it
 *   (a bare PSHUFB per table lookup on x86), else plain SIMD128. CAIRN_WASM_VARIANT=simd or
 *   relaxed-simd forces one, and loadKernel(variant) asks for one explicitly (tests cover both).
 * - Each KernelInstance owns a private workspace of `kernelWorkspaceBytes` in the memory, where
 *   a call's coefficients, shard addresses and lookup tables go. Instances on one shared memory
 *   (one per worker thread) never share a workspace, so they never disturb each other.
 *
 * Left out: allocation of shard memory (wasm_codec.ts), threads (pool.ts), matrix algebra
 * (gf256.ts, codec.ts).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import {
  ChecksumMismatchError,
  InvalidArgumentError,
  StorageIoError,
  assert,
  assertByteCount,
  shardCountMax,
} from '../core/index.js';

/**
 * The slice of the WebAssembly JS API Cairn uses. The project's lib (ES2022, no DOM) declares
 * no WebAssembly types and @types/node 20 has none either, so they are declared here, as local
 * types over globalThis.WebAssembly, rather than globally (a global declaration would clash
 * the day a lib brings the real ones).
 */
export interface WasmMemory {
  /** For a shared memory a SharedArrayBuffer, replaced by a longer one after grow(). */
  readonly buffer: ArrayBufferLike;
  grow(deltaPages: number): number;
}
/** A compiled module; it may be posted to worker threads. */
export interface WasmModule {
  readonly wasmModuleBrand?: never;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => WasmModule;
  Instance: new (module: WasmModule, imports: object) => { readonly exports: object };
  Memory: new (descriptor: { initial: number; maximum: number; shared: boolean }) => WasmMemory;
  validate(bytes: Uint8Array): boolean;
}
export const wasmApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/** Which build of the kernel runs: 'relaxed-simd' (faster on x86) or 'simd' (portable). */
export type KernelVariant = 'relaxed-simd' | 'simd';

export const kernelVariants: readonly KernelVariant[] = ['relaxed-simd', 'simd'];

const variantFiles: Readonly<Record<KernelVariant, string>> = {
  'relaxed-simd': 'cairn_rs_relaxed.wasm',
  simd: 'cairn_rs_simd.wasm',
};

/** A verified, compiled kernel module. `module` may be posted to worker threads. */
export interface LoadedKernel {
  readonly variant: KernelVariant;
  readonly module: WasmModule;
  /** Hex sha256 of the module's bytes, as listed in wasm/SHA256SUMS. */
  readonly sha256: string;
}

/** The functions the wasm module exports (see wasm/kernel.ts for their contracts). */
interface KernelExports {
  mulRows(
    coefs: number,
    rows: number,
    cols: number,
    inputs: number,
    outputs: number,
    lengthBytes: number,
    scratch: number,
  ): void;
  scratchBytesFor(cols: number): number;
}

/**
 * Workspace layout, in bytes from the workspace's start. Sized for the largest call, k + m =
 * shardCountMax: 255 * 255 coefficients, 255 input and 255 output addresses, and the tables of
 * one group of rows, which the kernel reports with scratchBytesFor(255) (32640 bytes).
 */
const coefficientsAt = 0;
const inputsAt = 65536;
const outputsAt = inputsAt + 4 * 256;
const scratchAt = outputsAt + 4 * 256;
/** Bytes of wasm memory one KernelInstance writes during a call; a multiple of 64. */
export const kernelWorkspaceBytes = scratchAt + 32768;

assert(shardCountMax * shardCountMax <= inputsAt - coefficientsAt, 'workspace: coefficients overflow');
assert(shardCountMax <= 256, 'workspace: shard addresses overflow');

/** One kernel call: outputs[r] = XOR over i of coefficients[r * cols + i] * inputs[i]. */
export interface KernelCall {
  /** rows * cols bytes, row-major. */
  readonly coefficients: Uint8Array;
  readonly rows: number;
  readonly cols: number;
  /** cols addresses (byte offsets in the memory) of the input shards. */
  readonly inputAddresses: Uint32Array;
  /** rows addresses of the output shards; outputs must not overlap inputs or any workspace. */
  readonly outputAddresses: Uint32Array;
  /** Bytes in every shard. */
  readonly lengthBytes: number;
}

/** The kernel instantiated on one memory, with its own workspace there. */
export class KernelInstance {
  readonly variant: KernelVariant;
  private readonly exports: KernelExports;
  private readonly memory: WasmMemory;
  private readonly workspaceAt: number;

  /**
   * `memory` must be a shared WasmMemory (the module imports a shared one);
   * [workspaceAt, workspaceAt + kernelWorkspaceBytes) must lie inside it and be used by no one
   * else while this instance exists.
   */
  constructor(kernel: LoadedKernel, memory: WasmMemory, workspaceAt: number) {
    assertByteCount(workspaceAt, 'workspace offset');
    assert(workspaceAt % 64 === 0, 'workspace must be 64-byte aligned');
    assert(workspaceAt + kernelWorkspaceBytes <= memory.buffer.byteLength, 'workspace lies outside the memory');
    const instance = new wasmApi.Instance(kernel.module, { env: { memory } });
    this.exports = instance.exports as unknown as KernelExports;
    assert(
      this.exports.scratchBytesFor(shardCountMax) <= kernelWorkspaceBytes - scratchAt,
      'kernel scratch exceeds the workspace',
    );
    this.variant = kernel.variant;
    this.memory = memory;
    this.workspaceAt = workspaceAt;
  }

  /**
   * Runs one call synchronously. The addresses must lie in the memory; this checks their
   * ranges against the memory's current size, so a bad address fails here, not as a trap.
   */
  run(call: KernelCall): void {
    const { coefficients, rows, cols, inputAddresses, outputAddresses, lengthBytes } = call;
    assert(Number.isInteger(rows) && rows >= 0 && rows <= shardCountMax, `kernel rows ${rows} out of range`);
    assert(Number.isInteger(cols) && cols >= 1 && cols <= shardCountMax, `kernel cols ${cols} out of range`);
    assert(coefficients.length === rows * cols, 'coefficient count differs from rows * cols');
    assert(
      inputAddresses.length === cols && outputAddresses.length === rows,
      'address counts differ from rows and cols',
    );
    assertByteCount(lengthBytes, 'shard length');
    if (rows === 0 || lengthBytes === 0) return;
    const memoryBytes = this.memory.buffer.byteLength;
    const at = this.workspaceAt;
    const overlaps = (a: number, b: number, bBytes: number): boolean => a < b + bBytes && b < a + lengthBytes;
    for (const a of inputAddresses) {
      assert(a + lengthBytes <= memoryBytes, 'input shard lies outside the memory');
      assert(!overlaps(a, at, kernelWorkspaceBytes), 'input shard overlaps the kernel workspace');
    }
    for (const a of outputAddresses) {
      assert(a + lengthBytes <= memoryBytes, 'output shard lies outside the memory');
      assert(!overlaps(a, at, kernelWorkspaceBytes), 'output shard overlaps the kernel workspace');
      // An output over an input would change bytes that later row groups (or the overlapping
      // final step) still read.
      for (const b of inputAddresses) assert(!overlaps(a, b, lengthBytes), 'output shard overlaps an input shard');
    }
    const bytes = new Uint8Array(this.memory.buffer);
    bytes.set(coefficients, at + coefficientsAt);
    // Addresses are little-endian u32 in wasm; a Uint32Array view is little-endian on every
    // platform Node runs wasm on, but DataView states it rather than assuming it.
    const view = new DataView(this.memory.buffer);
    inputAddresses.forEach((a, i) => view.setUint32(at + inputsAt + 4 * i, a, true));
    outputAddresses.forEach((a, r) => view.setUint32(at + outputsAt + 4 * r, a, true));
    this.exports.mulRows(at + coefficientsAt, rows, cols, at + inputsAt, at + outputsAt, lengthBytes, at + scratchAt);
  }
}

/** The directory holding package.json and wasm/, found by walking up from this file. */
function repoDirectory(): string {
  // This file runs from src/codec/ (ts-node, tests) or dist/src/codec/ (compiled), so the
  // depth varies; the wasm directory beside package.json is the landmark.
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let depth = 0; depth < 8; depth++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'wasm', 'SHA256SUMS'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new StorageIoError(
    `Cannot find the wasm kernel: no wasm/SHA256SUMS beside a package.json above ${fileURLToPath(import.meta.url)}`,
  );
}

function readFile(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new StorageIoError(`Cannot read the wasm kernel file ${path}`, { cause: err });
  }
}

/** Reads a module and checks it against wasm/SHA256SUMS; throws ChecksumMismatchError. */
function readVerified(variant: KernelVariant): { bytes: Buffer; sha256: string } {
  const wasmDir = join(repoDirectory(), 'wasm');
  const file = variantFiles[variant];
  const sums = readFile(join(wasmDir, 'SHA256SUMS')).toString('utf8');
  const line = sums.split('\n').find((l) => l.endsWith(`  ${file}`));
  const expected = line === undefined ? undefined : /^([0-9a-f]{64})  /.exec(line)?.[1];
  if (expected === undefined) {
    throw new ChecksumMismatchError(`Cannot load wasm kernel ${file}: wasm/SHA256SUMS has no checksum for it`);
  }
  const bytes = readFile(join(wasmDir, file));
  const actual = createHash('sha256').update(bytes).digest('hex');
  if (actual !== expected) {
    throw new ChecksumMismatchError(
      `Cannot load wasm kernel ${file}: its sha256 is ${actual}, wasm/SHA256SUMS says ${expected} (rebuild with node wasm/build.mjs)`,
    );
  }
  return { bytes, sha256: actual };
}

let relaxedSupport: boolean | undefined;

/**
 * Whether this engine runs relaxed SIMD. Node 20 has it behind a V8 flag that may be set at
 * run time (not in NODE_OPTIONS, which rejects it); the flag is set only when the module does
 * not validate without it, so newer engines are left alone.
 */
function relaxedSimdSupported(relaxedBytes: Uint8Array): boolean {
  if (relaxedSupport === undefined) {
    let supported = wasmApi.validate(relaxedBytes);
    if (!supported) {
      v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
      supported = wasmApi.validate(relaxedBytes);
    }
    relaxedSupport = supported;
  }
  return relaxedSupport;
}

/** The variant CAIRN_WASM_VARIANT asks for, or undefined when it is unset or empty. */
function variantFromEnvironment(): KernelVariant | undefined {
  const value = process.env['CAIRN_WASM_VARIANT'];
  if (value === undefined || value === '') return undefined;
  const variant = kernelVariants.find((v) => v === value);
  if (variant === undefined) {
    throw new InvalidArgumentError(`Invalid CAIRN_WASM_VARIANT "${value}": expected ${kernelVariants.join(' or ')}`);
  }
  return variant;
}

const loaded = new Map<KernelVariant, LoadedKernel>();
let defaultVariant: KernelVariant | undefined;

/**
 * The verified, compiled kernel: `variant` if given, else CAIRN_WASM_VARIANT if set, else
 * relaxed SIMD when supported, else SIMD. Cached per variant. Throws ChecksumMismatchError when
 * a module's bytes differ from wasm/SHA256SUMS, StorageIoError when a file cannot be read,
 * and InvalidArgumentError for a bad CAIRN_WASM_VARIANT or when relaxed SIMD is asked for but
 * the engine lacks it.
 */
export function loadKernel(variant?: KernelVariant): LoadedKernel {
  const wanted = variant ?? (defaultVariant ??= chooseDefaultVariant());
  let kernel = loaded.get(wanted);
  if (kernel === undefined) {
    const { bytes, sha256 } = readVerified(wanted);
    if (wanted === 'relaxed-simd' && !relaxedSimdSupported(bytes)) {
      throw new InvalidArgumentError(
        'Cannot load the relaxed-simd wasm kernel: this engine does not support relaxed SIMD (use CAIRN_WASM_VARIANT=simd)',
      );
    }
    kernel = { variant: wanted, module: new wasmApi.Module(bytes), sha256 };
    loaded.set(wanted, kernel);
  }
  return kernel;
}

function chooseDefaultVariant(): KernelVariant {
  const forced = variantFromEnvironment();
  if (forced !== undefined) return forced;
  const { bytes } = readVerified('relaxed-simd');
  return relaxedSimdSupported(bytes) ? 'relaxed-simd' : 'simd';
}

/** The variant loadKernel() picks by default in this process (see loadKernel). */
export function kernelVariant(): KernelVariant {
  return loadKernel().variant;
}
