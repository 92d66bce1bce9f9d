/** The write-back cache: one per volume, shared by all its connections. */
export * from './limits.js';
export * from './write_back.js';
export * from './shared_budget.js';
