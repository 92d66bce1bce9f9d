/**
 * The web dashboard: server-rendered pages over the HTTP API, served by `cairnctl api serve` at
 * `/` (docs/dashboard.md). The API server passes `dashboard()` as its `web` mount.
 */
export { dashboard, contentSecurityPolicy, type DashboardOptions } from './dashboard.js';
