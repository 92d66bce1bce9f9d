import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from '../../../src/core/index.js';
import { journalSegmentBytesDefault } from '../../../src/journal/index.js';
import { nodeLimitsDefault, parseDaemonArgs, type DaemonConfig } from '../../../src/node/index.js';

const base = ['--etcd', 'http://127.0.0.1:2379', '--name', 'n', '--zone', 'a', '--data-dir', '/d'];
const listen = ['--listen', '127.0.0.1:0'];

async function configOf(...args: string[]): Promise<DaemonConfig> {
  const parsed = await parseDaemonArgs([...base, ...args], {});
  if (parsed.kind !== 'run') throw new Error('expected a run config');
  return parsed.config;
}

async function refusal(...args: string[]): Promise<string> {
  try {
    await parseDaemonArgs([...base, ...args], {});
  } catch (err) {
    expect(err).to.be.instanceOf(InvalidArgumentError);
    return (err as Error).message;
  }
  throw new Error('expected the arguments to be refused');
}

describe('cairnd --journal-listen and --journal-segment-size', () => {
  it('defaults the journal to the shard port + 1 on the same host, and to port 0 when the shard port is 0', async () => {
    expect(await configOf('--listen', '127.0.0.1:4101')).to.include({
      journalListenHost: '127.0.0.1',
      journalListenPort: 4102,
      journalAdvertiseHost: '127.0.0.1',
      journalSegmentBytes: journalSegmentBytesDefault,
    });
    expect(await configOf('--listen', '127.0.0.1:0')).to.include({ journalListenPort: 0 });
  });

  it('takes an explicit address, and advertises the --advertise host for it', async () => {
    expect(await configOf('--listen', '127.0.0.1:4101', '--journal-listen', '127.0.0.1:9000')).to.include({
      journalListenPort: 9000,
    });
    expect(await configOf('--listen', '0.0.0.0:4101', '--advertise', '10.0.0.5:4101')).to.include({
      journalListenHost: '0.0.0.0',
      journalListenPort: 4102,
      journalAdvertiseHost: '10.0.0.5',
    });
  });

  it('refuses what clients could not use, with the reason', async () => {
    expect(await refusal('--listen', '127.0.0.1:65535')).to.match(/add --journal-listen/);
    expect(await refusal('--listen', '127.0.0.1:1', '--journal-listen', 'nowhere')).to.match(
      /Invalid --journal-listen address "nowhere"/,
    );
    expect(await refusal('--listen', '127.0.0.1:1', '--journal-listen', '0.0.0.0:9')).to.match(/add --advertise/);
    expect(await refusal('--listen', '127.0.0.1:1', '--journal-segment-size', '1MiB')).to.match(
      /Invalid --journal-segment-size "1MiB"/,
    );
    expect(await configOf('--listen', '127.0.0.1:1', '--journal-segment-size', '32MiB')).to.include({
      journalSegmentBytes: 32 * 1024 * 1024,
    });
  });

  it('keeps one spare segment by default; --journal-spares takes 0 to 16', async () => {
    expect(await configOf(...listen)).to.include({ journalSpares: 1 });
    expect(await configOf(...listen, '--journal-spares', '0')).to.include({ journalSpares: 0 });
    expect(await configOf(...listen, '--journal-spares', '4')).to.include({ journalSpares: 4 });
    for (const bad of ['-1', '17', '1.5', 'many'])
      expect(await refusal(...listen, '--journal-spares', bad), bad).to.include(`Invalid --journal-spares "${bad}"`);
  });
});

describe('cairnd limit flags', () => {
  it('defaults every limit to src/node/limits.ts', async () => {
    expect((await configOf('--listen', '127.0.0.1:0')).limits).to.deep.equal(nodeLimitsDefault);
  });

  it('takes sizes with units, counts and milliseconds', async () => {
    const { limits } = await configOf(
      '--listen',
      '127.0.0.1:0',
      '--put-budget',
      '2GiB',
      '--put-budget-per-client',
      '512MiB',
      '--body-rate-min',
      '1MiB',
      '--body-rate-window',
      '5000',
      '--max-connections',
      '100',
      '--max-connections-per-client',
      '10',
      '--idle-timeout',
      '1000',
      '--response-budget',
      '64MiB',
      '--response-budget-per-client',
      '16MiB',
    );
    expect(limits).to.deep.equal({
      putBytesMax: 2 * 1024 ** 3,
      putBytesPerClientMax: 512 * 1024 ** 2,
      bodyRateMinBytesPerS: 1024 ** 2,
      bodyRateWindowMs: 5000,
      connectionsMax: 100,
      connectionsPerClientMax: 10,
      idleTimeoutMs: 1000,
      responseBytesMax: 64 * 1024 ** 2,
      responseBytesPerClientMax: 16 * 1024 ** 2,
    });
  });

  it('refuses a zero, and a per-client share above its whole, naming the flags', async () => {
    expect(await refusal('--listen', '127.0.0.1:0', '--max-connections', '0')).to.match(/--max-connections/);
    expect(await refusal('--listen', '127.0.0.1:0', '--put-budget', '0')).to.match(/--put-budget/);
    expect(await refusal('--listen', '127.0.0.1:0', '--put-budget', '1MiB')).to.match(
      /--put-budget-per-client .* is above --put-budget/,
    );
  });
});

describe('cairnd: where the shared secret comes from', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cairnd-args-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reads CAIRN_NODE_SECRET_FILE, the file clients read, when no --auth-secret-file is given', async () => {
    const file = join(dir, 'secret');
    writeFileSync(file, 'correct-horse-battery-staple\n');
    const parsed = await parseDaemonArgs([...base, ...listen], { CAIRN_NODE_SECRET_FILE: file });
    if (parsed.kind !== 'run') throw new Error('expected a run config');
    expect(parsed.config.authSecret).to.equal('correct-horse-battery-staple');
    // The flag wins over the environment; the environment's secret comes last.
    const other = join(dir, 'other');
    writeFileSync(other, 'another-long-shared-secret\n');
    const flagged = await parseDaemonArgs([...base, ...listen, '--auth-secret-file', other], {
      CAIRN_NODE_SECRET_FILE: file,
      CAIRN_NODE_SECRET: 'yet-another-long-secret',
    });
    if (flagged.kind !== 'run') throw new Error('expected a run config');
    expect(flagged.config.authSecret).to.equal('another-long-shared-secret');
  });

  it('refuses a CAIRN_NODE_SECRET_FILE it cannot read, naming it, rather than running open', async () => {
    const missing = join(dir, 'missing');
    let message = '';
    await parseDaemonArgs([...base, ...listen], { CAIRN_NODE_SECRET_FILE: missing }).catch(
      (err: Error) => (message = err.message),
    );
    expect(message).to.match(new RegExp(`Cannot read CAIRN_NODE_SECRET_FILE ${missing}`));
  });
});
