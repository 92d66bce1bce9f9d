/**
 * Control-plane operations shared by the CLI and the services: cluster init and topology,
 * volumes, health, and the shard stores of registered targets. No long-running service lives
 * here: the frontend is in frontend/, repair and gc in repair/, the dev cluster in dev/.
 */
export * from './cluster.js';
export * from './health.js';
export * from './nodes.js';
export * from './stores.js';
export * from './volumes.js';
export * from './volume_maps.js';
export * from './snapshots.js';
export * from './policy_rules.js';
export * from './policies.js';
export * from './http/index.js';
