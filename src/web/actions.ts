/**
 * The admin actions: create, resize, snapshot, clone and delete a volume, drain a node, start a
 * repair. Each is two plain HTML forms, so it works without JavaScript: the first (on the page)
 * POSTs to /act/NAME and gets a confirmation page that says what will happen; its Confirm button
 * POSTs the same fields again with confirm=yes, and only that second POST asks the API. Both
 * carry the form token (auth.ts). The API decides who may act: a viewer's confirmed POST is
 * passed on and comes back 403 from the API, shown as such; the dashboard only hides the buttons
 * from viewers and refuses their first step early.
 *
 * What it keeps true: the fields are checked here (names, sizes) so the confirmation never shows
 * something the API will refuse for a typo, and the API checks them again; after an action the
 * browser is redirected (303) to a page that names what was done from a fixed sentence, never from
 * text in the URL, so a crafted link cannot make the dashboard say something else.
 */
import { parseSize } from '../core/index.js';
import { call } from './api_shapes.js';
import type { WebContext } from './contract.js';
import { bytes } from './format.js';
import { href, html, type Html, type HtmlValue } from './html.js';

/** A field of a form as it arrived (urlencoded). */
export type Fields = ReadonlyMap<string, string>;

export interface ActionSpec {
  /** The fields it needs; each must be present and non-empty. */
  readonly fields: readonly string[];
  /** Fields it takes when given. */
  readonly optional?: readonly string[];
  /** Throws a message for a bad field (shown on the confirmation page, 400). */
  check(f: Fields): void;
  /** What will happen, for the confirmation page. */
  describe(f: Fields): Html;
  /** The button's label on the confirmation page. */
  readonly verb: string;
  readonly danger?: boolean;
  /** Asks the API; returns where to go afterwards. */
  perform(ctx: WebContext, f: Fields): Promise<string>;
  /** Where Cancel leads. */
  back(f: Fields): string;
  /** The sentence on the page after, about `subject` (the field named by subjectField). */
  readonly done: string;
  readonly subjectField: string;
}

/** A volume, snapshot or node name as the CLI accepts them (the API checks its own rules again). */
const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

function field(f: Fields, name: string): string {
  return (f.get(name) ?? '').trim();
}

function checkName(f: Fields, name: string, what: string): void {
  const value = field(f, name);
  if (!namePattern.test(value))
    throw new Error(`Invalid ${what} "${value}": 1 to 63 letters, digits, dots, underscores or dashes`);
}

function checkSize(f: Fields): number {
  return parseSize(field(f, 'size'), 'size');
}

const volumePage = (f: Fields): string => href('/volumes', field(f, 'volume'));

