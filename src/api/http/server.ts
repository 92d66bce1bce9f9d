/**
 * The API server: one HTTP(S) listener for /api/v1 (the route table), /healthz, and, when given,
 * the dashboard's WebMount for every other path. Stateless but for caches: tokens, volumes and the
 * audit log live in etcd, so any number of replicas can serve one cluster.
 *
 * What it keeps true:
 * - Every request is authenticated before its route runs (bearer token, session cookie, or a
 *   client certificate signed by --tls-ca), and a viewer reaches GET routes only.
 * - Every POST, PATCH and DELETE under /api/ is audited, allowed or refused.
 * - A client gets JSON in one error shape, never a stack trace; a body over apiBodyBytesMax is
 *   refused (413) without being read whole; a request that does not arrive within
 *   apiRequestTimeoutMs is dropped; nothing a client sends can throw out of the handler.
 * - The dashboard's in-process calls (WebContext.api) go through dispatch() like HTTP ones: the
 *   same validation, roles and audit.
 * What it leaves out: rate limiting per client (a reverse proxy's job) and token expiry.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { CairnError, InvalidArgumentError, errorMessage } from '../../core/index.js';
import { keys, type EtcdMeta } from '../../meta/index.js';
import { AuditLog } from './audit.js';
import { errorResponse, HttpError } from './errors.js';
import { EventHub, watchNodes, type ApiEvent } from './events.js';
import { IoStats } from './io_stats.js';
import { Jobs } from './jobs.js';
import {
  apiBodyBytesMax,
  apiConnectionsMax,
  apiHeadersTimeoutMs,
  apiRequestTimeoutMs,
  apiTimeoutCheckMs,
} from './limits.js';
import { apiPrefix, openApiDocument, sessionCookie } from './openapi.js';
import type { ApiPorts } from './ports.js';
import { checkRoutes, routes, type Route, type ServerState } from './routes.js';
import { TokenStore, type Principal } from './tokens.js';
import { DocumentValidator, describeErrors, pointer } from './validate.js';

/** What the dashboard gets: one handler mounted at everything outside /api/ and /healthz. */
export interface WebMount {
  handle(req: IncomingMessage, res: ServerResponse, ctx: WebContext): Promise<void>;
}

/** A response of the API called in-process. */
export interface ApiResponse {
  readonly status: number;
  readonly body: unknown;
}

/** Calls the API as one principal: the same handlers, roles, validation and audit as over HTTP. */
export interface ApiClientLike {
  /** `path` under /api/v1 ('/volumes') or whole ('/api/v1/volumes?limit=5'). */
  request(method: string, path: string, body?: unknown): Promise<ApiResponse>;
}

export interface WebContext {
  /** From Authorization: Bearer, the session cookie, or the client certificate; undefined when none. */
  readonly principal: Principal | undefined;
  /** Calls the API in-process as `principal` (401 for every route but the public ones without one). */
  readonly api: ApiClientLike;
  /** Checks a token; on success sets the HttpOnly session cookie on `res` and returns its principal. */
  login(token: string, res: ServerResponse): Promise<Principal | undefined>;
  /** Clears the session cookie. */
  logout(res: ServerResponse): void;
  /** Changes made through the API and node transitions, for server-sent events. */
  readonly events: EventHub;
}

export interface ApiServerOptions {
  readonly meta: EtcdMeta;
  readonly listen: { readonly host: string; readonly port: number };
  /** PEM. With `ca`, clients may authenticate by a certificate it signed (its CN is the name). */
  readonly tls?: { readonly cert: string | Buffer; readonly key: string | Buffer; readonly ca?: string | Buffer };
  /** Certificate CNs that are admins; every other CN the CA signed is a viewer. */
  readonly mtlsAdmins?: readonly string[];
  readonly ports: ApiPorts;
  readonly web?: WebMount;
  /** Receives JSON lines: audit entries and failures. */
  readonly log: (line: string) => void;
  /** The version the OpenAPI document states. */
  readonly version?: string;
}

export interface ApiServer {
  /** host:port it listens on. */
  readonly address: string;
  /** http(s)://host:port */
  readonly url: string;
  close(): Promise<void>;
}

interface Matched {
  readonly route: Route;
  readonly params: Record<string, string>;
}

/** Finds the route for a path under /api/v1; `methods` lists what the path allows when none matches. */
export function matchRoute(
  table: readonly Route[],
  method: string,
  path: string,
): { matched?: Matched; methods: string[] } {
  const segments = path.split('/').slice(1);
  const methods: string[] = [];
  for (const route of table) {
    const want = route.path.split('/').slice(1);
    if (want.length !== segments.length) continue;
    const params: Record<string, string> = {};
    let ok = true;
    for (let i = 0; i < want.length && ok; i++) {
      const w = want[i] as string;
      const s = segments[i] as string;
      if (w.startsWith('{')) {
        let value: string;
        try {
          value = decodeURIComponent(s);
        } catch {
          ok = false;
          break;
        }
        if (value === '') ok = false;
        params[w.slice(1, -1)] = value;
      } else if (w !== s) ok = false;
    }
    if (!ok) continue;
    if (route.method === method) return { matched: { route, params }, methods };
    methods.push(route.method);
  }
  return { methods };
}

