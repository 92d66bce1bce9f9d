/**
 * The Reed-Solomon byte kernel, in AssemblyScript, compiled by wasm/build.mjs twice: once with
 * plain SIMD128 (`i8x16.swizzle`) and once with relaxed SIMD (`i8x16.relaxed_swizzle`, a bare
 * PSHUFB on x86; the plain swizzle costs an extra saturating add per lookup to zero
 * out-of-range lanes, which our indices, always 0..15, never need).
 *
 * One primitive: outputs[r][x] = XOR over i of coefficients[r][i] * inputs[i][x] in GF(2^8)
 * with polynomial 0x11D, the same as src/codec/gf256.ts. It multiplies by the split-nibble
 * method ISA-L uses: for a coefficient c, lo[x] = c*x and hi[x] = c*(x << 4) for x in 0..15,
 * so c*b = lo[b & 15] ^ hi[b >> 4], two 16-entry table lookups per 16 bytes.
 *
 * What it keeps true:
 * - It owns no memory. Memory is imported and shared with other threads; every address comes
 *   from the host, including a scratch area of `scratchBytesFor(cols)` bytes that no other
 *   thread uses during the call. There are no data segments, no globals that hold state, no
 *   heap and no GC (built with `--runtime stub`, and nothing here allocates), so any number of
 *   instances on one memory never disturb each other.
 * - Each output byte is computed from inputs only and stored once, never read back. So an
 *   overlapping final block (recomputing a few bytes already written) gives the same bytes,
 *   which is how lengths that are not a multiple of 32 are finished without a scalar tail
 *   (shards shorter than 32 bytes go byte by byte through the same tables).
 *
 * What it leaves out: bounds checks (wasm traps on addresses outside memory; the host asserts
 * the rest), matrix algebra (the host computes coefficients), and special cases for the
 * coefficients 0 and 1 (not tried: the inner loop stays branch-free and already beats the
 * targets; see the numbers in src/codec/wasm_codec.ts).
 */

// Rows coded together in one pass over the inputs: their accumulators stay in registers.
// Four rows with two vectors each use 8 accumulators, 4 nibble vectors, 2 tables and a mask:
// 15 live v128 values, as many as V8 can keep in x64's 16 vector registers (it reserves one
// as scratch). More rows make further passes, which re-read the inputs.
const groupRowsMax: i32 = 4;
// Bytes of lookup tables per coefficient: 16 for the low nibble, 16 for the high one.
const tableBytes: i32 = 32;

/** Scratch bytes mulRows needs for `cols` inputs: the tables of one group of rows. */
export function scratchBytesFor(cols: i32): i32 {
  return groupRowsMax * cols * tableBytes;
}

/**
 * outputs[r][x] = XOR over i < cols of coefs[r * cols + i] * inputs[i][x], x in [0, length).
 *
 * `coefs` points at rows * cols coefficient bytes, row-major. `inputs` and `outputs` point at
 * arrays of cols and rows u32 addresses of the shards. `scratch` points at
 * scratchBytesFor(cols) bytes this call may overwrite. Outputs must not overlap inputs,
 * coefficients or scratch; inputs are only read.
 */
export function mulRows(
  coefs: usize,
  rows: i32,
  cols: i32,
  inputs: usize,
  outputs: usize,
  length: i32,
  scratch: usize,
): void {
  // The host asserts cols >= 1 (k is at least 1); trapping beats writing wrong bytes.
  if (cols <= 0) unreachable();
  if (rows <= 0 || length <= 0) return;
  let r = 0;
  while (r < rows) {
    const left = rows - r;
    // Five rows split 3 + 2 rather than 4 + 1, so no pass runs with a single lonely row.
    const group = left == 5 ? 3 : left < groupRowsMax ? left : groupRowsMax;
    expandTables(coefs + <usize>(r * cols), group, cols, scratch);
    const outs = outputs + ((<usize>r) << 2);
    if (length < 32) {
      mulRowsScalar(group, cols, inputs, outs, length, scratch);
    } else if (group == 1) {
      mulRows1(cols, inputs, outs, length, scratch);
    } else if (group == 2) {
      mulRows2(cols, inputs, outs, length, scratch);
    } else if (group == 3) {
      mulRows3(cols, inputs, outs, length, scratch);
    } else {
      mulRows4(cols, inputs, outs, length, scratch);
    }
    r += group;
  }
}

