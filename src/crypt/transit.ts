/**
 * Data keys wrapped by a key service instead of a key file: the transit interface of HashiCorp
 * Vault (POST /v1/transit/encrypt/<key> and /v1/transit/decrypt/<key>, a token in X-Vault-Token),
 * which Vault and compatible services (OpenBao, `cairnctl kms serve`) speak. The key never leaves
 * the service; Cairn sends it the data key and keeps only what it answers.
 *
 * The plaintext sent is the volume's key uid followed by the data key, and an unwrap checks the
 * uid it gets back: a wrapped key moved into another volume's record does not open there.
 */
import { CairnError, InvalidArgumentError, UnavailableError, errorMessage } from '../core/index.js';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { KeyError, type VolumeEncryption } from './kek.js';
import { dataKeyBytes } from './units.js';

/** A key in a transit service: its base URL (http[s]://host:port) and the key's name. */
export interface TransitKey {
  readonly url: string;
  readonly key: string;
}

/** How long one request to the key service may take. */
export const transitRequestMsMax = 10_000;

/** The token to send: CAIRN_KMS_TOKEN_FILE (a file) or CAIRN_KMS_TOKEN. */
export function transitToken(env: NodeJS.ProcessEnv = process.env): string {
  const file = env['CAIRN_KMS_TOKEN_FILE'];
  if (file !== undefined && file !== '') {
    try {
      return readFileSync(file, 'utf8').trim();
    } catch (err) {
      throw new InvalidArgumentError(`Cannot read CAIRN_KMS_TOKEN_FILE ${file}: ${errorMessage(err)}`);
    }
  }
  const token = env['CAIRN_KMS_TOKEN'];
  if (token === undefined || token === '')
    throw new InvalidArgumentError('No key service token: set CAIRN_KMS_TOKEN_FILE (or CAIRN_KMS_TOKEN)');
  return token;
}

/** Checks a transit key's URL and name as a user gives them (`--kms URL --kms-key NAME`). */
export function transitKey(url: string, key: string): TransitKey {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new InvalidArgumentError(`Invalid key service URL "${url}": expected http(s)://HOST:PORT`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
    throw new InvalidArgumentError(`Invalid key service URL "${url}": only http and https`);
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(key))
    throw new InvalidArgumentError(`Invalid key name "${key}": letters, digits, '.', '_' and '-'`);
  return { url: parsed.origin, key };
}

async function call(at: TransitKey, op: 'encrypt' | 'decrypt', body: object, token: string): Promise<unknown> {
  const where = `key service ${at.url} (key ${at.key})`;
  let res: Response;
  try {
    res = await fetch(`${at.url}/v1/transit/${op}/${encodeURIComponent(at.key)}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-vault-token': token },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(transitRequestMsMax),
    });
  } catch (err) {
    throw new UnavailableError(`Cannot reach ${where}: ${errorMessage((err as { cause?: unknown }).cause ?? err)}`);
  }
  const text = await res.text();
  if (res.status === 401 || res.status === 403)
    throw new KeyError(`${where} refused the token (HTTP ${res.status}): check CAIRN_KMS_TOKEN_FILE`);
  if (!res.ok) {
    const why = (() => {
      try {
        return ((JSON.parse(text) as { errors?: string[] }).errors ?? []).join('; ');
      } catch {
        return text.slice(0, 200);
      }
    })();
    const err = `${where} answered HTTP ${res.status}${why === '' ? '' : `: ${why}`}`;
    throw res.status >= 500 ? new UnavailableError(err) : new KeyError(err);
  }
  try {
    return (JSON.parse(text) as { data?: unknown }).data;
  } catch {
    throw new CairnError('EKMS', `${where} answered something that is not JSON`, { retryable: false });
  }
}

/** A new random data key for a volume, wrapped by `at`. */
export async function newTransitVolumeKey(at: TransitKey, token: string): Promise<VolumeEncryption> {
  const keyUid = randomBytes(12).toString('hex');
  return wrapWithTransit(randomBytes(dataKeyBytes), keyUid, at, token);
}

/** Wraps `dataKey` (of the volume whose key uid is `keyUid`) with the service. */
export async function wrapWithTransit(
  dataKey: Uint8Array,
  keyUid: string,
  at: TransitKey,
  token: string,
): Promise<VolumeEncryption> {
  const plaintext = Buffer.concat([Buffer.from(keyUid, 'utf8'), Buffer.from(dataKey)]).toString('base64');
  const data = (await call(at, 'encrypt', { plaintext }, token)) as { ciphertext?: unknown } | undefined;
  if (typeof data?.ciphertext !== 'string')
    throw new CairnError('EKMS', `Key service ${at.url} answered an encrypt without a ciphertext`, {
      retryable: false,
    });
  return {
    cipher: 'aes-256-xts',
    keyId: `transit:${at.key}`,
    wrappedKey: data.ciphertext,
    keyUid,
    kms: { kind: 'transit', url: at.url, key: at.key },
  };
}

/** The data key of a volume whose key the service wraps. */
export async function unwrapWithTransit(enc: VolumeEncryption, token: string, what: string): Promise<Buffer> {
  if (enc.kms === undefined) throw new KeyError(`${what}: its key is not wrapped by a key service`);
  const at = { url: enc.kms.url, key: enc.kms.key };
  const data = (await call(at, 'decrypt', { ciphertext: enc.wrappedKey }, token)) as
    { plaintext?: unknown } | undefined;
  const raw = typeof data?.plaintext === 'string' ? Buffer.from(data.plaintext, 'base64') : Buffer.alloc(0);
  const uid = Buffer.from(enc.keyUid, 'utf8');
  if (raw.length !== uid.length + dataKeyBytes || !raw.subarray(0, uid.length).equals(uid))
    throw new KeyError(`${what}: the key service's answer is not this volume's data key`);
  return raw.subarray(uid.length);
}
