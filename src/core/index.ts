/** Cairn's vocabulary: assertions, errors, ids, units, limits, checksums, profiles, ports. No I/O. */
export * from './assert.js';
export * from './binary.js';
export * from './budgets.js';
export * from './checksum.js';
export * from './clock.js';
export * from './errors.js';
export * from './extent_record.js';
export * from './failpoint.js';
export * from './ids.js';
export * from './inline_io.js';
export * from './limits.js';
export * from './ports.js';
export * from './profile.js';
export * from './units.js';
export * from './transport.js';