// a * 2 in GF(2^8) mod 0x11D.
function xtime(a: u32): u32 {
  a <<= 1;
  return (a ^ select<u32>(0x11d, 0, (a & 0x100) != 0)) & 0xff;
}

// Writes c*x for x in 0..15 at t: c*(2y) = 2*(c*y) and c*(y+1) = c*y ^ c, as y grows.
function fillProducts(t: usize, c: u32): void {
  store<u8>(t, 0);
  store<u8>(t, c, 1);
  for (let x: usize = 2; x < 16; x++) {
    const v = (x & 1) != 0 ? (<u32>load<u8>(t + x - 1)) ^ c : xtime(<u32>load<u8>(t + (x >> 1)));
    store<u8>(t + x, v);
  }
}

// Tables of rows [0, group) of a coefficient block with row stride cols, laid out in the order
// the kernels read them: for input i and row g, lo at (i * group + g) * 32 and hi 16 after.
function expandTables(coefs: usize, group: i32, cols: i32, tables: usize): void {
  let t = tables;
  for (let i = 0; i < cols; i++) {
    for (let g = 0; g < group; g++) {
      const c = <u32>load<u8>(coefs + <usize>(g * cols + i));
      fillProducts(t, c);
      fillProducts(t + 16, xtime(xtime(xtime(xtime(c)))));
      t += tableBytes;
    }
  }
}

// A lookup of 16 table bytes by 16 indices in 0..15.
function lookup(table: v128, indexes: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i8x16.relaxed_swizzle(table, indexes);
  return i8x16.swizzle(table, indexes);
}

// c*v for the tables (lo, hi) of c and the nibbles (l, h) of v.
function product(lo: v128, hi: v128, l: v128, h: v128): v128 {
  return v128.xor(lookup(lo, l), lookup(hi, h));
}

// Short shards (under 32 bytes, one block): byte by byte through the same tables.
function mulRowsScalar(group: i32, cols: i32, inputs: usize, outs: usize, length: i32, tables: usize): void {
  for (let g = 0; g < group; g++) {
    const out = <usize>load<u32>(outs + ((<usize>g) << 2));
    for (let x = 0; x < length; x++) {
      let acc: u32 = 0;
      for (let i = 0; i < cols; i++) {
        const b = <u32>load<u8>(<usize>load<u32>(inputs + ((<usize>i) << 2)) + <usize>x);
        const t = tables + <usize>((i * group + g) * tableBytes);
        acc ^= (<u32>load<u8>(t + (b & 15))) ^ (<u32>load<u8>(t + 16 + (b >> 4)));
      }
      store<u8>(out + <usize>x, acc);
    }
  }
}

// The vector kernels below are one template written out for 1..4 rows, because accumulators
// must be locals to live in registers. Each step codes 32 bytes (two vectors, so the loads and
// lookups of one overlap the other's) of every output: for each input it loads the two
// vectors, splits them into nibbles once, and feeds every row's accumulators. The last step is
// moved back to end exactly at `length` (length >= 32), overlapping the previous one.

