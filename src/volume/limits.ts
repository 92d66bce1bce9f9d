/**
 * The volume engine's bounds and timings, with units and the reason for each value.
 */

/** Extents encoded and stored at once by one persist(): bounds codec memory and sockets. */
export const persistExtentsInFlightMax = 4;
/** A range read slower than this also starts a degraded read from any k shards. */
export const shardReadHedgeMsDefault = 2_000;
/** Superseded shards live this long after the commit that replaced them. */
export const oldShardGraceMsDefault = 30_000;
/** Superseded shard keys waiting for deletion; past this, older ones are left for gc. */
export const pendingDeletesMax = 100_000;
/** Degraded extents remembered for repair. */
export const degradedExtentsMax = 10_000;
/**
 * Range reads one engine decodes from shards in its zone at once; past this a read goes to the
 * data shard in the other zone instead of waiting. Each decode holds codec memory for k+m windows
 * of at most a shard: at 4+2 with 4 MiB extents, 8 whole-extent reads hold 48 MiB of the codec
 * pool's 256 MiB default.
 */
export const zoneDecodesInFlightMax = 8;
