// The pure pieces of NBD TLS: the PSK file format, --tls-allow parsing and checking, the identity
// of a client certificate, and the `nbd serve` TLS flags read into server options.
import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from '../../../src/core/index.js';
import { nbdTls } from '../../../src/nbd/index.js';
import { nbdTlsOptionsOf } from '../../../src/cli/nbd_tls.js';

const { certificateIdentity, parsePskFile, parseTlsAllow, tlsAllows } = nbdTls;

describe('NBD TLS configuration', () => {
  describe('parsePskFile', () => {
    it('reads IDENTITY:HEXKEY lines, skipping blanks and comments', () => {
      const keys = parsePskFile('# keys\nalice:00ff10\n\r\nbob:AABB\n', 'psk.keys');
      expect([...keys.keys()]).to.deep.equal(['alice', 'bob']);
      expect(keys.get('alice')?.toString('hex')).to.equal('00ff10');
      expect(keys.get('bob')?.toString('hex')).to.equal('aabb');
    });

    it('splits at the last colon, so an identity may hold one', () => {
      expect(parsePskFile('host:alice:0011\n', 'f').get('host:alice')?.toString('hex')).to.equal('0011');
    });

    for (const [text, pattern] of [
      ['alice\n', /line 1: expected IDENTITY:HEXKEY/],
      [':0011\n', /line 1: expected IDENTITY:HEXKEY/],
      ['alice:\n', /line 1: the key of "alice"/],
      ['alice:abc\n', /line 1: the key of "alice"/],
      ['alice:zz\n', /line 1: the key of "alice"/],
      ['alice:00\nalice:11\n', /line 2: identity "alice" appears twice/],
      ['# nothing\n\n', /psk.keys: no IDENTITY:HEXKEY line/],
    ] as const) {
      it(`refuses ${JSON.stringify(text)}`, () => {
        expect(() => parsePskFile(text, 'psk.keys'))
          .to.throw(InvalidArgumentError, pattern)
          .with.property('message')
          .that.includes('psk.keys');
      });
    }
  });

  describe('--tls-allow', () => {
    it('gives null without entries (no authorization: everything allowed)', () => {
      expect(parseTlsAllow([])).to.equal(null);
      expect(tlsAllows(null, null, 'v')).to.equal(true);
    });

    it('adds up entries per identity; * is any volume; an unlisted identity gets nothing', () => {
      const allow = parseTlsAllow(['alice=a,b', 'alice=c', 'ops=*', 'CN=x=y']);
      expect(tlsAllows(allow, 'alice', 'a')).to.equal(true);
      expect(tlsAllows(allow, 'alice', 'c')).to.equal(true);
      expect(tlsAllows(allow, 'alice', 'd')).to.equal(false);
      expect(tlsAllows(allow, 'ops', 'anything')).to.equal(true);
      expect(tlsAllows(allow, 'CN=x', 'y')).to.equal(true);
      expect(tlsAllows(allow, 'mallory', 'a')).to.equal(false);
      expect(tlsAllows(allow, null, 'a')).to.equal(false);
    });

    for (const bad of ['alice', '=a', 'alice=', 'alice=a,,b', 'alice=a,']) {
      it(`refuses ${JSON.stringify(bad)}`, () => {
        expect(() => parseTlsAllow([bad])).to.throw(InvalidArgumentError, /--tls-allow .*IDENTITY=VOLUME/);
      });
    }
  });

  describe('certificateIdentity', () => {
    it('is the CN, else the first subjectAltName value, else null', () => {
      expect(certificateIdentity({ subject: { CN: 'alice' }, subjectaltname: 'DNS:other' })).to.equal('alice');
      expect(certificateIdentity({ subject: { CN: ['first', 'second'] } })).to.equal('first');
      expect(certificateIdentity({ subject: {}, subjectaltname: 'DNS:bob, IP Address:127.0.0.1' })).to.equal('bob');
      expect(certificateIdentity({ subject: null })).to.equal(null);
    });
  });

  describe('nbd serve TLS flags', () => {
    let dir: string;
    let psk: string;
    before(() => {
      dir = mkdtempSync(join(tmpdir(), 'cairn-nbd-tls-flags-'));
      psk = join(dir, 'psk.keys');
      writeFileSync(psk, 'alice:0011\n');
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    it('gives no TLS options for --tls off, and refuses TLS flags with it', () => {
      expect(nbdTlsOptionsOf({ tls: 'off' })).to.equal(undefined);
      expect(() => nbdTlsOptionsOf({ tls: 'off', 'tls-cert': 'c.pem' })).to.throw(/--tls-cert needs --tls on/);
      expect(() => nbdTlsOptionsOf({ tls: 'off', 'tls-allow': 'a=b' })).to.throw(/--tls-allow needs --tls on/);
    });

    it('needs a certificate with its key, or a PSK file', () => {
      expect(() => nbdTlsOptionsOf({ tls: 'on' })).to.throw(
        /--tls on needs --tls-cert and --tls-key, or --tls-psk-file/,
      );
      expect(() => nbdTlsOptionsOf({ tls: 'require', 'tls-cert': 'c.pem' })).to.throw(/go together/);
      expect(() => nbdTlsOptionsOf({ tls: 'on', 'tls-cert': 'c', 'tls-key': 'k', 'tls-allow': 'a=b' })).to.throw(
        /--tls-allow needs --tls-ca or --tls-psk-file/,
      );
    });

    it('names a file it cannot read', () => {
      const missing = join(dir, 'missing.pem');
      expect(() => nbdTlsOptionsOf({ tls: 'on', 'tls-cert': missing, 'tls-key': missing })).to.throw(
        `Cannot read --tls-cert ${missing}`,
      );
    });

    it('reads the PSK file and every --tls-allow (one or many)', () => {
      const one = nbdTlsOptionsOf({ tls: 'require', 'tls-psk-file': psk, 'tls-allow': 'alice=a' });
      expect(one?.mode).to.equal('require');
      expect(one?.psk?.get('alice')).to.deep.equal(Buffer.from([0x00, 0x11]));
      expect(tlsAllows(one?.allow, 'alice', 'a')).to.equal(true);
      const many = nbdTlsOptionsOf({ tls: 'on', 'tls-psk-file': psk, 'tls-allow': ['alice=a', 'bob=b'] });
      expect(tlsAllows(many?.allow, 'bob', 'b')).to.equal(true);
      expect(tlsAllows(many?.allow, 'bob', 'a')).to.equal(false);
    });
  });
});
