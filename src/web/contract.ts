/**
 * What the API server hands the dashboard for each request outside /api/ (src/api/http): the
 * principal, the API itself in-process, the session cookie's login and logout, and the event hub.
 * The types are the API server's own.
 */
export type { ApiClientLike, Principal, WebContext, WebMount } from '../api/index.js';