function mulRows1(cols: i32, inputs: usize, outs: usize, length: i32, tables: usize): void {
  const mask = i8x16.splat(0x0f);
  const o0 = <usize>load<u32>(outs);
  const inputsEnd = inputs + ((<usize>cols) << 2);
  const last = length - 32;
  let pos = 0;
  while (true) {
    if (pos > last) pos = last;
    let a0 = v128.splat<i32>(0);
    let b0 = v128.splat<i32>(0);
    let t = tables;
    let ip = inputs;
    do {
      const p = <usize>load<u32>(ip) + <usize>pos;
      const x = v128.load(p);
      const y = v128.load(p, 16);
      const xl = v128.and(x, mask);
      const xh = v128.and(i16x8.shr_u(x, 4), mask);
      const yl = v128.and(y, mask);
      const yh = v128.and(i16x8.shr_u(y, 4), mask);
      const lo0 = v128.load(t);
      const hi0 = v128.load(t, 16);
      a0 = v128.xor(a0, product(lo0, hi0, xl, xh));
      b0 = v128.xor(b0, product(lo0, hi0, yl, yh));
      t += 32;
      ip += 4;
    } while (ip < inputsEnd);
    v128.store(o0 + <usize>pos, a0);
    v128.store(o0 + <usize>pos, b0, 16);
    if (pos == last) break;
    pos += 32;
  }
}

function mulRows2(cols: i32, inputs: usize, outs: usize, length: i32, tables: usize): void {
  const mask = i8x16.splat(0x0f);
  const o0 = <usize>load<u32>(outs);
  const o1 = <usize>load<u32>(outs, 4);
  const inputsEnd = inputs + ((<usize>cols) << 2);
  const last = length - 32;
  let pos = 0;
  while (true) {
    if (pos > last) pos = last;
    let a0 = v128.splat<i32>(0);
    let b0 = v128.splat<i32>(0);
    let a1 = v128.splat<i32>(0);
    let b1 = v128.splat<i32>(0);
    let t = tables;
    let ip = inputs;
    do {
      const p = <usize>load<u32>(ip) + <usize>pos;
      const x = v128.load(p);
      const y = v128.load(p, 16);
      const xl = v128.and(x, mask);
      const xh = v128.and(i16x8.shr_u(x, 4), mask);
      const yl = v128.and(y, mask);
      const yh = v128.and(i16x8.shr_u(y, 4), mask);
      const lo0 = v128.load(t);
      const hi0 = v128.load(t, 16);
      a0 = v128.xor(a0, product(lo0, hi0, xl, xh));
      b0 = v128.xor(b0, product(lo0, hi0, yl, yh));
      const lo1 = v128.load(t, 32);
      const hi1 = v128.load(t, 48);
      a1 = v128.xor(a1, product(lo1, hi1, xl, xh));
      b1 = v128.xor(b1, product(lo1, hi1, yl, yh));
      t += 64;
      ip += 4;
    } while (ip < inputsEnd);
    v128.store(o0 + <usize>pos, a0);
    v128.store(o0 + <usize>pos, b0, 16);
    v128.store(o1 + <usize>pos, a1);
    v128.store(o1 + <usize>pos, b1, 16);
    if (pos == last) break;
    pos += 32;
  }
}

function mulRows3(cols: i32, inputs: usize, outs: usize, length: i32, tables: usize): void {
  const mask = i8x16.splat(0x0f);
  const o0 = <usize>load<u32>(outs);
  const o1 = <usize>load<u32>(outs, 4);
  const o2 = <usize>load<u32>(outs, 8);
  const inputsEnd = inputs + ((<usize>cols) << 2);
  const last = length - 32;
  let pos = 0;
  while (true) {
    if (pos > last) pos = last;
    let a0 = v128.splat<i32>(0);
    let b0 = v128.splat<i32>(0);
    let a1 = v128.splat<i32>(0);
    let b1 = v128.splat<i32>(0);
    let a2 = v128.splat<i32>(0);
    let b2 = v128.splat<i32>(0);
    let t = tables;
    let ip = inputs;
    do {
      const p = <usize>load<u32>(ip) + <usize>pos;
      const x = v128.load(p);
      const y = v128.load(p, 16);
      const xl = v128.and(x, mask);
      const xh = v128.and(i16x8.shr_u(x, 4), mask);
      const yl = v128.and(y, mask);
      const yh = v128.and(i16x8.shr_u(y, 4), mask);
      const lo0 = v128.load(t);
      const hi0 = v128.load(t, 16);
      a0 = v128.xor(a0, product(lo0, hi0, xl, xh));
      b0 = v128.xor(b0, product(lo0, hi0, yl, yh));
      const lo1 = v128.load(t, 32);
      const hi1 = v128.load(t, 48);
      a1 = v128.xor(a1, product(lo1, hi1, xl, xh));
      b1 = v128.xor(b1, product(lo1, hi1, yl, yh));
      const lo2 = v128.load(t, 64);
      const hi2 = v128.load(t, 80);
      a2 = v128.xor(a2, product(lo2, hi2, xl, xh));
      b2 = v128.xor(b2, product(lo2, hi2, yl, yh));
      t += 96;
      ip += 4;
    } while (ip < inputsEnd);
    v128.store(o0 + <usize>pos, a0);
    v128.store(o0 + <usize>pos, b0, 16);
    v128.store(o1 + <usize>pos, a1);
    v128.store(o1 + <usize>pos, b1, 16);
    v128.store(o2 + <usize>pos, a2);
    v128.store(o2 + <usize>pos, b2, 16);
    if (pos == last) break;
    pos += 32;
  }
}

