import { expect } from 'chai';
import {
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
  existsSync,
  statSync,
  unlinkSync,
  truncateSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cairnctl } from '../harness/cli.js';
import { seededBytes } from '../support/bytes.js';
import { subspaceParity } from '../support/subspace.js';

describe('cairnctl codec encode/decode', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'cairn-cli-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  async function encode(bytes: Uint8Array, profile: string, extra: string[] = []) {
    const input = join(dir, 'input.bin');
    writeFileSync(input, bytes);
    return cairnctl([
      'codec',
      'encode',
      '--profile',
      profile,
      '--input',
      input,
      '--output-dir',
      join(dir, 'shards'),
      ...extra,
    ]);
  }

  it('writes k+m shards of ceil(size / k) bytes and a manifest, with parity identical to @subspace', async () => {
    const bytes = seededBytes(100_003, 1);
    const run = await encode(bytes, '5+3', ['--json']);
    expect(run.code, run.stderr).to.equal(0);
    expect(JSON.parse(run.stdout)).to.include({ k: 5, m: 3, size: 100_003, shardBytes: 20_001 });
    const shards = Array.from({ length: 8 }, (_, i) => readFileSync(join(dir, 'shards', `shard.${i}`)));
    for (const s of shards) expect(s.length).to.equal(20_001);
    const manifest = JSON.parse(readFileSync(join(dir, 'shards', 'manifest.json'), 'utf8'));
    expect(manifest).to.include({ format: 'cairn-shards/1', k: 5, m: 3, size: 100_003, shardBytes: 20_001 });
    expect(manifest.shards).to.have.length(8);
    // The last data shard's tail is zero padding.
    expect(shards[4]!.subarray(20_001 - 2)).to.deep.equal(Buffer.from([0, 0]));
    const parity = subspaceParity(
      shards.slice(0, 5).map((s) => new Uint8Array(s)),
      3,
    );
    parity.forEach((p, i) => expect(Buffer.from(p).equals(shards[5 + i]!), `parity shard ${i}`).to.equal(true));
  });

  it('rebuilds the file after m shards are deleted', async () => {
    const bytes = seededBytes(65_537, 2);
    expect((await encode(bytes, '4+2')).code).to.equal(0);
    unlinkSync(join(dir, 'shards', 'shard.0'));
    unlinkSync(join(dir, 'shards', 'shard.3'));
    const out = join(dir, 'out.bin');
    const run = await cairnctl(['codec', 'decode', '--input-dir', join(dir, 'shards'), '--output', out, '--json']);
    expect(run.code, run.stderr).to.equal(0);
    expect(JSON.parse(run.stdout)).to.deep.include({ missing: [0, 3], corrupt: [], rebuilt: [0, 3] });
    expect(Buffer.from(bytes).equals(readFileSync(out))).to.equal(true);
  });

  it('treats a shard with a flipped byte as missing and still decodes', async () => {
    const bytes = seededBytes(9_000, 3);
    expect((await encode(bytes, '3+1')).code).to.equal(0);
    const path = join(dir, 'shards', 'shard.1');
    const shard = readFileSync(path);
    shard[17] = shard[17]! ^ 0x40;
    writeFileSync(path, shard);
    const out = join(dir, 'out.bin');
    const run = await cairnctl(['codec', 'decode', '--input-dir', join(dir, 'shards'), '--output', out]);
    expect(run.code, run.stderr).to.equal(0);
    expect(run.stdout).to.contain('corrupt (checksum mismatch, ignored): shard.1');
    expect(Buffer.from(bytes).equals(readFileSync(out))).to.equal(true);
  });

  it('round-trips 0-byte and 1-byte files', async () => {
    for (const size of [0, 1]) {
      const bytes = seededBytes(size, 4);
      expect((await encode(bytes, '4+2', ['--force'])).code).to.equal(0);
      unlinkSync(join(dir, 'shards', 'shard.0'));
      const out = join(dir, `out-${size}.bin`);
      const run = await cairnctl(['codec', 'decode', '--input-dir', join(dir, 'shards'), '--output', out]);
      expect(run.code, run.stderr).to.equal(0);
      expect(statSync(out).size).to.equal(size);
      expect(Buffer.from(bytes).equals(readFileSync(out))).to.equal(true);
    }
  });

  it('fails cleanly with m+1 shards lost, naming them, and writes no output', async () => {
    expect((await encode(seededBytes(5000, 5), '4+2')).code).to.equal(0);
    for (const i of [1, 2, 5]) unlinkSync(join(dir, 'shards', `shard.${i}`));
    const out = join(dir, 'out.bin');
    const run = await cairnctl(['codec', 'decode', '--input-dir', join(dir, 'shards'), '--output', out]);
    expect(run.code).to.equal(1);
    expect(run.stderr.trim().split('\n')).to.have.length(1);
    expect(run.stderr).to.contain('4 shards needed, 3 present').and.contain('missing shard.1, shard.2, shard.5');
    expect(existsSync(out)).to.equal(false);
  });

  it('refuses bad profiles with a one-line reason and exit code 2', async () => {
    for (const [profile, reason] of [
      ['0+2', 'K must be at least 1'],
      ['4+x', 'expected K+M'],
      ['250+10', 'at most 255 shards'],
    ] as const) {
      const run = await encode(seededBytes(10, 6), profile);
      expect(run.code, profile).to.equal(2);
      expect(run.stderr.trim().split('\n'), profile).to.have.length(1);
      expect(run.stderr, profile).to.contain(reason);
      expect(existsSync(join(dir, 'shards')), profile).to.equal(false);
    }
  });

  it('refuses a directory without a manifest, and shards of the wrong size', async () => {
    const noManifest = await cairnctl(['codec', 'decode', '--input-dir', dir, '--output', join(dir, 'o')]);
    expect(noManifest.code).to.equal(2);
    expect(noManifest.stderr).to.contain('no readable manifest.json');

    expect((await encode(seededBytes(4000, 7), '2+1')).code).to.equal(0);
    truncateSync(join(dir, 'shards', 'shard.2'), 100);
    const wrongSize = await cairnctl([
      'codec',
      'decode',
      '--input-dir',
      join(dir, 'shards'),
      '--output',
      join(dir, 'o'),
    ]);
    expect(wrongSize.code).to.equal(2);
    expect(wrongSize.stderr).to.contain('shard.2 has 100 bytes, the manifest says every shard has 2000');
    expect(existsSync(join(dir, 'o'))).to.equal(false);
  });

  it('refuses to overwrite an existing shard set without --force', async () => {
    expect((await encode(seededBytes(100, 8), '2+1')).code).to.equal(0);
    const again = await encode(seededBytes(100, 9), '2+1');
    expect(again.code).to.equal(2);
    expect(again.stderr).to.contain('pass --force');
  });

  it('rejects unknown commands and missing options with exit code 2', async () => {
    expect((await cairnctl(['frobnicate'])).code).to.equal(2);
    const run = await cairnctl(['codec', 'encode', '--profile', '4+2']);
    expect(run.code).to.equal(2);
    expect(run.stderr).to.contain('Missing required argument');
  });
});
