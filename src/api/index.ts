/** Control-plane operations, thin, shared by the CLI and the daemons. */
export * from './bench_codec.js';
export * from './bench_isal.js';
export * from './cluster.js';
export * from './codec_files.js';
export * from './dev_cluster.js';
export * from './frontend.js';
export * from './health.js';
export * from './stores.js';
export * from './repair.js';
export * from './volumes.js';
