/** `cairnctl bench codec`: placeholder filled in below. */
import type { Argv } from 'yargs';
import type { CliContext } from './context.js';

export function benchCommand(_ctx: CliContext) {
  return {
    command: 'bench <what>',
    describe: 'Benchmarks that print one JSON line per result',
    builder: (y: Argv) => y,
    handler: () => undefined,
  };
}