function mulRows4(cols: i32, inputs: usize, outs: usize, length: i32, tables: usize): void {
  const mask = i8x16.splat(0x0f);
  const o0 = <usize>load<u32>(outs);
  const o1 = <usize>load<u32>(outs, 4);
  const o2 = <usize>load<u32>(outs, 8);
  const o3 = <usize>load<u32>(outs, 12);
  const inputsEnd = inputs + ((<usize>cols) << 2);
  const last = length - 32;
  let pos = 0;
  while (true) {
    if (pos > last) pos = last;
    let a0 = v128.splat<i32>(0);
    let b0 = v128.splat<i32>(0);
    let a1 = v128.splat<i32>(0);
    let b1 = v128.splat<i32>(0);
    let a2 = v128.splat<i32>(0);
    let b2 = v128.splat<i32>(0);
    let a3 = v128.splat<i32>(0);
    let b3 = v128.splat<i32>(0);
    let t = tables;
    let ip = inputs;
    do {
      const p = <usize>load<u32>(ip) + <usize>pos;
      const x = v128.load(p);
      const y = v128.load(p, 16);
      const xl = v128.and(x, mask);
      const xh = v128.and(i16x8.shr_u(x, 4), mask);
      const yl = v128.and(y, mask);
      const yh = v128.and(i16x8.shr_u(y, 4), mask);
      const lo0 = v128.load(t);
      const hi0 = v128.load(t, 16);
      a0 = v128.xor(a0, product(lo0, hi0, xl, xh));
      b0 = v128.xor(b0, product(lo0, hi0, yl, yh));
      const lo1 = v128.load(t, 32);
      const hi1 = v128.load(t, 48);
      a1 = v128.xor(a1, product(lo1, hi1, xl, xh));
      b1 = v128.xor(b1, product(lo1, hi1, yl, yh));
      const lo2 = v128.load(t, 64);
      const hi2 = v128.load(t, 80);
      a2 = v128.xor(a2, product(lo2, hi2, xl, xh));
      b2 = v128.xor(b2, product(lo2, hi2, yl, yh));
      const lo3 = v128.load(t, 96);
      const hi3 = v128.load(t, 112);
      a3 = v128.xor(a3, product(lo3, hi3, xl, xh));
      b3 = v128.xor(b3, product(lo3, hi3, yl, yh));
      t += 128;
      ip += 4;
    } while (ip < inputsEnd);
    v128.store(o0 + <usize>pos, a0);
    v128.store(o0 + <usize>pos, b0, 16);
    v128.store(o1 + <usize>pos, a1);
    v128.store(o1 + <usize>pos, b1, 16);
    v128.store(o2 + <usize>pos, a2);
    v128.store(o2 + <usize>pos, b2, 16);
    v128.store(o3 + <usize>pos, a3);
    v128.store(o3 + <usize>pos, b3, 16);
    if (pos == last) break;
    pos += 32;
  }
}
