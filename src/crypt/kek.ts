/**
 * Key-encryption keys (KEKs) the user holds, and the volume data keys they wrap. etcd stores only
 * a wrapped data key and the id of the KEK that wraps it; the KEK itself lives in a file (a
 * Kubernetes Secret mounted as one), an environment variable, or nowhere near Cairn at all until a
 * frontend is started with it.
 *
 * A KEK is 32 bytes: a file holding them raw, as 64 hex digits, or as base64. Its id is a hash of
 * it (never the key), so a frontend given several KEKs picks the one a volume names, and a wrong
 * KEK is reported as "not the key this volume needs" before any decryption is tried.
 *
 * Wrapping is AES-256-GCM with a random 96-bit nonce; the authenticated data binds the wrapped
 * key to its key uid (drawn at create, kept by clones and snapshots), so a wrapped key copied into
 * another volume's record under another uid fails to unwrap.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { CairnError, InvalidArgumentError, errorMessage } from '../core/index.js';
import { dataKeyBytes } from './units.js';

/** Bytes of a key-encryption key (AES-256). */
export const kekBytes = 32;

/** A key-encryption key and its id. */
export interface Kek {
  readonly id: string;
  readonly key: Buffer;
  /** Where it came from (a file name, an environment variable), for messages. */
  readonly source: string;
}

/** What a volume record keeps of its encryption (VolumeRecord.encryption). */
export interface VolumeEncryption {
  readonly cipher: 'aes-256-xts';
  /** The id of the KEK that wraps the data key. */
  readonly keyId: string;
  /** base64 of nonce (12) | AES-256-GCM ciphertext of the 64-byte data key | tag (16). */
  readonly wrappedKey: string;
  /** Random, drawn at create; bound into the wrapping. */
  readonly keyUid: string;
  /**
   * Set when a key service wraps the data key (transit.ts): `wrappedKey` is then what the service
   * answered, and `keyId` is `transit:<key>`. Absent: a KEK the user holds wraps it.
   */
  readonly kms?: { readonly kind: 'transit'; readonly url: string; readonly key: string };
}

/** The right key was not given, or it does not open the wrapped key. */
export class KeyError extends CairnError {
  override readonly name = 'KeyError';
  constructor(message: string) {
    super('EKEY', message, { retryable: false });
  }
}

/** The id of a KEK: "kek-" and 16 hex digits of a hash of it. */
export function kekIdOf(key: Uint8Array): string {
  return `kek-${createHash('sha256').update('cairn kek id v1').update(key).digest('hex').slice(0, 16)}`;
}

/** Reads a KEK from text or bytes: 32 raw bytes, 64 hex digits, or base64 of 32 bytes. */
export function parseKek(bytes: Uint8Array, source: string): Kek {
  const text = Buffer.from(bytes).toString('latin1').trim();
  let key: Buffer | undefined;
  if (/^[0-9a-fA-F]{64}$/.test(text)) key = Buffer.from(text, 'hex');
  else if (/^[A-Za-z0-9+/]{43}=?$/.test(text) && Buffer.from(text, 'base64').length === kekBytes)
    key = Buffer.from(text, 'base64');
  else if (bytes.length === kekBytes) key = Buffer.from(bytes);
  if (key === undefined)
    throw new InvalidArgumentError(
      `${source} does not hold a key-encryption key: it must hold 32 bytes, raw, as 64 hex digits or in base64 (make one with: head -c 32 /dev/urandom > FILE)`,
    );
  return { id: kekIdOf(key), key, source };
}

/** Reads a KEK file; names the file when it cannot. */
export function readKekFile(file: string): Kek {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    throw new InvalidArgumentError(`Cannot read key-encryption key file ${file}: ${errorMessage(err)}`);
  }
  return parseKek(bytes, `Key file ${file}`);
}

/**
 * The KEKs a process was given: `files` (--kek-file, repeatable), then CAIRN_KEK_FILE (files
 * separated by commas), every file in CAIRN_KEK_DIR (directories separated by commas: a mounted
 * Kubernetes Secret with one key per entry, where a CSI node plugin stages keys; dot-files, which
 * Kubernetes uses for its own links, and `*.tmp` files being written are passed over) and CAIRN_KEK (the
 * key itself, hex or base64) from `env`.
 */
