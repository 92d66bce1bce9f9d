/**
 * Network words shared by the node's clients (the HTTP shard API and the binary connection):
 * host:port parsing and formatting, and socket failures as retryable errors in words.
 */
import { InvalidArgumentError, UnavailableError } from '../core/index.js';

/** Splits `host:port` (IPv6 hosts in brackets). Throws InvalidArgumentError naming `what`. */
export function parseHostPort(text: string, what: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (match === null || !Number.isInteger(port) || port > 65535) {
    throw new InvalidArgumentError(`Invalid ${what} "${text}": expected HOST:PORT, e.g. 127.0.0.1:4101`);
  }
  return { host: match[1] ?? match[2] ?? '', port };
}

/** Formats a host and port as `host:port`, bracketing IPv6 hosts. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The `code` of a Node.js system error (`ECONNREFUSED`), if it has one. */
export function errnoOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

const connectionWords: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection closed',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  ETIMEDOUT: 'connection timed out',
};

/** A socket-level failure reaching `where`, in words (`connection refused`), as a retryable UnavailableError. */
export function connectionError(where: string, err: unknown): UnavailableError {
  const code = errnoOf(err);
  const words = code === undefined ? undefined : connectionWords[code];
  const text = words ?? (err instanceof Error ? err.message : String(err));
  return new UnavailableError(`${where}: ${text}`, { cause: err });
}
