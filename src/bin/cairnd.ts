#!/usr/bin/env node
/**
 * cairnd entry point: parses the command line, runs the storage node, and exits with its code:
 * 0 after a clean stop, 2 for a bad argument or configuration (one line on stderr), 1 for an
 * operating failure such as etcd being unreachable. Exits explicitly, because the etcd client's
 * gRPC channel can keep the event loop alive after a failed start.
 */
import { CairnError, InvalidArgumentError, errorMessage } from '../core/index.js';
import { parseDaemonArgs, runDaemon, type DaemonIo } from '../node/index.js';

const io: DaemonIo = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

function exitCodeOf(err: unknown): number {
  return err instanceof InvalidArgumentError || (err instanceof CairnError && err.code === 'EINVAL') ? 2 : 1;
}

async function main(): Promise<number> {
  try {
    const parsed = await parseDaemonArgs(process.argv.slice(2), process.env);
    if (parsed.kind === 'print') {
      io.out(parsed.output);
      return 0;
    }
    return await runDaemon(parsed.config, io);
  } catch (err) {
    io.err(`cairnd: ${errorMessage(err).split('\n')[0]}`);
    return exitCodeOf(err);
  }
}

const code = await main();
// Let stdout and stderr drain before exiting.
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
