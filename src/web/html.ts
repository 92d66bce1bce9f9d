/**
 * The dashboard's templating: a tagged template, html`...`, that escapes every interpolated value
 * unless it is already Html (the result of another html`...`). So a page is built from pieces that
 * were each escaped once, where they were made, and no value from the API (a volume name, a label,
 * an event message) can become markup.
 *
 * What it keeps true: the only way to get an Html from a string is html`...` with the string as a
 * value (escaped) or as template text (written by us in this folder). `&`, `<`, `>`, `"` and `'`
 * are escaped, which is enough inside element text and inside quoted attribute values; templates
 * always quote their attributes. URLs built from names go through encodeURIComponent (href()).
 *
 * What it leaves out: unquoted attributes, values inside <script> or <style> (the dashboard has
 * neither inline; see the Content-Security-Policy in dashboard.ts), and `javascript:` URLs (every
 * href is a path we build).
 */

/** Markup that is safe to send: escaped where it was built. */
export class Html {
  /** Only html`...` and the helpers below make one. */
  private constructor(readonly text: string) {}

  /** @internal For this file's helpers only. */
  static trusted(text: string): Html {
    return new Html(text);
  }

  toString(): string {
    return this.text;
  }
}

/** What a template accepts: text (escaped), numbers, Html as is, and lists of those. */
export type HtmlValue = Html | string | number | boolean | null | undefined | readonly HtmlValue[];

const escapes: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** Escapes text for element content and quoted attribute values: `a<b` -> `a&lt;b`. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => escapes[c] ?? c);
}

function render(value: HtmlValue): string {
  if (value instanceof Html) return value.text;
  if (value === null || value === undefined || value === false || value === true) return '';
  if (typeof value === 'number') return Number.isFinite(value) ? String(value) : '';
  if (typeof value === 'string') return escapeHtml(value);
  return value.map(render).join('');
}

/**
 * Builds markup from a template: literal text is ours and kept, each value is escaped.
 * `false`, `true`, `null` and `undefined` render as nothing, so `${admin && html`<button>`}` works.
 * Example: html`<td>${'<b>'}</td>` -> `<td>&lt;b&gt;</td>`.
 */
export function html(strings: TemplateStringsArray, ...values: readonly HtmlValue[]): Html {
  let out = strings[0] ?? '';
  for (let i = 0; i < values.length; i++) out += render(values[i]) + (strings[i + 1] ?? '');
  return Html.trusted(out);
}

/** Html joined from a list, with a separator that is itself Html. */
export function join(items: readonly HtmlValue[], separator: Html = html``): Html {
  return Html.trusted(items.map(render).join(separator.text));
}

/**
 * A path from literal segments and names: each name is percent-encoded as one segment.
 * Example: href('/volumes', 'a b/c') -> `/volumes/a%20b%2Fc`.
 */
export function href(base: string, ...segments: readonly string[]): string {
  return [base.replace(/\/$/, ''), ...segments.map((s) => encodeURIComponent(s))].join('/');
}
