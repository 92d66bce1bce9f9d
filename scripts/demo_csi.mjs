#!/usr/bin/env node
// `make demo-csi`: a volume's life through the CSI socket alone, as Kubernetes would drive it.
//  1. A local cluster (cairnctl dev up) and the CSI driver (`cairnctl csi serve --controller
//     --node`, attaching through nbdfuse + a loop device: these machines have no nbd module).
//  2. CreateVolume (ext4, 256 MiB), NodeStageVolume (attached, formatted, mounted),
//     NodePublishVolume (bind-mounted where a pod would see it); files written there.
//  3. CreateSnapshot, then CreateVolume from it: the clone is staged and published too, and its
//     files match the original's at the snapshot (files written after it are not there).
//  4. ControllerExpandVolume to 512 MiB (offline: unpublished and unstaged first), staged again,
//     NodeExpandVolume: the filesystem is bigger and the files are intact.
//  5. Everything undone through CSI: unpublish, unstage, delete snapshot and volumes.
// Needs root (mount, losetup) and FUSE; without them it says so and shows the controller steps only.
// Every process it starts is stopped by pid when it ends, however it ends.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { csiServices } from '../dist/src/csi/index.js';
import { waitFor } from '../dist/src/dev/index.js';
import { cairnctlPath } from '../dist/test/harness/cli.js';
import { ClientProcess, filesystemUnsupported, seededBytes, startStack } from '../dist/test/harness/stack.js';

const MiB = 1024 * 1024;
const say = (line) => process.stdout.write(`${line}\n`);
const sha = (bytes) => createHash('sha256').update(bytes).digest('hex').slice(0, 16);

