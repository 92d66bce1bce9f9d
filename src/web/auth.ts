/**
 * Cookies, the form token that guards every state-changing form (CSRF), and the Origin check.
 *
 * The session itself is the API server's (ctx.login sets its HttpOnly cookie, ctx.principal reads
 * it back). Beside it the dashboard keeps its own cookie, `cairn_csrf`: 32 random bytes, HttpOnly,
 * SameSite=Strict, made new at every login and dropped at logout, and made on first need for a
 * principal that came without logging in (a client certificate). Every form that changes state
 * carries `csrf = HMAC-SHA256(key: that cookie, message: the principal's id)`, and a POST is
 * refused (403) unless the field matches the cookie it arrives with. Another site can make the
 * browser send the cookie but cannot read it, so it cannot write the field; the principal's id in
 * the MAC stops a token made for one identity from serving another. Any replica can check it
 * (nothing is stored), and a new login makes old forms stale.
 *
 * Independently, a POST whose Origin (or, without one, Referer) names another host than the one
 * it was sent to is refused: SameSite=Strict and this check would stop a cross-site form alone,
 * the token also covers browsers that send neither header.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';

export const csrfCookie = 'cairn_csrf';

/** Cookies of a request by name; a malformed pair is skipped, the first of two same names wins. */
export function cookiesOf(req: IncomingMessage): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    if (out.has(name)) continue;
    try {
      out.set(name, decodeURIComponent(part.slice(eq + 1).trim()));
    } catch {
      // A value that is not valid percent-encoding is not one of ours.
    }
  }
  return out;
}

/** Adds a Set-Cookie header, keeping any the response has already (the session's). */
export function addCookie(res: ServerResponse, cookie: string): void {
  const had = res.getHeader('Set-Cookie');
  const list = had === undefined ? [] : Array.isArray(had) ? had : [String(had)];
  res.setHeader('Set-Cookie', [...list, cookie]);
}

function cookieText(value: string, maxAgeS: number | undefined, secure: boolean): string {
  const age = maxAgeS === undefined ? '' : `; Max-Age=${maxAgeS}`;
  return `${csrfCookie}=${value}; Path=/; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}${age}`;
}

/** Whether the request came over TLS (then cookies are marked Secure). */
export function overTls(req: IncomingMessage): boolean {
  return (req.socket as { encrypted?: boolean }).encrypted === true;
}

/** Sets a new form-token cookie and returns its value (at login, and when a principal has none). */
export function newCsrfCookie(req: IncomingMessage, res: ServerResponse): string {
  const value = randomBytes(32).toString('base64url');
  addCookie(res, cookieText(value, undefined, overTls(req)));
  return value;
}

/** Expires the form-token cookie (at logout). */
export function dropCsrfCookie(req: IncomingMessage, res: ServerResponse): void {
  addCookie(res, cookieText('', 0, overTls(req)));
}

/** The form token for a cookie value and a principal: HMAC-SHA256, base64url. */
export function formToken(cookie: string, principalId: string): string {
  return createHmac('sha256', cookie).update(`cairn-form:${principalId}`).digest('base64url');
}

/** Whether a form's token matches the cookie it came with, for this principal. Constant time. */
export function formTokenValid(
  cookie: string | undefined,
  principalId: string,
  presented: string | undefined,
): boolean {
  if (cookie === undefined || cookie === '' || presented === undefined) return false;
  const want = Buffer.from(formToken(cookie, principalId));
  const got = Buffer.from(presented);
  return want.length === got.length && timingSafeEqual(want, got);
}

/**
 * Whether a POST comes from a page of this same host: its Origin header, or without one its
 * Referer, must name the Host it was sent to. Neither header present passes (old clients and
 * curl send neither; the form token still has to match).
 */
export function sameOrigin(req: IncomingMessage): boolean {
  const host = req.headers.host;
  const from = req.headers.origin ?? req.headers.referer;
  if (from === undefined) return true;
  if (host === undefined || from === 'null') return false;
  try {
    return new URL(from).host === host;
  } catch {
    return false;
  }
}

/** Whether the client prefers a page to JSON (a browser's navigation sends text/html). */
export function wantsHtml(req: IncomingMessage): boolean {
  return (req.headers.accept ?? '').includes('text/html');
}
