/**
 * The CSI driver's services, spoken to as a CO does: gRPC over the Unix socket of a real
 * `cairnctl csi serve` on a dev cluster (etcd, six nodes, the NBD frontend). Every call the
 * driver serves, their idempotency, the specification's error codes, and data: a snapshot of
 * written data, clones from it and from a volume read back with nbdcopy, and volumes staged,
 * formatted, mounted, published, expanded and undone through nbdfuse + loop.
 */
import { expect } from 'chai';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createConnection } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { status, statusName } from '../../src/csi/index.js';
import { EtcdMeta } from '../../src/meta/index.js';
import { VolumeMaps } from '../../src/api/index.js';
import {
  skipWithoutFilesystem,
  nbdsh,
  nbdshProcess,
  runOk,
  seededBytes,
  useStack,
  type Stack,
} from '../harness/stack.js';
import { blockWriter, mountWriter, deferStagedCleanup, startDriver, type Message } from '../harness/csi.js';

const MiB = 1024 * 1024;

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
      '{"type":"OFFLINE"}',
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
    expect(page1['next_token']).to.be.a('string').and.not.equal('');
    const page2 = await csi.ok('Controller', 'ListVolumes', { max_entries: 2, starting_token: page1['next_token'] });
    expect(page2['next_token'] ?? '', 'the last page').to.equal('');
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

    // Bytes that are no request at all: a protobuf that cannot be decoded gets an error status,
    // a connection speaking something other than HTTP/2 is closed; the server serves on.
    const raw = new grpc.Client(`unix://${csi.path}`, grpc.credentials.createInsecure());
    const garbage = await new Promise<grpc.ServiceError | null>((resolve) =>
      raw.makeUnaryRequest(
        '/csi.v1.Controller/CreateVolume',
        () => Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x12]),
        (b: Buffer) => b,
        {},
        (err) => resolve(err),
      ),
    );
    raw.close();
    expect(garbage, 'an undecodable request fails').to.not.equal(null);
    expect(['INTERNAL', 'INVALID_ARGUMENT']).to.include(statusName(garbage!.code));
    await new Promise<void>((resolve) => {
      const sock = createConnection(csi.path, () => sock.end('GET / HTTP/1.0\r\n\r\n'));
      sock.on('error', () => resolve());
      sock.on('close', () => resolve());
      sock.resume();
    });
    expect((await csi.ok('Identity', 'Probe', {}))['ready']).to.deep.equal({ value: true });
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

