/**
 * What a page handler gets and gives. A page is built from its live regions (named parts the
 * event stream can send again) and the content around them; the same function serves the first
 * GET and every live refresh, so a refreshed region is exactly what a reload would show.
 */
import { ApiAnswerError } from './api_shapes.js';
import type { Principal, WebContext } from './contract.js';
import { html, type Html } from './html.js';
import type { Section } from './layout.js';
import { notice } from './layout.js';

export interface PageContext {
  readonly ctx: WebContext;
  readonly principal: Principal;
  /** The form token for this principal's forms. */
  readonly csrf: string;
  readonly url: URL;
  /** Decoded path parameters, e.g. the volume's name. */
  readonly params: readonly string[];
  readonly nowMs: number;
}

export interface Page {
  readonly title: string;
  readonly section: Section;
  /** Parts the event stream renders again; keys are data-live names. */
  readonly regions: Readonly<Record<string, Html>>;
  readonly content: Html;
  /** 200 unless the page says otherwise (404 for a volume that does not exist). */
  readonly status?: number;
  /** false for pages with forms the stream must not disturb (they still render regions). */
  readonly live?: boolean;
}

export type PageHandler = (p: PageContext) => Promise<Page>;

/** The value, or the API's refusal or failure as a value, so one failed call spoils one region only. */
export async function attempt<T>(promise: Promise<T>): Promise<T | ApiAnswerError> {
  try {
    return await promise;
  } catch (err) {
    if (err instanceof ApiAnswerError) return err;
    throw err;
  }
}

/** Whether attempt() gave a refusal. */
export function failed<T>(value: T | ApiAnswerError): value is ApiAnswerError {
  return value instanceof ApiAnswerError;
}

/** A region's content when its data could not be read: what the API said, as the API said it. */
export function unavailable(what: string, err: ApiAnswerError): Html {
  return notice(html`Cannot show ${what}: ${err.message} (${err.code}, HTTP ${err.status})`, 'error');
}

/** Whether the principal may change things (the buttons are shown; the API decides anyway). */
export function isAdmin(p: PageContext): boolean {
  return p.principal.role === 'admin';
}
