/**
 * The front page, what an operator opens first: the verdict, volumes by health with bytes at
 * risk, capacity per zone, node and S3 target, nodes up, down and draining, the repair and gc
 * backlogs, client IO over the last hour, and the latest events. Every part is a live region.
 * Sources (all GET /api/v1/...): cluster (verdict, volume health), zones (capacity, draining),
 * nodes, targets (S3), repair, stats/io, events.
 */
import { actionForm } from './actions.js';
import {
  call,
  listIn,
  type ClusterHealth,
  type EventRow,
  type IoStats,
  type NodeRow,
  type RepairStatus,
  type TargetRow,
  type ZoneRow,
} from './api_shapes.js';
import { html } from './html.js';
import { live } from './layout.js';
import { attempt, failed, isAdmin, unavailable, type Page, type PageContext } from './page.js';
import {
  drainingNames,
  eventsTable,
  healthTable,
  ioView,
  nodesTable,
  repairView,
  s3Table,
  verdictView,
  zonesTable,
} from './views.js';

export async function frontPage(p: PageContext): Promise<Page> {
  const { ctx } = p;
  const [health, zones, nodes, targets, repair, io, events] = await Promise.all([
    attempt(call<ClusterHealth>(ctx, 'GET', '/cluster')),
    attempt(call<unknown>(ctx, 'GET', '/zones').then((b) => listIn<ZoneRow>(b, 'zones'))),
    attempt(call<unknown>(ctx, 'GET', '/nodes').then((b) => listIn<NodeRow>(b, 'nodes'))),
    attempt(call<unknown>(ctx, 'GET', '/targets').then((b) => listIn<TargetRow>(b, 'targets'))),
    attempt(call<RepairStatus>(ctx, 'GET', '/repair')),
    attempt(call<IoStats>(ctx, 'GET', '/stats/io')),
    attempt(call<unknown>(ctx, 'GET', '/events?limit=20').then((b) => listIn<EventRow>(b, 'events'))),
  ]);
  const draining = failed(zones) ? new Set<string>() : drainingNames(zones);
  const repairOk = failed(repair) ? undefined : repair;
  const regions = {
    verdict: failed(health) ? unavailable('the cluster verdict', health) : verdictView(health, draining.size),
    health: failed(health) ? unavailable('volume health', health) : healthTable(health.volumes, repairOk),
    zones: failed(zones) ? unavailable('zones', zones) : zonesTable(zones),
    nodes: failed(nodes) ? unavailable('nodes', nodes) : nodesTable(nodes, draining),
    s3: failed(targets) ? unavailable('S3 targets', targets) : s3Table(targets),
    repair: failed(repair) ? unavailable('repair status', repair) : repairView(repair),
    io: failed(io) ? unavailable('IO statistics', io) : ioView(io, p.nowMs),
    events: failed(events) ? unavailable('events', events) : eventsTable(events),
  };
  const content = html`<h1>Cluster overview</h1>
    <section class="cards">
      <div class="card">
        <h2>Verdict</h2>
        ${live('verdict', regions.verdict)}
      </div>
      <div class="card">
        <h2>Volumes by health</h2>
        ${live('health', regions.health)}
        <p><a href="/volumes">All volumes</a></p>
      </div>
    </section>
    <h2>Client IO, last hour</h2>
    ${live('io', regions.io)}
    <h2>Capacity per zone</h2>
    ${live('zones', regions.zones)}
    <h2>Storage nodes</h2>
    ${live('nodes', regions.nodes)}
    <h2>S3 targets</h2>
    ${live('s3', regions.s3)}
    <h2>Repair and gc</h2>
    ${live('repair', regions.repair)} ${actionForm(isAdmin(p), p.csrf, 'repair-start', 'Start a repair pass…', [])}
    <h2>Recent events</h2>
    ${live('events', regions.events)}
    <p><a href="/events">All events</a></p>`;
  return { title: 'Overview', section: 'front', regions, content };
}