describe('CSI driver with topology: a volume required in one zone keeps its data there', function () {
  this.timeout(240_000);
  const stack = useStack();

  it('pins a volume to the zone accessibility_requirements name: its shards and journal land only there, its topology says so; unknown zones and keys refused', async () => {
    const s = stack();
    const csi = await startDriver(s, ['--topology']);
    const pcaps = ((await csi.ok('Identity', 'GetPluginCapabilities', {}))['capabilities'] as Message[]).map((c) =>
      JSON.stringify(c['service'] ?? c['volume_expansion']),
    );
    expect(pcaps).to.include('{"type":"VOLUME_ACCESSIBILITY_CONSTRAINTS"}');
    const inZone = (zone: string, key = 'topology.cairn.io/zone') => ({
      requisite: [{ segments: { [key]: zone } }],
      preferred: [{ segments: { [key]: zone } }],
    });
    const request = {
      name: 'pvc-b',
      volume_capabilities: [blockWriter],
      capacity_range: { required_bytes: String(8 * MiB) },
      parameters: { profile: '1+1', extentSize: '1MiB' },
      accessibility_requirements: inZone('b'),
    };
    await csi.refused(
      'CreateVolume',
      { ...request, accessibility_requirements: inZone('z') },
      status.RESOURCE_EXHAUSTED,
      /no storage in zone z/,
    );
    await csi.refused(
      'CreateVolume',
      { ...request, accessibility_requirements: inZone('b', 'region') },
      status.INVALID_ARGUMENT,
      /requisite\[0\]\.segments\.region: unknown/,
    );
    const made = (await csi.ok('Controller', 'CreateVolume', request))['volume'] as Message;
    expect(made['accessible_topology']).to.deep.equal([{ segments: { 'topology.cairn.io/zone': 'b' } }]);
    // Every zone that has storage required (what a CO sends when nothing restricts): no pin.
    const everywhere = (
      await csi.ok('Controller', 'CreateVolume', {
        ...request,
        name: 'pvc-any',
        parameters: { extentSize: '1MiB' },
        accessibility_requirements: {
          requisite: ['a', 'b', 'c'].map((z) => ({ segments: { 'topology.cairn.io/zone': z } })),
        },
      })
    )['volume'] as Message;
    expect(everywhere['accessible_topology'], 'not pinned').to.equal(undefined);

    const data = seededBytes('zone-b', 8 * MiB);
    const file = s.path('b.img');
    writeFileSync(file, data);
    // Written and flushed by a connection that stays open: the journal holds the writes.
    const mark = s.devFrontendLog().length;
    const writer = nbdshProcess(
      'h.pwrite(open(A["f"], "rb").read(), 0)\nh.flush()\nprint("written", flush=True)\nsys.stdin.read()',
      { f: file },
      { uri: s.uri('pvc-b'), deadlineMs: 120_000 },
    );
    s.defer('the pvc-b writer', async () => {
      writer.endInput();
      await writer.exit();
    });
    await writer.waitForOutput(/written/);
    const meta = new EtcdMeta([s.etcd]);
    try {
      const volume = await meta.requireVolume('pvc-b');
      expect(volume.allowedZones).to.deep.equal(['b']);
      const zoneOf = new Map((await meta.listTargets()).map((t) => [t.name, t.zone]));
      const journal = await meta.getJournal(volume.id);
      const journalZones = new Set((journal?.segments ?? []).flatMap((seg) => seg.replicas.map((r) => zoneOf.get(r))));
      expect([...journalZones], 'zones holding its journal').to.deep.equal(['b']);
      writer.endInput();
      await writer.exit();
      await s.waitForDevDetach('pvc-b', mark);
      const maps = VolumeMaps.of(meta);
      await maps.refreshTargets();
      const zones = new Set<string>();
      let shards = 0;
      for await (const item of maps.tree(volume).walk(await maps.root(volume)))
        if ('record' in item)
          for (const shard of item.record.shards) {
            zones.add(zoneOf.get(shard.target) ?? '?');
            shards += 1;
          }
      expect(shards, 'shards written').to.equal(8 * 2);
      expect([...zones], 'zones holding its shards').to.deep.equal(['b']);
    } finally {
      meta.close();
    }
    expect((await readVolume(s, 'pvc-b', 'b-back.img')).equals(data)).to.equal(true);
  });
});

