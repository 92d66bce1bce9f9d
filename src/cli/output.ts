/**
 * How cairnctl speaks: text for people, one JSON document (or one per line for streams) with
 * --json for scripts, and errors as one line on stderr with a non-zero exit. Exit codes: 2 for a
 * bad request (usage, arguments, input files), 1 for an operating failure.
 */
import { CairnError, InvalidArgumentError, errorMessage } from '../core/index.js';

export interface Io {
  out(line: string): void;
  err(line: string): void;
}

export const processIo: Io = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

/** Prints `value` as JSON when asked, else the text lines from `text`. */
export function emit<T>(io: Io, json: boolean, value: T, text: (value: T) => readonly string[]): void {
  if (json) io.out(JSON.stringify(value));
  else for (const line of text(value)) io.out(line);
}

/** Exit code for an error: 2 for bad input, 1 for everything else. */
export function exitCodeFor(err: unknown): number {
  return err instanceof InvalidArgumentError || (err instanceof CairnError && err.code === 'EINVAL') ? 2 : 1;
}

export function reportError(io: Io, err: unknown): number {
  io.err(`cairnctl: ${errorMessage(err).split('\n')[0]}`);
  return exitCodeFor(err);
}
