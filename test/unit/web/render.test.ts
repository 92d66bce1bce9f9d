/**
 * The dashboard's rendering without a server: escaping, the IO chart's axis, health groups, the
 * placement picture, form tokens, safe redirects and the client script's syntax. Pure; no I/O.
 */
import { expect } from 'chai';
import { Script } from 'node:vm';
import { actions, doneSentence, hiddenFields } from '../../../src/web/actions.js';
import type { Placement, VolumeHealth } from '../../../src/web/api_shapes.js';
import { formToken, formTokenValid, sameOrigin } from '../../../src/web/auth.js';
import { ioChart, roundTop, roundTopBinary } from '../../../src/web/chart.js';
import { clientScript } from '../../../src/web/client_script.js';
import { matchPage, safeNext } from '../../../src/web/dashboard.js';
import { duration } from '../../../src/web/format.js';
import { escapeHtml, href, html } from '../../../src/web/html.js';
import { changedRegions } from '../../../src/web/live.js';
import { placementGrid } from '../../../src/web/volume_pages.js';
import { eventText, healthGroup, verdictTone } from '../../../src/web/views.js';

function volume(over: Partial<VolumeHealth> = {}): VolumeHealth {
  return {
    name: 'v',
    id: 'v-id',
    sizeBytes: 1 << 30,
    extentBytes: 1 << 20,
    profile: '4+2',
    k: 4,
    m: 2,
    zonesRequired: 3,
    targets: 'node',
    extents: 1024,
    state: 'ok',
    noRedundancy: false,
    writeBlocked: null,
    attachedBy: null,
    mapError: null,
    writtenExtents: 10,
    degradedExtents: 0,
    unreadableExtents: 0,
    atRiskBytes: 0,
    unreadableBytes: 0,
    missingShards: 0,
    missingShardsByZone: {},
    extentsByShardsLost: [10, 0, 0, 0, 0, 0, 0],
    repairBacklogExtents: 0,
    affectedExtents: [],
    census: null,
    pendingFlush: null,
    journal: null,
    ...over,
  };
}

describe('html``', () => {
  it('escapes every interpolated value and keeps the template text', () => {
    const name = `<script>alert("x")</script>&'`;
    expect(html`<td title="${name}">${name}</td>`.text).to.equal(
      '<td title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;</td>',
    );
  });

  it('keeps nested Html as is and renders lists, numbers and nothing for false, null and undefined', () => {
    const inner = html`<b>${'a<b'}</b>`;
    expect(html`${[inner, 1, false, null, undefined, 'c']}`.text).to.equal('<b>a&lt;b</b>1c');
  });

  it('percent-encodes each name in a path as one segment', () => {
    expect(href('/volumes', 'a b/c?d')).to.equal('/volumes/a%20b%2Fc%3Fd');
    expect(escapeHtml('"')).to.equal('&quot;');
  });
});

describe('ioChart()', () => {
  it('rounds the axis top up to 1, 2 or 5 times a power of ten', () => {
    expect([0, 1, 43.7, 120, 999, 1000, 0.3].map(roundTop)).to.deep.equal([1, 1, 50, 200, 1000, 1000, 0.5]);
    // 1.9e6 B/s = 1.81 MiB/s -> 2 MiB/s; 3000 B/s = 2.93 KiB/s -> 5 KiB/s; below 1 KiB: 1 KiB.
    expect([1.9e6, 3000, 700, 0].map(roundTopBinary)).to.deep.equal([2 * 1048576, 5 * 1024, 1024, 1024]);
  });

  it('places a sample at half the window in the middle of the plot, and escapes its labels', () => {
    const svg = ioChart([{ atMs: 1_800_000, read: 150, write: 0 }], {
      nowMs: 3_600_000,
      windowMs: 3_600_000,
      label: (v) => `${v}<`,
      title: 't',
      id: 'c',
    }).text;
    expect(svg).to.include('data-top="200"');
    // x = 70 + 0.5 * 530 = 335; the plot spans y 8..122 (114 units): y = 122 - 150 / 200 * 114 = 36.5.
    expect(svg).to.match(/class="line read" points="335\.0,36\.5"/);
    expect(svg).to.include('200&lt;');
  });
});

describe('healthGroup()', () => {
  it('puts a volume in the worst group that applies, at the m boundary', () => {
    expect(healthGroup(volume(), false)).to.equal('healthy');
    const lostOne = volume({ state: 'degraded', degradedExtents: 3, extentsByShardsLost: [7, 3, 0, 0, 0, 0, 0] });
    expect(healthGroup(lostOne, false)).to.equal('degraded');
    expect(healthGroup(lostOne, true)).to.equal('rebuilding');
    const lostM = volume({ state: 'degraded', degradedExtents: 1, extentsByShardsLost: [9, 0, 1, 0, 0, 0, 0] });
    expect(healthGroup(lostM, true)).to.equal('at risk');
    expect(healthGroup(volume({ state: 'unreadable', unreadableExtents: 1 }), false)).to.equal('at risk');
  });

  it('colours the verdict red when data is at risk or unreadable', () => {
    expect(['healthy', 'warning', 'degraded', 'unavailable'].map((s) => verdictTone(s as never))).to.deep.equal([
      'ok',
      'warn',
      'bad',
      'bad',
    ]);
  });
});

