/**
 * `cairnctl bench codec`: the codec benchmark next to its peers (@subspace's wasm codec, ISA-L).
 * It ships with the CLI, not with scripts/bench, because users run it on their own hardware to
 * choose a profile and thread count; the cluster benchmarks that need a whole test bed live in
 * scripts/bench/.
 */
export * from './codec.js';
export * from './isal.js';
