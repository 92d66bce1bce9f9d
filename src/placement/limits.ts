/**
 * Bounds the placement layer keeps, unit last, each with its reason. They belong with the others
 * in core/limits.ts; they live here until that file's owner moves them.
 */
import { assert, shardCountMax } from '../core/index.js';

/**
 * Targets in one topology. Placing one extent costs about (k+m) x (targets in a zone) hash draws
 * of ~60 ns each; at this bound the worst case (255 shards in one zone of 4096 targets, about a
 * million draws) takes ~60 ms, while real clusters have tens to hundreds of targets (12 targets,
 * 4+2: ~4 us per extent).
 */
export const topologyTargetsMax = 4096;

/** Names listed in one line of a refusal or an explanation before "and N more". */
export const reasonNamesMax = 8;

/** Higher-ranked targets an explanation lists per shard when saying why they were passed over. */
export const explainPassedOverMax = 4;

assert(topologyTargetsMax >= shardCountMax, 'a topology must be able to hold every shard of the widest profile');
assert(reasonNamesMax >= 1 && explainPassedOverMax >= 1);
