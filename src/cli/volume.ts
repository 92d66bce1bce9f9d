/** `cairnctl volume create|list|info|delete`. */
import type { Argv } from 'yargs';
import {
  InvalidArgumentError,
  formatBytes,
  formatProfile,
  parseSize,
  volumeName,
  type Profile,
} from '../core/index.js';
import { readKekFile, rewrapKey, transitKey, transitToken, type KeyWrapping } from '../crypt/index.js';
import {
  cloneVolume,
  createVolume,
  createVolumeBody,
  parseLabels,
  resizeVolume,
  snapshotUsage,
  volumeInfo,
  type CreateVolumeOptions,
} from '../api/index.js';
import { apiOf, seg, viaApiOrMeta } from './via_api.js';
import { cliOwner, withLocalFrontend } from './snapshot.js';
import { transferCommands } from './transfer.js';
import { extentCount, mapLevelsFor } from '../extent/index.js';
import { journalReplicasOf, rewrapVolumeKey, type VolumeRecord } from '../meta/index.js';
import type { VolumeInfo } from '../api/index.js';
import { clusterOptions, encryptionRequest, isJson, keksOf, table, withMeta, stringArg } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { emit } from './output.js';

const describeVolume = (v: VolumeRecord): string[] => [
  `name:           ${v.name}`,
  `id:             ${v.id}`,
  `size:           ${formatBytes(v.sizeBytes)} (${v.sizeBytes} bytes)`,
  `profile:        ${formatProfile(v.profile)} (${redundancyText(v.profile)}, ${((v.profile.k + v.profile.m) / v.profile.k).toFixed(2)}x raw)`,
  `extent size:    ${formatBytes(v.extentBytes)} (${Math.ceil(v.sizeBytes / v.extentBytes)} extents)`,
  `zones required: ${v.zonesRequired}`,
  `targets:        ${v.targets}`,
  `durable shards: ${v.durableShardsMin ?? v.profile.k + v.profile.m} of ${v.profile.k + v.profile.m} stored before a flush succeeds`,
  `journal:        ${journalReplicasOf(v) === 0 ? 'off (every flush writes erasure-coded generations)' : `${journalReplicasOf(v)} replicas (small writes are durable once every replica has them)`}`,
  `created:        ${v.createdAt}`,
  `encryption:     ${v.encryption === undefined ? 'none' : `${v.encryption.cipher}, data key wrapped by ${v.encryption.keyId}`}`,
  ...(v.parent === undefined
    ? []
    : [`cloned from:    ${v.parent.volume}@${v.parent.snapshot} (shares its data until written or flattened)`]),
];

/** What `volume rekey` rewraps with: --new-kek-file, or --new-kms and --new-kms-key. */
function newWrappingOf(argv: Record<string, unknown>): KeyWrapping {
  const file = argv['new-kek-file'];
  const kms = argv['new-kms'];
  const key = argv['new-kms-key'];
  if (typeof file === 'string' && kms === undefined && key === undefined)
    return { kind: 'kek', kek: readKekFile(file) };
  if (file === undefined && typeof kms === 'string' && typeof key === 'string')
    return { kind: 'transit', at: transitKey(kms, key), token: transitToken() };
  throw new InvalidArgumentError('Give --new-kek-file FILE, or --new-kms URL with --new-kms-key NAME');
}

/** `4+2`, or `4+0 (no redundancy)`: a profile as lists and messages show it. */
const profileText = (p: Profile): string => `${formatProfile(p)}${p.m === 0 ? ' (no redundancy)' : ''}`;

/** What a profile survives, in words: "survives 2 lost shards per extent", or a plain warning for m = 0. */
function redundancyText(profile: Profile): string {
  return profile.m === 0
    ? 'no redundancy: one lost shard loses data'
    : `survives ${profile.m} lost ${profile.m === 1 ? 'shard' : 'shards'} per extent`;
}

