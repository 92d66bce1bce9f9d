/**
 * The control-plane HTTP API (docs/api.md): a JSON API under /api/v1 with bearer-token and mTLS
 * authentication, an audit log, an OpenAPI document generated from its route table, and the
 * mount point the dashboard (src/web) hangs from. Operations of other layers arrive as ports.
 */
export {
  startApiServer,
  matchRoute,
  cookieValue,
  type ApiServer,
  type ApiServerOptions,
  type ApiClientLike,
  type ApiResponse,
  type WebMount,
  type WebContext,
} from './server.js';
export type { ApiPorts, RepairSummary } from './ports.js';
export {
  TokenStore,
  checkRole,
  checkTokenName,
  parseToken,
  roles,
  type Principal,
  type Role,
  type TokenRecord,
} from './tokens.js';
export { EventHub, type ApiEvent } from './events.js';
export { AuditLog, type AuditEntry } from './audit.js';
export { HttpError, errorResponse, statusForCode, type ErrorBody } from './errors.js';
export { routes, type Route } from './routes.js';
export { openApiDocument, apiPrefix, sessionCookie, operationId } from './openapi.js';
export { DocumentValidator, describeErrors, pointer } from './validate.js';
export { IoRing, type FrontendStatsRecord, type IoCounters } from './io_stats.js';
export { volumeInfo, snapshotRows, type VolumeInfo, type SnapshotRow } from './views.js';
export { ApiClient, createVolumeBody } from './client.js';
export * from './limits.js';
