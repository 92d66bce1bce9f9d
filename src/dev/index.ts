/**
 * The local development cluster behind `cairnctl dev up|status|down` and `make demo`: etcd, storage
 * nodes and a frontend as real processes on loopback, each stopped by its pid. The test harness
 * uses the same process helpers and etcd command line.
 */
export * from './cluster.js';
