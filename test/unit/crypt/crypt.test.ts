import { expect } from 'chai';
import { createDecipheriv, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CryptPool,
  KeyError,
  VolumeCipher,
  cryptInlineBytesMax,
  ctrRecord,
  journalKeyOf,
  kekIdOf,
  keksFrom,
  newVolumeKey,
  parseKek,
  rewrap,
  unitTweak,
  unwrapDataKey,
  xtsUnits,
} from '../../../src/crypt/index.js';

const unit = 4096;

function pattern(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed * 7) % 251;
  return out;
}

describe('crypt: extent units (AES-256-XTS)', () => {
  const key = randomBytes(64);
  const at = { extent: 3, generation: 2 ** 32 * 5 + 9, unit: 0 };

  it('deciphers what it enciphered, and the ciphertext shares no unit with the plaintext', () => {
    const plain = pattern(4 * unit);
    const bytes = plain.slice();
    xtsUnits(key, bytes, at, true);
    for (let u = 0; u < 4; u++)
      expect(
        Buffer.from(bytes.subarray(u * unit, (u + 1) * unit)).equals(plain.subarray(u * unit, (u + 1) * unit)),
      ).to.equal(false);
    xtsUnits(key, bytes, at, false);
    expect(Buffer.from(bytes).equals(plain)).to.equal(true);
  });

  it('gives unrelated ciphertext for the same bytes in another unit, extent or generation', () => {
    const same = new Uint8Array(unit).fill(0x41);
    const enc = (where: { extent: number; generation: number; unit: number }): string => {
      const b = same.slice();
      xtsUnits(key, b, where, true);
      return Buffer.from(b).toString('hex');
    };
    const seen = new Set([
      enc(at),
      enc({ ...at, unit: 1 }),
      enc({ ...at, extent: 4 }),
      enc({ ...at, generation: at.generation + 1 }),
      enc({ ...at, generation: at.generation + 2 ** 32 }),
    ]);
    expect(seen.size).to.equal(5);
  });

  it('is plain XTS with the documented tweak (an independent decipher agrees)', () => {
    const bytes = pattern(2 * unit, 3);
    const plain = bytes.slice();
    xtsUnits(key, bytes, { ...at, unit: 7 }, true);
    const tweak = unitTweak({ ...at, unit: 7 }, 1);
    expect([...tweak]).to.deep.equal([9, 0, 0, 0, 5, 0, 0, 0, 3, 0, 0, 0, 8, 0, 0, 0]);
    const d = createDecipheriv('aes-256-xts', key, tweak);
    const second = Buffer.concat([d.update(bytes.subarray(unit)), d.final()]);
    expect(second.equals(plain.subarray(unit))).to.equal(true);
  });

  it('refuses a length that is not whole units', () => {
    expect(() => xtsUnits(key, new Uint8Array(unit + 512), at, true)).to.throw(RangeError);
  });
});

describe('crypt: journal records (AES-256-CTR)', () => {
  it('round-trips, and (epoch, lsn) each change the stream', () => {
    const jk = journalKeyOf(randomBytes(64));
    const plain = pattern(10_000);
    const a = ctrRecord(jk, plain, 3, 17);
    expect(Buffer.from(ctrRecord(jk, a, 3, 17)).equals(plain)).to.equal(true);
    expect(Buffer.from(ctrRecord(jk, plain, 3, 18)).equals(a)).to.equal(false);
    expect(Buffer.from(ctrRecord(jk, plain, 4, 17)).equals(a)).to.equal(false);
  });
});

