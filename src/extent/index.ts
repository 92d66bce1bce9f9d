/** Extent arithmetic: volume offsets to extents to shard ranges, and dirty range sets. Pure. */
export * from './extent.js';
export * from './sparse_bytes.js';
export * from './byte_ranges.js';
export * from './map_tree.js';
export * from './map_pages.js';
