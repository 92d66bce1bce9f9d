/** Repair, scrub, drain, rebalance and garbage collection: the services that keep data whole. */
export * from './census.js';
export * from './gc.js';
export * from './repair.js';
export * from './scrub.js';
export * from './map_pages.js';
export * from './snapshots.js';
