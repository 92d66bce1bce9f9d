// Runs the map-page simulator (src/sim/map_sim.ts) over many seeds, or with a planted bug.
// Usage:
//   node scripts/sim_map.mjs [--seeds N] [--base N] [--steps N] [--bug NAME]
// NAME: map-swap-before-durable, map-gc-reachable, map-gc-ignores-snapshots, clone-reads-parent or
// shrink-keeps-tail (a resize is rarer: give it --steps 400).
// Without --bug every seed must pass; with one, every seed must catch it (exit 1 otherwise).
// Needs a build first (make build): it imports from dist/.
import { mapBugs, runMapSimulation } from '../dist/src/sim/index.js';

const args = Object.fromEntries(
  process.argv
    .slice(2)
    .map((a, i, all) => (a.startsWith('--') ? [a.slice(2), all[i + 1]] : undefined))
    .filter((x) => x !== undefined),
);
for (const k of Object.keys(args))
  if (!['seeds', 'base', 'steps', 'bug'].includes(k)) {
    console.error(`unknown option --${k}`);
    process.exit(2);
  }
if (args.bug !== undefined && !mapBugs.includes(args.bug)) {
  console.error(`--bug must be one of ${mapBugs.join(', ')}`);
  process.exit(2);
}
const seeds = Number(args.seeds ?? process.env.SEEDS ?? 20);
const base = Number(args.base ?? 1);
const started = Date.now();
let passed = 0;
let failed = 0;
for (let seed = base; seed < base + seeds; seed++) {
  const r = await runMapSimulation(seed, {
    ...(args.steps === undefined ? {} : { steps: Number(args.steps) }),
    ...(args.bug === undefined ? {} : { bug: args.bug }),
  });
  const good = args.bug === undefined ? r.ok : !r.ok;
  if (good) passed += 1;
  else {
    failed += 1;
    console.log(
      args.bug === undefined
        ? `seed ${seed} FAILED: ${r.failure}`
        : `seed ${seed} did not catch ${args.bug} (${r.steps} steps, ${r.commits} commits)`,
    );
  }
}
const what = args.bug === undefined ? 'map seeds' : `map seeds catching ${args.bug}`;
console.log(
  `${passed} passed, ${failed} failed (${seeds} ${what} from ${base}, ${((Date.now() - started) / 1000).toFixed(1)} s)`,
);
process.exit(failed === 0 ? 0 : 1);
