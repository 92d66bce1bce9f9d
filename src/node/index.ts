/** The storage-node daemon (cairnd): shard API server, etcd registration, node listing. */
export { parseDaemonArgs, drainMsDefault, type DaemonConfig, type ParsedDaemonArgs } from './args.js';
export { runDaemon, type DaemonIo } from './daemon.js';
export { NodeRegistration, aliveLeaseTtlS, type RegistrationOptions } from './registration.js';
export { ShardServer, bodyBytesInFlightMaxDefault, type ShardServerOptions } from './server.js';
