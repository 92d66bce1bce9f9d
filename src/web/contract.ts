/**
 * What the API server hands the dashboard for each request outside /api/ (src/api/http): the
 * principal, the API itself in-process, the session cookie's login and logout, and the event hub.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

export interface Principal {
  readonly id: string;
  readonly name: string;
  readonly role: 'admin' | 'viewer';
  readonly via: 'token' | 'mtls';
}

export interface ApiClientLike {
  request(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }>;
}

export interface EventHubLike {
  subscribe(listener: (event: { readonly type: string; readonly at: string }) => void): () => void;
}

export interface WebContext {
  readonly principal: Principal | undefined;
  readonly api: ApiClientLike;
  login(token: string, res: ServerResponse): Promise<Principal | undefined>;
  logout(res: ServerResponse): void;
  readonly events: EventHubLike;
}

export interface WebMount {
  handle(req: IncomingMessage, res: ServerResponse, ctx: WebContext): Promise<void>;
}
