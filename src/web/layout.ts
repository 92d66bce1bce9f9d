/**
 * The frame every dashboard page shares: head (our stylesheet and script, both from /static/),
 * the top bar (sections, who is signed in, logout), and the live-status line. Also the small
 * pieces pages repeat: a live region, a state badge, a usage bar, a notice.
 *
 * A page that shows numbers names itself in `data-live-path`, which the client script uses to
 * open its event stream; without JavaScript, a <noscript> refresh reloads read-only pages every
 * 15 s instead (forms and confirmations do not refresh, so nothing typed is lost).
 */
import type { Principal } from './contract.js';
import { html, type Html, type HtmlValue } from './html.js';

export type Section = 'front' | 'volumes' | 'nodes' | 'zones' | 'policies' | 'events' | 'none';

export interface Frame {
  readonly title: string;
  readonly section: Section;
  readonly principal: Principal | undefined;
  /** The form token for the logout button; absent on the login page. */
  readonly csrf: string | undefined;
  /** Set on pages with live parts: the path the event stream renders again. */
  readonly livePath?: string;
}

const sections: readonly [Exclude<Section, 'none'>, string, string][] = [
  ['front', '/', 'Overview'],
  ['volumes', '/volumes', 'Volumes'],
  ['nodes', '/nodes', 'Nodes'],
  ['zones', '/zones', 'Zones'],
  ['policies', '/policies', 'Policies'],
  ['events', '/events', 'Events'],
];

/** A whole HTML document around `content`. */
export function document(frame: Frame, content: Html): Html {
  const who = frame.principal;
  const nav =
    who === undefined
      ? html``
      : html`<nav>
            ${sections.map(
              ([id, path, label]) =>
                html` <a href="${path}" class="${id === frame.section ? 'here' : ''}">${label}</a>`,
            )}
          </nav>
          <span class="who" id="who" data-role="${who.role}">${who.name} (${who.role})</span>
          ${
            frame.csrf !== undefined &&
            html`<form method="post" action="/logout">
              <input type="hidden" name="csrf" value="${frame.csrf}" /><button type="submit" id="logout">
                Log out
              </button>
            </form>`
          }`;
  return html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>${frame.title} · Cairn</title>
        <link rel="stylesheet" href="/static/app.css" />
        ${frame.livePath !== undefined && html`<noscript><meta http-equiv="refresh" content="15" /></noscript>`}
        <script src="/static/app.js" defer></script>
      </head>
      <body data-live-path="${frame.livePath ?? ''}">
        <header class="top"><a class="brand" href="/">Cairn</a>${nav}</header>
        <main>
          ${frame.livePath !== undefined && html`<div data-live-status data-state="off">loading…</div>`} ${content}
        </main>
      </body>
    </html> `;
}

/** A part of a page that the event stream replaces: `<div data-live="NAME">`. */
export function live(name: string, content: Html): Html {
  return html`<div data-live="${name}">${content}</div>`;
}

/** Tone of a state: ok (green), warn (amber), bad (red). */
export type Tone = 'ok' | 'warn' | 'bad';

/** A coloured word for a state, with the state in data-state for tests and scripts. */
export function badge(state: string, tone: Tone, text: HtmlValue = state): Html {
  return html`<span class="state ${tone === 'ok' ? 'ok' : tone === 'warn' ? 'degraded' : 'bad'}" data-state="${state}"
    >${text}</span
  >`;
}

/** A used/capacity bar in 5% steps (a width class; style attributes are refused by the CSP). */
export function usageBar(used: number | null, capacity: number): Html {
  if (used === null || !(capacity > 0)) return html`<span class="bar"></span>`;
  const step = Math.min(100, Math.max(0, Math.round((used / capacity) * 20) * 5));
  return html`<span class="bar" title="${((used / capacity) * 100).toFixed(1)}%"><span class="w${step}"></span></span>`;
}

/** A box with a message: green for done, red for refused or failed. */
export function notice(text: HtmlValue, kind: 'done' | 'error'): Html {
  return html`<div class="notice ${kind === 'error' ? 'error' : ''}" role="${kind === 'error' ? 'alert' : 'status'}">
    ${text}
  </div>`;
}
