/**
 * What every cairnctl command receives: where to print and how to get a codec. Tests pass their
 * own; bin/cairnctl.ts passes the real ones.
 */
import type { CodecFactory } from '../api/index.js';
import { type Io, reportError } from './output.js';

export interface CliContext {
  readonly io: Io;
  readonly codec: CodecFactory;
  /** Set by a handler that failed; the entry point exits with it. */
  exitCode: number;
  /** Directory holding package.json, wasm/ and scripts/. */
  readonly repoRoot: string;
}

/** Wraps a handler so a thrown error becomes one line on stderr and an exit code. */
export function withErrors(ctx: CliContext, handler: (argv: Record<string, unknown>) => Promise<void>) {
  return async (argv: Record<string, unknown>): Promise<void> => {
    try {
      await handler(argv);
    } catch (err) {
      ctx.exitCode = reportError(ctx.io, err);
    }
  };
}