export function volumeCommand(ctx: CliContext) {
  return {
    command: 'volume <action>',
    describe: 'Create, list, inspect and delete block volumes',
    builder: (y: Argv) =>
      y
        .command({
          command: 'create <name> <size>',
          describe: 'Create a thin volume (sizes like 512MiB, 20GiB)',
          builder: (a: Argv) =>
            clusterOptions(a)
              .positional('name', { type: 'string', describe: 'volume name: lowercase letters, digits, -' })
              .positional('size', { type: 'string', describe: 'size, e.g. 20GiB' })
              .option('profile', { type: 'string', describe: 'K+M (default: the cluster default)' })
              .option('extent-size', { type: 'string', describe: 'extent size (default: the cluster default)' })
              .option('zones-required', { type: 'number', describe: 'zones the shards of each extent must span' })
              .option('targets', { type: 'string', describe: 'where shards may go: node, s3 or any' })
              .option('durable-shards', {
                type: 'number',
                describe: 'shards that must be stored before a flush succeeds (default K+M, at least K+1)',
              })
              .option('journal-replicas', {
                type: 'number',
                describe:
                  'nodes that must hold small writes before a FLUSH is answered (default M+1; 0: no journal, every flush writes erasure-coded generations)',
              })
              .option('allow-no-redundancy', {
                type: 'boolean',
                default: false,
                describe: 'accept a profile with M = 0 (such as 4+0), where one lost shard loses data',
              })
              .option('in-zones', {
                type: 'string',
                describe:
                  'pin the shards (and journal and map pages) to these zones, comma-separated (default: any zone)',
              })
              .option('label', {
                type: 'string',
                array: true,
                describe: 'a label KEY=VALUE (repeatable); policy rules select volumes by their labels',
              })
              .option('encrypt', {
                type: 'boolean',
                describe:
                  'encrypt at rest (AES-256-XTS) with a new data key wrapped by --kek-file; nodes and S3 see ciphertext only',
              })
              .option('kms', {
                type: 'string',
                describe:
                  'instead of --kek-file: a key service speaking the Vault transit interface (http(s)://HOST:PORT) wraps the data key; token from CAIRN_KMS_TOKEN_FILE',
              })
              .option('kms-key', { type: 'string', describe: 'the key in the --kms service that wraps it' })
              .example('$0 volume create pg-data 20GiB --profile 4+2', '')
              .example('$0 volume create secrets 1GiB --encrypt --kek-file ./kek', '')
              .example('$0 volume create secrets 1GiB --encrypt --kms http://127.0.0.1:8200 --kms-key cairn', '')
              .example('$0 volume create pg-data 20GiB --label app=postgres --label tier=prod', ''),
          handler: withErrors(ctx, async (argv) => {
            const inZones = argv['in-zones'] === undefined ? undefined : String(argv['in-zones']).split(',');
            // What was asked, but encryption: the same request against etcd or through the API.
            const asked: CreateVolumeOptions = {
              name: stringArg(argv, 'name'),
              sizeBytes: parseSize(stringArg(argv, 'size'), 'volume size'),
              ...(argv['profile'] === undefined ? {} : { profile: String(argv['profile']) }),
              ...(argv['extent-size'] === undefined
                ? {}
                : { extentBytes: parseSize(String(argv['extent-size']), 'extent size') }),
              ...(argv['zones-required'] === undefined ? {} : { zonesRequired: Number(argv['zones-required']) }),
              ...(argv['targets'] === undefined ? {} : { targets: String(argv['targets']) }),
              ...(argv['durable-shards'] === undefined ? {} : { durableShardsMin: Number(argv['durable-shards']) }),
              ...(argv['journal-replicas'] === undefined ? {} : { journalReplicas: Number(argv['journal-replicas']) }),
              allowNoRedundancy: Boolean(argv['allow-no-redundancy']),
              labels: parseLabels(((argv['label'] as string[] | undefined) ?? []).join(','), '--label'),
              ...(inZones === undefined ? {} : { allowedZones: inZones.map((z) => z.trim()) }),
            };
            const volume = await viaApiOrMeta(
              argv,
              (api) => {
                if (argv['encrypt'] !== undefined || argv['kek-file'] !== undefined || argv['kms'] !== undefined)
                  throw new InvalidArgumentError(
                    'Create encrypted volumes against etcd, not through --api: the key-encryption key stays on this machine',
                  );
                return api.request<VolumeRecord>('POST', '/volumes', createVolumeBody(asked));
              },
              (meta) => createVolume(meta, { ...asked, ...encryptionRequest(argv) }),
            );
            emit(ctx.io, isJson(argv), volume, (v) => [
              `Created volume ${v.name}: ${formatBytes(v.sizeBytes)}, ${profileText(v.profile)}, extents of ${formatBytes(v.extentBytes)}${v.encryption === undefined ? '' : `, encrypted (data key wrapped by ${v.encryption.keyId}: attach it with that key)`}`,
              ...Object.entries(v.settingSources ?? {})
                .filter(([, source]) => source.includes('rule '))
                .map(([setting, source]) => `  ${setting} set by ${source}`),
            ]);
          }),
        })
        .command({
          command: 'list',
          describe: 'List volumes',
          builder: (a: Argv) => clusterOptions(a),
          handler: withErrors(ctx, async (argv) => {
            const volumes = await viaApiOrMeta(
              argv,
              (api) => api.request<VolumeRecord[]>('GET', '/volumes'),
              (meta) => meta.listVolumes(),
            );
            emit(ctx.io, isJson(argv), volumes, (list) =>
              list.length === 0
                ? ['No volumes.']
                : table(
                    ['NAME', 'SIZE', 'PROFILE', 'EXTENT', 'ZONES', 'TARGETS', 'CREATED'],
                    list.map((v) => [
                      v.name,
                      formatBytes(v.sizeBytes),
                      profileText(v.profile),
                      formatBytes(v.extentBytes),
                      String(v.zonesRequired),
                      v.targets,
                      v.createdAt,
                    ]),
                  ),
            );
          }),
        })
        .command({
          command: 'info <name>',
          describe: 'Show one volume',
          builder: (a: Argv) => clusterOptions(a).positional('name', { type: 'string' }),
          handler: withErrors(ctx, async (argv) => {
            const name = stringArg(argv, 'name');
            const info = await viaApiOrMeta(
              argv,
              (api) => api.request<VolumeInfo>('GET', `/volumes/${seg(name)}`),
              (meta) => volumeInfo(meta, name),
            );
            emit(ctx.io, isJson(argv), info, (v) => [
              ...describeVolume(v),
              v.map.form === 'pages'
                ? `extent map:     ${v.map.writtenExtents} extents written; ${v.map.levels} levels of map pages under one root in etcd`
                : 'extent map:     per-extent etcd keys (an older Cairn); run `cairnctl migrate` before attaching',
            ]);
          }),
        })
        .command({
          command: 'delete <name>',
          describe:
            'Move a volume to the trash (the name is free at once; `cairnctl trash restore` brings it back, `trash purge` frees its space); --now deletes it for good',
          builder: (a: Argv) =>
            clusterOptions(a).positional('name', { type: 'string' }).option('now', {
              type: 'boolean',
              default: false,
              describe: 'skip the trash: delete it and its snapshots, shards removed in the background',
            }),
          handler: withErrors(ctx, async (argv) => {
            const now = argv['now'] === true;
            const name = stringArg(argv, 'name');
            const api = apiOf(argv);
            if (api !== undefined) {
              const r = await api.request<{ deleted: string; id: string; gcPid?: number | null }>(
                'DELETE',
                `/volumes/${seg(name)}${now ? '?now=true' : ''}`,
              );
              emit(
                ctx.io,
                isJson(argv),
                now ? { deleted: r.deleted, id: r.id, gcPid: r.gcPid ?? null } : { trashed: r.deleted, id: r.id },
                () => [
                  now
                    ? `Deleted volume ${r.deleted}; its shards are being removed in the background by the API server`
                    : `Moved volume ${r.deleted} (id ${r.id}) to the trash; \`cairnctl trash restore ${r.deleted}\` brings it back, \`cairnctl trash purge ${r.deleted}\` frees its space`,
                ],
              );
              return;
            }
            const volume = await withMeta(argv, (meta) => meta.deleteVolume(name, { trash: !now }));
            if (!now) {
              emit(ctx.io, isJson(argv), { trashed: volume.name, id: volume.id }, () => [
                `Moved volume ${volume.name} (id ${volume.id}) to the trash; \`cairnctl trash restore ${volume.name}\` brings it back, \`cairnctl trash purge ${volume.name}\` frees its space`,
              ]);
              return;
            }
            const gc = ctx.startBackgroundGc(argv);
            emit(ctx.io, isJson(argv), { deleted: volume.name, id: volume.id, gcPid: gc }, () => [
              `Deleted volume ${volume.name}; its shards are being removed in the background${gc === null ? ' (run cairnctl gc to finish)' : ` (pid ${gc})`}`,
            ]);
          }),
        })
        .command({
          command: 'clone <source> <name>',
          describe:
            'Create a writable volume from a snapshot (VOL@SNAP), instantly: it shares every shard with the snapshot until written (no data is copied)',
          builder: (a: Argv) =>
            clusterOptions(a)
              .positional('source', { type: 'string', describe: 'the snapshot, VOL@SNAP' })
              .positional('name', { type: 'string', describe: 'the new volume' })
              .example('$0 volume clone pg-data@nightly pg-test', ''),
          handler: withErrors(ctx, async (argv) => {
            const clone = await withMeta(argv, (meta) =>
              cloneVolume(meta, stringArg(argv, 'source'), stringArg(argv, 'name')),
            );
            emit(ctx.io, isJson(argv), clone, (v) => [
              `Created volume ${v.name} from ${v.parent!.volume}@${v.parent!.snapshot}: ${formatBytes(v.sizeBytes)}, sharing its data (nothing copied)`,
            ]);
          }),
        })
        .command({
          command: 'flatten <name>',
          describe:
            'Copy what a clone still shares with its parent snapshot, then drop the link (the snapshot can then be deleted); the volume must not be attached elsewhere',
          builder: (a: Argv) => clusterOptions(a).positional('name', { type: 'string' }),
          handler: withErrors(ctx, async (argv) => {
            const name = stringArg(argv, 'name');
            const json = isJson(argv);
            let lastShown = 0;
            const result = await withMeta(argv, async (meta) => {
              const volume = await meta.requireVolume(name);
              const parent = volume.parent;
              const done = await withLocalFrontend(meta, ctx, argv, (f) =>
                f.flatten(name, (at, total, copied) => {
                  if (json || (at < total && Date.now() - lastShown < 1000)) return;
                  lastShown = Date.now();
                  ctx.io.err(`flatten ${name}: ${at}/${total} extents looked at, ${copied} copied`);
                }),
              );
              return {
                volume: name,
                parent: parent === undefined ? null : `${parent.volume}@${parent.snapshot}`,
                ...done,
              };
            });
            emit(ctx.io, json, result, (r) => [
              r.parent === null
                ? `Volume ${r.volume} has no parent: nothing to flatten`
                : `Flattened ${r.volume}: ${r.extentsCopied} extents (${formatBytes(r.bytesCopied)}) copied from ${r.parent}; it no longer depends on it`,
            ]);
          }),
        })
        .command({
          command: 'resize <name> <size>',
          describe:
            'Grow a volume, online if a frontend has it attached (new connections see the new size), or shrink a detached one (refused past written data without --allow-shrink)',
          builder: (a: Argv) =>
            clusterOptions(a)
              .positional('name', { type: 'string' })
              .positional('size', { type: 'string', describe: 'the new size, e.g. 40GiB' })
              .option('allow-shrink', {
                type: 'boolean',
                default: false,
                describe: 'discard what was written past the new end when shrinking',
              })
              .option('timeout', {
                type: 'number',
                default: 60_000,
                describe: 'ms to wait for the frontend holding the volume to grow it',
              }),
          handler: withErrors(ctx, async (argv) => {
            const name = stringArg(argv, 'name');
            const sizeBytes = parseSize(stringArg(argv, 'size'), 'volume size');
            const before = { size: 0 };
            const resized = await viaApiOrMeta(
              argv,
              async (api) => {
                before.size = (await api.request<VolumeRecord>('GET', `/volumes/${seg(name)}`)).sizeBytes;
                return api.request<VolumeRecord>('PATCH', `/volumes/${seg(name)}`, {
                  size: sizeBytes,
                  allowShrink: argv['allow-shrink'] === true,
                });
              },
              async (meta) => {
                before.size = (await meta.requireVolume(name)).sizeBytes;
                return resizeVolume(meta, name, sizeBytes, {
                  owner: cliOwner(),
                  answerMs: Number(argv['timeout']),
                  attachAndResize: () =>
                    withLocalFrontend(meta, ctx, argv, (f) =>
                      f.resize(name, sizeBytes, { allowShrink: argv['allow-shrink'] === true }),
                    ),
                });
              },
            );
            emit(ctx.io, isJson(argv), resized, (v) => [
              `Resized volume ${v.name} from ${formatBytes(before.size)} to ${formatBytes(v.sizeBytes)} (${v.sizeBytes} bytes)`,
            ]);
          }),
        })
        .command({
          command: 'rekey <name>',
          describe:
            "Rewrap an encrypted volume's data key under a new key-encryption key (no data is rewritten; frontends keep serving); the old key stops opening it",
          builder: (a: Argv) =>
            clusterOptions(a)
              .positional('name', { type: 'string' })
              .option('new-kek-file', {
                type: 'string',
                describe: 'the new key-encryption key (32 bytes: raw, hex or base64)',
              })
              .option('new-kms', {
                type: 'string',
                describe: 'or a key service (Vault transit interface) to wrap it; token from CAIRN_KMS_TOKEN_FILE',
              })
              .option('new-kms-key', { type: 'string', describe: 'the key in the --new-kms service' })
              .example('$0 volume rekey secrets --kek-file ./old.kek --new-kek-file ./new.kek', '')
              .example(
                '$0 volume rekey secrets --kek-file ./old.kek --new-kms http://127.0.0.1:8200 --new-kms-key cairn',
                '',
              ),
          handler: withErrors(ctx, async (argv) => {
            const name = stringArg(argv, 'name');
            const keks = keksOf(argv);
            const next = newWrappingOf(argv);
            const updated = await withMeta(argv, (meta) =>
              rewrapVolumeKey(meta, name, (current) => rewrapKey(current, keks, next, `Volume "${name}"`)),
            );
            emit(ctx.io, isJson(argv), { name: updated.name, keyId: updated.encryption?.keyId }, (v) => [
              `Rewrapped the data key of volume ${v.name} under ${v.keyId}; attach it with the new key from now on`,
            ]);
          }),
        })
        .command({
          command: 'rename <name> <new-name>',
          describe: 'Rename a volume no frontend has attached (its snapshots, clones and data stay as they are)',
          builder: (a: Argv) =>
            clusterOptions(a).positional('name', { type: 'string' }).positional('new-name', { type: 'string' }),
          handler: withErrors(ctx, async (argv) => {
            const to = volumeName(stringArg(argv, 'new-name'));
            const renamed = await withMeta(argv, (meta) => meta.renameVolume(stringArg(argv, 'name'), to));
            emit(ctx.io, isJson(argv), renamed, (v) => [`Renamed volume ${stringArg(argv, 'name')} to ${v.name}`]);
          }),
        })
        .command({
          command: 'du [name]',
          describe:
            'Space of each volume (or one): provisioned, written, raw bytes stored, and the bytes each snapshot alone holds (what deleting it frees)',
          builder: (a: Argv) => clusterOptions(a).positional('name', { type: 'string' }),
          handler: withErrors(ctx, async (argv) => {
            const rows = await withMeta(argv, async (meta) => {
              const volumes =
                argv['name'] === undefined
                  ? await meta.listVolumes()
                  : [await meta.requireVolume(stringArg(argv, 'name'))];
              const out = [];
              for (const v of volumes) {
                const root = await meta.readMapRoot(v.id, mapLevelsFor(extentCount(v)));
                const written = root.written ?? 0;
                const usage = await snapshotUsage(meta, v);
                out.push({
                  name: v.name,
                  provisionedBytes: v.sizeBytes,
                  writtenBytes: Math.min(v.sizeBytes, written * v.extentBytes),
                  writtenExtents: written,
                  // Each written extent as k + m shards of extentBytes / k (the last may be shorter).
                  storedBytes: Math.round((written * v.extentBytes * (v.profile.k + v.profile.m)) / v.profile.k),
                  snapshots: usage.map((u) => ({ name: u.snapshot.name, uniqueBytes: u.uniqueBytes })),
                  snapshotsUniqueBytes: usage.reduce((sum, u) => sum + u.uniqueBytes, 0),
                });
              }
              return out;
            });
            emit(ctx.io, isJson(argv), rows, (list) =>
              list.length === 0
                ? ['No volumes.']
                : [
                    ...table(
                      ['NAME', 'PROVISIONED', 'WRITTEN', 'STORED (RAW)', 'SNAPSHOTS', 'UNIQUE TO SNAPSHOTS'],
                      list.map((r) => [
                        r.name,
                        formatBytes(r.provisionedBytes),
                        formatBytes(r.writtenBytes),
                        formatBytes(r.storedBytes),
                        String(r.snapshots.length),
                        formatBytes(r.snapshotsUniqueBytes),
                      ]),
                    ),
                    ...list.flatMap((r) =>
                      r.snapshots.map((sn) => `  ${r.name}@${sn.name}: ${formatBytes(sn.uniqueBytes)} unique`),
                    ),
                  ],
            );
          }),
        })
        .command(transferCommands(ctx))
        .demandCommand(
          1,
          'Name an action: create, list, info, delete, resize, rename, du, clone, flatten, export, import, export-diff or import-diff',
        ),
    handler: () => undefined,
  };
}
