/** The storage-node daemon (cairnd): shard API server, etcd registration, node listing. */
export { parseDaemonArgs, drainMsDefault, type DaemonConfig, type ParsedDaemonArgs } from './args.js';
export { runDaemon, type DaemonIo } from './daemon.js';
export { NodeRegistration, aliveLeaseTtlS, type RegistrationOptions } from './registration.js';
export {
  ShardServer,
  sharedPutBudget,
  type ShardServerOptions,
  type ShardServerStats,
  type ShardRequestDone,
} from './server.js';
export { JournalServer, type JournalServerOptions } from './journal_server.js';
export { JournalStore, journalDirName } from './journal_store.js';
export {
  checkNodeLimits,
  nodeConnectionRequestsPipelinedMax,
  nodeLimitNames,
  nodeLimitsDefault,
  type NodeLimitName,
  type NodeLimits,
} from './limits.js';
