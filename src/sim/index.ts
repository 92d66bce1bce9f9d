/**
 * The seeded simulator: a deterministic world (targets in zones with faults, an extent map with
 * a lock, simulated time, the real placer, codec, volume engine and write-back cache) driven by a
 * seeded workload and checked against a plain Uint8Array model; with a simulated replicated
 * journal (sim_journal.ts) on most seeds. runSimulation(seed) is the entry;
 * scripts/sim.mjs runs many seeds and replays one; test/sim runs a few in `make test`.
 */
export { runSimulation, formatFailure, replayCommand, stepsDefault, faultRateDefault } from './simulation.js';
export type { SimulationOptions, SimulationResult, SimulationFailure } from './simulation.js';
export { plantedBugs, type PlantedBug } from './planted_bugs.js';
export { Prng } from './prng.js';
export { SimClock, ProcessClock } from './sim_clock.js';
export { VolumeModel, ExtentStates, judgeFailure } from './checker.js';
export { GatedPool, KernelCodec, type SimCodec } from './codec_gate.js';
export { World, configFromSeed, describeConfig, type WorldConfig } from './world.js';
export {
  SimJournal,
  SimJournalNode,
  SimJournalWriter,
  chooseJournalNodes,
  type JournalBug,
  type JournalEnv,
  type SimJournalConfig,
  type SimJournalLayout,
} from './sim_journal.js';
export * from './memory_device.js';
export * from './memory_twins.js';
export * from './memory_journal.js';
export { runMapSimulation, mapBugs, type MapBug, type MapSimResult } from './map_sim.js';
