/**
 * The frontend: a served volume. Attach (lock, lease, lock wait), live targets and placement, the
 * etcd extent-map adapter, the NBD export provider, and the assembled serving process.
 */
export * from './extent_map.js';
export * from './migrate.js';
export * from './journal.js';
export * from './limits.js';
export * from './live_placer.js';
export * from './live_targets.js';
export * from './provider.js';
export * from './serve.js';
export * from './transfer.js';