const isChange = (method: string | undefined): boolean => method !== 'GET' && method !== 'HEAD';

/**
 * True when a browser says the request comes from another site: Sec-Fetch-Site other than
 * same-origin or none, or an Origin whose host is not the one asked.
 */
export function crossSite(req: IncomingMessage): boolean {
  const site = req.headers['sec-fetch-site'];
  if (typeof site === 'string' && site !== 'same-origin' && site !== 'none') return true;
  const origin = req.headers.origin;
  if (origin === undefined || origin === 'null') return origin === 'null';
  try {
    return new URL(origin).host !== req.headers.host;
  } catch {
    return true;
  }
}

/** The value of one cookie in a Cookie header. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * Reads a body of at most apiBodyBytesMax bytes within apiRequestTimeoutMs: 413 past the size (the
 * rest is not read), 408 past the time (the connection is then closed).
 */
function readBody(req: IncomingMessage): Promise<string> {
  const declared = Number(req.headers['content-length'] ?? '0');
  if (Number.isFinite(declared) && declared > apiBodyBytesMax)
    return Promise.reject(
      new HttpError(413, 'ETOOLARGE', `Request body of ${declared} bytes: at most ${apiBodyBytesMax} are accepted`),
    );
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    const timer = setTimeout(() => {
      // The answer (408) closes the connection: what is still on its way is never read.
      req.removeAllListeners('data');
      reject(new HttpError(408, 'ETIMEDOUT', `The request body did not arrive within ${apiRequestTimeoutMs} ms`));
    }, apiRequestTimeoutMs);
    timer.unref();
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > apiBodyBytesMax) {
        clearTimeout(timer);
        req.removeAllListeners('data');
        req.resume();
        reject(new HttpError(413, 'ETOOLARGE', `Request body over ${apiBodyBytesMax} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(text)),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...headers,
  });
  res.end(text);
}

export async function startApiServer(options: ApiServerOptions): Promise<ApiServer> {
  checkRoutes(routes);
  const { meta, log } = options;
  const secure = options.tls !== undefined;
  const events = new EventHub();
  const audit = new AuditLog(meta, log);
  const io = new IoStats(meta, log);
  const jobs = new Jobs(events, log);
  const tokens = new TokenStore(meta);
  const mtlsAdmins = new Set(options.mtlsAdmins ?? []);
  const document = openApiDocument(routes, options.version ?? '1');
  const validator = new DocumentValidator(document);
  const state: ServerState = { events, audit, io, jobs, document: () => document };

  /** The principal of a certificate the CA signed, or undefined. */
  function certificatePrincipal(req: IncomingMessage): Principal | undefined {
    if (!secure || options.tls?.ca === undefined) return undefined;
    const socket = req.socket as TLSSocket;
    if (!socket.authorized) return undefined;
    const cn = socket.getPeerCertificate()?.subject?.CN;
    const name = Array.isArray(cn) ? cn[0] : cn;
    if (typeof name !== 'string' || name === '') return undefined;
    return { id: `cn:${name}`, name, role: mtlsAdmins.has(name) ? 'admin' : 'viewer', via: 'mtls' };
  }

  /**
   * Who is calling: a bearer token when one is given (a wrong one is refused, not passed over), else
   * the session cookie, else the client certificate.
   */
  async function authenticate(req: IncomingMessage): Promise<Principal | undefined> {
    const header = req.headers.authorization;
    if (header !== undefined) {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
      const p = m === null ? undefined : await tokens.verify(m[1] as string);
      if (p === undefined) throw new HttpError(401, 'EAUTH', 'The bearer token is unknown, revoked or malformed');
      return p;
    }
    const cookie = cookieValue(req.headers.cookie, sessionCookie);
    // A browser sends the cookie by itself: a change it asks for from another site is not taken as
    // the session's (SameSite=Strict already keeps the cookie from most such requests).
    if (cookie !== undefined && !(isChange(req.method) && crossSite(req))) {
      const p = await tokens.verify(cookie);
      if (p !== undefined) return p;
    }
    return certificatePrincipal(req);
  }

  const publishAudit = (entry: object): void => events.publish({ type: 'audit', ...entry } as ApiEvent);

  /**
   * Runs one API request: route, role, body, handler, audit. Never throws; the same for HTTP and
   * in-process calls.
   */
  async function dispatch(
    method: string,
    url: URL,
    principal: Principal | undefined,
    bodyText: () => Promise<string>,
    authError?: unknown,
  ): Promise<ApiResponse & { stream?: Route }> {
    const path = url.pathname.slice(apiPrefix.length) || '/';
    const changes = method !== 'GET' && method !== 'HEAD';
    let status = 500;
    let result: unknown;
    let summary = '';
    try {
      if (!url.pathname.startsWith(`${apiPrefix}/`))
        throw new HttpError(404, 'ENOTFOUND', `No API at ${url.pathname}: routes are under ${apiPrefix}/`);
      const { matched, methods } = matchRoute(routes, method === 'HEAD' ? 'GET' : method, path);
      if (matched === undefined) {
        if (methods.length > 0)
          throw new HttpError(
            405,
            'EMETHOD',
            `${method} is not allowed on ${url.pathname} (allowed: ${methods.join(', ')})`,
          );
        throw new HttpError(404, 'ENOTFOUND', `No route ${method} ${url.pathname}; see ${apiPrefix}/openapi.json`);
      }
      const { route, params } = matched;
      if (route.role !== 'public') {
        if (authError !== undefined) throw authError;
        if (principal === undefined)
          throw new HttpError(
            401,
            'EAUTH',
            'Authenticate: Authorization: Bearer <token> (cairnctl token create), or a client certificate',
          );
        if (route.role === 'admin' && principal.role !== 'admin')
          throw new HttpError(
            403,
            'EFORBIDDEN',
            `${principal.name} is a ${principal.role}: ${method} ${url.pathname} needs an admin`,
          );
      }
      if (route.stream) return { status: 200, body: undefined, stream: route };
      let body: unknown;
      if (route.body !== undefined) {
        const text = await bodyText();
        try {
          body = text.trim() === '' ? {} : (JSON.parse(text) as unknown);
        } catch (err) {
          throw new HttpError(400, 'EINVAL', `The body is not JSON: ${errorMessage(err)}`);
        }
        const validate = validator.schemaAt(
          pointer(
            'paths',
            `${apiPrefix}${route.path}`,
            route.method.toLowerCase(),
            'requestBody',
            'content',
            'application/json',
            'schema',
          ),
        );
        if (!validate(body)) throw new InvalidArgumentError(`Invalid request: ${describeErrors(validate.errors)}`);
      }
      result = await route.handle({
        meta,
        ports: options.ports,
        principal: principal!,
        params,
        query: url.searchParams,
        body,
        server: state,
      });
      status = route.status;
      summary = summarize(result);
      return { status, body: result };
    } catch (err) {
      const r = errorResponse(err, log);
      status = r.status;
      summary = r.body.error.message;
      return r;
    } finally {
      if (changes && url.pathname.startsWith('/api/')) {
        const entry = await audit.record({
          who: principal?.name ?? 'anonymous',
          role: principal?.role ?? null,
          method,
          path: url.pathname,
          status,
          summary: summary.slice(0, 300),
        });
        publishAudit(entry);
      }
    }
  }

  function inProcessClient(principal: Principal | undefined): ApiClientLike {
    return {
      request: (method, path, body) => {
        const url = new URL(path.startsWith('/api/') ? path : `${apiPrefix}${path}`, 'http://in-process');
        return dispatch(method.toUpperCase(), url, principal, async () =>
          body === undefined ? '' : JSON.stringify(body),
        );
      },
    };
  }

  function streamEvents(req: IncomingMessage, res: ServerResponse): void {
    let unsubscribe: () => void;
    try {
      unsubscribe = events.subscribe((event) => res.write(`event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`));
    } catch (err) {
      sendJson(res, 503, { error: { code: 'ELIMIT', message: errorMessage(err), retryable: true } });
      return;
    }
    req.socket.setTimeout(0);
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.write(`: cairn events\nretry: 3000\n\n`);
    // A comment every 15 s keeps proxies from closing an idle stream.
    const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
    streams.add(res);
    res.on('close', () => {
      clearInterval(ping);
      unsubscribe();
      streams.delete(res);
    });
  }

  const cookieAttributes = `Path=/; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`;

  function webContext(principal: Principal | undefined): WebContext {
    return {
      principal,
      api: inProcessClient(principal),
      events,
      login: async (token, res) => {
        const p = await tokens.verify(token.trim());
        if (p !== undefined)
          res.setHeader('set-cookie', `${sessionCookie}=${token.trim()}; ${cookieAttributes}; Max-Age=43200`);
        return p;
      },
      logout: (res) => res.setHeader('set-cookie', `${sessionCookie}=; ${cookieAttributes}; Max-Age=0`),
    };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://request');
    } catch {
      sendJson(res, 400, { error: { code: 'EINVAL', message: 'Malformed request URL', retryable: false } });
      return;
    }
    if (url.pathname === '/healthz') {
      try {
        await meta.client.get(keys.cluster()).string();
        sendJson(res, 200, { ok: true });
      } catch (err) {
        sendJson(res, 503, { error: { code: 'EUNAVAILABLE', message: `etcd: ${errorMessage(err)}`, retryable: true } });
      }
      return;
    }
    let principal: Principal | undefined;
    let authError: unknown;
    try {
      principal = await authenticate(req);
    } catch (err) {
      authError = err;
    }
    if (url.pathname === '/api' || url.pathname.startsWith('/api/')) {
      const r = await dispatch(method, url, principal, () => readBody(req), authError);
      if (r.stream !== undefined) {
        streamEvents(req, res);
        return;
      }
      const headers: Record<string, string> =
        r.status === 401
          ? { 'www-authenticate': 'Bearer realm="cairn"' }
          : r.status === 408 || r.status === 413
            ? { connection: 'close' }
            : {};
      if (method === 'HEAD') {
        res.writeHead(r.status, { 'content-type': 'application/json; charset=utf-8', ...headers });
        res.end();
      } else sendJson(res, r.status, r.body, headers);
      return;
    }
    if (options.web !== undefined) {
      // A wrong bearer token on a page is treated as none: the dashboard shows its login form.
      await options.web.handle(req, res, webContext(principal));
      return;
    }
    sendJson(res, 404, {
      error: {
        code: 'ENOTFOUND',
        message: `Nothing at ${url.pathname}; the API is under ${apiPrefix}/`,
        retryable: false,
      },
    });
  }

  const streams = new Set<ServerResponse>();
  // A request head must arrive within apiHeadersTimeoutMs of the connection (or of the previous
  // answer on a kept-alive one). Node's own headersTimeout is only checked now and then, and was
  // seen to let a stalled head hold its socket for good; this timer does not depend on it.
  const headTimers = new WeakMap<Socket, NodeJS.Timeout>();
  const awaitHead = (socket: Socket): void => {
    clearTimeout(headTimers.get(socket));
    if (socket.destroyed) return;
    const timer = setTimeout(() => socket.destroy(), apiHeadersTimeoutMs);
    timer.unref();
    headTimers.set(socket, timer);
  };
  const listener = (req: IncomingMessage, res: ServerResponse): void => {
    clearTimeout(headTimers.get(req.socket));
    res.on('finish', () => awaitHead(req.socket));
    handle(req, res).catch((err: unknown) => {
      const r = errorResponse(err, log);
      try {
        sendJson(res, r.status, r.body);
      } catch {
        res.destroy();
      }
    });
  };
  const server: Server =
    options.tls === undefined
      ? createHttpServer({ connectionsCheckingInterval: apiTimeoutCheckMs }, listener)
      : createHttpsServer(
          {
            connectionsCheckingInterval: apiTimeoutCheckMs,
            handshakeTimeout: apiHeadersTimeoutMs,
            cert: options.tls.cert,
            key: options.tls.key,
            ...(options.tls.ca === undefined
              ? {}
              : { ca: options.tls.ca, requestCert: true, rejectUnauthorized: false }),
          },
          listener,
        );
  // Node's own deadline is the backstop: readBody answers 408 at apiRequestTimeoutMs first.
  server.requestTimeout = apiRequestTimeoutMs + 5_000;
  server.headersTimeout = apiHeadersTimeoutMs;
  server.maxConnections = apiConnectionsMax;
  server.on(secure ? 'secureConnection' : 'connection', awaitHead);
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    else socket.destroy();
  });

  const stopWatching = await watchNodes(meta, events, log);
  io.start();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.listen.port, options.listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    io.stop();
    await stopWatching();
    throw new CairnError(
      'EADDR',
      `Cannot listen on ${options.listen.host}:${options.listen.port}: ${errorMessage(err)}`,
      { cause: err },
    );
  }
  const bound = server.address();
  const port = typeof bound === 'object' && bound !== null ? bound.port : options.listen.port;
  const host = options.listen.host.includes(':') ? `[${options.listen.host}]` : options.listen.host;
  return {
    address: `${host}:${port}`,
    url: `${secure ? 'https' : 'http'}://${host}:${port}`,
    close: async () => {
      io.stop();
      for (const s of streams) s.end();
      await stopWatching().catch(() => undefined);
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

/** A few words about what a change returned, for the audit entry. */
function summarize(result: unknown): string {
  if (result === null || typeof result !== 'object') return 'ok';
  const r = result as Record<string, unknown>;
  for (const key of ['deleted', 'name', 'target', 'id'])
    if (typeof r[key] === 'string') return `ok: ${key} ${r[key] as string}`;
  return 'ok';
}
