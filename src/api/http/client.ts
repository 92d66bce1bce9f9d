/**
 * A client of the HTTP API, for `cairnctl --api URL`: the same answers the etcd path computes,
 * fetched from a server. Errors come back as the CairnError the server mapped (same code, message
 * and retryable), so the CLI prints and exits as it would against etcd; a server that cannot be
 * reached is an UnavailableError naming the URL.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { CairnError, InvalidArgumentError, UnavailableError, errorMessage } from '../../core/index.js';
import type { CreateVolumeOptions } from '../volumes.js';
import { apiPrefix } from './openapi.js';

/** An answer larger than this is refused (a volume list of thousands is a few MiB). */
const responseBytesMax = 64 * 1024 * 1024;
const timeoutMsDefault = 120_000;

export interface ApiClientOptions {
  readonly token?: string;
  /** PEM of the CA that signed the server's certificate (https:// URLs). */
  readonly ca?: string | Buffer;
  readonly timeoutMs?: number;
}

export class ApiClient {
  readonly url: URL;

  constructor(
    baseUrl: string,
    private readonly options: ApiClientOptions = {},
  ) {
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new InvalidArgumentError(`Invalid --api URL "${baseUrl}": use http://HOST:PORT or https://HOST:PORT`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw new InvalidArgumentError(`Invalid --api URL "${baseUrl}": use http:// or https://`);
    this.url = url;
  }

  /** Calls `method path` (path under /api/v1) and returns the parsed JSON, or throws the server's error. */
  request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const target = new URL(`${this.url.pathname.replace(/\/$/, '')}${apiPrefix}${path}`, this.url);
    const text = body === undefined ? undefined : JSON.stringify(body);
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
    const where = `${method} ${target.origin}${target.pathname}`;
    return new Promise<T>((resolve, reject) => {
      const req = send(
        target,
        {
          method,
          headers: {
            accept: 'application/json',
            ...(this.options.token === undefined ? {} : { authorization: `Bearer ${this.options.token}` }),
            ...(text === undefined
              ? {}
              : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) }),
          },
          ...(this.options.ca === undefined ? {} : { ca: this.options.ca }),
          timeout: this.options.timeoutMs ?? timeoutMsDefault,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let bytes = 0;
          res.on('data', (c: Buffer) => {
            bytes += c.length;
            if (bytes > responseBytesMax) {
              req.destroy(new Error(`answer over ${responseBytesMax} bytes`));
              return;
            }
            chunks.push(c);
          });
          res.on('end', () => {
            const raw = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = raw === '' ? undefined : JSON.parse(raw);
            } catch {
              reject(
                new UnavailableError(
                  `${where}: the answer (HTTP ${res.statusCode}) is not JSON; is ${this.url.origin} a Cairn API?`,
                ),
              );
              return;
            }
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) {
              resolve(parsed as T);
              return;
            }
            const e = (parsed as { error?: { code?: unknown; message?: unknown; retryable?: unknown } } | undefined)
              ?.error;
            if (e !== undefined && typeof e.code === 'string' && typeof e.message === 'string')
              reject(new CairnError(e.code, e.message, { retryable: e.retryable === true }));
            else reject(new UnavailableError(`${where}: HTTP ${status} without a Cairn error body`));
          });
          res.on('error', (err) => reject(new UnavailableError(`${where}: ${errorMessage(err)}`, { cause: err })));
        },
      );
      req.on('timeout', () =>
        req.destroy(new Error(`no answer within ${this.options.timeoutMs ?? timeoutMsDefault} ms`)),
      );
      req.on('error', (err) =>
        reject(
          new UnavailableError(`Cannot reach the Cairn API at ${this.url.origin} (${where}): ${errorMessage(err)}`, {
            cause: err,
          }),
        ),
      );
      req.end(text);
    });
  }
}

/**
 * The body of POST /volumes for a createVolume() request. Encryption is not passed: the API does
 * not take key-encryption keys (they stay with whoever holds them).
 */
export function createVolumeBody(o: CreateVolumeOptions): Record<string, unknown> {
  const defined = (entries: Record<string, unknown>) =>
    Object.fromEntries(Object.entries(entries).filter(([, v]) => v !== undefined));
  return defined({
    name: o.name,
    size: o.sizeBytes,
    profile: o.profile === undefined || typeof o.profile === 'string' ? o.profile : `${o.profile.k}+${o.profile.m}`,
    extentSize: o.extentBytes,
    zonesRequired: o.zonesRequired,
    targets: o.targets,
    durableShards: o.durableShardsMin,
    journalReplicas: o.journalReplicas,
    allowNoRedundancy: o.allowNoRedundancy,
    labels: o.labels,
    inZones: o.allowedZones === undefined ? undefined : [...o.allowedZones],
  });
}
