#!/usr/bin/env node
// Runs the NBD socket fuzz test (test/integration/nbd_fuzz.test.ts) for many seeds, each in its
// own mocha process, and stops at the first failure, printing its seed (the test's own message
// says how to replay it). One JSON line per seed on stdout; the test's output on failure.
// Usage: node scripts/fuzz_nbd.mjs [--seeds N] [--first-seed S] [--frames M]   (needs `make build`)
import { spawn } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const testFile = join(repoRoot, 'dist/test/integration/nbd_fuzz.test.js');

function usage(message) {
  console.error(`fuzz_nbd: ${message}`);
  console.error('usage: node scripts/fuzz_nbd.mjs [--seeds N] [--first-seed S] [--frames M]');
  process.exit(2);
}

const o = { seeds: 10, firstSeed: Date.now() % 1_000_000_000, frames: 100_000 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const n = Number(argv[++i]);
  if (!Number.isSafeInteger(n) || n < 0) usage(`${a} needs a whole number`);
  if (a === '--seeds') o.seeds = n;
  else if (a === '--first-seed') o.firstSeed = n;
  else if (a === '--frames') o.frames = n;
  else usage(`unknown option ${a}`);
}

function runSeed(seed) {
  return new Promise((resolvePromise, reject) => {
    const started = Date.now();
    const child = spawn(process.execPath, [join(repoRoot, 'scripts/run_tests.mjs'), testFile], {
      cwd: repoRoot,
      env: { ...process.env, CAIRN_NBD_FUZZ_SEED: String(seed), CAIRN_NBD_FUZZ_FRAMES: String(o.frames) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (c) => (output += c.toString()));
    child.stderr.on('data', (c) => (output += c.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolvePromise({ code, output, ms: Date.now() - started }));
  });
}

for (let seed = o.firstSeed; seed < o.firstSeed + o.seeds; seed++) {
  const { code, output, ms } = await runSeed(seed);
  const summary = output.match(/nbd fuzz seed \d+: (.*)/)?.[1];
  console.log(
    JSON.stringify({ fuzz: 'nbd', seed, frames: o.frames, ok: code === 0, ms, ...(summary ? { summary } : {}) }),
  );
  if (code !== 0) {
    process.stderr.write(output);
    console.error(`fuzz_nbd: seed ${seed} failed`);
    process.exit(1);
  }
}
