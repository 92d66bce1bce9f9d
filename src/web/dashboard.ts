/**
 * The dashboard as a WebMount: the API server passes it every request outside /api/ with the
 * request's principal and the API in-process (src/api/http). Routes:
 *   GET  /, /volumes, /volumes/NAME, /nodes, /nodes/NAME, /zones, /policies, /events   pages
 *   GET  /live?path=PAGE     the page's live regions as server-sent events (live.ts)
 *   GET  /static/app.js, /static/app.css
 *   GET  /login, POST /login (form: token), GET /?token=TOKEN (first visit), POST /logout
 *   POST /act/ACTION         an admin action: first the confirmation, then with confirm=yes the API call
 *
 * What it keeps true:
 * - Nobody sees a page without a principal: a browser gets the login form, anything else a JSON
 *   401. A token in the URL is exchanged for the session cookie and the browser is redirected to
 *   the same path without it, so it stays out of history and logs.
 * - Every response carries a Content-Security-Policy that allows scripts and styles from this
 *   origin only (none inline), no framing, and forms posting to this origin only.
 * - Every POST other than the login passes the form-token and Origin checks of auth.ts first.
 * - A failure answers a page with the API's message (never a stack trace); a bug is logged.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { errorMessage } from '../core/index.js';
import { actions, doneSentence, hiddenFields, type Fields } from './actions.js';
import { ApiAnswerError } from './api_shapes.js';
import {
  cookiesOf,
  csrfCookie,
  dropCsrfCookie,
  formToken,
  formTokenValid,
  newCsrfCookie,
  sameOrigin,
  wantsHtml,
} from './auth.js';
import { clientScript } from './client_script.js';
import type { Principal, WebContext, WebMount } from './contract.js';
import { frontPage } from './front_page.js';
import { html, type Html } from './html.js';
import { document, notice } from './layout.js';
import { formBodyBytesMax } from './limits.js';
import { LiveStreams } from './live.js';
import { eventsPage, nodeListPage, nodePage, policiesPage, zonesPage } from './other_pages.js';
import type { PageContext, PageHandler } from './page.js';
import { stylesheet } from './styles.js';
import { volumeListPage, volumePage } from './volume_pages.js';

export interface DashboardOptions {
  /** Where bugs are logged (one JSON line each); stderr by default. */
  readonly log?: (line: string) => void;
}

export const contentSecurityPolicy = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

const pages: readonly (readonly [RegExp, PageHandler])[] = [
  [/^\/$/, frontPage],
  [/^\/volumes$/, volumeListPage],
  [/^\/volumes\/([^/]+)$/, volumePage],
  [/^\/nodes$/, nodeListPage],
  [/^\/nodes\/([^/]+)$/, nodePage],
  [/^\/zones$/, zonesPage],
  [/^\/policies$/, policiesPage],
  [/^\/events$/, eventsPage],
];

