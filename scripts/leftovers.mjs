#!/usr/bin/env node
// Checks that a run left no process behind: lists the processes whose environment carries TOKEN
// in CAIRN_RUN_MARKER (test/harness/leftovers.ts says how the marker is inherited), after giving
// exiting ones a deadline to go, and stops each by pid. Prints nothing and exits 0 when there is
// none; otherwise one line per process on stderr, and exits 1. scripts/demo.sh ends with it.
// Usage: node scripts/leftovers.mjs TOKEN   (needs `make build`: it runs the compiled harness)
import { describeLeftovers, reapLeftovers } from '../dist/test/harness/leftovers.js';

const [token, ...rest] = process.argv.slice(2);
if (token === undefined || token === '' || rest.length > 0) {
  console.error('usage: node scripts/leftovers.mjs TOKEN');
  process.exit(2);
}
const left = await reapLeftovers(token);
for (const line of describeLeftovers(left)) console.error(`left behind, now stopped: ${line}`);
process.exitCode = left.length === 0 ? 0 : 1;
