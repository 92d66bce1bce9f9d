/**
 * The trace of one simulation: every operation, fault, commit and engine log line, in order.
 * It is hashed as it grows (two runs of one seed must give one hash), handed line by line to a
 * verbose logger when replaying, and its last lines are kept for the failure report.
 *
 * What it keeps true: nothing that differs between runs of one seed enters it (no wall-clock
 * times, no buffer addresses); its memory is bounded by traceTailLinesMax however long the run.
 * What it leaves out: writing anywhere (the caller decides where a report goes).
 */
import { createHash, type Hash } from 'node:crypto';

/** Lines of the trace kept for a failure report. */
export const traceTailLinesMax = 120;

export class Trace {
  private readonly hash: Hash = createHash('sha256');
  private readonly tail: string[] = [];
  private digestText: string | undefined;
  lines = 0;

  constructor(private readonly log?: (line: string) => void) {}

  add(line: string): void {
    if (this.digestText !== undefined) return; // a dead process logging after the run ended
    this.hash.update(line);
    this.hash.update('\n');
    this.lines += 1;
    this.tail.push(line);
    if (this.tail.length > traceTailLinesMax) this.tail.shift();
    this.log?.(line);
  }

  /** The hash of every line so far; the trace takes no more lines afterwards. */
  digest(): string {
    this.digestText ??= this.hash.digest('hex');
    return this.digestText;
  }

  /** The last lines, oldest first. */
  lastLines(): string[] {
    return [...this.tail];
  }
}
