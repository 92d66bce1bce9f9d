/**
 * The TLS half of NBD_OPT_STARTTLS: turns a connection's plain socket into a server-side
 * TLSSocket with our certificates, client-certificate check and PSK keys, within a deadline.
 *
 * What it keeps true: TLS 1.2 or newer only; a client that presents no valid identity when one is
 * required (a CA is configured and it used no PSK), an unknown PSK identity, a wrong key, garbage
 * instead of a ClientHello or a handshake not done within the deadline all end that connection
 * only (onFail, then the sockets are destroyed); nothing here throws out of a socket callback.
 * Bytes the plain socket had already read are handed to TLS (node does this), so they are parsed
 * as TLS records, never as NBD.
 * What it leaves out: NBD (session.ts decides when to call upgrade and what the identity may do),
 * reading files (the caller passes PEM text and keys), session resumption and renegotiation
 * (node's server refuses client-initiated renegotiation by default).
 */
import { createSecureContext, createServer, DEFAULT_CIPHERS, type TlsOptions, type TLSSocket } from 'node:tls';
import type { Socket } from 'node:net';
import { InvalidArgumentError, errorMessage } from '../core/index.js';
import { certificateIdentity, type NbdTlsOptions } from './tls_config.js';

/**
 * TLS 1.2 cipher suites for PSK, forward-secret ones first; TLS 1.3 uses its own suites (with a
 * PSK they run psk_dhe_ke when the client offers it). Plain PSK (no DHE) stays last for clients
 * that offer nothing else; none of these use RC4, 3DES or SHA-1 MACs.
 */
const pskCiphers = [
  'ECDHE-PSK-CHACHA20-POLY1305',
  'DHE-PSK-AES256-GCM-SHA384',
  'DHE-PSK-AES128-GCM-SHA256',
  'DHE-PSK-CHACHA20-POLY1305',
  'ECDHE-PSK-AES256-CBC-SHA384',
  'ECDHE-PSK-AES128-CBC-SHA256',
  'PSK-AES256-GCM-SHA384',
  'PSK-AES128-GCM-SHA256',
  'PSK-CHACHA20-POLY1305',
].join(':');

/**
 * TLS 1.3 suites with SHA-256 first when PSK is on: OpenSSL's PSK callback (node's pskCallback)
 * gives a PSK for SHA-256 only, and a server that picked TLS_AES_256_GCM_SHA384 (the default
 * first choice) then ignores the client's PSK and falls back to its certificate, which a PSK-only
 * client (libnbd, qemu with tls-creds-psk) cannot check ("Insufficient credentials"). Measured:
 * nbdinfo 1.14 with a PSK file failed that way until these came first.
 */
const tls13Sha256Suites = 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256';

/**
 * node's default list without its `!PSK`: a `!` deletes suites for good, wherever they are listed,
 * so with it every PSK suite above would be dropped (TLS 1.2 PSK clients then see "no shared
 * cipher"). The other exclusions stay.
 */
const certCiphers = DEFAULT_CIPHERS.split(':')
  .filter((c) => c !== '!PSK')
  .join(':');

export interface TlsUpgradeHandlers {
  /** The handshake finished and the client is acceptable; `identity` is its CN/SAN or PSK identity. */
  onSecure(tlsSocket: TLSSocket, identity: string | null): void;
  /** The handshake failed or the client was refused; the sockets are being destroyed. */
  onFail(reason: string): void;
}

/** Builds the server-side TLS for every STARTTLS of one NBD server. */
export class TlsUpgrader {
  private readonly serverOptions: TlsOptions;
  private readonly requireIdentity: boolean;

  /** Throws InvalidArgumentError when the material is missing or unusable (checked once, here). */
  constructor(private readonly options: NbdTlsOptions) {
    const hasCert = options.cert !== undefined && options.key !== undefined;
    if ((options.cert === undefined) !== (options.key === undefined)) {
      throw new InvalidArgumentError('TLS needs both a certificate and its key (--tls-cert and --tls-key)');
    }
    if (!hasCert && (options.psk === undefined || options.psk.size === 0)) {
      throw new InvalidArgumentError(
        'TLS needs a certificate and key (--tls-cert, --tls-key) or a PSK file (--tls-psk-file)',
      );
    }
    const psk = options.psk;
    this.requireIdentity = options.ca !== undefined;
    this.serverOptions = {
      minVersion: 'TLSv1.2',
      ...(hasCert ? { cert: options.cert, key: options.key } : {}),
      ...(options.ca === undefined ? {} : { ca: options.ca, requestCert: true }),
      // Checked in onSecure instead: a PSK client presents no certificate and is still welcome.
      rejectUnauthorized: false,
      ...(psk === undefined
        ? {}
        : {
            ciphers: `${tls13Sha256Suites}:${hasCert ? `${certCiphers}:` : ''}${pskCiphers}`,
            honorCipherOrder: true,
            dhparam: 'auto',
          }),
    };
    try {
      createSecureContext(this.serverOptions);
    } catch (err) {
      throw new InvalidArgumentError(`The TLS certificate, key or CA cannot be used: ${errorMessage(err)}`);
    }
  }

  /**
   * Runs the server side of a TLS handshake on `raw`, which must carry no listener that reads it
   * (the caller moved its own to the TLS socket's events). Exactly one of the handlers runs.
   */
  upgrade(raw: Socket, deadlineMs: number, handlers: TlsUpgradeHandlers): void {
    let pskIdentity: string | null = null;
    let settled = false;
    const psk = this.options.psk;
    const server = createServer({
      ...this.serverOptions,
      handshakeTimeout: deadlineMs,
      ...(psk === undefined
        ? {}
        : {
            pskCallback: (_socket: TLSSocket, identity: string): Uint8Array | null => {
              const key = psk.get(identity);
              if (key === undefined) return null;
              pskIdentity = identity;
              return key;
            },
          }),
    });
    let tlsSocket: TLSSocket | null = null;
    const fail = (reason: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      handlers.onFail(reason);
      tlsSocket?.destroy();
      raw.destroy();
    };
    // Our own deadline as well as node's handshakeTimeout: it covers every way a handshake can hang.
    const timer = setTimeout(() => fail(`TLS handshake not done within ${deadlineMs} ms`), deadlineMs);
    timer.unref();
    server.on('tlsClientError', (err: Error, socket: TLSSocket) => {
      tlsSocket = socket;
      fail(`TLS handshake failed: ${err.message}`);
    });
    server.on('secureConnection', (socket: TLSSocket) => {
      tlsSocket = socket;
      if (settled) {
        socket.destroy();
        return;
      }
      const identity = pskIdentity ?? (socket.authorized ? certificateIdentity(socket.getPeerCertificate()) : null);
      if (this.requireIdentity && pskIdentity === null && !socket.authorized) {
        // node reports a missing certificate as UNABLE_TO_GET_ISSUER_CERT; say what happened.
        const presented = Object.keys(socket.getPeerCertificate()).length > 0;
        const why = presented ? String(socket.authorizationError ?? 'not trusted') : 'none presented';
        fail(`client certificate refused: ${why}`);
        return;
      }
      settled = true;
      clearTimeout(timer);
      handlers.onSecure(socket, identity);
    });
    raw.once('close', () => fail('the connection closed during the TLS handshake'));
    server.emit('connection', raw);
  }
}
