/**
 * Many volumes at once, written straight into etcd as `cairnctl volume create` would leave them
 * (a ready record each, no lock, no epoch, no extents): for tests and benchmarks that need
 * thousands of volumes without paying a placement check per volume. Names are `PREFIX-NNNNN`;
 * volume i is (i % 8 + 1) MiB, so sizes tell volumes apart.
 *
 * What it keeps true: every record decodes as the schema's VolumeRecord, and puts go in batches
 * of at most `volumeRecordsBatchMax` in flight (etcd serves them; the client stays bounded).
 */
import { EtcdMeta, keys, type VolumeRecord } from '../../src/meta/index.js';

/**
 * Registers node targets that are not running, each with a live-looking `alive/` record (no
 * lease): placement and health see them up, so volumes can be created and assessed with etcd
 * alone. Nothing can store a shard on them.
 */
export async function registerPaperTargets(
  meta: EtcdMeta,
  targets: readonly { readonly name: string; readonly zone: string }[],
): Promise<void> {
  for (const { name, zone } of targets) {
    const address = '127.0.0.1:1';
    await meta.client
      .put(keys.target(name))
      .value(JSON.stringify({ name, kind: 'node', zone, address, capacityBytes: 2 ** 40, addedAt: 'x' }));
    await meta.client.put(keys.alive(name)).value(
      JSON.stringify({
        name,
        zone,
        address,
        capacityBytes: 2 ** 40,
        usedBytes: 0,
        pid: 1,
        startedAt: 'x',
        heartbeatAt: 'x',
      }),
    );
  }
}

/** Puts in flight at once while creating records. */
export const volumeRecordsBatchMax = 200;

const MiB = 1 << 20;

/** The size createVolumeRecords() gives volume i. */
export function volumeRecordBytes(i: number): number {
  return ((i % 8) + 1) * MiB;
}

export async function createVolumeRecords(
  meta: EtcdMeta,
  count: number,
  options: { readonly prefix?: string } = {},
): Promise<VolumeRecord[]> {
  const prefix = options.prefix ?? 'v';
  const records: VolumeRecord[] = [];
  for (let i = 0; i < count; i++)
    records.push({
      name: `${prefix}-${String(i).padStart(5, '0')}`,
      id: EtcdMeta.newVolumeId(),
      sizeBytes: volumeRecordBytes(i),
      profile: { k: 4, m: 2 },
      extentBytes: MiB,
      zonesRequired: 1,
      targets: 'any',
      createdAt: new Date().toISOString(),
      state: 'ready',
    });
  for (let i = 0; i < records.length; i += volumeRecordsBatchMax)
    await Promise.all(records.slice(i, i + volumeRecordsBatchMax).map((r) => meta.createVolume(r)));
  return records;
}

/**
 * nbdsh script: in option mode, NBD_OPT_LIST, then NBD_OPT_INFO for every name listed, on one
 * connection, without listing meta contexts (libnbd 1.14 holds that option about 200 ms in its
 * own socket with MSG_MORE, which is what bounds `nbdinfo --list`). Prints one JSON object:
 * export name -> size in bytes. Connect with `nbdsh -u URI` is not used: A["uri"] is.
 */
export const listAndInfoScript = `
h.set_opt_mode(True)
h.connect_uri(A["uri"])
names = []
h.opt_list(lambda name, description: names.append(name))
sizes = {}
for name in names:
    h.set_export_name(name)
    h.opt_info()
    sizes[name] = h.get_size()
h.opt_abort()
print(json.dumps(sizes))
`;
