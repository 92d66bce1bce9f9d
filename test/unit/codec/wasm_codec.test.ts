/**
 * The wasm kernel against the TypeScript reference (the oracle), for both builds (relaxed SIMD
 * and plain SIMD): single-threaded (WasmKernel, wasmCodec, ExtentBuffer in place) and on the
 * worker pool (ExtentBuffer and array paths, many jobs at once, failures, close). Lengths cover
 * the kernel's edges: empty, shorter than one 32-byte step, one step plus a byte, and MiBs.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { execFile } from 'node:child_process';
import { AssertionError, InvalidArgumentError, TooFewShardsError } from '../../../src/core/index.js';
import { referenceCodec, referenceKernel } from '../../../src/codec/reference.js';
import type { Matrix } from '../../../src/codec/gf256.js';
import { kernelVariant, kernelVariants, loadKernel } from '../../../src/codec/kernel.js';
import {
  CodecCapacityError,
  ExtentBuffer,
  WasmKernel,
  arenaReservedBytes,
  wasmCodec,
} from '../../../src/codec/wasm_codec.js';
import { CodecPool, CodecPoolClosedError, CodecWorkerError } from '../../../src/codec/pool.js';
import { mailboxSlots } from '../../../src/codec/worker.js';
import { combinations, seededBytes, shardsOf } from '../../support/bytes.js';

/** Lengths at the kernel's seams: its steps are 32 bytes, with a scalar path below 32. */
const edgeLengths = [0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 4097];

function sameBytes(actual: Uint8Array | null | undefined, expected: Uint8Array, what: string): void {
  expect(actual, what).to.be.instanceOf(Uint8Array);
  const a = actual!;
  expect(a.length, `${what}: length`).to.equal(expected.length);
  if (
    Buffer.compare(
      Buffer.from(a.buffer, a.byteOffset, a.length),
      Buffer.from(expected.buffer, expected.byteOffset, expected.length),
    ) !== 0
  ) {
    const at = a.findIndex((b, i) => b !== expected[i]);
    expect.fail(`${what}: first difference at byte ${at} of ${a.length}: ${a[at]} !== ${expected[at]}`);
  }
}

function referenceParity(k: number, m: number, data: readonly Uint8Array[]): Uint8Array[] {
  const shardBytes = data[0]?.length ?? 0;
  const parity = Array.from({ length: m }, () => new Uint8Array(shardBytes));
  referenceCodec({ k, m }).encode(data, parity);
  return parity;
}

function randomMatrix(rows: number, cols: number, seed: number): Matrix {
  // Mix in the special coefficients 0 and 1 often, since kernels like to special-case them.
  const data = seededBytes(rows * cols, seed).map((b) => (b < 32 ? 0 : b < 64 ? 1 : b));
  return { rows, cols, data };
}

/** Every presence pattern with 1..m shards lost. */
function* erasurePatterns(k: number, m: number): Generator<number[]> {
  for (let lost = 1; lost <= m; lost++) yield* combinations(k + m, lost);
}

function runNode(script: string, env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', script],
      { env: { ...process.env, ...env }, timeout: 30_000, encoding: 'utf8' },
      (err, stdout, stderr) =>
        resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr }),
    );
  });
}

describe('loadKernel()', function () {
  this.timeout(60_000);
  // Compiled, this file is dist/test/unit/codec/; the kernel module is dist/src/codec/kernel.js.
  const kernelUrl = new URL('../../../src/codec/kernel.js', import.meta.url).href;

  it('verifies and compiles both variants, and picks one of them by default', () => {
    for (const variant of kernelVariants) {
      const kernel = loadKernel(variant);
      expect(kernel.variant).to.equal(variant);
      expect(kernel.sha256).to.match(/^[0-9a-f]{64}$/);
    }
    expect(kernelVariants).to.include(kernelVariant());
  });

  it('honours CAIRN_WASM_VARIANT=simd and relaxed-simd in a fresh process', async () => {
    for (const variant of kernelVariants) {
      const run = await runNode(
        `const m = await import(${JSON.stringify(kernelUrl)}); console.log(m.kernelVariant());`,
        {
          CAIRN_WASM_VARIANT: variant,
        },
      );
      expect(run.code, run.stderr).to.equal(0);
      expect(run.stdout.trim()).to.equal(variant);
    }
  });

  it('refuses an unknown CAIRN_WASM_VARIANT, naming the choices', async () => {
    const run = await runNode(
      `const m = await import(${JSON.stringify(kernelUrl)}); try { m.kernelVariant(); } catch (e) { console.log(e.name + ': ' + e.message); }`,
      { CAIRN_WASM_VARIANT: 'avx512' },
    );
    expect(run.stdout.trim()).to.equal(
      `${InvalidArgumentError.name}: Invalid CAIRN_WASM_VARIANT "avx512": expected relaxed-simd or simd`,
    );
  });
});

