/** Metadata: the etcd key schema and the store that keeps it (etcd, with deadlines). */
export * from './deadline.js';
export * from './limits.js';
export * from './errors.js';
export * from './etcd_meta.js';
export * from './schema.js';
export * from './etcd_credentials.js';
export * from './volume_keys.js';