const stack = await startStack();
let driver;
const clients = [];
let failed = false;
try {
  const why = filesystemUnsupported();
  say('== 1. A local cluster (cairnctl dev up) and the CSI driver on a Unix socket');
  const socket = stack.path('csi/csi.sock');
  const node = why === undefined;
  const nodeArgs = node
    ? [
        '--node',
        '--node-id',
        'demo-node',
        '--zone',
        'a',
        '--attach',
        'nbdfuse',
        '--nbd',
        stack.uri('').replace(/\/$/, ''),
      ]
    : [];
  driver = new ClientProcess(
    process.execPath,
    [
      cairnctlPath,
      'csi',
      'serve',
      '--endpoint',
      `unix://${socket}`,
      '--controller',
      '--state-dir',
      stack.path('csi-state'),
      ...nodeArgs,
    ],
    { deadlineMs: 600_000, env: { CAIRN_ETCD: stack.etcd } },
  );
  await driver.waitForOutput(/serving CSI on/);
  await waitFor('the CSI socket', () => existsSync(socket), 30_000);
  say(`   cairnctl csi serve --endpoint unix://${socket} --controller${node ? ' --node --attach nbdfuse' : ''}`);
  if (!node) say(`   (the Node service is left out here: ${why})`);

  const services = csiServices();
  const creds = grpc.credentials.createInsecure();
  const client = {
    Identity: new services.Identity(`unix://${socket}`, creds),
    Controller: new services.Controller(`unix://${socket}`, creds),
    Node: new services.Node(`unix://${socket}`, creds),
  };
  clients.push(...Object.values(client));
  const call = (service, method, request) =>
    new Promise((resolve, reject) =>
      client[service][method](request, (err, res) =>
        err ? reject(new Error(`${method}: ${err.details}`)) : resolve(res),
      ),
    );
  const info = await call('Identity', 'GetPluginInfo', {});
  say(`   GetPluginInfo: ${info.name} ${info.vendor_version}`);

  const mount = { mount: { fs_type: 'ext4' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
  const createVolume = async (name, bytes, source) => {
    const { volume } = await call('Controller', 'CreateVolume', {
      name,
      volume_capabilities: [mount],
      capacity_range: { required_bytes: String(bytes) },
      parameters: { profile: '4+2', extentSize: '1MiB' },
      ...(source === undefined ? {} : { volume_content_source: source }),
    });
    say(
      `   CreateVolume ${name}: ${volume.volume_id}, ${Number(volume.capacity_bytes) / MiB} MiB${source ? ` from ${JSON.stringify(source.snapshot ?? source.volume)}` : ''}`,
    );
    return volume.volume_id;
  };
  const paths = (id) => ({
    staging: stack.path(`kubelet/staging/${id}`),
    target: stack.path(`kubelet/pods/demo/${id}`),
  });
  const stage = async (id) => {
    const p = paths(id);
    await call('Node', 'NodeStageVolume', { volume_id: id, staging_target_path: p.staging, volume_capability: mount });
    await call('Node', 'NodePublishVolume', {
      volume_id: id,
      staging_target_path: p.staging,
      target_path: p.target,
      volume_capability: mount,
    });
    say(`   NodeStageVolume + NodePublishVolume ${id}: mounted at ${p.target}`);
    return p.target;
  };
  const unstage = async (id) => {
    const p = paths(id);
    await call('Node', 'NodeUnpublishVolume', { volume_id: id, target_path: p.target });
    await call('Node', 'NodeUnstageVolume', { volume_id: id, staging_target_path: p.staging });
    say(`   NodeUnpublishVolume + NodeUnstageVolume ${id}`);
  };
  const size = (dir) => {
    const s = statfsSync(dir);
    return `${Math.round((s.blocks * s.bsize) / MiB)} MiB filesystem, ${Math.round(((s.blocks - s.bfree) * s.bsize) / MiB)} MiB used`;
  };

  say('== 2. Provision, stage and publish a volume; write files into it');
  const id = await createVolume('pvc-demo', 256 * MiB);
  const files = { 'a.bin': seededBytes('demo-a', 8 * MiB), 'b.bin': seededBytes('demo-b', 3 * MiB) };
  if (node) {
    const target = await stage(id);
    for (const [name, bytes] of Object.entries(files)) writeFileSync(join(target, name), bytes);
    say(`   wrote a.bin (sha256 ${sha(files['a.bin'])}...) and b.bin; ${size(target)}`);
    // The filesystem's own flush reaches Cairn before the snapshot (as fsfreeze or sync would).
    await new Promise((resolve, reject) =>
      new ClientProcess('/usr/bin/sync', ['-f', join(target, 'a.bin')])
        .exit()
        .then((r) => (r.code === 0 ? resolve() : reject(new Error(r.stderr)))),
    );
  }

  say('== 3. Snapshot it, then clone the snapshot into a new volume');
  const { snapshot } = await call('Controller', 'CreateSnapshot', { source_volume_id: id, name: 'snapshot-demo' });
  say(
    `   CreateSnapshot: ${snapshot.snapshot_id}, ${Number(snapshot.size_bytes) / MiB} MiB, ready ${snapshot.ready_to_use}`,
  );
  if (node) writeFileSync(join(paths(id).target, 'after.bin'), seededBytes('demo-after', MiB));
  const clone = await createVolume('pvc-demo-clone', 256 * MiB, { snapshot: { snapshot_id: snapshot.snapshot_id } });
  if (node) {
    const target = await stage(clone);
    for (const [name, bytes] of Object.entries(files)) {
      const got = readFileSync(join(target, name));
      const same = got.equals(bytes);
      failed ||= !same;
      say(`   clone's ${name}: sha256 ${sha(got)}... ${same ? 'matches the original' : 'DIFFERS'}`);
    }
    const leaked = existsSync(join(target, 'after.bin'));
    failed ||= leaked;
    say(
      `   after.bin, written after the snapshot: ${leaked ? 'IN THE CLONE (wrong)' : 'not in the clone, as it should be'}`,
    );
    await unstage(clone);
  }

  say('== 4. Expand the volume to 512 MiB (offline: not in use), stage it again, grow its filesystem');
  if (node) await unstage(id);
  const grown = await call('Controller', 'ControllerExpandVolume', {
    volume_id: id,
    capacity_range: { required_bytes: String(512 * MiB) },
    volume_capability: mount,
  });
  say(
    `   ControllerExpandVolume: ${Number(grown.capacity_bytes) / MiB} MiB, node expansion required: ${grown.node_expansion_required}`,
  );
  if (node) {
    const p = paths(id);
    await call('Node', 'NodeStageVolume', { volume_id: id, staging_target_path: p.staging, volume_capability: mount });
    const expanded = await call('Node', 'NodeExpandVolume', {
      volume_id: id,
      volume_path: p.staging,
      staging_target_path: p.staging,
      capacity_range: { required_bytes: String(512 * MiB) },
    });
    await call('Node', 'NodePublishVolume', {
      volume_id: id,
      staging_target_path: p.staging,
      target_path: p.target,
      volume_capability: mount,
    });
    say(`   NodeExpandVolume: device ${Number(expanded.capacity_bytes) / MiB} MiB; ${size(p.target)}`);
    const same = readFileSync(join(p.target, 'a.bin')).equals(files['a.bin']);
    failed ||= !same;
    say(`   a.bin after the expansion: ${same ? 'intact' : 'DIFFERS'}`);
    await unstage(id);
  }

  say('== 5. Everything undone through CSI');
  for (const [method, request] of [
    ['DeleteVolume', { volume_id: clone }],
    ['DeleteSnapshot', { snapshot_id: snapshot.snapshot_id }],
    ['DeleteVolume', { volume_id: id }],
  ]) {
    await call('Controller', method, request);
    say(`   ${method} ${Object.values(request)[0]}`);
  }
  const left = await call('Controller', 'ListVolumes', {});
  say(`   ListVolumes: ${(left.entries ?? []).length} volumes left`);
  if (failed) throw new Error('a check above failed');
  say('The CSI demo passed.');
} catch (err) {
  process.stderr.write(`demo-csi: ${err instanceof Error ? err.message : String(err)}\n`);
  if (driver !== undefined) process.stderr.write(driver.stderr().slice(-3000));
  process.exitCode = 1;
} finally {
  for (const c of clients) c.close();
  if (driver !== undefined && driver.running()) driver.kill('SIGTERM');
  if (driver !== undefined) await driver.exit();
  for (const p of await stack.down()) process.stderr.write(`demo-csi: ${p}\n`);
}
