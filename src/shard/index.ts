/** Shard stores: where shard bytes live (memory, local directory, storage node, S3). */
export * from './format.js';
export * from './keys.js';
export * from './limits.js';
export { MemoryShardStore } from './memory_store.js';
export { FileShardStore, InlineReads, keySegmentCharsMax } from './file_store.js';
export type { FileShardStoreOptions, FramedRead, StoreUsage } from './file_store.js';
export * from './net.js';
export * from './node_store.js';
export * from './s3_store.js';
export * from './journal_client.js';
export * from './listing.js';
export * from './tls.js';
