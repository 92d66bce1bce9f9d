/** The volume engine and its ports, with in-memory twins for tests and simulation. */
export * from './engine.js';
export * from './memory_device.js';
export * from './memory_twins.js';
export type * from './ports.js';
