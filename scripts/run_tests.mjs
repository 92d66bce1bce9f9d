#!/usr/bin/env node
// Runs the whole compiled test suite (dist/test/**/*.test.js) with mocha and ends with the one
// line CI reads: "N passed, N failed" (", N skipped" when some are pending). Exits non-zero when
// anything failed or when no test ran, so an empty suite can never look green.
// After the tests, one more check, counted in that line: "the suite leaves no process behind".
// Every process the run starts inherits a token in CAIRN_RUN_MARKER (test/harness/leftovers.ts),
// so one still running at the end is found even if it detached and was re-parented to init; it
// is reported with its command line and stopped by pid.
// Usage: node scripts/run_tests.mjs [--grep TEXT] [FILES...]
import Mocha from 'mocha';
import { readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  describeLeftovers,
  newRunMarker,
  reapLeftovers,
  runMarkerVariable,
  withRunMarker,
} from '../dist/test/harness/leftovers.js';

// Set before any test file loads, so every process any test starts inherits it.
const marker = newRunMarker('tests');
process.env[runMarkerVariable] = withRunMarker(marker)[runMarkerVariable];
// A daemon stopped by the last hook may still be flushing when the run ends, and `cairnctl gc`,
// which `volume delete` starts in the background, outlives its command by design: each gets this
// long to exit before it counts as left behind.
const leftoverExitDeadlineMs = 15_000;

// The pinned AWS SDK warns on every client that Node 20 support ends in 2027; we know (see
// docs/dependencies.md), and the warning would bury test output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

const args = process.argv.slice(2);
let grep;
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--grep') grep = args[++i];
  else files.push(resolve(args[i]));
}

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...walk(path));
    else if (name.endsWith('.test.js')) out.push(path);
  }
  return out;
}

// Unit tests first: they are fast and say the most when something is broken.
const order = ['unit', 'model', 'sim', 'integration'];
const rank = (f) => {
  const i = order.findIndex((o) => f.includes(`/test/${o}/`));
  return i === -1 ? order.length : i;
};
const specs = files.length > 0 ? files : walk(resolve('dist/test')).sort((a, b) => rank(a) - rank(b));

const mocha = new Mocha({ reporter: 'spec', timeout: 120_000, slow: 2_000, ...(grep ? { grep } : {}) });
for (const f of specs) mocha.addFile(f);
await mocha.loadFilesAsync();
const runner = mocha.run(async (failures) => {
  const { passes = 0, pending = 0 } = runner.stats ?? {};
  const left = await reapLeftovers(marker, { exitDeadlineMs: leftoverExitDeadlineMs });
  const check = 'the suite leaves no process behind';
  if (left.length === 0) console.log(`\n  ✔ ${check}\n`);
  else {
    console.log(`\n  ✖ ${check}: ${left.length} still running after the run, stopped by pid now:`);
    for (const line of describeLeftovers(left)) console.log(`      ${line}`);
    console.log('');
  }
  const passed = passes + (left.length === 0 ? 1 : 0);
  const failed = failures + (left.length === 0 ? 0 : 1);
  const skipped = pending > 0 ? `, ${pending} skipped` : '';
  console.log(`${passed} passed, ${failed} failed${skipped}`);
  process.exitCode = failed > 0 || passes === 0 ? 1 : 0;
  // Worker pools or sockets a test forgot would keep the process alive; the verdict is already
  // printed, so leave promptly rather than hang CI.
  setTimeout(() => process.exit(process.exitCode), 2000).unref();
});
