export * from './units.js';
export * from './kek.js';
export * from './pool.js';
export * from './cipher.js';
