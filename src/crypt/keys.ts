/**
 * One place that wraps and opens data keys, whichever holds the wrapping key: a KEK the user
 * holds (kek.ts) or a key service (transit.ts).
 */
import {
  newVolumeKey,
  rewrap as rewrapKek,
  unwrapDataKey,
  wrapDataKey,
  type Kek,
  type VolumeEncryption,
} from './kek.js';
import { transitToken, unwrapWithTransit, wrapWithTransit, type TransitKey } from './transit.js';
import { randomBytes } from 'node:crypto';
import { dataKeyBytes } from './units.js';

/** What wraps a volume's data key: a KEK, or a key in a transit service (with its token). */
export type KeyWrapping =
  | { readonly kind: 'kek'; readonly kek: Kek }
  | { readonly kind: 'transit'; readonly at: TransitKey; readonly token: string };

/** The data key of `enc`: unwrapped with one of `keks`, or by its key service (token from `env`). */
export async function openDataKey(
  enc: VolumeEncryption,
  keks: readonly Kek[],
  what: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Buffer> {
  return enc.kms === undefined ? unwrapDataKey(enc, keks, what) : unwrapWithTransit(enc, transitToken(env), what);
}

/** A new volume's random data key, wrapped by `w`. */
export async function newWrappedKey(w: KeyWrapping): Promise<VolumeEncryption> {
  if (w.kind === 'kek') return newVolumeKey(w.kek);
  return wrapWithTransit(randomBytes(dataKeyBytes), randomBytes(12).toString('hex'), w.at, w.token);
}

/** `enc` rewrapped by `next` (the data key, and so the data, unchanged). */
export async function rewrapKey(
  enc: VolumeEncryption,
  keks: readonly Kek[],
  next: KeyWrapping,
  what: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<VolumeEncryption> {
  if (enc.kms === undefined && next.kind === 'kek') return rewrapKek(enc, keks, next.kek, what);
  const dataKey = await openDataKey(enc, keks, what, env);
  return next.kind === 'kek'
    ? wrapDataKey(dataKey, next.kek, enc.keyUid)
    : wrapWithTransit(dataKey, enc.keyUid, next.at, next.token);
}
