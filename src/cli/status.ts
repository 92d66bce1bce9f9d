/**
 * `cairnctl status [--json]`: the cluster's health for a person, from etcd alone (no shard is
 * read): the cluster's settings, storage nodes up and down per zone, each volume's health (ok,
 * degraded with the bytes at risk, unreadable) with who has it attached, the shards missing per
 * zone, and a one-line verdict last. --json prints the whole ClusterHealth (src/api/health.ts).
 *
 * It exits 0 whenever it could read the cluster, whatever the verdict (scripts read
 * `verdict.state` from --json); 1 when etcd cannot be read.
 */
import type { Argv } from 'yargs';
import { formatBytes } from '../core/index.js';
import { readClusterHealth, type ClusterHealth, type VolumeHealth } from '../api/index.js';
import { clusterOptions, isJson, table } from './common.js';
import { viaApiOrMeta } from './via_api.js';
import { type CliContext, withErrors } from './context.js';
import { emit } from './output.js';

export function statusCommand(ctx: CliContext) {
  return {
    command: 'status',
    describe: 'Summarise cluster health: nodes up/down per zone, volumes at risk, a verdict',
    builder: (y: Argv) =>
      clusterOptions(y).example('$0 status', 'HEALTHY: 6 nodes up in 3 zones; 2 volumes, no data at risk'),
    handler: withErrors(ctx, async (argv) => {
      const health = await viaApiOrMeta(
        argv,
        (api) => api.request<ClusterHealth>('GET', '/cluster'),
        (meta) => readClusterHealth(meta),
      );
      emit(ctx.io, isJson(argv), health, statusText);
    }),
  };
}

function healthText(v: VolumeHealth): string {
  const parts: string[] = [];
  if (v.noRedundancy) parts.push('no redundancy');
  else if (v.state === 'ok') parts.push('ok');
  if (v.unreadableExtents > 0)
    parts.push(
      `UNREADABLE: ${v.unreadableExtents} extents (${formatBytes(v.unreadableBytes)}) lost more than ${v.m} shards`,
    );
  if (v.degradedExtents > 0)
    parts.push(
      `degraded: ${v.degradedExtents} ${v.degradedExtents === 1 ? 'extent' : 'extents'}, ${formatBytes(v.atRiskBytes - v.unreadableBytes)} at risk`,
    );
  if (v.mapError !== null) parts.push(`UNREADABLE: its extent map cannot be read (${v.mapError})`);
  if (v.writeBlocked !== null) parts.push('flushes fail');
  const p = v.pendingFlush;
  if (p !== null)
    parts.push(
      `final flush failing: ${formatBytes(p.dirtyBytes)} not durable, ${p.attempts} ${p.attempts === 1 ? 'attempt' : 'attempts'}, retried until ${p.giveUpAt}`,
    );
  return parts.join('; ');
}

/** The text form of a ClusterHealth: a few aligned tables and the verdict last. */
export function statusText(h: ClusterHealth): string[] {
  const c = h.cluster;
  const lines = [
    `Cluster: default profile ${c.defaultProfile}, extents of ${formatBytes(c.extentBytes)}, ` +
      `${c.zonesRequired} ${c.zonesRequired === 1 ? 'zone' : 'zones'} required, targets ${c.targets}`,
    `Nodes: ${h.nodesUp} up, ${h.nodesDown} down`,
    '',
  ];
  if (h.zones.length === 0) lines.push('No storage targets registered.');
  else
    lines.push(
      ...table(
        ['ZONE', 'NODES UP', 'NODES DOWN', 'S3', 'DOWN'],
        h.zones.map((z) => [
          z.zone,
          String(z.nodesUp),
          String(z.nodesDown),
          String(z.s3Targets),
          z.down.length === 0 ? '-' : z.down.join(', '),
        ]),
      ),
    );
  lines.push('');
  if (h.volumes.length === 0) lines.push('No volumes.');
  else
    lines.push(
      ...table(
        ['VOLUME', 'SIZE', 'PROFILE', 'WRITTEN', 'HEALTH', 'JOURNAL (UNFOLDED)', 'ATTACHED BY'],
        h.volumes.map((v) => [
          v.name,
          formatBytes(v.sizeBytes),
          v.profile,
          `${v.writtenExtents}/${v.extents} extents`,
          healthText(v),
          v.journal === null ? '-' : `${formatBytes(v.journal.unfoldedBytes)} on ${v.journal.nodes.join(',')}`,
          v.attachedBy === null ? '-' : `${v.attachedBy.owner} (epoch ${v.attachedBy.epoch})`,
        ]),
      ),
    );
  const missing = h.volumes.filter((v) => v.missingShards > 0);
  if (missing.length > 0) {
    lines.push(
      '',
      'Shards missing (their targets are down or gone, or a census found them gone from a live one), by zone:',
    );
    for (const v of missing) {
      const zones = Object.entries(v.missingShardsByZone)
        .filter(([, n]) => n > 0)
        .map(([zone, n]) => `${n} in zone ${zone}`);
      const more = v.affectedExtents.length < v.degradedExtents + v.unreadableExtents ? ', ...' : '';
      const census =
        v.census !== null && v.census.absentShards > 0
          ? ` (${v.census.absentShards} of them missing from live nodes, census at ${v.census.checkedAt})`
          : '';
      lines.push(`  ${v.name}: ${zones.join(', ')}; extents ${extentRanges(v.affectedExtents)}${more}${census}`);
    }
    lines.push(`Repair backlog: ${h.totals.repairBacklogExtents} extents`);
  }
  const blocked = new Map<string, string[]>();
  for (const v of h.volumes)
    if (v.writeBlocked !== null) blocked.set(v.writeBlocked, [...(blocked.get(v.writeBlocked) ?? []), v.name]);
  if (blocked.size > 0) {
    lines.push('', 'Flushes will fail (placement cannot be met with the targets up):');
    for (const [reason, names] of blocked) lines.push(`  ${names.join(', ')}: ${reason}`);
  }
  lines.push('', h.verdict.summary);
  return lines;
}

/** Ascending extent numbers as ranges: [0, 1, 2, 5, 7, 8] -> "0-2, 5, 7-8". */
export function extentRanges(extents: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < extents.length;) {
    let j = i;
    while (j + 1 < extents.length && extents[j + 1] === (extents[j] as number) + 1) j++;
    parts.push(i === j ? String(extents[i]) : `${extents[i]}-${extents[j]}`);
    i = j + 1;
  }
  return parts.join(', ');
}
