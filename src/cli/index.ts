/** cairnctl: yargs commands, one file per noun. */
export { runCli } from './main.js';
export type { CliContext } from './context.js';
export { processIo, type Io } from './output.js';
