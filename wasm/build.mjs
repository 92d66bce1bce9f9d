#!/usr/bin/env node
/**
 * Builds the Reed-Solomon kernel (wasm/kernel.ts) with the pinned AssemblyScript compiler into
 * two committed modules and their checksums:
 *
 *   wasm/cairn_rs_simd.wasm     SIMD128 only; runs on any wasm engine with SIMD
 *   wasm/cairn_rs_relaxed.wasm  relaxed SIMD too (i8x16.relaxed_swizzle = PSHUFB on x86)
 *   wasm/SHA256SUMS             `sha256sum -c` format, names relative to wasm/
 *
 * What it keeps true: the output is a pure function of kernel.ts, the flags below and the
 * compiler version (checked against the pin), so a rebuild is byte-identical. Each module is
 * checked to carry no data, start or global sections and to import only `env.memory`: the
 * kernel runs on a memory shared by many threads, and anything a module initialised on
 * instantiation would overwrite another thread's bytes.
 *
 *   node wasm/build.mjs           rebuild and rewrite the three files
 *   node wasm/build.mjs --check   rebuild in a temporary directory; exit 1 if the committed
 *                                 files differ from the rebuild or from SHA256SUMS
 *
 * Left out: running the kernel (src/codec/kernel.ts loads it; the tests check its bytes).
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';

const wasmDir = dirname(fileURLToPath(import.meta.url));
const repoDir = dirname(wasmDir);
/** Another compiler version may emit other bytes; bump the pin and rebuild deliberately. */
const ascVersionPinned = '0.28.20';
const checksumsFile = 'SHA256SUMS';

// Flags shared by both variants. Why each one:
//   -O3 --noAssert           speed; the kernel has no asserts, the host checks arguments
//   --runtime stub           no GC or heap: the kernel never allocates
//   --use abort=             no abort import and no message strings (data segments)
//   --importMemory --sharedMemory --maximumMemory 65536 --initialMemory 1
//                            one memory shared by all worker threads, up to 4 GiB of pages;
//                            the host's memory must be shared and no larger
//   --noExportMemory         the host owns the memory object already
const commonFlags = [
  '-O3',
  '--noAssert',
  '--runtime',
  'stub',
  '--use',
  'abort=',
  '--importMemory',
  '--sharedMemory',
  '--maximumMemory',
  '65536',
  '--initialMemory',
  '1',
  '--noExportMemory',
  '--noColors',
];

const variants = [
  { file: 'cairn_rs_simd.wasm', features: 'simd,threads' },
  { file: 'cairn_rs_relaxed.wasm', features: 'simd,threads,relaxed-simd' },
];

async function compile(features) {
  const { default: asc } = await import('assemblyscript/asc');
  if (asc.version !== ascVersionPinned) {
    throw new Error(`assemblyscript ${asc.version} is installed, the build is pinned to ${ascVersionPinned}`);
  }
  let binary = null;
  const stderr = [];
  const result = await asc.main(
    ['wasm/kernel.ts', '--baseDir', repoDir, '--outFile', 'kernel.wasm', '--enable', features, ...commonFlags],
    {
      writeFile(name, contents) {
        if (name.endsWith('.wasm')) binary = Buffer.from(contents);
      },
      stdout: { write: () => true },
      stderr: { write: (text) => (stderr.push(String(text)), true) },
    },
  );
  if (result.error !== null || binary === null) {
    throw new Error(`asc failed for features ${features}: ${result.error?.message ?? 'no output'}\n${stderr.join('')}`);
  }
  return binary;
}

/** Section ids of a wasm binary, in order (see the spec's binary format, section 5.5). */
function sectionIds(bytes) {
  const ids = [];
  let at = 8; // magic + version
  while (at < bytes.length) {
    const id = bytes[at++];
    let size = 0;
    let shift = 0;
    let byte;
    do {
      byte = bytes[at++];
      size |= (byte & 0x7f) << shift;
      shift += 7;
    } while (byte & 0x80);
    ids.push(id);
    at += size;
  }
  return ids;
}

function checkModule(file, bytes) {
  const forbidden = { 6: 'global', 8: 'start', 11: 'data', 12: 'data count' };
  for (const id of sectionIds(bytes)) {
    if (forbidden[id] !== undefined)
      throw new Error(`${file} has a ${forbidden[id]} section; the kernel must not own memory`);
  }
  const module = new WebAssembly.Module(bytes);
  const imports = WebAssembly.Module.imports(module).map((i) => `${i.module}.${i.name}:${i.kind}`);
  if (imports.join() !== 'env.memory:memory')
    throw new Error(`${file} imports ${imports.join(', ')}; only env.memory is allowed`);
  const exports = WebAssembly.Module.exports(module)
    .map((e) => e.name)
    .sort();
  if (exports.join() !== 'mulRows,scratchBytesFor') throw new Error(`${file} exports ${exports.join(', ')}`);
}

function sha256(bytes) {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Builds both variants; returns file name -> bytes, including SHA256SUMS. */
async function build() {
  // The relaxed module only compiles (for checkModule) with relaxed SIMD on; Node 20 ships it
  // behind this flag, which V8 accepts at run time.
  v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
  const files = new Map();
  for (const { file, features } of variants) {
    const bytes = await compile(features);
    checkModule(file, bytes);
    files.set(file, bytes);
  }
  const sums = [...files.keys()]
    .sort()
    .map((file) => `${sha256(files.get(file))}  ${file}\n`)
    .join('');
  files.set(checksumsFile, Buffer.from(sums));
  return files;
}

function readOrNull(path) {
  try {
    return readFileSync(path);
  } catch {
    return null;
  }
}

async function main() {
  const check = process.argv.includes('--check');
  const files = await build();
  if (!check) {
    for (const [file, bytes] of files) writeFileSync(join(wasmDir, file), bytes);
    process.stdout.write(files.get(checksumsFile).toString());
    return 0;
  }
  // Write the rebuild out too, so a failing check leaves something to diff against.
  const outDir = mkdtempSync(join(tmpdir(), 'cairn-wasm-'));
  const problems = [];
  for (const [file, bytes] of files) {
    writeFileSync(join(outDir, file), bytes);
    const committed = readOrNull(join(wasmDir, file));
    if (committed === null) problems.push(`wasm/${file} is missing`);
    else if (!committed.equals(bytes)) problems.push(`wasm/${file} differs from a rebuild of wasm/kernel.ts`);
  }
  // The rebuild's SHA256SUMS matching the committed one proves the committed .wasm files are
  // what the sums say only together with the byte comparison above; check the sums directly too.
  for (const { file } of variants) {
    const committed = readOrNull(join(wasmDir, file));
    const sums = readOrNull(join(wasmDir, checksumsFile))?.toString() ?? '';
    if (committed !== null && !sums.includes(`${sha256(committed)}  ${file}\n`)) {
      problems.push(`wasm/${file} does not match its line in wasm/${checksumsFile}`);
    }
  }
  if (problems.length > 0) {
    process.stderr.write(
      `wasm check failed (rebuild left in ${outDir}):\n  ${problems.join('\n  ')}\nRun: node wasm/build.mjs\n`,
    );
    return 1;
  }
  rmSync(outDir, { recursive: true, force: true });
  process.stdout.write('wasm check passed: committed modules match a rebuild and SHA256SUMS\n');
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`wasm build failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  },
);
