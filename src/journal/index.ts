/**
 * The write-ahead journal: the record format (pure), the wire protocol between writers and
 * storage nodes (pure), the replica port, and the replicated journal over r replicas. The node
 * side lives in src/node/ (journal_store.ts, journal_server.ts); the client of one node in
 * src/shard/journal_client.ts. docs/journal.md describes the whole.
 */
export * from './errors.js';
export * from './limits.js';
export type { JournalReplica } from './ports.js';
export * from './record.js';
export * from './replicated.js';
export * from './wire.js';
