/**
 * `cairnctl kms serve`: a small key service that speaks the transit interface of HashiCorp Vault
 * (the subset Cairn uses), for clusters without a Vault, and for testing the transit client
 * against a real server. Keys are 32 random bytes in files under one directory (0600 in 0700);
 * they never leave the process. Requests carry the token in X-Vault-Token.
 *
 *   POST /v1/transit/keys/<name>      create the key if it does not exist (204)
 *   POST /v1/transit/encrypt/<name>   {"plaintext": base64} -> {"data": {"ciphertext": "vault:v1:..."}}
 *   POST /v1/transit/decrypt/<name>   {"ciphertext": "vault:v1:..."} -> {"data": {"plaintext": base64}}
 *
 * Ciphertext: "vault:v1:" + base64(nonce (12) | AES-256-GCM ciphertext | tag (16)), the key's name
 * bound as authenticated data. Errors: {"errors": [message]} with 400, 403, 404 or 413.
 */
import { createCipheriv, createDecipheriv, randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

/** Largest request body the service reads. */
export const transitBodyBytesMax = 64 * 1024;

export interface TransitServerOptions {
  readonly dir: string;
  readonly token: string;
  readonly host: string;
  readonly port: number;
  readonly log: (line: string) => void;
}

class HttpFailure extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const keyName = /^[A-Za-z0-9._-]{1,128}$/;

function keyFile(dir: string, name: string): string {
  if (!keyName.test(name)) throw new HttpFailure(400, `invalid key name "${name}"`);
  return join(dir, `${name}.key`);
}

/** Creates key `name` in `dir` unless it exists; returns whether it made it. */
export function createTransitKey(dir: string, name: string): boolean {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = keyFile(dir, name);
  if (existsSync(file)) return false;
  writeFileSync(file, randomBytes(32), { mode: 0o600, flag: 'wx' });
  return true;
}

function readKey(dir: string, name: string): Buffer {
  const file = keyFile(dir, name);
  if (!existsSync(file)) throw new HttpFailure(404, `no key named "${name}"`);
  return readFileSync(file);
}

function readBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > transitBodyBytesMax) {
        // Answered, then the connection closed (the rest is never read).
        req.pause();
        reject(new HttpFailure(413, `request body over ${transitBodyBytesMax} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('error', reject);
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() === '') return resolve({});
      try {
        const v = JSON.parse(text) as unknown;
        if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
        resolve(v as Record<string, unknown>);
      } catch {
        reject(new HttpFailure(400, 'the body is not a JSON object'));
      }
    });
  });
}

function base64Field(body: Record<string, unknown>, name: string): Buffer {
  const v = body[name];
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v))
    throw new HttpFailure(400, `${name}: base64 required`);
  return Buffer.from(v, 'base64');
}

function encrypt(key: Buffer, name: string, plaintext: Buffer): string {
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(Buffer.from(name));
  const body = Buffer.concat([c.update(plaintext), c.final()]);
  return `vault:v1:${Buffer.concat([nonce, body, c.getAuthTag()]).toString('base64')}`;
}

function decrypt(key: Buffer, name: string, ciphertext: unknown): Buffer {
  if (typeof ciphertext !== 'string' || !ciphertext.startsWith('vault:v1:'))
    throw new HttpFailure(400, 'ciphertext: "vault:v1:..." required');
  const raw = Buffer.from(ciphertext.slice('vault:v1:'.length), 'base64');
  if (raw.length < 28) throw new HttpFailure(400, 'ciphertext too short');
  try {
    const d = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
    d.setAAD(Buffer.from(name));
    d.setAuthTag(raw.subarray(raw.length - 16));
    return Buffer.concat([d.update(raw.subarray(12, raw.length - 16)), d.final()]);
  } catch {
    throw new HttpFailure(400, 'cipher: message authentication failed');
  }
}

export async function startTransitServer(
  options: TransitServerOptions,
): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  mkdirSync(options.dir, { recursive: true, mode: 0o700 });
  const want = createHash('sha256').update(options.token).digest();
  const authorized = (req: IncomingMessage): boolean => {
    const got = req.headers['x-vault-token'];
    return typeof got === 'string' && timingSafeEqual(createHash('sha256').update(got).digest(), want);
  };
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const m = /^\/v1\/transit\/(keys|encrypt|decrypt)\/([^/?]+)$/.exec(req.url ?? '');
    if (req.method !== 'POST' || m === null) throw new HttpFailure(404, 'not found');
    if (!authorized(req)) throw new HttpFailure(403, 'permission denied');
    const [, op, name] = m as unknown as [string, string, string];
    const body = await readBody(req);
    if (op === 'keys') {
      if (createTransitKey(options.dir, name)) options.log(`kms: created key ${name}`);
      res.writeHead(204).end();
      return;
    }
    const key = readKey(options.dir, name);
    const data =
      op === 'encrypt'
        ? { ciphertext: encrypt(key, name, base64Field(body, 'plaintext')) }
        : { plaintext: decrypt(key, name, body['ciphertext']).toString('base64') };
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ data }));
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      const status = err instanceof HttpFailure ? err.status : 500;
      const message = err instanceof HttpFailure ? err.message : 'internal error';
      if (res.headersSent) return void res.destroy();
      const close = status === 413 ? { connection: 'close' } : {};
      res
        .writeHead(status, { 'content-type': 'application/json', ...close })
        .end(JSON.stringify({ errors: [message] }), () => {
          if (status === 413) req.destroy();
        });
    });
  });
  server.requestTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}`,
    server,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