for (const variant of kernelVariants) {
  describe(`WasmKernel (${variant})`, function () {
    this.timeout(120_000);
    const kernel = new WasmKernel({ variant });

    it('reports its variant', () => {
      expect(kernel.variant).to.equal(variant);
    });

    it('mulRows() matches the reference kernel on random matrices, coefficients 0 and 1 included', () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 0, max: 9 }),
          fc.integer({ min: 1, max: 12 }),
          fc.oneof(fc.constantFrom(...edgeLengths), fc.integer({ min: 0, max: 300 })),
          fc.integer(),
          (rows, cols, length, seed) => {
            const coefficients = randomMatrix(rows, cols, seed);
            const inputs = shardsOf(cols, length, seed);
            const expected = Array.from({ length: rows }, () => new Uint8Array(length));
            const actual = Array.from({ length: rows }, () => new Uint8Array(length).fill(0xee));
            referenceKernel.mulRows(coefficients, inputs, expected);
            kernel.mulRows(coefficients, inputs, actual);
            actual.forEach((a, r) => sameBytes(a, expected[r]!, `row ${r} of ${rows}x${cols}, ${length} bytes`));
          },
        ),
        { numRuns: 150 },
      );
    });

    it('encodes like referenceCodec for random profiles (m = 0 and k = 1 included) at the edge lengths', () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 16 }),
          fc.integer({ min: 0, max: 8 }),
          fc.constantFrom(...edgeLengths),
          fc.integer(),
          (k, m, shardBytes, seed) => {
            const data = shardsOf(k, shardBytes, seed);
            const parity = Array.from({ length: m }, () => new Uint8Array(shardBytes));
            wasmCodec({ k, m }, kernel).encode(data, parity);
            referenceParity(k, m, data).forEach((p, r) => sameBytes(parity[r], p, `${k}+${m} parity ${r}`));
          },
        ),
        { numRuns: 120 },
      );
    });

    it('encodes profiles with k + m = 255 shards at short lengths', () => {
      for (const [k, m] of [
        [1, 254],
        [254, 1],
        [128, 127],
        [200, 55],
      ] as const) {
        for (const shardBytes of [0, 1, 17, 33]) {
          const data = shardsOf(k, shardBytes, k + shardBytes);
          const parity = Array.from({ length: m }, () => new Uint8Array(shardBytes));
          wasmCodec({ k, m }, kernel).encode(data, parity);
          referenceParity(k, m, data).forEach((p, r) =>
            sameBytes(parity[r], p, `${k}+${m} parity ${r}, ${shardBytes} bytes`),
          );
        }
      }
    });

    it('encodes multi-MiB extents in place like referenceCodec', () => {
      for (const [k, m, shardBytes] of [
        [8, 3, 524288], // a 4 MiB extent
        [4, 2, 786433], // 3 MiB + 4 bytes of shard, not a multiple of 16
      ] as const) {
        const buf = kernel.allocate({ k, m }, shardBytes);
        const data = shardsOf(k, shardBytes, shardBytes);
        data.forEach((d, i) => buf.shard(i).set(d));
        kernel.encodeInPlace(buf);
        referenceParity(k, m, data).forEach((p, r) => sameBytes(buf.shard(k + r), p, `${k}+${m} parity ${r}`));
        kernel.release(buf);
      }
    });

    it('reconstructs every erasure pattern of up to m shards, in place and through wasmCodec', () => {
      for (const [k, m, shardBytes] of [
        [4, 2, 33],
        [3, 3, 17],
        [8, 3, 100],
        [1, 3, 40],
        [2, 1, 4097],
      ] as const) {
        const data = shardsOf(k, shardBytes, k * 31 + m);
        const all = [...data, ...referenceParity(k, m, data)];
        const buf = kernel.allocate({ k, m }, shardBytes);
        const codec = wasmCodec({ k, m }, kernel);
        for (const lost of erasurePatterns(k, m)) {
          all.forEach((s, i) => buf.shard(i).set(lost.includes(i) ? new Uint8Array(shardBytes).fill(0xa5) : s));
          kernel.reconstructInPlace(
            buf,
            all.map((_, i) => !lost.includes(i)),
          );
          all.forEach((s, i) => sameBytes(buf.shard(i), s, `${k}+${m} lost ${lost.join(',')}: shard ${i} in place`));
          const shards = all.map((s, i) => (lost.includes(i) ? null : s));
          codec.reconstruct(shards);
          all.forEach((s, i) => sameBytes(shards[i], s, `${k}+${m} lost ${lost.join(',')}: shard ${i} via codec`));
        }
        kernel.release(buf);
      }
    });

    it('rebuilds only the wanted shards and leaves present wanted shards as they are', () => {
      const [k, m, shardBytes] = [4, 3, 50];
      const data = shardsOf(k, shardBytes, 5);
      const all = [...data, ...referenceParity(k, m, data)];
      const buf = kernel.allocate({ k, m }, shardBytes);
      all.forEach((s, i) => buf.shard(i).set(s));
      buf.shard(1).fill(0);
      buf.shard(5).fill(0);
      buf.shard(6).fill(0);
      const present = [true, false, true, true, true, false, false];
      kernel.reconstructInPlace(buf, present, [5, 0]);
      sameBytes(buf.shard(5), all[5]!, 'wanted shard 5');
      sameBytes(buf.shard(0), all[0]!, 'present shard 0');
      expect(
        buf.shard(1).every((b) => b === 0),
        'unwanted shard 1 untouched',
      ).to.equal(true);
      expect(
        buf.shard(6).every((b) => b === 0),
        'unwanted shard 6 untouched',
      ).to.equal(true);
      kernel.release(buf);
    });

    it('refuses m+1 losses with TooFewShardsError and writes nothing', () => {
      const buf = kernel.allocate({ k: 4, m: 2 }, 64);
      buf.bytes().fill(7);
      expect(() => kernel.reconstructInPlace(buf, [false, false, false, true, true, true]))
        .to.throw(TooFewShardsError)
        .with.property('message', 'Cannot reconstruct: 4 shards needed, 3 present');
      expect(buf.bytes().every((b) => b === 7)).to.equal(true);
      kernel.release(buf);
    });

    it('codes shards that are views of its own memory without copying them (same bytes)', () => {
      const [k, m, shardBytes] = [5, 3, 1000];
      const buf = kernel.allocate({ k, m }, shardBytes);
      const data = shardsOf(k, shardBytes, 11);
      data.forEach((d, i) => buf.shard(i).set(d));
      const parity = Array.from({ length: m }, (_, r) => buf.shard(k + r));
      wasmCodec({ k, m }, kernel).encode(
        data.map((_, i) => buf.shard(i)),
        parity,
      );
      referenceParity(k, m, data).forEach((p, r) => sameBytes(buf.shard(k + r), p, `parity ${r}`));
      kernel.release(buf);
    });

    it('throws CodecCapacityError when its memory is full, and has room again after release', () => {
      const small = new WasmKernel({ variant, memoryBytesMax: 4 * 65536 });
      const first = small.allocate({ k: 4, m: 2 }, 10_000);
      expect(() => small.allocate({ k: 4, m: 2 }, 10_000)).to.throw(CodecCapacityError);
      small.release(first);
      small.release(small.allocate({ k: 4, m: 2 }, 10_000));
      expect(() => small.release(first)).to.throw(AssertionError);
    });

    it('hands out empty buffers for zero-length shards and codes them as no-ops', () => {
      const buf = kernel.allocate({ k: 3, m: 2 }, 0);
      expect(buf.shard(4).length).to.equal(0);
      kernel.encodeInPlace(buf);
      kernel.reconstructInPlace(buf, [false, true, true, true, false]);
      kernel.release(buf);
    });
  });

  describe(`CodecPool (${variant})`, function () {
    this.timeout(120_000);
    let pool: CodecPool;

    before(async () => {
      pool = await CodecPool.start({ threads: 2, memoryBytes: 128 * 1024 * 1024, variant });
    });

    after(async () => {
      await pool.close();
    });

    it('runs the requested variant on the requested threads', () => {
      expect(pool.variant).to.equal(variant);
      expect(pool.threads).to.equal(2);
    });

    it('encodes and reconstructs many ExtentBuffers at once, like referenceCodec', async () => {
      const cases: [number, number, number][] = [];
      for (const [k, m] of [
        [1, 0],
        [1, 1],
        [4, 2],
        [8, 3],
        [10, 4],
        [3, 7],
        [254, 1],
      ] as const) {
        for (const shardBytes of edgeLengths) if (k + m < 20 || shardBytes < 100) cases.push([k, m, shardBytes]);
      }
      cases.push([8, 3, 131072], [4, 2, 262144 + 3]);
      await Promise.all(
        cases.map(async ([k, m, shardBytes], c) => {
          const data = shardsOf(k, shardBytes, c);
          const all = [...data, ...referenceParity(k, m, data)];
          const buf = pool.allocate({ k, m }, shardBytes);
          try {
            data.forEach((d, i) => buf.shard(i).set(d));
            await pool.encode(buf);
            all.forEach((s, i) => sameBytes(buf.shard(i), s, `${k}+${m} ${shardBytes} bytes: shard ${i} after encode`));
            const lost = [...erasurePatterns(k, m)].at(-1) ?? [];
            for (const i of lost) buf.shard(i).fill(0x3c);
            await pool.reconstruct(
              buf,
              all.map((_, i) => !lost.includes(i)),
            );
            all.forEach((s, i) =>
              sameBytes(buf.shard(i), s, `${k}+${m} ${shardBytes} bytes: shard ${i} after reconstruct`),
            );
          } finally {
            pool.release(buf);
          }
        }),
      );
      expect(pool.allocatedBytes).to.equal(0);
    });

    it('reconstructs every erasure pattern of 4+2 and 8+3 through the array path', async () => {
      for (const [k, m] of [
        [4, 2],
        [8, 3],
      ] as const) {
        const data = shardsOf(k, 333, k);
        const all = [...data, ...referenceParity(k, m, data)];
        const parity = Array.from({ length: m }, () => new Uint8Array(333));
        await pool.encodeArrays({ k, m }, data, parity);
        parity.forEach((p, r) => sameBytes(p, all[k + r]!, `${k}+${m} parity ${r}`));
        await Promise.all(
          [...erasurePatterns(k, m)].map(async (lost) => {
            const shards = all.map((s, i) => (lost.includes(i) ? null : s));
            await pool.reconstructArrays({ k, m }, shards);
            all.forEach((s, i) => sameBytes(shards[i], s, `${k}+${m} lost ${lost.join(',')}: shard ${i}`));
          }),
        );
      }
    });

    it('fills wanted shards, present ones with a copy, through the array path', async () => {
      const [k, m] = [3, 2];
      const data = shardsOf(k, 40, 9);
      const all = [...data, ...referenceParity(k, m, data)];
      const shards: (Uint8Array | null)[] = [all[0]!, null, all[2]!, all[3]!, null];
      await pool.reconstructArrays({ k, m }, shards, [0, 4]);
      sameBytes(shards[4], all[4]!, 'wanted missing shard 4');
      sameBytes(shards[0], all[0]!, 'wanted present shard 0');
      expect(shards[0]).to.not.equal(all[0]);
      expect(shards[1]).to.equal(null);
    });

    it('queues more jobs than the mailboxes hold and finishes them all', async () => {
      const jobs = 3 * mailboxSlots * pool.threads;
      const bufs = Array.from({ length: jobs }, (_, j) => {
        const buf = pool.allocate({ k: 2, m: 1 }, 48);
        buf.shard(0).set(seededBytes(48, j + 1));
        buf.shard(1).set(seededBytes(48, j + 1000));
        return buf;
      });
      await Promise.all(bufs.map((buf) => pool.encode(buf)));
      bufs.forEach((buf, j) => {
        sameBytes(buf.shard(2), referenceParity(2, 1, [buf.shard(0).slice(), buf.shard(1).slice()])[0]!, `job ${j}`);
        pool.release(buf);
      });
    });

    it('rejects TooFewShardsError before any work, and asserts on a second job on a busy buffer', async () => {
      // 4 MiB shards: the first encode takes milliseconds, so it is surely still running when
      // the second one is asked for (a tiny job may finish before encode() even returns).
      const buf = pool.allocate({ k: 4, m: 2 }, 4 * 1024 * 1024);
      try {
        let error: unknown;
        await pool.reconstruct(buf, [true, false, false, false, true, true]).catch((e: unknown) => (error = e));
        expect(error).to.be.instanceOf(TooFewShardsError);
        const first = pool.encode(buf);
        let second: unknown;
        await pool.encode(buf).catch((e: unknown) => (second = e));
        expect(second).to.be.instanceOf(AssertionError);
        await first;
      } finally {
        pool.release(buf);
      }
    });

    it('rejects a job the worker cannot run with CodecWorkerError, and keeps serving', async () => {
      // Fault injection: a buffer over the workers' own workspaces, which only a bug could
      // produce; each worker checks its shard addresses before the kernel touches them.
      const memory = (pool as unknown as { memory: ConstructorParameters<typeof ExtentBuffer>[1] }).memory;
      const bogus = new ExtentBuffer(pool, memory, { k: 2, m: 1 }, 128 * 1024, arenaReservedBytes);
      let error: unknown;
      await pool.encode(bogus).catch((e: unknown) => (error = e));
      expect(error).to.be.instanceOf(CodecWorkerError);
      expect((error as CodecWorkerError).retryable).to.equal(false);
      expect((error as Error).message).to.contain('overlaps the kernel workspace');
      const parity = [new Uint8Array(10)];
      await pool.encodeArrays({ k: 1, m: 1 }, [seededBytes(10, 1)], parity);
      sameBytes(parity[0], seededBytes(10, 1), 'parity of 1+1 is a copy');
    });

    it('replaces a worker that dies, failing only its jobs, retryably', async () => {
      const slots = (pool as unknown as { slots: { worker?: { terminate(): Promise<number> } }[] }).slots;
      const bufs = Array.from({ length: 8 }, () => pool.allocate({ k: 8, m: 3 }, 1 << 17));
      const results = bufs.map((buf) =>
        pool.encode(buf).then(
          () => undefined,
          (e: unknown) => e,
        ),
      );
      await slots[0]!.worker!.terminate();
      for (const r of await Promise.all(results)) {
        if (r !== undefined) {
          expect(r).to.be.instanceOf(CodecWorkerError);
          expect((r as CodecWorkerError).retryable).to.equal(true);
        }
      }
      // Both workers (the replacement included) code correctly afterwards.
      await Promise.all(bufs.map((buf) => pool.encode(buf)));
      bufs.forEach((buf) => pool.release(buf));
    });
  });

  describe(`CodecPool lifecycle (${variant})`, function () {
    this.timeout(60_000);

    it('refuses bad options with InvalidArgumentError', async () => {
      for (const options of [
        { threads: 0 },
        { threads: 17 },
        { memoryBytes: 65536 * 3 + 1 },
        { memoryBytes: 2 ** 31 },
      ]) {
        let error: unknown;
        await CodecPool.start({ ...options, variant }).catch((e: unknown) => (error = e));
        expect(error, JSON.stringify(options)).to.be.instanceOf(InvalidArgumentError);
      }
    });

    it('throws CodecCapacityError when its memory is full', async () => {
      const pool = await CodecPool.start({ threads: 1, memoryBytes: 2 * 1024 * 1024, variant });
      try {
        const buf = pool.allocate({ k: 4, m: 2 }, 200_000);
        expect(() => pool.allocate({ k: 4, m: 2 }, 200_000)).to.throw(CodecCapacityError);
        pool.release(buf);
      } finally {
        await pool.close();
      }
    });

    it('lazy: starts no worker until the first job, then codes like referenceCodec; closes either way', async () => {
      const idle = await CodecPool.start({ threads: 2, memoryBytes: 16 * 1024 * 1024, variant, lazy: true });
      const unused = idle.allocate({ k: 4, m: 2 }, 4096);
      idle.release(unused);
      expect(idle.workersStarted, 'no job, no worker').to.equal(false);
      await idle.close();

      const pool = await CodecPool.start({ threads: 2, memoryBytes: 16 * 1024 * 1024, variant, lazy: true });
      try {
        const data = shardsOf(4, 8192, 77);
        const bufs = Array.from({ length: 6 }, () => pool.allocate({ k: 4, m: 2 }, 8192));
        for (const buf of bufs) data.forEach((d, i) => buf.shard(i).set(d));
        // Several jobs posted before any worker is ready: each must still finish.
        await Promise.all(bufs.map((buf) => pool.encode(buf)));
        expect(pool.workersStarted).to.equal(true);
        const want = referenceParity(4, 2, data);
        for (const buf of bufs) for (let r = 0; r < 2; r++) sameBytes(buf.shard(4 + r), want[r]!, `parity ${r}`);
        bufs.forEach((buf) => pool.release(buf));
      } finally {
        await pool.close();
      }
    });

    it('settles pending jobs on close() and refuses work afterwards', async () => {
      const pool = await CodecPool.start({ threads: 2, memoryBytes: 64 * 1024 * 1024, variant });
      const bufs = Array.from({ length: 16 }, () => pool.allocate({ k: 8, m: 3 }, 1 << 17));
      const results = bufs.map((buf) =>
        pool.encode(buf).then(
          () => 'done',
          (e: unknown) => e,
        ),
      );
      await pool.close();
      for (const r of await Promise.all(results)) if (r !== 'done') expect(r).to.be.instanceOf(CodecPoolClosedError);
      expect(() => pool.allocate({ k: 1, m: 1 }, 1)).to.throw(CodecPoolClosedError);
      let error: unknown;
      await pool.encode(bufs[0]!).catch((e: unknown) => (error = e));
      expect(error).to.be.instanceOf(CodecPoolClosedError);
      bufs.forEach((buf) => pool.release(buf));
      await pool.close();
    });
  });
}
