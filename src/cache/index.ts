/** The write-back cache: one per volume, shared by all its connections. */
export * from './write_back.js';
