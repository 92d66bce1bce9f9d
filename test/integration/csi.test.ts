/**
 * The CSI driver's Identity and Controller services, spoken to as a CO does: gRPC over the Unix
 * socket of a real `cairnctl csi serve --controller` on a dev cluster (etcd, six nodes, the NBD
 * frontend). Every call the driver serves, their idempotency, the specification's error codes,
 * and data: a snapshot of written data, a clone from it and from a volume read back with nbdcopy.
 */
import { expect } from 'chai';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { cairnctlPath } from '../harness/cli.js';
import { waitFor } from '../../src/dev/index.js';
import { csiServices, status, statusName } from '../../src/csi/index.js';
import { ClientProcess, nbdsh, runOk, seededBytes, useStack, type Stack } from '../harness/stack.js';

const MiB = 1024 * 1024;
type Message = Record<string, unknown>;

/** A unary call: its response (fields at their default, as protobuf omits them, are absent), or the gRPC status it failed with. */
type Outcome = { ok: true; response: Message } | { ok: false; code: number; details: string };

class CsiClient {
  private readonly clients: Record<string, grpc.Client>;
  constructor(path: string) {
    const services = csiServices();
    const creds = grpc.credentials.createInsecure();
    this.clients = {
      Identity: new services.Identity(`unix://${path}`, creds),
      Controller: new services.Controller(`unix://${path}`, creds),
    };
  }
  call(service: 'Identity' | 'Controller', method: string, request: Message): Promise<Outcome> {
    const client = this.clients[service] as unknown as Record<
      string,
      (r: Message, cb: (err: grpc.ServiceError | null, res: Message) => void) => void
    >;
    return new Promise((resolve) =>
      client[method]!.call(client, request, (err, res) =>
        resolve(err === null ? { ok: true, response: res } : { ok: false, code: err.code, details: err.details }),
      ),
    );
  }
  async ok(service: 'Identity' | 'Controller', method: string, request: Message): Promise<Message> {
    const r = await this.call(service, method, request);
    if (!r.ok) throw new Error(`${method} failed: ${statusName(r.code)}: ${r.details}`);
    return r.response;
  }
  /** The call must fail with `code`, its details matching `pattern`. */
  async refused(method: string, request: Message, code: number, pattern: RegExp): Promise<void> {
    const r = await this.call('Controller', method, request);
    expect(r.ok, `${method} ${JSON.stringify(request)} should fail`).to.equal(false);
    if (r.ok) return;
    expect(statusName(r.code), `${method}: ${r.details}`).to.equal(statusName(code));
    expect(r.details).to.match(pattern);
  }
  close(): void {
    for (const c of Object.values(this.clients)) c.close();
  }
}