describe('placementGrid()', () => {
  it('draws one row per extent, one cell per shard, and marks missing shards', () => {
    const placement: Placement = {
      extents: 4,
      writtenExtents: 1,
      truncated: false,
      mapError: null,
      profile: { k: 2, m: 1 },
      placement: [
        {
          extent: 0,
          generation: 3,
          shards: [
            { index: 0, target: 'a-1', zone: 'a', state: 'ok' },
            { index: 1, target: '<b-1>', zone: 'b', state: 'missing' },
            { index: 2, target: 'c-1', zone: 'c', state: 'ok' },
          ],
        },
      ],
    };
    const text = placementGrid(placement).text;
    expect(text).to.include('<th>d0</th><th>d1</th><th>p0</th>');
    expect(text.match(/class="shard /g)).to.have.length(3);
    expect(text).to.include('data-state="missing"');
    expect(text).to.include('&lt;b-1&gt;');
    expect(text).not.to.include('<b-1>');
    expect(text).to.include('<b id="missing-shards">1</b>');
  });
});

describe('form tokens and redirects', () => {
  it('accepts the token made for the same cookie and principal only', () => {
    const t = formToken('cookie-1', 'p1');
    expect(formTokenValid('cookie-1', 'p1', t)).to.equal(true);
    expect(formTokenValid('cookie-2', 'p1', t)).to.equal(false);
    expect(formTokenValid('cookie-1', 'p2', t)).to.equal(false);
    expect(formTokenValid(undefined, 'p1', t)).to.equal(false);
    expect(formTokenValid('cookie-1', 'p1', undefined)).to.equal(false);
    expect(formTokenValid('cookie-1', 'p1', `${t}x`)).to.equal(false);
  });

  it('checks Origin, then Referer, against Host', () => {
    const req = (headers: Record<string, string>) => ({ headers }) as never;
    expect(sameOrigin(req({ host: 'h:1', origin: 'http://h:1' }))).to.equal(true);
    expect(sameOrigin(req({ host: 'h:1', origin: 'http://evil:1' }))).to.equal(false);
    expect(sameOrigin(req({ host: 'h:1', referer: 'http://evil/x' }))).to.equal(false);
    expect(sameOrigin(req({ host: 'h:1', origin: 'null' }))).to.equal(false);
    expect(sameOrigin(req({ host: 'h:1' }))).to.equal(true);
  });

  it('redirects after login only to a local path, without the token', () => {
    expect(safeNext('/volumes/a?x=1&token=t')).to.equal('/volumes/a?x=1');
    expect(['//evil.example', '/\\evil', 'http://evil', '', undefined, null].map((n) => safeNext(n))).to.deep.equal([
      '/',
      '/',
      '/',
      '/',
      '/',
      '/',
    ]);
  });

  it('routes page paths and decodes their names', () => {
    expect(matchPage('/volumes/a%20b')?.params).to.deep.equal(['a b']);
    expect(matchPage('/nope')).to.equal(undefined);
    expect(matchPage('/volumes/%E0')).to.equal(undefined);
  });
});

describe('live regions', () => {
  it('sends a region again only when its markup changed', () => {
    const sent = new Map<string, string>();
    expect(changedRegions({ a: html`1`, b: html`2` }, sent)).to.deep.equal({ a: '1', b: '2' });
    expect(changedRegions({ a: html`1`, b: html`3` }, sent)).to.deep.equal({ b: '3' });
    expect(changedRegions({ a: html`1`, b: html`3` }, sent)).to.deep.equal({});
  });

  it('ships a client script that parses', () => {
    expect(() => new Script(clientScript)).not.to.throw();
    expect(clientScript).not.to.match(/\beval\(|new Function/);
  });
});

describe('words', () => {
  it('gives durations in their two largest units', () => {
    expect([0, 5, 75, 3600, 3660, 90000].map(duration)).to.deep.equal([
      '0 s',
      '5 s',
      '1 min 15 s',
      '1 h',
      '1 h 1 min',
      '1 d 1 h',
    ]);
  });

  it('escapes what an event carries', () => {
    const text = eventText({
      type: 'audit',
      at: '2026-01-01T00:00:00Z',
      who: '<i>x</i>',
      method: 'POST',
      path: '/a',
    }).text;
    expect(text).to.include('&lt;i&gt;x&lt;/i&gt;');
  });
});

describe('actions', () => {
  const fields = (o: Record<string, string>) => new Map(Object.entries(o));
  const create = actions['volume-create']!;

  it('checks names, sizes and profiles before the confirmation', () => {
    expect(() => create.check(fields({ name: 'db-1', size: '10GiB' }))).not.to.throw();
    expect(() => create.check(fields({ name: 'db-1', size: '10GiB', profile: '4+2' }))).not.to.throw();
    expect(() => create.check(fields({ name: '-x', size: '1GiB' }))).to.throw(/Invalid volume name/);
    expect(() => create.check(fields({ name: 'a/b', size: '1GiB' }))).to.throw(/Invalid volume name/);
    expect(() => create.check(fields({ name: 'x', size: 'lots' }))).to.throw(/Invalid size/);
    expect(() => create.check(fields({ name: 'x', size: '1GiB', profile: '4-2' }))).to.throw(/Invalid profile/);
    expect(create.describe(fields({ name: 'x', size: '1GiB' })).text).to.match(/<b>x<\/b> of <b>1 GiB<\/b>/);
  });

  it('says what was done from fixed words, escaping the subject, and nothing for an unknown action', () => {
    expect((doneSentence('volume-delete', '<i>v</i>') as { text: string }).text).to.equal(
      'Deleted volume <b>&lt;i&gt;v&lt;/i&gt;</b>.',
    );
    expect(doneSentence('no-such', 'x')).to.equal(undefined);
    expect(hiddenFields('t"', [['a', '"><x']]).text).to.include('value="&quot;&gt;&lt;x"');
  });
});
