/**
 * Pieces several pages show: the verdict, volumes grouped by health, tables of nodes, zones and
 * S3 targets, the repair and gc backlog, the IO charts and the event list. Each takes API data
 * and returns escaped Html; none calls the API, so they are tested without a server.
 *
 * Health groups, one per volume, the worst that applies (the API's VolumeHealth gives the counts):
 *   at risk     an extent is unreadable (lost more than m shards), or lost exactly m, so one more
 *               loss makes it unreadable;
 *   rebuilding  degraded, and a repair is running (a repairer holds the lease, or a repair or
 *               drain job of this server runs);
 *   degraded    lost 1 to m-1 shards of some extent, nothing repairing it;
 *   healthy     no written extent lost a shard.
 * "Detached" (no frontend holds the volume's lock) is counted apart: it says nothing of the data.
 * Example: 4+2 with one node down and no repairer: extents lost 1 < m = 2: degraded; a second
 * node of the same extents down: lost 2 = m: at risk.
 */
import type {
  ClusterHealth,
  EventRow,
  IoStats,
  NodeRow,
  RepairStatus,
  TargetRow,
  VolumeHealth,
  ZoneRow,
} from './api_shapes.js';
import { ioChart } from './chart.js';
import { bytes, bytesPerSecond, count, duration, time } from './format.js';
import { href, html, type Html } from './html.js';
import { badge, usageBar, type Tone } from './layout.js';
import { recentEventsShownMax } from './limits.js';

export type HealthGroup = 'healthy' | 'degraded' | 'at risk' | 'rebuilding';
export const healthGroups: readonly HealthGroup[] = ['healthy', 'degraded', 'rebuilding', 'at risk'];

/** The group of one volume (see the file comment). */
export function healthGroup(v: VolumeHealth, repairing: boolean): HealthGroup {
  const lostAllSpares = v.m > 0 && v.extentsByShardsLost.slice(v.m).some((n) => n > 0);
  if (v.state === 'unreadable' || v.unreadableExtents > 0 || lostAllSpares) return 'at risk';
  if (v.state === 'degraded' || v.degradedExtents > 0) return repairing ? 'rebuilding' : 'degraded';
  return 'healthy';
}

/** Whether a repair is under way: a repairer holds the lease or a repair or drain job runs here. */
export function repairing(r: RepairStatus | undefined): boolean {
  if (r === undefined) return false;
  return r.repair.leader !== null || r.jobs.some((j) => j.state === 'running');
}

const groupTone: Readonly<Record<HealthGroup, Tone>> = {
  healthy: 'ok',
  degraded: 'warn',
  rebuilding: 'warn',
  'at risk': 'bad',
};

/** The cluster verdict's colour: degraded (data at risk) and unavailable are red. */
export function verdictTone(state: ClusterHealth['verdict']['state']): Tone {
  return state === 'healthy' ? 'ok' : state === 'warning' ? 'warn' : 'bad';
}

export function verdictView(h: ClusterHealth, draining: number): Html {
  const tone = verdictTone(h.verdict.state);
  return html`<p>
      <span
        id="verdict"
        class="verdict ${tone === 'ok' ? 'healthy' : tone === 'warn' ? 'degraded' : 'bad'}"
        data-state="${h.verdict.state}"
        data-tone="${tone}"
        >${h.verdict.state.toUpperCase()}</span
      >
    </p>
    <p id="verdict-summary">${h.verdict.summary.replace(/^[A-Z]+: /, '')}</p>
    <p class="muted">
      Nodes: <b id="nodes-up">${h.nodesUp}</b> up, <b id="nodes-down">${h.nodesDown}</b> down,
      <b id="nodes-draining">${draining}</b> draining · checked ${time(h.checkedAt)}
    </p>`;
}

function volumeLinks(names: readonly string[]): Html {
  const shown = names.slice(0, 6);
  return html`${shown.map((n, i) => html`${i > 0 ? ', ' : ''}<a href="${href('/volumes', n)}">${n}</a>`)}${
    names.length > shown.length ? html`, … ${names.length - shown.length} more` : ''
  }`;
}

