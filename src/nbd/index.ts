/**
 * Cairn's NBD frontend: serves ExportProvider exports to NBD clients (the kernel, QEMU, nbdcopy,
 * fio, libnbd) over TCP and Unix sockets. What it supports and why: docs/nbd.md.
 *
 * Layers, each importable on its own for tests: wire.ts (pure encode/decode), validate.ts (pure
 * request checks), session.ts (per-connection state machine, no sockets), errors.ts (the one
 * error mapping), tls_config.ts (pure TLS flags and policy), tls_server.ts (the STARTTLS
 * handshake), server.ts (sockets).
 */
export { NbdServer, type NbdServerAddress, type NbdServerOptions } from './server.js';
export {
  Session,
  allocationContextId,
  allocationContextName,
  descriptorsOf,
  normalizeRuns,
  type SessionIo,
  type SessionOptions,
  type SessionPhase,
  type SessionTls,
} from './session.js';
export { errnoName, nbdErrorOf, type NbdErrorMapping } from './errors.js';
export {
  commandName,
  transmissionFlagsFor,
  validateRequest,
  type Checked,
  type Command,
  type TransmissionContext,
} from './validate.js';
export { ByteQueue } from './byte_queue.js';
export * as nbdTls from './tls_config.js';
export type { NbdTlsMode, NbdTlsOptions, TlsAllowList } from './tls_config.js';
export * as nbdLimits from './limits.js';
export { checkNbdLimits, type NbdLimitName, type NbdLimits } from './limits.js';
export * as nbdWire from './wire.js';
