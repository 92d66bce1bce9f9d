/** The volume engine and the ports it is built on. In-memory twins of the ports live in sim/. */
export * from './blockwise.js';
export * from './degraded.js';
export * from './engine.js';
export * from './limits.js';
export type * from './ports.js';
export * from './tree_map_store.js';
