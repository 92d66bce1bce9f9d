/**
 * A redundancy profile "K+M": K data shards and M parity shards per extent. Any K of the K+M
 * shards rebuild the extent, so a profile survives the loss of any M shards at (K+M)/K times the
 * raw size: 4+2 survives two losses at 1.5x.
 */
import { InvalidArgumentError } from './errors.js';
import { dataShardsMin, shardCountMax } from './limits.js';

export interface Profile {
  /** Data shards: systematic, shard i holds bytes [i*shardBytes, (i+1)*shardBytes) of the extent. */
  readonly k: number;
  /** Parity shards. */
  readonly m: number;
}

/** Parses "K+M" (e.g. "4+2") and checks 1 <= K, 0 <= M, K + M <= 255. */
export function parseProfile(text: string): Profile {
  const match = /^\s*(\d+)\s*\+\s*(\d+)\s*$/.exec(text);
  if (!match) throw new InvalidArgumentError(`Invalid profile "${text}": expected K+M such as 4+2`);
  return checkProfile({ k: Number(match[1]), m: Number(match[2]) }, text);
}

/** Checks the bounds of a profile and returns it; throws InvalidArgumentError with the reason. */
export function checkProfile(profile: Profile, text = formatProfile(profile)): Profile {
  const { k, m } = profile;
  if (!Number.isSafeInteger(k) || k < dataShardsMin) {
    throw new InvalidArgumentError(`Invalid profile "${text}": K must be at least ${dataShardsMin}`);
  }
  if (!Number.isSafeInteger(m) || m < 0) {
    throw new InvalidArgumentError(`Invalid profile "${text}": M must be 0 or more`);
  }
  if (k + m > shardCountMax) {
    throw new InvalidArgumentError(
      `Invalid profile "${text}": K+M is ${k + m}, at most ${shardCountMax} shards are possible`,
    );
  }
  return { k, m };
}

export function formatProfile(profile: Profile): string {
  return `${profile.k}+${profile.m}`;
}
