/** Control-plane operations, thin, shared by the CLI and the daemons. */
export * from './codec_files.js';
