/**
 * The local development cluster behind `cairnctl dev up|status|down` and `make demo`: etcd, storage
 * nodes and a frontend as real processes on loopback, each stopped by its pid. The test harness
 * imports from here too: the cluster.json type (DevCluster), the etcd command line (etcdArgs) and
 * the process helpers (freePort, waitFor, the pid checks and stops), so each exists once.
 */
export * from './cluster.js';
export * from './etcd.js';
export * from './processes.js';
export * from './tls.js';