export function healthTable(volumes: readonly VolumeHealth[], repair: RepairStatus | undefined): Html {
  const busy = repairing(repair);
  const rows = healthGroups.map((g) => {
    const members = volumes.filter((v) => healthGroup(v, busy) === g);
    const atRisk = members.reduce((s, v) => s + v.atRiskBytes, 0);
    return html`<tr data-group="${g}">
      <td>${badge(g, groupTone[g])}</td>
      <td class="num" data-count>${members.length}</td>
      <td class="num">${g === 'healthy' ? '' : bytes(atRisk)}</td>
      <td>${volumeLinks(members.map((v) => v.name))}</td>
    </tr>`;
  });
  const detached = volumes.filter((v) => v.attachedBy === null);
  const total = volumes.reduce((s, v) => s + v.atRiskBytes, 0);
  return html`<table id="health">
      <thead>
        <tr>
          <th>Health</th>
          <th class="num">Volumes</th>
          <th class="num">Bytes at risk</th>
          <th></th>
        </tr>
      </thead>
      <tbody>
        ${rows}
        <tr data-group="detached">
          <td>${badge('detached', 'warn', 'detached')}*</td>
          <td class="num" data-count>${detached.length}</td>
          <td></td>
          <td>${volumeLinks(detached.map((v) => v.name))}</td>
        </tr>
      </tbody>
      <tfoot>
        <tr>
          <th>All</th>
          <th class="num">${volumes.length}</th>
          <th class="num" id="bytes-at-risk">${bytes(total)}</th>
          <th></th>
        </tr>
      </tfoot>
    </table>
    <p class="muted">* no frontend serves them; each is in one of the groups above too.</p>`;
}

/** Draining, from the zone view's targets (a node record's flag). */
export function drainingNames(zones: readonly ZoneRow[]): Set<string> {
  return new Set(zones.flatMap((z) => z.targets.filter((t) => t.draining).map((t) => t.name)));
}

export function nodeState(n: NodeRow, draining: ReadonlySet<string>): { state: string; tone: Tone } {
  if (n.state === 'down') return { state: 'down', tone: 'bad' };
  if (draining.has(n.name)) return { state: 'draining', tone: 'warn' };
  return { state: 'up', tone: 'ok' };
}

export function nodesTable(
  nodes: readonly NodeRow[],
  draining: ReadonlySet<string>,
  actions?: (n: NodeRow) => Html,
): Html {
  const rows = nodes.map((n) => {
    const s = nodeState(n, draining);
    return html`<tr id="node-${n.name}" class="${s.state}" data-state="${s.state}">
      <td><a href="${href('/nodes', n.name)}">${n.name}</a></td>
      <td>${n.zone}</td>
      <td>${badge(s.state, s.tone)}</td>
      <td class="num">${bytes(n.usedBytes)} / ${bytes(n.capacityBytes)}</td>
      <td>${usageBar(n.usedBytes, n.capacityBytes)}</td>
      <td class="muted">${n.address}</td>
      <td class="muted">${time(n.heartbeatAt)}</td>
      ${actions !== undefined && html`<td>${actions(n)}</td>`}
    </tr>`;
  });
  return html`<table id="nodes">
    <thead>
      <tr>
        <th>Node</th>
        <th>Zone</th>
        <th>State</th>
        <th class="num">Used / capacity</th>
        <th></th>
        <th>Address</th>
        <th>Heartbeat</th>
        ${actions !== undefined && html`<th></th>`}
      </tr>
    </thead>
    <tbody>
      ${rows}
    </tbody>
  </table>`;
}

/** Zones sorted by name get colours zone-0, zone-1, ... (cycled over six). */
export function zoneClasses(zones: Iterable<string>): Map<string, string> {
  return new Map([...new Set(zones)].sort().map((z, i) => [z, `zone-${i % 6}`]));
}

