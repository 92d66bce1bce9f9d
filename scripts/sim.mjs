#!/usr/bin/env node
// Runs the seeded simulator (src/sim) over many seeds, or replays one with its full trace.
//
//   node scripts/sim.mjs [--seeds N] [--base N] [--steps N] [--codec kernel|pool] [--bug NAME] [--clocked-timers]
//   node scripts/sim.mjs --seed N [--steps N] [--codec kernel|pool] [--bug NAME] [--clocked-timers]
//
// Many seeds: SEEDS (env or --seeds, default 100) seeds from BASE (env or --base, default 1);
// one JSON line per failing seed, then "N passed, N failed"; exits 1 when any seed failed.
// One seed (--seed): prints every trace line as it happens and the verdict; exits 1 on failure.
// The codec is the wasm kernel on this thread by default; --codec pool codes on the real
// worker-thread pool (one trace either way: the simulator releases completions in order).
// --bug plants a bug (flip-read-byte, skip-flush, skip-end-to-end-check; and on seeds with a journal ack-after-r-minus-1,
// replay-without-epoch-check, reuse-failed-lsn, attach-reuses-published-lsn,
// attach-keeps-old-segments) to see the checker fail; --clocked-timers simulates read hedging and
// flush retries, for code whose timers run on the injected Clock.
// Needs a build first (make build): it imports from dist/.
import { CodecPool } from '../dist/src/codec/index.js';
import { formatFailure, runSimulation } from '../dist/src/sim/index.js';

const flags = new Set(['clocked-timers']);

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const name = a.slice(2);
    if (flags.has(name)) {
      out[name] = true;
      continue;
    }
    const value = argv[i + 1];
    if (value === undefined || value.startsWith('--')) throw new Error(`${a} needs a value`);
    out[name] = value;
    i++;
  }
  return out;
}

function intOf(text, what) {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${what} must be a non-negative integer, got ${text}`);
  return n;
}

let args;
try {
  args = parseArgs(process.argv.slice(2));
  for (const k of Object.keys(args)) {
    if (!['seeds', 'base', 'seed', 'steps', 'codec', 'bug', 'clocked-timers'].includes(k))
      throw new Error(`unknown option --${k}`);
  }
} catch (err) {
  console.error(`sim: ${err.message}`);
  process.exit(2);
}

const steps = args.steps !== undefined ? intOf(args.steps, '--steps') : undefined;
const codecName = args.codec ?? 'kernel';
if (codecName !== 'kernel' && codecName !== 'pool') {
  console.error(`sim: --codec must be kernel or pool, got ${codecName}`);
  process.exit(2);
}
const pool = codecName === 'pool' ? await CodecPool.start({ threads: 2, memoryBytes: 64 * 1024 * 1024 }) : undefined;
const options = {
  ...(steps !== undefined ? { steps } : {}),
  ...(pool !== undefined ? { pool } : {}),
  ...(args.bug !== undefined ? { bug: args.bug } : {}),
  ...(args['clocked-timers'] ? { clockedTimers: true } : {}),
};

try {
  if (args.seed !== undefined) {
    const seed = intOf(args.seed, '--seed');
    const result = await runSimulation(seed, { ...options, log: (line) => console.log(line) });
    const { failure, ...summary } = result;
    console.log(JSON.stringify(summary));
    // The trace above ends with the failure and the replay command.
    if (!result.ok) console.log(`FAILED at step ${failure.step}: ${failure.message}`);
    process.exitCode = result.ok ? 0 : 1;
  } else {
    const seeds = intOf(args.seeds ?? process.env.SEEDS ?? '100', 'SEEDS');
    const base = intOf(args.base ?? process.env.BASE ?? '1', 'BASE');
    let passed = 0;
    let failed = 0;
    const started = performance.now();
    for (let seed = base; seed < base + seeds; seed++) {
      const result = await runSimulation(seed, options);
      if (result.ok) {
        passed++;
        continue;
      }
      failed++;
      const f = result.failure;
      console.log(JSON.stringify({ seed, step: f.step, message: f.message, replay: f.replay, config: result.config }));
      if (process.env.SIM_VERBOSE) console.error(formatFailure(result));
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    console.log(`${passed} passed, ${failed} failed (${seeds} seeds from ${base}, ${seconds} s)`);
    process.exitCode = failed > 0 ? 1 : 0;
  }
} finally {
  await pool?.close();
}
