/**
 * What every cairnctl command receives: where to print, how to get a codec, where secrets come
 * from, and how to start background work. Tests pass their own; bin/cairnctl.ts the real ones.
 */
import type { CodecFactory } from './codec_files.js';
import type { SecretSource } from '../api/index.js';
import { type Io, reportError } from './output.js';

export interface CliContext {
  readonly io: Io;
  readonly codec: CodecFactory;
  readonly secrets: SecretSource;
  /** Directory holding package.json, wasm/ and scripts/. */
  readonly repoRoot: string;
  /**
   * Starts `cairnctl gc` with the same etcd options as a detached process that outlives this
   * command, and returns its pid (null when it could not be started).
   */
  startBackgroundGc(argv: Record<string, unknown>): number | null;
  /** Set by a handler that failed; the entry point exits with it. */
  exitCode: number;
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