export function zonesTable(zones: readonly ZoneRow[]): Html {
  const colour = zoneClasses(zones.map((z) => z.zone));
  return html`<table id="zones">
    <thead>
      <tr>
        <th>Zone</th>
        <th class="num">Used / capacity</th>
        <th></th>
        <th class="num">Nodes up</th>
        <th class="num">Down</th>
        <th class="num">S3 targets</th>
      </tr>
    </thead>
    <tbody>
      ${zones.map(
        (z) =>
          html`<tr id="zone-${z.zone}" class="${z.nodesDown > 0 ? 'down' : ''}">
            <td>
              <span class="zone-chip ${colour.get(z.zone) ?? ''}"></span> <a href="/zones#${z.zone}">${z.zone}</a>
            </td>
            <td class="num">${bytes(z.usedBytes)} / ${bytes(z.capacityBytes)}</td>
            <td>${usageBar(z.usedBytes, z.capacityBytes)}</td>
            <td class="num">${z.nodesUp}</td>
            <td class="num">${z.nodesDown}</td>
            <td class="num">${z.targets.filter((t) => t.kind === 's3').length}</td>
          </tr>`,
      )}
    </tbody>
  </table>`;
}

export function s3Table(targets: readonly TargetRow[]): Html {
  if (targets.length === 0)
    return html`<p class="muted" id="s3-targets">No S3 targets registered (cairnctl target add-s3).</p>`;
  return html`<table id="s3-targets">
    <thead>
      <tr>
        <th>S3 target</th>
        <th>Zone</th>
        <th>State</th>
        <th>Endpoint / bucket</th>
        <th class="num">Capacity</th>
      </tr>
    </thead>
    <tbody>
      ${targets.map(
        (t) =>
          html`<tr class="${t.up ? '' : 'down'}">
            <td>${t.name}</td>
            <td>${t.zone}</td>
            <td>${t.draining ? badge('draining', 'warn') : t.up ? badge('up', 'ok') : badge('down', 'bad')}</td>
            <td class="muted">${t.endpoint ?? ''} ${t.bucket ?? ''}</td>
            <td class="num">${bytes(t.capacityBytes)}</td>
          </tr>`,
      )}
    </tbody>
  </table>`;
}

export function repairView(r: RepairStatus): Html {
  const running = r.jobs.filter((j) => j.state === 'running');
  const recent = r.jobs.slice(-5).reverse();
  return html`<table id="repair">
      <tbody>
        <tr>
          <th>Repair backlog</th>
          <td class="num" id="repair-backlog">${r.repair.backlogExtents}</td>
          <td>extents in ${r.repair.degradedVolumes} volumes, ${bytes(r.repair.atRiskBytes)} at risk</td>
        </tr>
        <tr>
          <th>Rate</th>
          <td class="num">${r.repair.ratePerSecond === null ? '—' : count(r.repair.ratePerSecond)}</td>
          <td>extents/s</td>
        </tr>
        <tr>
          <th>ETA</th>
          <td class="num">${r.repair.backlogExtents === 0 ? '0 s' : duration(r.repair.etaSeconds)}</td>
          <td></td>
        </tr>
        <tr>
          <th>Repairer</th>
          <td colspan="2">
            ${r.repair.leader ?? html`<span class="muted">none running (start one below, or cairnctl repair)</span>`}
          </td>
        </tr>
        <tr>
          <th>gc backlog</th>
          <td class="num" id="gc-backlog">${r.gc.volumes + r.gc.snapshots + r.gc.trash}</td>
          <td>${r.gc.volumes} deleted volumes, ${r.gc.snapshots} deleted snapshots, ${r.gc.trash} in the trash</td>
        </tr>
      </tbody>
    </table>
    ${
      recent.length > 0 &&
      html`<table id="jobs">
        <thead>
          <tr>
            <th>Job</th>
            <th>Target</th>
            <th>State</th>
            <th>Started</th>
            <th>By</th>
          </tr>
        </thead>
        <tbody>
          ${recent.map(
            (j) =>
              html`<tr>
                <td>${j.kind}</td>
                <td>${j.target ?? 'all volumes'}</td>
                <td>
                  ${badge(j.state, j.state === 'failed' ? 'bad' : j.state === 'running' ? 'warn' : 'ok')}${j.error !== undefined && html` <span class="muted">${j.error}</span>`}
                </td>
                <td>${time(j.startedAt)}</td>
                <td>${j.by}</td>
              </tr>`,
          )}
        </tbody>
      </table>`
    }
    <p class="muted" data-running-jobs="${running.length}"></p>`;
}

