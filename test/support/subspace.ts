/**
 * Loads @subspace/reed-solomon-erasure.wasm, the reference peer whose parity Cairn must match
 * byte for byte, and wraps its contiguous-buffer API in the shape of Cairn's codec.
 */
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ReedSolomonErasure } from '@subspace/reed-solomon-erasure.wasm';

let instance: ReedSolomonErasure | undefined;

export function subspace(): ReedSolomonErasure {
  if (instance === undefined) {
    const require = createRequire(import.meta.url);
    const dir = dirname(require.resolve('@subspace/reed-solomon-erasure.wasm'));
    instance = ReedSolomonErasure.fromBytes(readFileSync(join(dir, 'reed_solomon_erasure_bg.wasm')));
  }
  return instance;
}

/** Parity computed by @subspace for k data shards; returns the m parity shards. */
export function subspaceParity(data: readonly Uint8Array[], m: number): Uint8Array[] {
  const k = data.length;
  const shardBytes = data[0]?.length ?? 0;
  const all = new Uint8Array(shardBytes * (k + m));
  data.forEach((d, i) => all.set(d, i * shardBytes));
  const result = subspace().encode(all, k, m);
  if (result !== ReedSolomonErasure.RESULT_OK) throw new Error(`subspace encode failed with code ${result}`);
  return Array.from({ length: m }, (_, p) => all.slice((k + p) * shardBytes, (k + p + 1) * shardBytes));
}
