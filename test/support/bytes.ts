/** Deterministic test bytes: a small xorshift generator so failures replay from their seed. */

export function seededBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed | 0 || 0x9e3779b9;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

export function shardsOf(k: number, shardBytes: number, seed: number): Uint8Array[] {
  return Array.from({ length: k }, (_, i) => seededBytes(shardBytes, seed * 1000 + i + 1));
}

/** Every subset of [0, n) with exactly `size` members, in lexicographic order. */
export function* combinations(n: number, size: number, start = 0, prefix: number[] = []): Generator<number[]> {
  if (prefix.length === size) {
    yield prefix;
    return;
  }
  for (let i = start; i < n; i++) yield* combinations(n, size, i + 1, [...prefix, i]);
}