/** The IO charts (IOPS and throughput) with the latest sample's numbers and the hour's totals. */
export function ioView(io: IoStats, nowMs: number): Html {
  const points = io.series.map((s) => ({ at: Date.parse(s.at), s }));
  const last = io.series[io.series.length - 1];
  type Sample = IoStats['series'][number];
  const charts: readonly [
    string,
    string,
    (v: number) => string,
    (s: Sample) => number,
    (s: Sample) => number,
    boolean,
  ][] = [
    ['IOPS', 'chart-iops', count, (s) => s.readIops, (s) => s.writeIops, false],
    ['throughput', 'chart-bytes', bytesPerSecond, (s) => s.readBytesPerSecond, (s) => s.writeBytesPerSecond, true],
  ];
  return html`<p>
      Now: <span class="key read">read</span> <b id="io-read-iops">${count(last?.readIops ?? 0)}</b> IOPS,
      <b>${bytesPerSecond(last?.readBytesPerSecond ?? 0)}</b> · <span class="key write">write</span>
      <b id="io-write-iops">${count(last?.writeIops ?? 0)}</b> IOPS,
      <b>${bytesPerSecond(last?.writeBytesPerSecond ?? 0)}</b>
    </p>
    <div class="charts">
      ${charts.map(
        ([caption, id, label, read, write, binary]) =>
          html`<figure>
            ${ioChart(
              points.map((p) => ({ atMs: p.at, read: read(p.s), write: write(p.s) })),
              { nowMs, windowMs: io.windowMs, label, binary, title: `Client ${caption} over the last hour`, id },
            )}
            <figcaption>${caption}</figcaption>
          </figure>`,
      )}
    </div>
    <p class="muted">
      Last hour: <span id="io-write-ops" data-value="${io.totals.writeOps}">${io.totals.writeOps}</span> writes (<span
        id="io-write-bytes"
        data-value="${io.totals.writeBytes}"
        >${bytes(io.totals.writeBytes)}</span
      >), <span id="io-read-ops" data-value="${io.totals.readOps}">${io.totals.readOps}</span> reads
      (${bytes(io.totals.readBytes)}), from ${io.frontends} frontend${io.frontends === 1 ? '' : 's'}, sampled every
      ${Math.round(io.intervalMs / 1000)} s
      ${io.sampledAt === null ? '(no sample yet)' : html`(last ${time(io.sampledAt)})`}.
    </p>`;
}

/** What an event says, in one line. */
export function eventText(e: EventRow): Html {
  const s = (k: string): string => (typeof e[k] === 'string' ? (e[k] as string) : '');
  switch (e.type) {
    case 'node-down':
      return html`${badge('down', 'bad', 'node down')} <a href="${href('/nodes', s('node'))}">${s('node')}</a>`;
    case 'node-up':
      return html`${badge('up', 'ok', 'node up')} <a href="${href('/nodes', s('node'))}">${s('node')}</a>`;
    case 'audit':
      return html`<b>${s('who')}</b> ${s('method')} ${s('path')} → ${typeof e['status'] === 'number' ? e['status'] : ''}
        <span class="muted">${s('summary')}</span>`;
    default:
      return html`${e.type} <span class="muted">${JSON.stringify(e).slice(0, 200)}</span>`;
  }
}

export function eventsTable(events: readonly EventRow[], limit = recentEventsShownMax): Html {
  if (events.length === 0) return html`<p class="muted">No events yet.</p>`;
  return html`<table class="events">
    <tbody>
      ${events.slice(0, limit).map(
        (e) =>
          html`<tr data-type="${e.type}">
            <td class="muted">${time(e.at)}</td>
            <td>${eventText(e)}</td>
          </tr>`,
      )}
    </tbody>
  </table>`;
}