export const actions: Readonly<Record<string, ActionSpec>> = {
  'volume-create': {
    fields: ['name', 'size'],
    optional: ['profile'],
    check(f) {
      checkName(f, 'name', 'volume name');
      checkSize(f);
      const profile = field(f, 'profile');
      if (profile !== '' && !/^\d{1,2}\+\d{1,2}$/.test(profile))
        throw new Error(`Invalid profile "${profile}": k+m, e.g. 4+2`);
    },
    describe: (f) =>
      html`Create volume <b>${field(f, 'name')}</b> of <b>${bytes(checkSize(f))}</b> with
        ${field(f, 'profile') === '' ? 'the cluster’s default profile' : html`profile <b>${field(f, 'profile')}</b>`}.`,
    verb: 'Create volume',
    async perform(ctx, f) {
      const profile = field(f, 'profile');
      await call(ctx, 'POST', '/volumes', {
        name: field(f, 'name'),
        size: checkSize(f),
        ...(profile === '' ? {} : { profile }),
      });
      return href('/volumes', field(f, 'name'));
    },
    back: () => '/volumes',
    done: 'Created volume',
    subjectField: 'name',
  },
  'volume-resize': {
    fields: ['volume', 'size'],
    check(f) {
      checkName(f, 'volume', 'volume name');
      checkSize(f);
    },
    describe: (f) =>
      html`Resize volume <b>${field(f, 'volume')}</b> to <b>${bytes(checkSize(f))}</b>. Growing is immediate; the API
        refuses to shrink a volume.`,
    verb: 'Resize',
    async perform(ctx, f) {
      await call(ctx, 'PATCH', `/volumes/${encodeURIComponent(field(f, 'volume'))}`, { size: checkSize(f) });
      return volumePage(f);
    },
    back: volumePage,
    done: 'Resized volume',
    subjectField: 'volume',
  },
  'volume-snapshot': {
    fields: ['volume', 'snapshot'],
    check(f) {
      checkName(f, 'volume', 'volume name');
      checkName(f, 'snapshot', 'snapshot name');
    },
    describe: (f) =>
      html`Take snapshot <b>${field(f, 'snapshot')}</b> of volume <b>${field(f, 'volume')}</b>: its blocks as they are
        now, kept until the snapshot is deleted. Nothing is copied.`,
    verb: 'Take snapshot',
    async perform(ctx, f) {
      await call(ctx, 'POST', `/volumes/${encodeURIComponent(field(f, 'volume'))}/snapshots`, {
        name: field(f, 'snapshot'),
      });
      return volumePage(f);
    },
    back: volumePage,
    done: 'Took a snapshot of volume',
    subjectField: 'volume',
  },
  'volume-clone': {
    fields: ['volume', 'snapshot', 'name'],
    check(f) {
      checkName(f, 'volume', 'volume name');
      checkName(f, 'snapshot', 'snapshot name');
      checkName(f, 'name', 'new volume name');
    },
    describe: (f) =>
      html`Make volume <b>${field(f, 'name')}</b>, a clone of <b>${field(f, 'volume')}@${field(f, 'snapshot')}</b>: it
        reads as the snapshot and shares its blocks until either is written.`,
    verb: 'Clone',
    async perform(ctx, f) {
      await call(ctx, 'POST', `/volumes/${encodeURIComponent(field(f, 'volume'))}/clone`, {
        snapshot: field(f, 'snapshot'),
        name: field(f, 'name'),
      });
      return href('/volumes', field(f, 'name'));
    },
    back: volumePage,
    done: 'Cloned into volume',
    subjectField: 'name',
  },
  'volume-delete': {
    fields: ['volume'],
    check: (f) => checkName(f, 'volume', 'volume name'),
    describe: (f) =>
      html`Delete volume <b>${field(f, 'volume')}</b>: it moves to the trash, is no longer listed or served, and
        <code>cairnctl trash restore</code> brings it back until gc empties the trash.`,
    verb: 'Delete volume',
    danger: true,
    async perform(ctx, f) {
      await call(ctx, 'DELETE', `/volumes/${encodeURIComponent(field(f, 'volume'))}`);
      return '/volumes';
    },
    back: volumePage,
    done: 'Deleted volume',
    subjectField: 'volume',
  },
  'node-drain': {
    fields: ['node'],
    check: (f) => checkName(f, 'node', 'node name'),
    describe: (f) =>
      html`Drain node <b>${field(f, 'node')}</b>: placement stops choosing it, and every shard it holds is moved to
        other targets in the background.`,
    verb: 'Drain node',
    danger: true,
    async perform(ctx, f) {
      await call(ctx, 'POST', `/nodes/${encodeURIComponent(field(f, 'node'))}/drain`, {});
      return href('/nodes', field(f, 'node'));
    },
    back: (f) => href('/nodes', field(f, 'node')),
    done: 'Started draining node',
    subjectField: 'node',
  },
  'repair-start': {
    fields: [],
    check: () => undefined,
    describe: () =>
      html`Start one repair pass over every volume: each extent that lost shards is read, decoded and its missing shards
      written to live targets, in the background.`,
    verb: 'Start repair',
    async perform(ctx) {
      await call(ctx, 'POST', '/repair', {});
      return '/';
    },
    back: () => '/',
    done: 'Started a repair pass',
    subjectField: '',
  },
};

/** The hidden inputs that carry the form token and an action's fields into the next form. */
export function hiddenFields(csrf: string, fields: Iterable<readonly [string, string]>): Html {
  return html`<input type="hidden" name="csrf" value="${csrf}" />${[...fields].map(
      ([name, value]) => html`<input type="hidden" name="${name}" value="${value}" />`,
    )}`;
}

/**
 * The first form of an action, as a page shows it to an admin: visible inputs (name, label,
 * placeholder) and fixed values (hidden), and a button. Nothing for a viewer.
 */
export function actionForm(
  admin: boolean,
  csrf: string,
  action: string,
  button: string,
  inputs: readonly (readonly [name: string, label: string, placeholder: string])[],
  fixed: readonly (readonly [string, string])[] = [],
  danger = false,
): Html {
  if (!admin) return html``;
  return html`<form class="action" method="post" action="/act/${action}" data-action="${action}">
    ${hiddenFields(csrf, fixed)}
    ${inputs.map(
      ([name, label, placeholder]) =>
        html`<label>${label}<input name="${name}" placeholder="${placeholder}" required /></label>`,
    )}
    <button type="submit" class="${danger ? 'danger' : ''}">${button}</button>
  </form>`;
}

/** The sentence shown after an action, from the spec's fixed words and the subject's name. */
export function doneSentence(action: string, subject: string): HtmlValue {
  const spec = actions[action];
  if (spec === undefined) return undefined;
  return spec.subjectField === '' ? html`${spec.done}.` : html`${spec.done} <b>${subject}</b>.`;
}
