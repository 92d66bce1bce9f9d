/**
 * A cairnctl usage error changes nothing (issue 8, item 5): from the real binary, against a real
 * etcd and three real cairnd, a command line yargs refuses exits 2 with one line on stderr, and
 * leaves etcd as it was (every key and value under cairn/v1/ but the nodes' own liveness records),
 * the working directory as it was, and no process started (each run carries a fresh marker in its
 * environment, so even a detached daemon is found; see test/harness/leftovers.ts).
 */
import { expect } from 'chai';
import { Etcd3 } from 'etcd3';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEtcd, type EtcdHandle } from '../harness/etcd.js';
import { startCairnd, type CairndHandle } from '../harness/cairnd.js';
import { cairnctl, type CliRun } from '../harness/cli.js';
import {
  describeLeftovers,
  markedProcesses,
  newRunMarker,
  reapLeftovers,
  withRunMarker,
} from '../harness/leftovers.js';

/** What a refused command line did: its run, and the processes it left running when it exited. */
interface Refused {
  readonly run: CliRun;
  readonly started: string[];
}

describe('cairnctl usage errors change nothing', function () {
  let etcd: EtcdHandle;
  let client: Etcd3;
  const nodes: CairndHandle[] = [];
  let cwd: string;

  before(async () => {
    etcd = await startEtcd();
    client = new Etcd3({ hosts: etcd.endpoint });
    for (const zone of ['a', 'b', 'c']) nodes.push(await startCairnd({ etcd: etcd.endpoint, name: `${zone}-1`, zone }));
    // 2+1 so that three nodes can hold a volume of the default profile: a command that wrongly
    // runs with its defaults would succeed, and the test would see what it wrote.
    const init = await cairnctl(['init', '--profile', '2+1', '--extent-size', '1MiB', '--etcd', etcd.endpoint]);
    expect(init.code, init.stderr).to.equal(0);
  });

  after(async () => {
    client?.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await etcd?.stop();
  });

  beforeEach(() => {
    cwd = mkdtempSync(join(tmpdir(), 'cairn-cli-usage-'));
  });

  afterEach(() => {
    rmSync(cwd, { recursive: true, force: true });
  });

  /** Every key under cairn/v1/ with its value, but the liveness records the nodes refresh themselves. */
  async function etcdState(): Promise<Record<string, string>> {
    const all = await client.getAll().prefix('cairn/v1/').strings();
    return Object.fromEntries(Object.entries(all).filter(([key]) => !key.startsWith('cairn/v1/alive/')));
  }

  const ctl = async (args: readonly string[]): Promise<CliRun> => {
    const run = await cairnctl([...args, '--etcd', etcd.endpoint]);
    expect(run.code, `${args.join(' ')}: ${run.stderr}`).to.equal(0);
    return run;
  };

  /**
   * Runs cairnctl in `cwd` with a fresh marker, lists what it left running, then stops that by pid
   * (so a failing test, on code that does start a cluster, leaves nothing behind either).
   */
  async function refused(args: readonly string[], options: { etcd?: boolean } = {}): Promise<Refused> {
    const marker = newRunMarker('cli-usage');
    const run = await cairnctl([...args, ...(options.etcd === false ? [] : ['--etcd', etcd.endpoint])], {
      env: withRunMarker(marker),
      cwd,
      timeoutMs: 60_000,
    });
    const started = describeLeftovers(markedProcesses(marker));
    await reapLeftovers(marker, { exitDeadlineMs: 0 });
    return { run, started };
  }

  /** The common verdict: exit 2, one line on stderr naming `reason`, nothing printed, nothing started. */
  function expectRefused({ run, started }: Refused, reason: string, args: readonly string[]): void {
    const what = `cairnctl ${args.join(' ')}`;
    expect(started, `${what}: processes it started`).to.deep.equal([]);
    expect(run.code, `${what}: ${run.stderr}`).to.equal(2);
    expect(run.stderr.trim().split('\n'), `${what}: ${run.stderr}`).to.have.length(1);
    expect(run.stderr, what).to.contain(reason);
    expect(run.stdout, what).to.equal('');
    expect(readdirSync(cwd), `${what}: files it made in its working directory`).to.deep.equal([]);
  }

  it('volume create with a misspelt option (--proflie) creates no volume', async () => {
    const before = await etcdState();
    const args = ['volume', 'create', 'typo', '1GiB', '--proflie', '8+3'];
    expectRefused(await refused(args), 'Unknown argument: proflie', args);
    expect(await etcdState()).to.deep.equal(before);
    expect((await cairnctl(['volume', 'info', 'typo', '--etcd', etcd.endpoint])).stderr).to.contain(
      'No volume named "typo"',
    );
  });

  it('volume delete without a name deletes nothing, not even a volume named "undefined"', async () => {
    // "undefined" is a valid volume name: the one a handler run with a missing name would delete.
    await ctl(['volume', 'create', 'keep-me', '1GiB']);
    await ctl(['volume', 'create', 'undefined', '1GiB']);
    const before = await etcdState();
    const args = ['volume', 'delete'];
    const result = await refused(args);
    expectRefused(result, 'usage: cairnctl volume delete <name>', args);
    expect(result.run.stderr).to.contain('Not enough non-option arguments: got 0, need at least 1');
    expect(await etcdState()).to.deep.equal(before);
    const names = JSON.parse((await ctl(['volume', 'list', '--json'])).stdout) as { name: string }[];
    expect(names.map((v) => v.name)).to.include.members(['keep-me', 'undefined']);
  });

  it('dev up without --dir starts nothing and makes no ./undefined', async () => {
    // One node keeps the cluster that a wrongly run handler would start small.
    const args = ['dev', 'up', '--zones', '1', '--nodes-per-zone', '1'];
    expectRefused(await refused(args, { etcd: false }), 'Missing required argument: dir', args);
  });

  it('refuses empty, non-numeric, repeated and unknown arguments before any command runs', async () => {
    const before = await etcdState();
    for (const [args, reason, etcdToo] of [
      [['dev', 'up', '--dir'], 'Missing value for dir', false],
      [['dev', 'up', '--dir', 'x', '--zones', 'three'], 'Invalid number for zones', false],
      [['dev', 'up', '--dir', 'x', '--dir', 'y'], 'dir given more than once', false],
      [['volume', 'info'], 'usage: cairnctl volume info <name>', true],
      [['volume', 'create', 'v2', '1GiB', '--zones-required', 'two'], 'Invalid number for zones-required', true],
      [
        ['volume', 'create', 'v2', '1GiB', '--profile', '2+1', '--profile', '4+2'],
        'profile given more than once',
        true,
      ],
      [['volume', 'create', '', '1GiB'], 'Missing value for name', true],
      [['volume', 'create', 'v2'], 'usage: cairnctl volume create <name> <size>', true],
      [['volume', 'create', 'v2', '1GiB', 'extra'], 'Unknown argument: extra', true],
      [['volume', 'dlete', 'keep-me'], 'Did you mean delete?', true],
      [['node', 'drain'], 'usage: cairnctl node drain <name>', true],
      [['target', 'remove'], 'usage: cairnctl target remove <name>', true],
      [['placement', 'explain', 'keep-me'], 'usage: cairnctl placement explain <volume> <extent>', true],
    ] as const) {
      expectRefused(await refused(args, { etcd: etcdToo }), reason, args);
    }
    expect(await etcdState()).to.deep.equal(before);
  });
});
