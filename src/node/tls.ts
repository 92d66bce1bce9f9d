/**
 * cairnd's TLS (the material and options are core's ServerTls and tlsServerOptions): one set of
 * files for the shard API (HTTPS), the journal port (TLS) and, unless given its own, the metrics
 * endpoint.
 *
 * What it keeps true: TLS 1.2 or newer only; with a CA, every client must present a certificate
 * the CA signed: the journal port refuses the handshake without one, the shard API answers 401 on
 * /v1/shards (its /v1/health stays readable without one, for probes that cannot present one). A
 * handshake has a deadline, so a client that stalls in it holds a socket for a bounded time.
 */
import type { TLSSocket } from 'node:tls';

/** Why a TLS socket's client is not authenticated by certificate, or undefined when it is. */
export function clientCertProblem(socket: TLSSocket): string | undefined {
  if (socket.authorized) return undefined;
  const peer = socket.getPeerCertificate();
  if (peer === null || Object.keys(peer).length === 0) return 'no client certificate';
  return `client certificate not accepted (${String(socket.authorizationError)})`;
}

/** Refused handshakes are logged at most once per this, with how many there were. */
const refusalLogIntervalMs = 10_000;

/**
 * Logs refused TLS handshakes (a plaintext client, an unknown certificate, a stalled handshake):
 * the first at once, then one line per interval with the count, so a scanner cannot flood the log.
 */
export class TlsRefusalLog {
  private lastMs = -Infinity;
  private unlogged = 0;

  constructor(
    private readonly what: string,
    private readonly log: (line: string) => void,
  ) {}

  note(err: Error, socket: TLSSocket): void {
    const now = Date.now();
    if (now - this.lastMs < refusalLogIntervalMs) {
      this.unlogged += 1;
      return;
    }
    const more = this.unlogged === 0 ? '' : ` (and ${this.unlogged} more since the last line)`;
    this.lastMs = now;
    this.unlogged = 0;
    const peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    this.log(`${this.what}: refused a TLS handshake from ${peer}: ${err.message}${more}`);
  }
}
