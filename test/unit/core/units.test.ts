import { expect } from 'chai';
import { InvalidArgumentError, formatBytes, parseProfile, parseSize } from '../../../src/core/index.js';

describe('parseSize()', () => {
  it('reads binary and decimal units', () => {
    expect(parseSize('1MiB')).to.equal(1048576);
    expect(parseSize('20GiB')).to.equal(20 * 1024 ** 3);
    expect(parseSize('4096')).to.equal(4096);
    expect(parseSize('1.5KiB')).to.equal(1536);
    expect(parseSize('2MB')).to.equal(2_000_000);
  });

  it('refuses fractions of a byte, unknown units and garbage', () => {
    expect(() => parseSize('1.1B')).to.throw(InvalidArgumentError, 'not a whole number');
    expect(() => parseSize('3 parsecs')).to.throw(InvalidArgumentError, 'unknown unit');
    expect(() => parseSize('-1MiB')).to.throw(InvalidArgumentError, 'expected a number');
  });

  it('formats with binary units', () => {
    expect(formatBytes(1536)).to.equal('1.5 KiB');
    expect(formatBytes(1048576)).to.equal('1 MiB');
    expect(formatBytes(12)).to.equal('12 B');
  });
});

describe('parseProfile()', () => {
  it('reads K+M', () => {
    expect(parseProfile('4+2')).to.deep.equal({ k: 4, m: 2 });
    expect(parseProfile('1+0')).to.deep.equal({ k: 1, m: 0 });
    expect(parseProfile('200+55')).to.deep.equal({ k: 200, m: 55 });
  });

  it('refuses 0+2, 4+x and 250+10 with the reason', () => {
    expect(() => parseProfile('0+2')).to.throw(InvalidArgumentError, 'K must be at least 1');
    expect(() => parseProfile('4+x')).to.throw(InvalidArgumentError, 'expected K+M');
    expect(() => parseProfile('250+10')).to.throw(InvalidArgumentError, 'K+M is 260, at most 255');
  });
});
