/**
 * API tokens: `cairn_<id>_<secret>`, where id is 12 hex digits (the etcd key, so a check is one
 * read) and secret 32 random bytes in base64url. etcd holds only `{id, name, role, hash,
 * createdAt}` at `cairn/v1/api-tokens/<id>`, hash = SHA-256 of "<id>:<secret>" in hex: someone
 * who reads etcd cannot call the API with what they read.
 *
 * What it keeps true: the secret is shown once, by create(); comparisons of hashes take the same
 * time whatever they hold; a revoked token (its key deleted) fails its next request.
 * What it leaves out: expiry (revoke instead) and scopes finer than the two roles.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { CairnError, InvalidArgumentError } from '../../core/index.js';
import { NotFoundError, keys, type EtcdMeta } from '../../meta/index.js';
import { apiTokensMax } from './limits.js';

export type Role = 'admin' | 'viewer';
export const roles: readonly Role[] = ['admin', 'viewer'];

/** Who made a request: a token's name or a client certificate's CN, and what it may do. */
export interface Principal {
  /** The token id, or `cn:<CN>` for a client certificate. */
  readonly id: string;
  readonly name: string;
  readonly role: Role;
  readonly via: 'token' | 'mtls';
}

export interface TokenRecord {
  readonly id: string;
  readonly name: string;
  readonly role: Role;
  /** SHA-256 of "<id>:<secret>", hex. */
  readonly hash: string;
  readonly createdAt: string;
}

const tokenPattern = /^cairn_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;
const namePattern = /^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$/;

const hashOf = (id: string, secret: string): string => createHash('sha256').update(`${id}:${secret}`).digest('hex');

export function checkRole(text: string): Role {
  if (!(roles as readonly string[]).includes(text))
    throw new InvalidArgumentError(`Invalid role "${text}": use admin or viewer`);
  return text as Role;
}

export function checkTokenName(text: string): string {
  if (!namePattern.test(text))
    throw new InvalidArgumentError(
      `Invalid token name "${text}": 1 to 64 letters, digits, spaces and . _ @ -, starting with a letter or digit`,
    );
  return text;
}

/** Splits a presented token into id and secret, or undefined when it is not shaped like one. */
export function parseToken(token: string): { id: string; secret: string } | undefined {
  const m = tokenPattern.exec(token);
  return m === null ? undefined : { id: m[1] as string, secret: m[2] as string };
}

/** The tokens kept in etcd. */
export class TokenStore {
  constructor(private readonly meta: EtcdMeta) {}

  /** Makes a token; the returned `token` is the only copy of its secret. */
  async create(role: Role, name: string): Promise<{ token: string; record: TokenRecord }> {
    checkRole(role);
    checkTokenName(name);
    const existing = await this.meta.client.getAll().prefix(keys.apiTokensPrefix()).keys();
    if (existing.length >= apiTokensMax)
      throw new CairnError('ELIMIT', `Cannot create a token: ${apiTokensMax} exist already; revoke some first`);
    const id = randomBytes(6).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const record: TokenRecord = { id, name, role, hash: hashOf(id, secret), createdAt: new Date().toISOString() };
    const key = keys.apiToken(id);
    const done = await this.meta.client
      .if(key, 'Create', '==', 0)
      .then(this.meta.client.put(key).value(JSON.stringify(record)))
      .commit();
    if (!done.succeeded) throw new CairnError('EEXIST', `Token id ${id} exists already; run the command again`);
    return { token: `cairn_${id}_${secret}`, record };
  }

  async list(): Promise<Omit<TokenRecord, 'hash'>[]> {
    const all = await this.meta.client.getAll().prefix(keys.apiTokensPrefix()).strings();
    return Object.values(all)
      .map((text) => {
        const { hash: _hash, ...rest } = JSON.parse(text) as TokenRecord;
        void _hash;
        return rest;
      })
      .sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : 0));
  }

  async revoke(id: string): Promise<Omit<TokenRecord, 'hash'>> {
    if (!/^[0-9a-f]{12}$/.test(id)) throw new InvalidArgumentError(`Invalid token id "${id}": 12 hex digits`);
    const key = keys.apiToken(id);
    const text = await this.meta.client.get(key).string();
    if (text === null) throw new NotFoundError(`No API token with id ${id}`);
    await this.meta.client.delete().key(key).exec();
    const { hash: _hash, ...rest } = JSON.parse(text) as TokenRecord;
    void _hash;
    return rest;
  }

  /** The principal a presented token stands for, or undefined when it is unknown, revoked or wrong. */
  async verify(token: string): Promise<Principal | undefined> {
    const parsed = parseToken(token);
    if (parsed === undefined) return undefined;
    const text = await this.meta.client.get(keys.apiToken(parsed.id)).string();
    if (text === null) return undefined;
    const record = JSON.parse(text) as TokenRecord;
    const want = Buffer.from(record.hash, 'hex');
    const got = Buffer.from(hashOf(parsed.id, parsed.secret), 'hex');
    if (want.length !== got.length || !timingSafeEqual(want, got)) return undefined;
    return { id: record.id, name: record.name, role: record.role, via: 'token' };
  }
}
