/** Cairn's vocabulary: assertions, errors, units, limits, checksums, profiles. No I/O. */
export * from './assert.js';
export * from './checksum.js';
export * from './errors.js';
export * from './limits.js';
export * from './profile.js';
export * from './units.js';