describe('CSI driver: the Node service stages, publishes and undoes volumes (nbdfuse + loop)', function () {
  this.timeout(300_000);
  const stack = useStack();

  it('formats and mounts a filesystem volume, bind-mounts it into a target, keeps files across unstage and a plugin restart; a block volume publishes the device; stats; bad requests refused', async function () {
    if (skipWithoutFilesystem(this)) return;
    const s = stack();
    const stateDir = s.path('csi-state');
    const base = s.uri('').replace(/\/$/, '');
    const nodeArgs = [
      '--node',
      '--node-id',
      'node-1',
      '--zone',
      'a',
      '--attach',
      'nbdfuse',
      '--nbd',
      base,
      '--state-dir',
      stateDir,
    ];
    deferStagedCleanup(s, base, stateDir);
    let csi = await startDriver(s, nodeArgs);
    const info = await csi.ok('Node', 'NodeGetInfo', {});
    expect(info).to.deep.include({
      node_id: 'node-1',
      accessible_topology: { segments: { 'topology.cairn.io/zone': 'a' } },
    });
    const ncaps = (
      (await csi.ok('Node', 'NodeGetCapabilities', {}))['capabilities'] as { rpc: { type: string } }[]
    ).map((c) => c.rpc.type);
    expect(ncaps).to.have.members(['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME']);

    await csi.ok('Controller', 'CreateVolume', {
      name: 'pvc-fs',
      volume_capabilities: [mountWriter],
      capacity_range: { required_bytes: String(64 * MiB) },
      parameters: { extentSize: '1MiB' },
    });
    const staging = s.path('kubelet/staging/pvc-fs');
    const target = s.path('kubelet/pods/p1/volumes/pvc-fs/mount');
    const stage = { volume_id: 'pvc-fs', staging_target_path: staging, volume_capability: mountWriter };
    await csi.refused(
      'NodeStageVolume',
      { ...stage, staging_target_path: '' },
      status.INVALID_ARGUMENT,
      /staging_target_path: required/,
    );
    await csi.refused(
      'NodeStageVolume',
      { volume_id: 'pvc-fs', staging_target_path: staging },
      status.INVALID_ARGUMENT,
      /volume_capability: required/,
    );
    await csi.refused(
      'NodePublishVolume',
      { volume_id: 'pvc-fs', staging_target_path: staging, target_path: target, volume_capability: mountWriter },
      status.FAILED_PRECONDITION,
      /not staged/,
    );
    await csi.refused('NodeStageVolume', { ...stage, volume_id: 'pvc-none' }, status.NOT_FOUND, /No volume "pvc-none"/);
    await csi.ok('Node', 'NodeStageVolume', stage);
    await csi.ok('Node', 'NodeStageVolume', stage); // idempotent
    await csi.refused(
      'NodeStageVolume',
      { ...stage, staging_target_path: s.path('elsewhere') },
      status.ALREADY_EXISTS,
      /staged already at/,
    );
    const publish = {
      volume_id: 'pvc-fs',
      staging_target_path: staging,
      target_path: target,
      volume_capability: mountWriter,
    };
    await csi.ok('Node', 'NodePublishVolume', publish);
    await csi.ok('Node', 'NodePublishVolume', publish); // idempotent
    const content = seededBytes('csi-file', 3 * MiB);
    writeFileSync(join(target, 'data.bin'), content);
    await runOk('sync', '/usr/bin/sync', [], { deadlineMs: 60_000 });
    const stats = (await csi.ok('Node', 'NodeGetVolumeStats', { volume_id: 'pvc-fs', volume_path: target }))[
      'usage'
    ] as {
      unit: string;
      used: string;
      total: string;
    }[];
    const bytes = stats.find((u) => u.unit === 'BYTES')!;
    expect(Number(bytes.used)).to.be.at.least(3 * MiB);
    expect(Number(bytes.total))
      .to.be.above(50 * MiB)
      .and.at.most(64 * MiB);
    expect(stats.some((u) => u.unit === 'INODES')).to.equal(true);
    await csi.refused(
      'NodeGetVolumeStats',
      { volume_id: 'pvc-fs', volume_path: s.path('nowhere') },
      status.NOT_FOUND,
      /does not exist/,
    );

    // Unpublish, unstage (twice each: idempotent); the volume detaches from the frontend.
    await csi.ok('Node', 'NodeUnpublishVolume', { volume_id: 'pvc-fs', target_path: target });
    await csi.ok('Node', 'NodeUnpublishVolume', { volume_id: 'pvc-fs', target_path: target });
    expect(existsSync(target)).to.equal(false);
    await csi.ok('Node', 'NodeUnstageVolume', { volume_id: 'pvc-fs', staging_target_path: staging });
    await csi.ok('Node', 'NodeUnstageVolume', { volume_id: 'pvc-fs', staging_target_path: staging });

    // Expanded while not in use (OFFLINE), then staged again: the filesystem grows to the new size
    // and the file is there (no second mkfs); then a restarted plugin unstages what the earlier
    // one staged, from its state directory alone.
    await csi.ok('Controller', 'ControllerExpandVolume', {
      volume_id: 'pvc-fs',
      capacity_range: { required_bytes: String(128 * MiB) },
      volume_capability: mountWriter,
    });
    await csi.ok('Node', 'NodeStageVolume', stage);
    const expanded = await csi.ok('Node', 'NodeExpandVolume', {
      volume_id: 'pvc-fs',
      volume_path: staging,
      staging_target_path: staging,
      capacity_range: { required_bytes: String(128 * MiB) },
    });
    expect(expanded['capacity_bytes']).to.equal(String(128 * MiB));
    await csi.ok('Node', 'NodePublishVolume', publish);
    const grownStats = (await csi.ok('Node', 'NodeGetVolumeStats', { volume_id: 'pvc-fs', volume_path: target }))[
      'usage'
    ] as { unit: string; total: string }[];
    expect(Number(grownStats.find((u) => u.unit === 'BYTES')!.total), 'the filesystem grew').to.be.above(100 * MiB);
    expect(readFileSync(join(target, 'data.bin')).equals(content), 'the file after restaging').to.equal(true);
    await csi.stop();
    csi = await startDriver(s, nodeArgs);
    expect(readFileSync(join(target, 'data.bin')).equals(content), 'the file across a plugin restart').to.equal(true);
    await csi.ok('Node', 'NodeUnpublishVolume', { volume_id: 'pvc-fs', target_path: target });
    await csi.ok('Node', 'NodeUnstageVolume', { volume_id: 'pvc-fs', staging_target_path: staging });
    expect(readdirSync(stateDir).filter((f) => f.endsWith('.json'))).to.deep.equal([]);

    // A block volume: the device itself, bound onto a file in the pod.
    await csi.ok('Controller', 'CreateVolume', {
      name: 'pvc-raw',
      volume_capabilities: [blockWriter],
      capacity_range: { required_bytes: String(16 * MiB) },
      parameters: { extentSize: '1MiB' },
    });
    const rawStaging = s.path('kubelet/staging/pvc-raw');
    const rawTarget = s.path('kubelet/pods/p2/volumeDevices/pvc-raw');
    await csi.ok('Node', 'NodeStageVolume', {
      volume_id: 'pvc-raw',
      staging_target_path: rawStaging,
      volume_capability: blockWriter,
    });
    await csi.ok('Node', 'NodePublishVolume', {
      volume_id: 'pvc-raw',
      staging_target_path: rawStaging,
      target_path: rawTarget,
      volume_capability: blockWriter,
    });
    const rawStats = (await csi.ok('Node', 'NodeGetVolumeStats', { volume_id: 'pvc-raw', volume_path: rawTarget }))[
      'usage'
    ] as {
      total: string;
    }[];
    expect(rawStats[0]!.total).to.equal(String(16 * MiB));
    const block = seededBytes('csi-block', MiB);
    writeFileSync(s.path('block.bin'), block);
    await runOk(
      'dd',
      '/usr/bin/dd',
      [`if=${s.path('block.bin')}`, `of=${rawTarget}`, 'bs=1M', 'oflag=direct', 'conv=fsync'],
      {
        deadlineMs: 60_000,
      },
    );
    await csi.ok('Node', 'NodeUnpublishVolume', { volume_id: 'pvc-raw', target_path: rawTarget });
    await csi.ok('Node', 'NodeUnstageVolume', { volume_id: 'pvc-raw', staging_target_path: rawStaging });
    const mark = s.devFrontendLog().length;
    const back = s.path('raw-back.img');
    await runOk('nbdcopy', '/usr/bin/nbdcopy', [s.uri('pvc-raw'), back], { deadlineMs: 60_000 });
    await s.waitForDevDetach('pvc-raw', mark);
    expect(readFileSync(back).subarray(0, MiB).equals(block), 'the block written through the device').to.equal(true);
  });
});
