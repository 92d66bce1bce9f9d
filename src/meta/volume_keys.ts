/** The wrapped data key of an encrypted volume, changed in etcd (`cairnctl volume rekey`). */
import type { VolumeEncryption } from '../crypt/index.js';
import type { EtcdMeta } from './etcd_meta.js';
import { NotFoundError, PreconditionError } from './errors.js';
import { keys, type VolumeRecord } from './schema.js';

/**
 * Replaces volume `name`'s wrapped data key with what `rewrap` makes of the current one, in a
 * transaction that checks the record did not change meanwhile (PreconditionError: try again).
 * Only the wrapping changes: the data key, and so every byte stored, stays as it is, and a
 * frontend serving the volume keeps its unwrapped key.
 */
export async function rewrapVolumeKey(
  meta: EtcdMeta,
  name: string,
  rewrap: (current: VolumeEncryption) => VolumeEncryption | Promise<VolumeEncryption>,
): Promise<VolumeRecord> {
  const got = await meta.getVolumeWithRevision(name);
  if (got === null) throw new NotFoundError(`No volume named "${name}"`);
  const current = got.record.encryption;
  if (current === undefined) throw new PreconditionError(`Volume "${name}" is not encrypted: it has no key to rewrap`);
  const updated: VolumeRecord = { ...got.record, encryption: await rewrap(current) };
  const key = keys.volume(name);
  const result = await meta.call(`rekey ${key}`, () =>
    meta.client
      .if(key, 'Mod', '==', Number(got.modRevision))
      .then(meta.client.put(key).value(JSON.stringify(updated)))
      .commit(),
  );
  if (!result.succeeded) throw new PreconditionError(`Volume "${name}" changed while its key was rewrapped; try again`);
  return updated;
}
