/**
 * Arithmetic in GF(2^8) with the reducing polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11D) and
 * generator 2, plus the small matrix algebra a systematic Reed-Solomon code needs. Pure and
 * readable: it builds coefficient matrices once per profile; the per-byte work happens in the
 * codecs, which take their coefficients from here.
 *
 * The encoding matrix is the one the `reed-solomon-erasure` Rust crate (and the npm package
 * @subspace/reed-solomon-erasure.wasm built from it) uses, so Cairn's parity is byte-identical:
 * take the (k+m) x k Vandermonde matrix V[r][c] = r^c, and multiply it by the inverse of its top
 * k x k square. The top k rows become the identity (data shards are stored as they are) and any k
 * rows stay invertible, so any k shards rebuild the rest.
 */
import { assert } from '../core/index.js';

const polynomial = 0x11d;

/** expTable[i] = 2^i for i in [0, 510); doubled so mul() needs no modulo. */
const expTable = new Uint8Array(510);
/** logTable[x] = i with 2^i = x, for x in [1, 256); logTable[0] is unused. */
const logTable = new Uint8Array(256);
{
  let x = 1;
  for (let i = 0; i < 255; i++) {
    expTable[i] = x;
    expTable[i + 255] = x;
    logTable[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= polynomial;
  }
}

/** a * b in GF(2^8). */
export function mul(a: number, b: number): number {
  if (a === 0 || b === 0) return 0;
  return expTable[logTable[a]! + logTable[b]!]!;
}

/** a / b in GF(2^8); b must not be 0. */
export function div(a: number, b: number): number {
  assert(b !== 0, 'division by zero in GF(2^8)');
  if (a === 0) return 0;
  return expTable[logTable[a]! + 255 - logTable[b]!]!;
}

/** a^n in GF(2^8), with 0^0 = 1 as the Vandermonde construction needs. */
export function pow(a: number, n: number): number {
  if (n === 0) return 1;
  if (a === 0) return 0;
  return expTable[(logTable[a]! * n) % 255]!;
}

/** A dense row-major matrix over GF(2^8). */
export interface Matrix {
  readonly rows: number;
  readonly cols: number;
  readonly data: Uint8Array;
}

export function matrix(rows: number, cols: number): Matrix {
  return { rows, cols, data: new Uint8Array(rows * cols) };
}

export function get(a: Matrix, r: number, c: number): number {
  return a.data[r * a.cols + c]!;
}

export function identity(n: number): Matrix {
  const out = matrix(n, n);
  for (let i = 0; i < n; i++) out.data[i * n + i] = 1;
  return out;
}

/** V[r][c] = r^c for r in [0, rows), c in [0, cols). */
export function vandermonde(rows: number, cols: number): Matrix {
  const out = matrix(rows, cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out.data[r * cols + c] = pow(r, c);
  return out;
}

export function multiply(a: Matrix, b: Matrix): Matrix {
  assert(a.cols === b.rows, 'matrix shapes do not chain');
  const out = matrix(a.rows, b.cols);
  for (let r = 0; r < a.rows; r++) {
    for (let c = 0; c < b.cols; c++) {
      let acc = 0;
      for (let i = 0; i < a.cols; i++) acc ^= mul(get(a, r, i), get(b, i, c));
      out.data[r * out.cols + c] = acc;
    }
  }
  return out;
}

/** The rows listed in `rowIndexes`, in that order. */
export function selectRows(a: Matrix, rowIndexes: readonly number[]): Matrix {
  const out = matrix(rowIndexes.length, a.cols);
  rowIndexes.forEach((r, i) => {
    assert(r >= 0 && r < a.rows, 'row index out of range');
    out.data.set(a.data.subarray(r * a.cols, (r + 1) * a.cols), i * a.cols);
  });
  return out;
}

/** Inverse by Gauss-Jordan elimination. Asserts the matrix is square and invertible. */
export function invert(a: Matrix): Matrix {
  assert(a.rows === a.cols, 'only square matrices have inverses');
  const n = a.rows;
  // Work on [a | I] and reduce the left half to I; the right half is then a^-1.
  const work = matrix(n, 2 * n);
  for (let r = 0; r < n; r++) {
    work.data.set(a.data.subarray(r * n, (r + 1) * n), r * 2 * n);
    work.data[r * 2 * n + n + r] = 1;
  }
  const w = work.data;
  const width = 2 * n;
  for (let col = 0; col < n; col++) {
    let pivot = col;
    while (pivot < n && w[pivot * width + col] === 0) pivot++;
    assert(pivot < n, 'matrix is singular');
    if (pivot !== col) {
      for (let c = 0; c < width; c++) {
        const t = w[col * width + c]!;
        w[col * width + c] = w[pivot * width + c]!;
        w[pivot * width + c] = t;
      }
    }
    const scale = div(1, w[col * width + col]!);
    for (let c = 0; c < width; c++) w[col * width + c] = mul(w[col * width + c]!, scale);
    for (let r = 0; r < n; r++) {
      const factor = w[r * width + col]!;
      if (r === col || factor === 0) continue;
      for (let c = 0; c < width; c++) w[r * width + c] = w[r * width + c]! ^ mul(factor, w[col * width + c]!);
    }
  }
  const out = matrix(n, n);
  for (let r = 0; r < n; r++) out.data.set(w.subarray(r * width + n, (r + 1) * width), r * n);
  return out;
}

const encodingMatrices = new Map<string, Matrix>();

/** The (k+m) x k systematic encoding matrix; cached per profile. */
export function encodingMatrix(k: number, m: number): Matrix {
  const key = `${k}+${m}`;
  let cached = encodingMatrices.get(key);
  if (cached === undefined) {
    const v = vandermonde(k + m, k);
    const top = selectRows(
      v,
      Array.from({ length: k }, (_, i) => i),
    );
    cached = multiply(v, invert(top));
    encodingMatrices.set(key, cached);
  }
  return cached;
}

/** The m x k parity rows of the encoding matrix: parity[p] = sum over i of P[p][i] * data[i]. */
export function parityMatrix(k: number, m: number): Matrix {
  return selectRows(
    encodingMatrix(k, m),
    Array.from({ length: m }, (_, i) => k + i),
  );
}

/**
 * Coefficients that rebuild the shards in `wanted` from the k shards in `present` (both lists of
 * shard indexes in [0, k+m); `present` has exactly k distinct entries). Row j of the result,
 * applied to the present shards in the order given, yields shard wanted[j].
 *
 * Why it works: the present shards are E_present * data, so data = E_present^-1 * present, and
 * any shard w is E[w] * data = (E[w] * E_present^-1) * present.
 */
export function reconstructionMatrix(
  k: number,
  m: number,
  present: readonly number[],
  wanted: readonly number[],
): Matrix {
  assert(present.length === k, 'reconstruction needs exactly k present shards');
  const e = encodingMatrix(k, m);
  return multiply(selectRows(e, wanted), invert(selectRows(e, present)));
}
