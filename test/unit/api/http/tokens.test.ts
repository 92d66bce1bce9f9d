/** The shape of API tokens and the checks on what `token create` is given. */
import { expect } from 'chai';
import { checkRole, checkTokenName, parseToken } from '../../../../src/api/index.js';

describe('parseToken()', () => {
  it('splits cairn_<12 hex>_<43 base64url> into id and secret, and nothing else', () => {
    const secret = 'A'.repeat(42) + '_';
    expect(parseToken(`cairn_0123456789ab_${secret}`)).to.deep.equal({ id: '0123456789ab', secret });
    for (const bad of [
      '',
      'cairn_0123456789ab',
      `cairn_0123456789AB_${secret}`,
      `cairn_0123456789ab_${secret}x`,
      `xcairn_0123456789ab_${secret}`,
      `cairn_0123456789ab_${'A'.repeat(42)}=`,
    ])
      expect(parseToken(bad), bad).to.equal(undefined);
  });
});

describe('checkRole() and checkTokenName()', () => {
  it('accepts the two roles and sensible names, and refuses the rest with the reason', () => {
    expect(checkRole('admin')).to.equal('admin');
    expect(checkRole('viewer')).to.equal('viewer');
    expect(() => checkRole('root')).to.throw(/admin or viewer/);
    expect(checkTokenName('grafana@ops')).to.equal('grafana@ops');
    expect(() => checkTokenName('')).to.throw(/Invalid token name/);
    expect(() => checkTokenName('x'.repeat(65))).to.throw(/Invalid token name/);
    expect(() => checkTokenName('bad\nname')).to.throw(/Invalid token name/);
  });
});
