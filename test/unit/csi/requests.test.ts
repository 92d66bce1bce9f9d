/** What the CSI driver checks before it acts: names, sizes, capabilities, parameters, pages. */
import { expect } from 'chai';
import {
  CsiError,
  cairnName,
  capability,
  exportUri,
  page,
  sizeFor,
  status,
  statusOf,
  unsupported,
  volumeParameters,
} from '../../../src/csi/index.js';
import { InvalidArgumentError } from '../../../src/core/index.js';
import { NotFoundError, PreconditionError } from '../../../src/meta/index.js';

function codeOf(f: () => unknown): number | undefined {
  try {
    f();
  } catch (err) {
    return err instanceof CsiError ? err.code : -1;
  }
  return undefined;
}

describe('csi: request checks', () => {
  it('keeps a name Cairn accepts, folds any other to one stable name, refuses control characters', () => {
    expect(cairnName('pvc-0a1b2c3d-aaaa-bbbb-cccc-0123456789ab', 'name')).to.equal(
      'pvc-0a1b2c3d-aaaa-bbbb-cccc-0123456789ab',
    );
    const folded = cairnName('Data_Vol.1', 'name');
    expect(folded).to.match(/^data-vol-1-[0-9a-f]{12}$/);
    expect(cairnName('Data_Vol.1', 'name')).to.equal(folded);
    expect(cairnName('data_vol.1', 'name')).to.not.equal(folded);
    expect(cairnName('___', 'name')).to.match(/^csi-[0-9a-f]{12}$/);
    expect(cairnName('x'.repeat(100), 'name').length).to.be.at.most(63);
    expect(codeOf(() => cairnName('bad\u0001name', 'name'))).to.equal(status.INVALID_ARGUMENT);
    expect(codeOf(() => cairnName('', 'name'))).to.equal(status.INVALID_ARGUMENT);
  });

  it('sizes: required rounded up to 4 KiB, the default 1 GiB, OUT_OF_RANGE when nothing fits', () => {
    expect(sizeFor(undefined)).to.equal(1024 ** 3);
    expect(sizeFor({ required_bytes: '1' })).to.equal(4096);
    expect(sizeFor({ required_bytes: '8192', limit_bytes: '8192' })).to.equal(8192);
    expect(sizeFor({ limit_bytes: String(10 * 4096 + 5) })).to.equal(10 * 4096);
    expect(codeOf(() => sizeFor({ required_bytes: '5000', limit_bytes: '6000' }))).to.equal(status.OUT_OF_RANGE);
    expect(codeOf(() => sizeFor({ required_bytes: '10', limit_bytes: '5' }))).to.equal(status.INVALID_ARGUMENT);
    expect(codeOf(() => sizeFor({ required_bytes: '-1' }))).to.equal(status.INVALID_ARGUMENT);
    expect(codeOf(() => sizeFor({ required_bytes: '1e3' }))).to.equal(status.INVALID_ARGUMENT);
  });

  it('capabilities: access type and mode required; one writer, ext4 and xfs served', () => {
    const ok = capability({ mount: { fs_type: 'xfs' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } }, 'c');
    expect(ok).to.deep.include({ kind: 'mount', fsType: 'xfs', mode: 'SINGLE_NODE_WRITER' });
    expect(unsupported(ok)).to.equal(undefined);
    expect(codeOf(() => capability({ access_mode: { mode: 'SINGLE_NODE_WRITER' } }, 'c'))).to.equal(
      status.INVALID_ARGUMENT,
    );
    expect(codeOf(() => capability({ block: {} }, 'c'))).to.equal(status.INVALID_ARGUMENT);
    expect(unsupported(capability({ block: {}, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' } }, 'c'))).to.match(
      /not served/,
    );
    expect(
      unsupported(capability({ mount: { fs_type: 'btrfs' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } }, 'c')),
    ).to.match(/btrfs/);
  });

  it('parameters: known keys parsed, the provisioner keys passed over, unknown keys named', () => {
    expect(
      volumeParameters({
        profile: '8+3',
        zones: '3',
        targets: 'node',
        durableShards: '10',
        journalReplicas: '4',
        extentSize: '1MiB',
        'csi.storage.k8s.io/pvc/name': 'x',
      }),
    ).to.deep.equal({
      profile: '8+3',
      zonesRequired: 3,
      targets: 'node',
      durableShardsMin: 10,
      journalReplicas: 4,
      extentBytes: 1024 * 1024,
      labels: { 'pvc-name': 'x' },
    });
    expect(volumeParameters({ labels: 'app=postgres,tier=prod' }).labels).to.deep.equal({
      app: 'postgres',
      tier: 'prod',
    });
    expect(codeOf(() => volumeParameters({ labels: 'app' }))).to.equal(status.INVALID_ARGUMENT);
    expect(codeOf(() => volumeParameters({ zones: 'three' }))).to.equal(status.INVALID_ARGUMENT);
    expect(codeOf(() => volumeParameters({ speed: 'fast' }))).to.equal(status.INVALID_ARGUMENT);
    expect(codeOf(() => volumeParameters({ extentSize: 'big' }))).to.equal(status.INVALID_ARGUMENT);
  });

  it('pages: a token names the last key given; entries deleted or added meanwhile skip nothing; any other token is ABORTED', () => {
    const key = (n: number): string => `v${n}`;
    const all = [5, 1, 3, 2, 4];
    expect(page(all, {}, key)).to.deep.equal({ entries: [1, 2, 3, 4, 5], next: '' });
    const first = page(all, { max_entries: 2 }, key);
    expect(first.entries).to.deep.equal([1, 2]);
    expect(page(all, { max_entries: 2, starting_token: first.next }, key).entries).to.deep.equal([3, 4]);
    // 2 (the last of the first page) deleted and 0 and 6 added: the next page still starts at 3.
    const changed = [0, 1, 3, 4, 5, 6];
    expect(page(changed, { max_entries: 2, starting_token: first.next }, key).entries).to.deep.equal([3, 4]);
    const last = page(all, { max_entries: 3, starting_token: first.next }, key);
    expect(last).to.deep.equal({ entries: [3, 4, 5], next: '' });
    for (const bad of ['x', '2', 'after:', 'after:!!', 'invalid-token'])
      expect(
        codeOf(() => page(all, { starting_token: bad }, key)),
        bad,
      ).to.equal(status.ABORTED);
    expect(codeOf(() => page(all, { max_entries: -1 }, key))).to.equal(status.INVALID_ARGUMENT);
  });

  it("maps Cairn's errors to the specification's codes", () => {
    expect(statusOf(new InvalidArgumentError('x')).code).to.equal(status.INVALID_ARGUMENT);
    expect(statusOf(new NotFoundError('x')).code).to.equal(status.NOT_FOUND);
    expect(statusOf(new PreconditionError('x')).code).to.equal(status.FAILED_PRECONDITION);
    expect(statusOf(new CsiError(status.ABORTED, 'x')).code).to.equal(status.ABORTED);
    expect(statusOf(new Error('x')).code).to.equal(status.INTERNAL);
  });
});

describe('csi: a node attaches exports by URI', () => {
  it('names the volume as the export of the frontend URI, TCP or Unix socket; refuses other schemes', () => {
    expect(exportUri('nbd://127.0.0.1:10809', 'pvc-a')).to.equal('nbd://127.0.0.1:10809/pvc-a');
    expect(exportUri('nbd://127.0.0.1:10809/', 'pvc-a')).to.equal('nbd://127.0.0.1:10809/pvc-a');
    expect(exportUri('nbd+unix:///?socket=/run/cairn/nbd.sock', 'pvc-a')).to.equal(
      'nbd+unix:///pvc-a?socket=/run/cairn/nbd.sock',
    );
    expect(() => exportUri('http://x', 'pvc-a')).to.throw(InvalidArgumentError, /--nbd/);
    expect(() => exportUri('not a uri', 'pvc-a')).to.throw(InvalidArgumentError, /--nbd/);
  });
});
