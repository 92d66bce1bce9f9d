/** The policy engine's selectors and its order of precedence. */
import { expect } from 'chai';
import {
  checkSetting,
  matches,
  parseLabels,
  parseSelector,
  resolveSettings,
  type PolicyRule,
} from '../../../src/api/index.js';
import { InvalidArgumentError } from '../../../src/core/index.js';

const sel = (text: string, labels: Record<string, string>): boolean => matches(parseSelector(text), labels);

describe('api: policy selectors', () => {
  it("parses Kubernetes' selector syntax and matches labels with it", () => {
    const pg = { app: 'postgres', tier: 'prod' };
    expect(sel('', pg), 'empty matches all').to.equal(true);
    expect(sel('app=postgres', pg)).to.equal(true);
    expect(sel('app==postgres', pg)).to.equal(true);
    expect(sel('app=mysql', pg)).to.equal(false);
    expect(sel('app!=mysql', pg)).to.equal(true);
    expect(sel('owner!=x', pg), '!= holds for an absent key').to.equal(true);
    expect(sel('tier in (prod, staging)', pg)).to.equal(true);
    expect(sel('tier in (dev)', pg)).to.equal(false);
    expect(sel('tier notin (dev,test)', pg)).to.equal(true);
    expect(sel('app', pg)).to.equal(true);
    expect(sel('!scratch', pg)).to.equal(true);
    expect(sel('!app', pg)).to.equal(false);
    expect(sel('app=postgres,tier in (prod),!scratch', pg)).to.equal(true);
    expect(sel('app=postgres,tier in (dev)', pg), 'every term must hold').to.equal(false);
    expect(sel('example.com/team=db', { 'example.com/team': 'db' }), 'prefixed keys').to.equal(true);
    expect(parseSelector('a=1, b in (x,y) ,!c')).to.have.length(3);
  });

  it('refuses a bad selector saying what is wrong', () => {
    for (const [text, why] of [
      ['app=postgres,,tier=prod', /empty term/],
      ['tier in (prod', /unbalanced/],
      ['tier in prod)', /unbalanced/],
      ['app=post gres', /cannot read "app=post gres"/],
      ['bad key=1', /cannot read/],
      ['app=' + 'x'.repeat(70), /not a label value/],
      ['-app=1', /not a label key/],
      ['tier in ()', /not a label value|needs a list/],
    ] as const)
      expect(() => parseSelector(text), text).to.throw(InvalidArgumentError, why);
  });

  it('parses volume labels and checks settings', () => {
    expect(parseLabels('app=postgres, tier=prod')).to.deep.equal({ app: 'postgres', tier: 'prod' });
    expect(parseLabels('')).to.deep.equal({});
    expect(() => parseLabels('app')).to.throw(InvalidArgumentError, /not key=value/);
    expect(checkSetting('profile', '8+3')).to.equal('profile');
    expect(() => checkSetting('colour', 'blue')).to.throw(InvalidArgumentError, /Unknown setting "colour"/);
    expect(() => checkSetting('profile', 'eight')).to.throw(InvalidArgumentError, /K\+M/);
    expect(() => checkSetting('targets', 'tape')).to.throw(InvalidArgumentError, /node, s3 or any/);
    expect(() => checkSetting('zones', '-1')).to.throw(InvalidArgumentError, /whole number/);
    expect(() => checkSetting('extentSize', 'big')).to.throw(InvalidArgumentError);
  });
});

describe('api: policy precedence', () => {
  const rule = (name: string, selector: string, set: Record<string, string>, override = false): PolicyRule => ({
    name,
    selector,
    set,
    override,
  });
  const rules = [
    rule('all', '', { profile: '4+2', zones: '2' }),
    rule('pg', 'app=postgres', { profile: '6+3' }),
    rule('pg-prod', 'app=postgres,tier=prod', { profile: '8+3', journalReplicas: '4' }),
    rule('b-pg', 'app=postgres', { targets: 'node' }),
    rule('a-pg', 'app=postgres', { targets: 's3' }),
    rule('prod-zones', 'tier=prod', { zones: '3' }, true),
  ];

  it('a more specific rule wins over a less specific one; equals go by name, the later winning', () => {
    const r = resolveSettings(rules, { app: 'postgres' }, {});
    expect(r.values).to.deep.equal({ profile: '6+3', zones: '2', targets: 'node' });
    expect(r.sources).to.deep.include({ profile: 'rule pg', zones: 'rule all', targets: 'rule b-pg' });
    const prod = resolveSettings(rules, { app: 'postgres', tier: 'prod' }, {});
    expect(prod.values.profile).to.equal('8+3');
    expect(prod.sources.profile).to.equal('rule pg-prod');
  });

  it('the request wins over rules, and an override rule over the request', () => {
    const r = resolveSettings(rules, { app: 'postgres', tier: 'prod' }, { profile: '2+1', zones: '1' });
    expect(r.values.profile).to.equal('2+1');
    expect(r.sources.profile).to.equal('request');
    expect(r.values.zones, 'the override rule').to.equal('3');
    expect(r.sources.zones).to.equal('override rule prod-zones');
    expect(r.matched).to.deep.equal(['all', 'a-pg', 'b-pg', 'pg', 'pg-prod', 'prod-zones']);
  });

  it('no matching rule: only the request; the cluster default for the rest (no source given)', () => {
    const r = resolveSettings(rules.slice(1), { app: 'redis' }, { extentSize: '1MiB' });
    expect(r.values).to.deep.equal({ extentSize: '1MiB' });
    expect(r.sources).to.deep.equal({ extentSize: 'request' });
  });
});