const mountWriter = { mount: { fs_type: 'ext4' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const blockWriter = { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

async function startDriver(s: Stack): Promise<CsiClient> {
  const path = s.path('csi/csi.sock');
  const driver = new ClientProcess(
    process.execPath,
    [cairnctlPath, 'csi', 'serve', '--endpoint', `unix://${path}`, '--controller'],
    { deadlineMs: 600_000, env: { CAIRN_ETCD: s.etcd } },
  );
  s.defer('the CSI driver', async () => {
    driver.kill('SIGTERM');
    await driver.exit();
  });
  await driver.waitForOutput(/serving CSI on/);
  await waitFor('the CSI socket', () => existsSync(path), 30_000);
  const client = new CsiClient(path);
  s.defer('the CSI clients', async () => client.close());
  return client;
}

/** Reads a volume whole through the dev frontend (nbdcopy), and waits for it to detach again. */
async function readVolume(s: Stack, volume: string, file: string): Promise<Buffer> {
  const path = s.path(file);
  const mark = s.devFrontendLog().length;
  await runOk(`nbdcopy ${volume}`, '/usr/bin/nbdcopy', [s.uri(volume), path], { deadlineMs: 60_000 });
  await s.waitForDevDetach(volume, mark);
  return readFileSync(path);
}

describe('CSI driver: Identity and Controller over gRPC against a dev cluster', function () {
  this.timeout(240_000);
  const stack = useStack();

  it('identity, capabilities, and volumes created, listed, validated and deleted idempotently, with the specification error codes', async () => {
    const s = stack();
    const csi = await startDriver(s);
    const info = await csi.ok('Identity', 'GetPluginInfo', {});
    expect(info['name']).to.equal('csi.cairn.io');
    expect(info['vendor_version']).to.match(/^\d+\.\d+\.\d+/);
    const pcaps = (await csi.ok('Identity', 'GetPluginCapabilities', {}))['capabilities'] as Message[];
    expect(pcaps.map((c) => JSON.stringify(c['service'] ?? c['volume_expansion']))).to.include.members([
      '{"type":"CONTROLLER_SERVICE"}',
      '{"type":"ONLINE"}',
    ]);
    expect((await csi.ok('Identity', 'Probe', {}))['ready']).to.deep.equal({ value: true });
    const ccaps = (await csi.ok('Controller', 'ControllerGetCapabilities', {}))['capabilities'] as {
      rpc: { type: string };
    }[];
    expect(ccaps.map((c) => c.rpc.type)).to.have.members([
      'CREATE_DELETE_VOLUME',
      'LIST_VOLUMES',
      'GET_CAPACITY',
      'CREATE_DELETE_SNAPSHOT',
      'LIST_SNAPSHOTS',
      'CLONE_VOLUME',
      'EXPAND_VOLUME',
    ]);

    // Malformed requests: INVALID_ARGUMENT naming the field; nothing is created.
    await csi.refused(
      'CreateVolume',
      { volume_capabilities: [mountWriter] },
      status.INVALID_ARGUMENT,
      /^name: required/,
    );
    await csi.refused('CreateVolume', { name: 'pvc-x' }, status.INVALID_ARGUMENT, /^volume_capabilities: required/);
    await csi.refused(
      'CreateVolume',
      { name: 'pvc-x', volume_capabilities: [{ mount: {} }] },
      status.INVALID_ARGUMENT,
      /volume_capabilities\[0\]\.access_mode\.mode: required/,
    );
    await csi.refused(
      'CreateVolume',
      { name: 'pvc-x', volume_capabilities: [{ mount: {}, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' } }] },
      status.INVALID_ARGUMENT,
      /access mode MULTI_NODE_MULTI_WRITER is not served/,
    );
    await csi.refused(
      'CreateVolume',
      {
        name: 'pvc-x',
        volume_capabilities: [{ mount: { fs_type: 'vfat' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
      },
      status.INVALID_ARGUMENT,
      /filesystem "vfat" is not served/,
    );
    await csi.refused(
      'CreateVolume',
      {
        name: 'pvc-x',
        volume_capabilities: [mountWriter],
        capacity_range: { required_bytes: '100', limit_bytes: '50' },
      },
      status.INVALID_ARGUMENT,
      /required_bytes 100 is above limit_bytes 50/,
    );
    await csi.refused(
      'CreateVolume',
      {
        name: 'pvc-x',
        volume_capabilities: [mountWriter],
        capacity_range: { required_bytes: '5000', limit_bytes: '6000' },
      },
      status.OUT_OF_RANGE,
      /no size in whole 4096-byte blocks/,
    );
    await csi.refused(
      'CreateVolume',
      { name: 'pvc-x', volume_capabilities: [mountWriter], parameters: { colour: 'blue' } },
      status.INVALID_ARGUMENT,
      /parameters\.colour: unknown/,
    );
    await csi.refused(
      'CreateVolume',
      { name: 'pvc-x', volume_capabilities: [mountWriter], parameters: { profile: '4+9' } },
      status.INVALID_ARGUMENT,
      /4\+9/,
    );
    expect((await csi.ok('Controller', 'ListVolumes', {}))['entries'] ?? [], 'an empty list').to.deep.equal([]);

    // Create, and again: the same volume; with another size: ALREADY_EXISTS.
    const request = {
      name: 'pvc-a',
      volume_capabilities: [mountWriter],
      capacity_range: { required_bytes: String(64 * MiB) },
      parameters: { profile: '4+2', extentSize: '1MiB', 'csi.storage.k8s.io/pvc/name': 'data' },
    };
    const made = (await csi.ok('Controller', 'CreateVolume', request))['volume'] as Message;
    expect([made['volume_id'], made['capacity_bytes']]).to.deep.equal(['pvc-a', String(64 * MiB)]);
    expect(made['volume_context']).to.include({ profile: '4+2', extentBytes: String(MiB) });
    const again = (await csi.ok('Controller', 'CreateVolume', request))['volume'] as Message;
    expect(again['volume_id']).to.equal('pvc-a');
    await csi.refused(
      'CreateVolume',
      { ...request, capacity_range: { required_bytes: String(128 * MiB) } },
      status.ALREADY_EXISTS,
      /exists with 67108864 bytes/,
    );
    // A CO name Cairn does not accept as it is maps to one stable Cairn name.
    const odd = (
      await csi.ok('Controller', 'CreateVolume', { name: 'Data_Vol.1', volume_capabilities: [blockWriter] })
    )['volume'] as Message;
    expect(odd['volume_id']).to.match(/^data-vol-1-[0-9a-f]{12}$/);
    expect(odd['capacity_bytes'], 'the default size').to.equal(String(1024 * MiB));
    const oddAgain = (
      await csi.ok('Controller', 'CreateVolume', { name: 'Data_Vol.1', volume_capabilities: [blockWriter] })
    )['volume'] as Message;
    expect(oddAgain['volume_id']).to.equal(odd['volume_id']);

    // Two CreateVolume calls for one new name at once: never two volumes, never a failure other
    // than ABORTED (the op lock) for the second.
    const race = await Promise.all(
      [0, 1].map(() =>
        csi.call('Controller', 'CreateVolume', { name: 'pvc-race', volume_capabilities: [mountWriter] }),
      ),
    );
    for (const r of race) if (!r.ok) expect(statusName(r.code), r.details).to.equal('ABORTED');
    expect(race.some((r) => r.ok)).to.equal(true);

    const page1 = await csi.ok('Controller', 'ListVolumes', { max_entries: 2 });
    const ids1 = (page1['entries'] as { volume: Message }[]).map((e) => e.volume['volume_id']);
    expect(ids1).to.have.length(2);
    expect(page1['next_token']).to.equal('2');
    const page2 = await csi.ok('Controller', 'ListVolumes', { max_entries: 2, starting_token: '2' });
    const ids2 = (page2['entries'] as { volume: Message }[]).map((e) => e.volume['volume_id']);
    expect([...ids1, ...ids2].sort()).to.deep.equal([odd['volume_id'], 'pvc-a', 'pvc-race'].sort());
    await csi.refused('ListVolumes', { starting_token: 'bogus' }, status.ABORTED, /starting_token "bogus"/);

    await csi.refused(
      'ValidateVolumeCapabilities',
      { volume_id: 'pvc-none', volume_capabilities: [mountWriter] },
      status.NOT_FOUND,
      /pvc-none/,
    );
    await csi.refused(
      'ValidateVolumeCapabilities',
      { volume_id: 'pvc-a' },
      status.INVALID_ARGUMENT,
      /volume_capabilities/,
    );
    const valid = await csi.ok('Controller', 'ValidateVolumeCapabilities', {
      volume_id: 'pvc-a',
      volume_capabilities: [mountWriter],
    });
    expect(valid['confirmed']).to.not.equal(undefined);
    const notValid = await csi.ok('Controller', 'ValidateVolumeCapabilities', {
      volume_id: 'pvc-a',
      volume_capabilities: [{ block: {}, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' } }],
    });
    expect([notValid['confirmed'], notValid['message']]).to.deep.equal([undefined, notValid['message']]);
    expect(notValid['message']).to.match(/not served/);

    const capacity = Number((await csi.ok('Controller', 'GetCapacity', {}))['available_capacity']);
    const inZoneA = Number(
      (
        await csi.ok('Controller', 'GetCapacity', {
          accessible_topology: { segments: { 'topology.cairn.io/zone': 'a' } },
        })
      )['available_capacity'],
    );
    expect(capacity).to.be.above(0);
    expect(inZoneA).to.be.above(0).and.below(capacity);
    await csi.refused(
      'GetCapacity',
      { accessible_topology: { segments: { region: 'x' } } },
      status.INVALID_ARGUMENT,
      /segments\.region: unknown/,
    );

    // Delete: gone for good, and again: still success; a missing id: success.
    await csi.ok('Controller', 'DeleteVolume', { volume_id: 'pvc-race' });
    await csi.ok('Controller', 'DeleteVolume', { volume_id: 'pvc-race' });
    await csi.ok('Controller', 'DeleteVolume', { volume_id: 'pvc-never' });
    await csi.refused('DeleteVolume', {}, status.INVALID_ARGUMENT, /^volume_id: required/);
    const left = (await csi.ok('Controller', 'ListVolumes', {}))['entries'] as { volume: Message }[];
    expect(left.map((e) => e.volume['volume_id']).sort()).to.deep.equal([odd['volume_id'], 'pvc-a'].sort());
  });

  it('snapshots of written data, clones from a snapshot and from a volume read it back, expansion grows; deletes refused while cloned', async () => {
    const s = stack();
    const csi = await startDriver(s);
    const create = (name: string, bytes: number, source?: Message): Promise<Message> =>
      csi.ok('Controller', 'CreateVolume', {
        name,
        volume_capabilities: [blockWriter],
        capacity_range: { required_bytes: String(bytes) },
        parameters: { extentSize: '1MiB' },
        ...(source === undefined ? {} : { volume_content_source: source }),
      });
    await create('pvc-src', 8 * MiB);
    const data = seededBytes('csi-src', 8 * MiB);
    const file = s.path('src.img');
    writeFileSync(file, data);
    const mark = s.devFrontendLog().length;
    await nbdsh(
      'write pvc-src',
      'h.pwrite(open(A["f"], "rb").read(), 0)\nh.flush()',
      { f: file },
      {
        uri: s.uri('pvc-src'),
        deadlineMs: 60_000,
      },
    );
    await s.waitForDevDetach('pvc-src', mark);

    const snap = (await csi.ok('Controller', 'CreateSnapshot', { source_volume_id: 'pvc-src', name: 'snapshot-1' }))[
      'snapshot'
    ] as Message;
    expect(snap).to.include({
      snapshot_id: 'pvc-src@snapshot-1',
      source_volume_id: 'pvc-src',
      size_bytes: String(8 * MiB),
      ready_to_use: true,
    });
    expect(Number((snap['creation_time'] as { seconds: string }).seconds)).to.be.above(1_700_000_000);
    const snapAgain = (
      await csi.ok('Controller', 'CreateSnapshot', { source_volume_id: 'pvc-src', name: 'snapshot-1' })
    )['snapshot'] as Message;
    expect(snapAgain['snapshot_id']).to.equal('pvc-src@snapshot-1');
    await create('pvc-other', 4 * MiB);
    await csi.refused(
      'CreateSnapshot',
      { source_volume_id: 'pvc-other', name: 'snapshot-1' },
      status.ALREADY_EXISTS,
      /exists already, of volume pvc-src/,
    );
    await csi.refused(
      'CreateSnapshot',
      { source_volume_id: 'pvc-none', name: 'snapshot-2' },
      status.NOT_FOUND,
      /pvc-none/,
    );
    await csi.refused('CreateSnapshot', { source_volume_id: 'pvc-src' }, status.INVALID_ARGUMENT, /^name: required/);

    const bySource = (await csi.ok('Controller', 'ListSnapshots', { source_volume_id: 'pvc-src' }))['entries'] as {
      snapshot: Message;
    }[];
    expect(bySource.map((e) => e.snapshot['snapshot_id'])).to.deep.equal(['pvc-src@snapshot-1']);
    const byId = (await csi.ok('Controller', 'ListSnapshots', { snapshot_id: 'pvc-src@snapshot-1' }))[
      'entries'
    ] as unknown[];
    expect(byId).to.have.length(1);
    const none = (await csi.ok('Controller', 'ListSnapshots', { snapshot_id: 'pvc-src@nope' }))['entries'] ?? [];
    expect(none).to.deep.equal([]);

    // A clone of the snapshot, asked larger: the snapshot's bytes, then zeros.
    await csi.refused(
      'CreateVolume',
      {
        name: 'pvc-small',
        volume_capabilities: [blockWriter],
        capacity_range: { required_bytes: String(4 * MiB) },
        volume_content_source: { snapshot: { snapshot_id: 'pvc-src@snapshot-1' } },
      },
      status.OUT_OF_RANGE,
      /smaller than the source/,
    );
    await csi.refused(
      'CreateVolume',
      {
        name: 'pvc-c0',
        volume_capabilities: [blockWriter],
        volume_content_source: { snapshot: { snapshot_id: 'pvc-src@nope' } },
      },
      status.NOT_FOUND,
      /pvc-src@nope/,
    );
    const c1 = (await create('pvc-c1', 12 * MiB, { snapshot: { snapshot_id: 'pvc-src@snapshot-1' } }))[
      'volume'
    ] as Message;
    expect(c1['capacity_bytes']).to.equal(String(12 * MiB));
    expect(c1['content_source']).to.deep.include({ snapshot: { snapshot_id: 'pvc-src@snapshot-1' } });
    const c1Bytes = await readVolume(s, 'pvc-c1', 'c1.img');
    expect(c1Bytes.subarray(0, 8 * MiB).equals(data), 'the clone holds the snapshot').to.equal(true);
    expect(
      c1Bytes.subarray(8 * MiB).every((b) => b === 0),
      'then zeros',
    ).to.equal(true);

    // A clone of a volume: through a snapshot taken for it, gone when the clone is.
    await create('pvc-c2', 8 * MiB, { volume: { volume_id: 'pvc-src' } });
    expect((await readVolume(s, 'pvc-c2', 'c2.img')).equals(data), 'the volume clone').to.equal(true);

    // Expand: grows; a smaller or equal size keeps it; node expansion is asked for a mount.
    const grown = await csi.ok('Controller', 'ControllerExpandVolume', {
      volume_id: 'pvc-other',
      capacity_range: { required_bytes: String(16 * MiB) },
      volume_capability: mountWriter,
    });
    expect(grown).to.deep.equal({ capacity_bytes: String(16 * MiB), node_expansion_required: true });
    const same = await csi.ok('Controller', 'ControllerExpandVolume', {
      volume_id: 'pvc-other',
      capacity_range: { required_bytes: String(8 * MiB) },
      volume_capability: blockWriter,
    });
    expect(same).to.deep.equal({ capacity_bytes: String(16 * MiB), node_expansion_required: false });
    await csi.refused(
      'ControllerExpandVolume',
      { volume_id: 'pvc-none', capacity_range: { required_bytes: '4096' } },
      status.NOT_FOUND,
      /pvc-none/,
    );

    // Deleting the snapshot is refused while a clone reads it; the source volume too.
    await csi.refused('DeleteSnapshot', { snapshot_id: 'pvc-src@snapshot-1' }, status.FAILED_PRECONDITION, /pvc-c1/);
    await csi.refused('DeleteVolume', { volume_id: 'pvc-src' }, status.FAILED_PRECONDITION, /pvc-c1|pvc-c2/);
    await csi.ok('Controller', 'DeleteVolume', { volume_id: 'pvc-c1' });
    await csi.ok('Controller', 'DeleteVolume', { volume_id: 'pvc-c2' });
    await csi.ok('Controller', 'DeleteSnapshot', { snapshot_id: 'pvc-src@snapshot-1' });
    await csi.ok('Controller', 'DeleteSnapshot', { snapshot_id: 'pvc-src@snapshot-1' });
    await csi.ok('Controller', 'DeleteSnapshot', { snapshot_id: 'not-an-id' });
    // The snapshot taken for pvc-c2 went with it, so the source can go now.
    expect(
      (await csi.ok('Controller', 'ListSnapshots', { source_volume_id: 'pvc-src' }))['entries'] ?? [],
    ).to.deep.equal([]);
    await csi.ok('Controller', 'DeleteVolume', { volume_id: 'pvc-src' });
  });
});
