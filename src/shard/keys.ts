/**
 * Shard keys. Every store validates keys at its edge with checkShardKey(), so a key can never
 * escape a directory, inject a URL path, or address another bucket's objects.
 */
import { InvalidArgumentError } from '../core/index.js';

export const shardKeyCharsMax = 512;
const keyPattern = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

/** Throws InvalidArgumentError unless `key` is 1-512 chars of [A-Za-z0-9._/-] with no '.' or '..' segment. */
export function checkShardKey(key: string): string {
  if (
    key.length === 0 ||
    key.length > shardKeyCharsMax ||
    !keyPattern.test(key) ||
    key.split('/').some((s) => s === '.' || s === '..')
  ) {
    throw new InvalidArgumentError(
      `Invalid shard key "${key.slice(0, 80)}": use 1-${shardKeyCharsMax} characters of A-Z a-z 0-9 . _ - separated by '/'`,
    );
  }
  return key;
}

/** Same rules for list() prefixes, which may be empty or end with '/'. */
export function checkShardPrefix(prefix: string): string {
  if (prefix === '') return prefix;
  checkShardKey(prefix.endsWith('/') ? prefix.slice(0, -1) : prefix);
  return prefix;
}