export function keksFrom(files: readonly string[], env: NodeJS.ProcessEnv = process.env): Kek[] {
  const keks = files.map(readKekFile);
  for (const f of (env['CAIRN_KEK_FILE'] ?? '').split(',')) if (f.trim() !== '') keks.push(readKekFile(f.trim()));
  for (const dir of (env['CAIRN_KEK_DIR'] ?? '').split(',').map((d) => d.trim())) {
    if (dir === '') continue;
    let names: string[];
    try {
      names = readdirSync(dir).filter((n) => !n.startsWith('.') && !n.endsWith('.tmp'));
    } catch (err) {
      throw new InvalidArgumentError(`Cannot read CAIRN_KEK_DIR ${dir}: ${errorMessage(err)}`);
    }
    for (const n of names.sort()) keks.push(readKekFile(join(dir, n)));
  }
  const inline = env['CAIRN_KEK'];
  if (inline !== undefined && inline !== '') keks.push(parseKek(Buffer.from(inline), 'CAIRN_KEK'));
  // One entry per key: the same key reached two ways (a flag and a directory) is one key.
  return keks.filter((k, i) => keks.findIndex((o) => o.id === k.id) === i);
}

function aad(keyUid: string): Buffer {
  return Buffer.from(`cairn data key ${keyUid}`);
}

/** Wraps `dataKey` under `kek` for a volume whose key uid is `keyUid`. */
export function wrapDataKey(dataKey: Uint8Array, kek: Kek, keyUid: string): VolumeEncryption {
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', kek.key, nonce);
  c.setAAD(aad(keyUid));
  const body = Buffer.concat([c.update(dataKey), c.final()]);
  return {
    cipher: 'aes-256-xts',
    keyId: kek.id,
    wrappedKey: Buffer.concat([nonce, body, c.getAuthTag()]).toString('base64'),
    keyUid,
  };
}

/** A new random data key and its wrapping under `kek`. */
export function newVolumeKey(kek: Kek): VolumeEncryption {
  const dataKey = randomBytes(dataKeyBytes);
  // XTS needs its two halves to differ (OpenSSL refuses equal ones); a random draw of them never
  // matches in practice, but the check costs nothing.
  if (dataKey.subarray(0, 32).equals(dataKey.subarray(32))) return newVolumeKey(kek);
  return wrapDataKey(dataKey, kek, randomBytes(12).toString('hex'));
}

/**
 * The data key of `enc`, unwrapped with whichever of `keks` it names. Throws KeyError naming the
 * key id the volume needs (and those given) when none matches, or when the matching one fails to
 * open it (a corrupted record, or a KEK with a colliding id).
 */
export function unwrapDataKey(enc: VolumeEncryption, keks: readonly Kek[], what: string): Buffer {
  const kek = keks.find((k) => k.id === enc.keyId);
  if (kek === undefined) {
    const given =
      keks.length === 0 ? 'no key was given' : `given: ${keks.map((k) => `${k.id} (${k.source})`).join(', ')}`;
    throw new KeyError(
      `${what} is encrypted with key ${enc.keyId}; pass its key-encryption key (--kek-file FILE or CAIRN_KEK_FILE) (${given})`,
    );
  }
  const raw = Buffer.from(enc.wrappedKey, 'base64');
  if (raw.length !== 12 + dataKeyBytes + 16) throw new KeyError(`${what}: its wrapped data key is malformed`);
  try {
    const d = createDecipheriv('aes-256-gcm', kek.key, raw.subarray(0, 12));
    d.setAAD(aad(enc.keyUid));
    d.setAuthTag(raw.subarray(12 + dataKeyBytes));
    return Buffer.concat([d.update(raw.subarray(12, 12 + dataKeyBytes)), d.final()]);
  } catch {
    throw new KeyError(`${what}: key ${kek.id} (${kek.source}) does not open its wrapped data key`);
  }
}

/** `enc` rewrapped under `next` (the data key, and so the data, unchanged). */
export function rewrap(enc: VolumeEncryption, keks: readonly Kek[], next: Kek, what: string): VolumeEncryption {
  return wrapDataKey(unwrapDataKey(enc, keks, what), next, enc.keyUid);
}
