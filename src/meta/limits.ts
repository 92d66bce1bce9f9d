/**
 * The metadata layer's bounds and timings, with units and the reason for each value.
 */

/** etcd's default --max-txn-ops is 128; a commit of more extents is split into batches of this. */
export const extentsPerTxnMax = 100;
/** A lock holder that stops renewing loses the lock after this long. */
export const lockTtlSecondsDefault = 10;

/** Default time an etcd call may take before it is reported as unavailable. */
export const etcdCallTimeoutMsDefault = 5_000;