/** The page handler and decoded parameters for a path, or undefined. */
export function matchPage(pathname: string): { handler: PageHandler; params: string[] } | undefined {
  for (const [pattern, handler] of pages) {
    const m = pattern.exec(pathname);
    if (m === null) continue;
    try {
      return { handler, params: m.slice(1).map((s) => decodeURIComponent(s)) };
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** A path to go to after login: a local path of ours, never another site (`//host`, `/\host`). */
export function safeNext(next: string | null | undefined): string {
  if (typeof next !== 'string' || !/^\/(?![/\\])/.test(next) || /[\r\n]/.test(next)) return '/';
  const url = new URL(next, 'http://dashboard.invalid');
  url.searchParams.delete('token');
  return `${url.pathname}${url.search}`;
}

function securityHeaders(res: ServerResponse): void {
  res.setHeader('Content-Security-Policy', contentSecurityPolicy);
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('X-Frame-Options', 'DENY');
  res.setHeader('Referrer-Policy', 'same-origin');
}

function send(res: ServerResponse, status: number, type: string, body: string, cache = 'no-store'): void {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', cache);
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}

function sendHtml(res: ServerResponse, status: number, page: Html): void {
  send(res, status, 'text/html; charset=utf-8', page.text);
}

function redirect(res: ServerResponse, to: string): void {
  res.statusCode = 303;
  res.setHeader('Location', to);
  res.setHeader('Cache-Control', 'no-store');
  res.end();
}

function loginPage(next: string, error: string | undefined): Html {
  return document(
    { title: 'Sign in', section: 'none', principal: undefined, csrf: undefined },
    html`<form class="login" method="post" action="/login" id="login">
      <h1>Cairn dashboard</h1>
      ${error !== undefined && notice(error, 'error')}
      <p class="muted">
        Sign in with an API token: <code>cairnctl token create --role viewer</code> (or admin) prints one.
      </p>
      <label for="token">Token</label>
      <input id="token" type="password" name="token" autocomplete="off" required autofocus />
      <input type="hidden" name="next" value="${next}" />
      <button type="submit" class="primary">Sign in</button>
    </form>`,
  );
}

/** A page with a message and a link, for refusals and failures. */
function messagePage(principal: Principal | undefined, csrf: string | undefined, title: string, body: Html): Html {
  return document(
    { title, section: 'none', principal, csrf },
    html`<h1>${title}</h1>
      ${body}`,
  );
}

class BodyTooLarge extends Error {}

async function readForm(req: IncomingMessage): Promise<Map<string, string>> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    length += chunk.length;
    if (length > formBodyBytesMax) throw new BodyTooLarge();
    chunks.push(chunk);
  }
  const out = new Map<string, string>();
  for (const [k, v] of new URLSearchParams(Buffer.concat(chunks).toString('utf8'))) if (!out.has(k)) out.set(k, v);
  return out;
}

class Dashboard implements WebMount {
  private readonly log: (line: string) => void;
  private readonly streams: LiveStreams;

  constructor(options: DashboardOptions) {
    this.log = options.log ?? ((line) => process.stderr.write(`${line}\n`));
    this.streams = new LiveStreams(this.log);
  }

  async handle(req: IncomingMessage, res: ServerResponse, ctx: WebContext): Promise<void> {
    securityHeaders(res);
    const url = new URL(req.url ?? '/', 'http://dashboard.invalid');
    try {
      await this.route(req, res, ctx, url);
    } catch (err) {
      if (err instanceof BodyTooLarge) {
        sendHtml(
          res,
          413,
          messagePage(ctx.principal, undefined, 'Form too large', html`<p>At most ${formBodyBytesMax} bytes.</p>`),
        );
        return;
      }
      this.log(JSON.stringify({ msg: 'dashboard request failed', path: url.pathname, error: errorMessage(err) }));
      if (res.headersSent) res.destroy();
      else sendHtml(res, 500, messagePage(undefined, undefined, 'Internal error', html`<p>See the server's log.</p>`));
    }
  }

  private async route(req: IncomingMessage, res: ServerResponse, ctx: WebContext, url: URL): Promise<void> {
    const method = req.method ?? 'GET';
    const path = url.pathname;
    if (method === 'GET' && path === '/static/app.js')
      return send(res, 200, 'text/javascript; charset=utf-8', clientScript, 'no-cache');
    if (method === 'GET' && path === '/static/app.css')
      return send(res, 200, 'text/css; charset=utf-8', stylesheet, 'no-cache');
    if (method === 'GET' && path === '/favicon.ico') {
      res.statusCode = 204;
      res.end();
      return;
    }
    if (method === 'POST' && path === '/login') return this.login(req, res, ctx);

    const principal = ctx.principal;
    const token = url.searchParams.get('token');
    if (method === 'GET' && token !== null) {
      // A first visit with ?token=: trade it for the session cookie, then drop it from the URL.
      const who = await ctx.login(token, res);
      url.searchParams.delete('token');
      if (who === undefined)
        return sendHtml(res, 401, loginPage(safeNext(`${url.pathname}${url.search}`), 'That token was not accepted.'));
      newCsrfCookie(req, res);
      return redirect(res, safeNext(`${url.pathname}${url.search}`));
    }
    if (method === 'GET' && path === '/login')
      return principal === undefined
        ? sendHtml(res, 200, loginPage(safeNext(url.searchParams.get('next')), undefined))
        : redirect(res, '/');
    if (principal === undefined) {
      res.setHeader('WWW-Authenticate', 'Bearer realm="cairn"');
      if (wantsHtml(req) && method === 'GET')
        return sendHtml(res, 401, loginPage(safeNext(`${path}${url.search}`), undefined));
      const body = {
        error: {
          code: 'EAUTH',
          message: 'Sign in first: a bearer token, the session cookie or a client certificate',
          retryable: false,
        },
      };
      return send(res, 401, 'application/json', JSON.stringify(body));
    }

    const cookies = cookiesOf(req);
    const cookie = cookies.get(csrfCookie) || newCsrfCookie(req, res);
    const csrf = formToken(cookie, principal.id);

    if (method === 'GET' && path === '/live') {
      const target = url.searchParams.get('path') ?? '/';
      const page = matchPage(new URL(target, 'http://dashboard.invalid').pathname);
      if (page === undefined) return send(res, 404, 'text/plain', 'no such page');
      const pageUrl = new URL(target, 'http://dashboard.invalid');
      return this.streams.open(req, res, ctx, (nowMs) =>
        page.handler({ ctx, principal, csrf, url: pageUrl, params: page.params, nowMs }),
      );
    }
    if (method === 'POST') {
      const form = await readForm(req);
      if (!sameOrigin(req) || !formTokenValid(cookies.get(csrfCookie), principal.id, form.get('csrf')))
        return sendHtml(
          res,
          403,
          messagePage(
            principal,
            csrf,
            'Refused',
            html`<p>
              This form did not come from this dashboard's own page, or it was made for an earlier sign-in. Go
              <a href="/">back to the overview</a> and try again.
            </p>`,
          ),
        );
      if (path === '/logout') {
        ctx.logout(res);
        dropCsrfCookie(req, res);
        return redirect(res, '/login');
      }
      const act = /^\/act\/([a-z-]+)$/.exec(path);
      if (act !== null) return this.act(res, ctx, principal, csrf, act[1] ?? '', form);
      return sendHtml(res, 404, messagePage(principal, csrf, 'Not found', html`<p>No such action.</p>`));
    }
    if (method !== 'GET' && method !== 'HEAD') {
      res.setHeader('Allow', 'GET, POST');
      return send(res, 405, 'text/plain', 'method not allowed');
    }
    const page = matchPage(path);
    if (page === undefined)
      return sendHtml(
        res,
        404,
        messagePage(principal, csrf, 'Not found', html`<p>No page at this address. <a href="/">Overview</a></p>`),
      );
    const p: PageContext = { ctx, principal, csrf, url, params: page.params, nowMs: Date.now() };
    const built = await page.handler(p);
    const done = url.searchParams.get('done');
    const sentence = done === null ? undefined : doneSentence(done, url.searchParams.get('subject') ?? '');
    const frame = { title: built.title, section: built.section, principal, csrf, livePath: path };
    sendHtml(
      res,
      built.status ?? 200,
      document(frame, html`${sentence !== undefined && notice(sentence, 'done')}${built.content}`),
    );
  }

  private async login(req: IncomingMessage, res: ServerResponse, ctx: WebContext): Promise<void> {
    const form = await readForm(req);
    const next = safeNext(form.get('next'));
    if (!sameOrigin(req))
      return sendHtml(res, 403, loginPage(next, 'Refused: this form did not come from this dashboard.'));
    const who = await ctx.login(form.get('token')?.trim() ?? '', res);
    if (who === undefined)
      return sendHtml(res, 401, loginPage(next, 'That token was not accepted: unknown, revoked or mistyped.'));
    newCsrfCookie(req, res);
    redirect(res, next);
  }

  /** An action's two steps (actions.ts): the confirmation page, then with confirm=yes the API call. */
  private async act(
    res: ServerResponse,
    ctx: WebContext,
    principal: Principal,
    csrf: string,
    name: string,
    form: Fields,
  ): Promise<void> {
    const spec = Object.hasOwn(actions, name) ? actions[name] : undefined;
    if (spec === undefined)
      return sendHtml(res, 404, messagePage(principal, csrf, 'Not found', html`<p>No such action.</p>`));
    const wanted = [...spec.fields, ...(spec.optional ?? [])];
    const fields = new Map(wanted.filter((f) => form.has(f)).map((f) => [f, form.get(f) ?? ''] as const));
    const back = (() => {
      try {
        return spec.back(fields);
      } catch {
        return '/';
      }
    })();
    const fail = (status: number, title: string, message: Html | string): void =>
      sendHtml(
        res,
        status,
        messagePage(
          principal,
          csrf,
          title,
          html`${notice(message, 'error')}
            <p><a href="${back}">Back</a></p>`,
        ),
      );
    const missing = spec.fields.filter((f) => (fields.get(f) ?? '').trim() === '');
    if (missing.length > 0) return fail(400, 'Missing fields', `Fill in: ${missing.join(', ')}.`);
    try {
      spec.check(fields);
    } catch (err) {
      return fail(400, 'Cannot do that', errorMessage(err));
    }
    if (form.get('confirm') !== 'yes') {
      if (principal.role !== 'admin')
        return fail(403, 'Not allowed', `${principal.name} is a viewer: viewers cannot change anything.`);
      return sendHtml(
        res,
        200,
        document(
          { title: 'Confirm', section: 'none', principal, csrf },
          html`<h1>Confirm</h1>
            <div class="confirm" id="confirm">
              <p>${spec.describe(fields)}</p>
              <form method="post" action="/act/${name}">
                ${hiddenFields(csrf, fields)}<input type="hidden" name="confirm" value="yes" />
                <button type="submit" id="confirm-button" class="${spec.danger === true ? 'danger' : 'primary'}">
                  ${spec.verb}
                </button>
                <a href="${back}">Cancel</a>
              </form>
            </div>`,
        ),
      );
    }
    let to: string;
    try {
      to = await spec.perform(ctx, fields);
    } catch (err) {
      if (!(err instanceof ApiAnswerError)) throw err;
      return fail(
        err.status,
        err.status === 403 ? 'Not allowed' : 'The API refused',
        `${err.message} (${err.code}, HTTP ${err.status})`,
      );
    }
    const query = new URLSearchParams({ done: name, subject: fields.get(spec.subjectField) ?? '' });
    redirect(res, `${to}?${query.toString()}`);
  }
}

/** The dashboard, to pass to the API server as its `web` mount. */
export function dashboard(options: DashboardOptions = {}): WebMount {
  return new Dashboard(options);
}
