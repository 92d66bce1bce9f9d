/**
 * The reference RowKernel: plain TypeScript, one GF(2^8) multiply per byte through log/exp
 * tables. Slow (tens of MB/s) and obviously right; it is the oracle the wasm kernel is tested
 * against, and it is checked in turn against @subspace/reed-solomon-erasure.wasm.
 */
import { type ErasureCodec, type RowKernel, SystematicCodec } from './codec.js';
import type { Profile } from '../core/index.js';
import { type Matrix, get, mul } from './gf256.js';

export const referenceKernel: RowKernel = {
  mulRows(coefficients: Matrix, inputs: readonly Uint8Array[], outputs: readonly Uint8Array[]): void {
    outputs.forEach((out, r) => {
      out.fill(0);
      inputs.forEach((input, i) => {
        const c = get(coefficients, r, i);
        if (c === 0) return;
        for (let x = 0; x < out.length; x++) out[x] = out[x]! ^ mul(c, input[x]!);
      });
    });
  },
};

export function referenceCodec(profile: Profile): ErasureCodec {
  return new SystematicCodec(profile, referenceKernel);
}
