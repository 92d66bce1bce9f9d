/**
 * Transport security words every Cairn server shares (cairnd's shard API and journal port, the
 * metrics endpoints): the oldest TLS version spoken, a server's certificate material and the
 * options built from it, and a constant-time bearer-token check.
 *
 * What it keeps true: TLS 1.2 or newer only; a handshake has a deadline, so a client that stalls
 * in it holds a socket for a bounded time; a token is compared by digest in constant time, so its
 * length and content do not leak through timing.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { TlsOptions } from 'node:tls';

/** The oldest TLS version any Cairn port speaks or accepts. */
export const tlsMinVersion = 'TLSv1.2';

/** A handshake not finished by then is dropped (Node's default, 120 s, is a slowloris gift). */
export const tlsHandshakeTimeoutMs = 10_000;

/** A server's TLS material: PEM bytes, read once at start. */
export interface ServerTls {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** Clients must present a certificate signed by one of these; absent: no client certificates. */
  readonly ca?: Buffer;
}

/**
 * tls.createServer/https.createServer options for `tls`. With a CA, `requireClientCert` false
 * still asks for a client certificate (so a route can check it) but lets the handshake finish
 * without one; true refuses the handshake.
 */
export function tlsServerOptions(tls: ServerTls, requireClientCert: boolean): TlsOptions {
  return {
    cert: tls.cert,
    key: tls.key,
    minVersion: tlsMinVersion,
    handshakeTimeout: tlsHandshakeTimeoutMs,
    ...(tls.ca === undefined ? {} : { ca: tls.ca, requestCert: true, rejectUnauthorized: requireClientCert }),
  };
}

/** True when `header` is `Bearer <token>` (scheme in any case), compared in constant time. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const match = /^bearer +(\S+)$/i.exec(header ?? '');
  const given = match === null ? '' : match[1]!;
  const digest = (text: string): Buffer => createHash('sha256').update(text, 'utf8').digest();
  return timingSafeEqual(digest(given), digest(token));
}
