/**
 * What TLS on the NBD server is told and checks, as pure functions: the mode, the PSK file format
 * (`identity:hexkey` lines, as gnutls psktool and libnbd use), the per-export authorization list
 * (`--tls-allow IDENTITY=VOL[,VOL...]`) and the identity a client certificate names.
 *
 * What it keeps true: a file or flag that cannot be parsed is refused whole with a message naming
 * the line or the flag, never half used; an identity absent from a non-empty allow list gets no
 * volume at all.
 * What it leaves out: sockets and the handshake (server.ts), reading files (the CLI does).
 */
import { InvalidArgumentError } from '../core/index.js';

/** off: STARTTLS is refused (ERR_UNSUP); on: offered, plaintext allowed; require: forced TLS on TCP. */
export type NbdTlsMode = 'off' | 'on' | 'require';

export const nbdTlsModes: readonly NbdTlsMode[] = ['off', 'on', 'require'];

/** The volumes each identity may reach; '*' stands for every volume. */
export type TlsAllowList = ReadonlyMap<string, ReadonlySet<string>>;

/** The volume name in an allow entry that matches any volume. */
export const anyVolume = '*';

/** The server's TLS material and policy (already read from files). */
export interface NbdTlsOptions {
  /** 'on' or 'require' (a server without TLS passes no NbdTlsOptions at all). */
  readonly mode: Exclude<NbdTlsMode, 'off'>;
  /** PEM certificate chain and private key; both or neither. */
  readonly cert?: string | Buffer;
  readonly key?: string | Buffer;
  /** PEM CA bundle: when given, clients must present a certificate it signed (or use a PSK). */
  readonly ca?: string | Buffer;
  /** PSK identities and their keys. */
  readonly psk?: ReadonlyMap<string, Uint8Array>;
  /** Per-export authorization; null or absent: every identity may reach every volume. */
  readonly allow?: TlsAllowList | null;
}

/**
 * Parses a PSK file: one `identity:hexkey` per line; blank lines and lines starting with '#' are
 * skipped. The identity is everything before the last ':' (gnutls allows ':' nowhere in the key).
 * Throws InvalidArgumentError naming `source` and the line.
 *
 * @example parsePskFile('alice:00112233\n', 'psk.keys') // Map { 'alice' => <00 11 22 33> }
 */
export function parsePskFile(text: string, source: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? '').trim();
    if (line === '' || line.startsWith('#')) continue;
    const where = `${source} line ${i + 1}`;
    const colon = line.lastIndexOf(':');
    if (colon <= 0) throw new InvalidArgumentError(`${where}: expected IDENTITY:HEXKEY`);
    const identity = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (hex.length === 0 || hex.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(hex)) {
      throw new InvalidArgumentError(`${where}: the key of "${identity}" is not an even number of hex digits`);
    }
    if (keys.has(identity)) throw new InvalidArgumentError(`${where}: identity "${identity}" appears twice`);
    keys.set(identity, Buffer.from(hex, 'hex'));
  }
  if (keys.size === 0) throw new InvalidArgumentError(`${source}: no IDENTITY:HEXKEY line`);
  return keys;
}

/**
 * Parses `--tls-allow` values, each `IDENTITY=VOL[,VOL...]` (the last '=' splits, so an identity
 * may hold '='); entries for one identity add up. `*` as a volume means every volume. Throws
 * InvalidArgumentError naming the bad value. An empty list gives null (no authorization).
 *
 * @example parseTlsAllow(['alice=a,b', 'ops=*']) // Map { alice => {a, b}, ops => {*} }
 */
export function parseTlsAllow(values: readonly string[]): TlsAllowList | null {
  if (values.length === 0) return null;
  const allow = new Map<string, Set<string>>();
  for (const value of values) {
    const eq = value.lastIndexOf('=');
    const identity = eq < 0 ? '' : value.slice(0, eq);
    const volumes = eq < 0 ? [] : value.slice(eq + 1).split(',');
    if (identity === '' || volumes.some((v) => v === '')) {
      throw new InvalidArgumentError(`--tls-allow ${JSON.stringify(value)}: expected IDENTITY=VOLUME[,VOLUME...]`);
    }
    const set = allow.get(identity) ?? new Set<string>();
    for (const v of volumes) set.add(v);
    allow.set(identity, set);
  }
  return allow;
}

/** True when `identity` may reach `volume` under `allow` (null: no authorization configured). */
export function tlsAllows(allow: TlsAllowList | null | undefined, identity: string | null, volume: string): boolean {
  if (allow === null || allow === undefined) return true;
  if (identity === null) return false;
  const volumes = allow.get(identity);
  return volumes !== undefined && (volumes.has(anyVolume) || volumes.has(volume));
}

/** The parts of node's PeerCertificate we read (so this stays free of node:tls). */
export interface CertificateNames {
  readonly subject?: { readonly CN?: string | readonly string[] } | null;
  /** node's form: `DNS:alice, IP Address:127.0.0.1`. */
  readonly subjectaltname?: string;
}

/** A client certificate's identity: its subject CN, else its first subjectAltName value; null if neither. */
export function certificateIdentity(cert: CertificateNames): string | null {
  const cn = cert.subject?.CN;
  const first = Array.isArray(cn) ? (cn as readonly string[])[0] : (cn as string | undefined);
  if (first !== undefined && first !== '') return first;
  const san = cert.subjectaltname?.split(',')[0]?.trim();
  if (san === undefined || san === '') return null;
  const colon = san.indexOf(':');
  return colon < 0 ? san : san.slice(colon + 1);
}
