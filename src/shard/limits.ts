/** Bounds shared by the shard stores. */

/** list() returns at most this many keys by default... */
export const listLimitDefault = 1000;
/** ...and never more than this, whatever the caller asks: responses stay bounded. */
export const listLimitMax = 10_000;