describe('crypt: key-encryption keys', () => {
  const raw = randomBytes(32);

  it('reads 32 bytes raw, as hex or as base64, all to the same key and id', () => {
    const ids = [
      parseKek(raw, 'raw'),
      parseKek(Buffer.from(raw.toString('hex') + '\n'), 'hex'),
      parseKek(Buffer.from(raw.toString('base64')), 'base64'),
    ].map((k) => k.id);
    expect(new Set(ids).size).to.equal(1);
    expect(ids[0])
      .to.equal(kekIdOf(raw))
      .and.match(/^kek-[0-9a-f]{16}$/);
  });

  it('reads the keys a process is given: files, a directory of them (a mounted Secret), the variable', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cairn-kek-'));
    try {
      const a = randomBytes(32);
      const b = randomBytes(32);
      const c = randomBytes(32);
      writeFileSync(join(dir, 'a.kek'), a);
      mkdirSync(join(dir, 'set'));
      writeFileSync(join(dir, 'set', 'b'), b.toString('hex'));
      writeFileSync(join(dir, 'set', '..data'), 'not a key: Kubernetes keeps its links under dot names');
      const keks = keksFrom([join(dir, 'a.kek')], {
        CAIRN_KEK_DIR: join(dir, 'set'),
        CAIRN_KEK: c.toString('base64'),
      });
      expect(keks.map((k) => k.id)).to.deep.equal([kekIdOf(a), kekIdOf(b), kekIdOf(c)]);
      // The same key reached twice (a flag and the variable) is one key.
      expect(keksFrom([join(dir, 'a.kek')], { CAIRN_KEK_FILE: join(dir, 'a.kek') })).to.have.length(1);
      expect(() => keksFrom([], { CAIRN_KEK_DIR: join(dir, 'absent') })).to.throw(/Cannot read CAIRN_KEK_DIR/);
      expect(() => keksFrom([join(dir, 'absent')], {})).to.throw(/Cannot read key-encryption key file/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses anything else, saying how to make one', () => {
    expect(() => parseKek(Buffer.from('short'), 'Key file k')).to.throw(/Key file k does not hold.*head -c 32/);
    expect(() => parseKek(randomBytes(31), 'Key file k')).to.throw(/32 bytes/);
  });

  it('wraps a data key that only its KEK opens, and names the key a volume needs', () => {
    const kek = parseKek(raw, 'file a');
    const other = parseKek(randomBytes(32), 'file b');
    const enc = newVolumeKey(kek);
    expect(enc.wrappedKey).to.not.include(raw.toString('base64'));
    const dataKey = unwrapDataKey(enc, [other, kek], 'Volume "v"');
    expect(dataKey.length).to.equal(64);
    expect(() => unwrapDataKey(enc, [other], 'Volume "v"'))
      .to.throw(KeyError, new RegExp(`encrypted with key ${enc.keyId}.*${other.id} \\(file b\\)`))
      .with.property('code', 'EKEY');
    expect(() => unwrapDataKey(enc, [], 'Volume "v"')).to.throw(KeyError, /no key was given/);
    // A KEK that claims the id but is not the key (or a tampered record) does not open it.
    expect(() => unwrapDataKey(enc, [{ ...other, id: kek.id }], 'Volume "v"')).to.throw(KeyError, /does not open/);
    expect(() => unwrapDataKey({ ...enc, keyUid: 'another' }, [kek], 'Volume "v"')).to.throw(KeyError, /does not open/);
  });

  it('rewraps under a new KEK without changing the data key; the old KEK no longer opens it', () => {
    const a = parseKek(raw, 'a');
    const b = parseKek(randomBytes(32), 'b');
    const enc = newVolumeKey(a);
    const next = rewrap(enc, [a], b, 'Volume "v"');
    expect(next.keyId).to.equal(b.id);
    expect(next.keyUid).to.equal(enc.keyUid);
    expect(unwrapDataKey(next, [b], 'v').equals(unwrapDataKey(enc, [a], 'v'))).to.equal(true);
    expect(() => unwrapDataKey(next, [a], 'v')).to.throw(KeyError);
  });
});

describe('crypt: the pool runs large jobs in workers, with the same result as inline', () => {
  const pool = new CryptPool(2);
  after(() => pool.close());

  it('enciphers ordinary and shared memory in workers exactly as inline does', async () => {
    const key = randomBytes(64);
    const at = { extent: 1, generation: 77, unit: 2 };
    const plain = pattern(256 * 1024, 5);
    const inline = plain.slice();
    xtsUnits(key, inline, at, true);
    const before = pool.stats.offloaded;
    // Ordinary memory, as a view into a larger buffer (only its own bytes may change).
    const big = new Uint8Array(plain.length + 2 * unit);
    big.set(plain, unit);
    await pool.xts('encrypt', key, big.subarray(unit, unit + plain.length), at);
    expect(Buffer.from(big.subarray(unit, unit + plain.length)).equals(inline)).to.equal(true);
    expect(
      big.subarray(0, unit).every((x) => x === 0) && big.subarray(unit + plain.length).every((x) => x === 0),
    ).to.equal(true);
    // Shared memory (the codec's): worked in place.
    const shared = new Uint8Array(new SharedArrayBuffer(plain.length));
    shared.set(plain);
    await pool.xts('encrypt', key, shared, at);
    expect(Buffer.from(shared).equals(inline)).to.equal(true);
    expect(pool.stats.offloaded - before).to.equal(2);
    await pool.xts('decrypt', key, shared, at);
    expect(Buffer.from(shared).equals(plain)).to.equal(true);
  });

  it('runs small jobs inline, and a VolumeCipher seals records either way', async () => {
    const cipher = new VolumeCipher(randomBytes(64), pool);
    const small = pattern(cryptInlineBytesMax);
    const large = pattern(cryptInlineBytesMax + unit);
    for (const plain of [small, large]) {
      const b = plain.slice();
      await cipher.sealRecord(b, 2, 40);
      expect(Buffer.from(b).equals(plain)).to.equal(false);
      cipher.openRecordSync(b, 2, 40);
      expect(Buffer.from(b).equals(plain)).to.equal(true);
    }
    const b = pattern(3 * unit);
    await cipher.encrypt(b, { extent: 0, generation: 1, offset: unit });
    await cipher.decrypt(b.subarray(unit), { extent: 0, generation: 1, offset: 2 * unit });
    expect(Buffer.from(b.subarray(unit)).equals(pattern(3 * unit).subarray(unit))).to.equal(true);
    expect(() => cipher.encrypt(b, { extent: 0, generation: 1, offset: 512 })).to.throw(/not on a 4096-byte unit/);
  });
});
