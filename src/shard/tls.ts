/**
 * TLS words shared by the clients of a storage node (the HTTPS shard API and the binary
 * connection): what a client trusts and presents, the connect options built from it, and TLS
 * failures in words that name what to fix.
 *
 * What it keeps true: TLS 1.2 is the oldest version offered; a node's certificate is always
 * verified (against `ca`, else the system's trust store) and so is its host name or IP address; a
 * certificate that fails verification, or a node that refuses ours, is an AuthRejectedError (not
 * retryable: the configuration is wrong), never a retryable outage.
 */
import { isIP } from 'node:net';
import { checkServerIdentity, type ConnectionOptions, type PeerCertificate } from 'node:tls';
import { AuthRejectedError, tlsMinVersion, type CairnError } from '../core/index.js';
import { connectionError, errnoOf } from './net.js';

/** What a client of storage nodes trusts and presents (PEM bytes, read once at start). */
export interface NodeClientTls {
  /** CA certificates the nodes' certificates must chain to; absent: the system's trust store. */
  readonly ca?: Buffer;
  /** This client's certificate and key, for nodes that require one (mutual TLS). */
  readonly cert?: Buffer;
  readonly key?: Buffer;
  /** Where `ca` came from, for messages, e.g. `CAIRN_NODE_CA /etc/cairn/tls/ca.pem`. */
  readonly caSource?: string;
  /**
   * The name every node's certificate must carry, instead of the address the client dials
   * (`CAIRN_NODE_TLS_SERVER_NAME`): for nodes whose addresses are not known when certificates
   * are made, e.g. pod IPs sharing one certificate for `cairnd.cairn.svc`.
   */
  readonly serverName?: string;
}

/** Options for tls.connect or an https.Agent reaching `host`. */
export function tlsConnectOptions(tls: NodeClientTls, host: string): ConnectionOptions {
  return {
    minVersion: tlsMinVersion,
    rejectUnauthorized: true,
    ...(tls.ca === undefined ? {} : { ca: tls.ca }),
    ...(tls.cert === undefined ? {} : { cert: tls.cert }),
    ...(tls.key === undefined ? {} : { key: tls.key }),
    // SNI carries names only; an IP address is checked against the certificate's IP SANs.
    ...(tls.serverName !== undefined
      ? {
          servername: tls.serverName,
          checkServerIdentity: (_host: string, cert: PeerCertificate) => checkServerIdentity(tls.serverName!, cert),
        }
      : isIP(host) === 0
        ? { servername: host }
        : {}),
  };
}

/** OpenSSL's and Node's codes for a peer certificate this side could not verify. */
const verifyCodes = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_CA',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * A failure reaching `where` as a typed error: a TLS verification failure or a refused client
 * certificate is an AuthRejectedError saying what to fix; anything else is connectionError's
 * retryable UnavailableError.
 */
export function transportError(where: string, err: unknown, tls: NodeClientTls | undefined): CairnError {
  const code = errnoOf(err) ?? '';
  const detail = err instanceof Error ? err.message : String(err);
  if (verifyCodes.has(code)) {
    const trusted = tls?.caSource ?? "the system's trust store (set CAIRN_NODE_CA to the cluster CA)";
    return new AuthRejectedError(`${where}: its TLS certificate is not trusted (${detail}); trusted CA: ${trusted}`, {
      cause: err,
    });
  }
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'ERR_SSL_PACKET_LENGTH_TOO_LONG')
    return new AuthRejectedError(`${where}: it does not speak TLS (${detail})`, { cause: err });
  if (/^ERR_SSL_.*ALERT/.test(code)) {
    const ours =
      tls?.cert === undefined
        ? 'no client certificate was sent (set CAIRN_NODE_CERT and CAIRN_NODE_KEY)'
        : 'check CAIRN_NODE_CERT: the node must trust its CA';
    return new AuthRejectedError(`${where}: the node refused the TLS handshake (${detail}); ${ours}`, { cause: err });
  }
  return connectionError(where, err);
}
