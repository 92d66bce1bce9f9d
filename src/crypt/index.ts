export * from './units.js';
export * from './kek.js';
export * from './pool.js';
export * from './cipher.js';
export * from './transit.js';
export * from './keys.js';
export * from './transit_server.js';
