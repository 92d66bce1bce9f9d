/**
 * The node list and node page, the zone view, policies and events. Sources (GET /api/v1/...):
 * nodes (state, address, capacity, heartbeat), zones (capacity per zone, draining, each target),
 * repair (drain jobs), policies, events (audit entries and node transitions).
 */
import { actionForm } from './actions.js';
import {
  call,
  listIn,
  type EventRow,
  type NodeRow,
  type PolicyRow,
  type RepairStatus,
  type ZoneRow,
} from './api_shapes.js';
import { bytes, time } from './format.js';
import { href, html } from './html.js';
import { badge, live, usageBar } from './layout.js';
import { eventsShownMax } from './limits.js';
import { attempt, failed, isAdmin, unavailable, type Page, type PageContext } from './page.js';
import { drainingNames, eventsTable, nodeState, nodesTable, zoneClasses, zonesTable } from './views.js';

async function nodesAndZones(p: PageContext) {
  return Promise.all([
    attempt(call<unknown>(p.ctx, 'GET', '/nodes').then((b) => listIn<NodeRow>(b, 'nodes'))),
    attempt(call<unknown>(p.ctx, 'GET', '/zones').then((b) => listIn<ZoneRow>(b, 'zones'))),
  ]);
}

export async function nodeListPage(p: PageContext): Promise<Page> {
  const [nodes, zones] = await nodesAndZones(p);
  const draining = failed(zones) ? new Set<string>() : drainingNames(zones);
  const admin = isAdmin(p);
  const regions = {
    nodes: failed(nodes)
      ? unavailable('nodes', nodes)
      : nodesTable(nodes, draining, (n) =>
          draining.has(n.name)
            ? html``
            : actionForm(admin, p.csrf, 'node-drain', 'Drain…', [], [['node', n.name]], true),
        ),
  };
  return {
    title: 'Nodes',
    section: 'nodes',
    regions,
    content: html`<h1>Storage nodes</h1>
      ${live('nodes', regions.nodes)}`,
  };
}

export async function nodePage(p: PageContext): Promise<Page> {
  const name = p.params[0] ?? '';
  const [[nodes, zones], repair, events] = await Promise.all([
    nodesAndZones(p),
    attempt(call<RepairStatus>(p.ctx, 'GET', '/repair')),
    attempt(call<unknown>(p.ctx, 'GET', `/events?limit=${eventsShownMax}`).then((b) => listIn<EventRow>(b, 'events'))),
  ]);
  if (failed(nodes)) {
    const regions = { node: unavailable('nodes', nodes) };
    return { title: name, section: 'nodes', regions, content: live('node', regions.node), status: nodes.status };
  }
  const node = nodes.find((n) => n.name === name);
  if (node === undefined) {
    const regions = { node: html`<p class="notice error">No storage node named <b>${name}</b>.</p>` };
    return { title: name, section: 'nodes', regions, content: live('node', regions.node), status: 404 };
  }
  const draining = failed(zones) ? new Set<string>() : drainingNames(zones);
  const s = nodeState(node, draining);
  const jobs = failed(repair) ? [] : repair.jobs.filter((j) => j.kind === 'drain' && j.target === name);
  const mine = failed(events)
    ? []
    : events.filter((e) => e['node'] === name || String(e['path'] ?? '').includes(`/nodes/${name}/`));
  const regions = {
    node: html`<table id="node-${node.name}" class="${s.state}" data-state="${s.state}">
      <tbody>
        <tr>
          <th>State</th>
          <td>${badge(s.state, s.tone)}</td>
        </tr>
        <tr>
          <th>Zone</th>
          <td><a href="/zones#${node.zone}">${node.zone}</a></td>
        </tr>
        <tr>
          <th>Address</th>
          <td>${node.address}</td>
        </tr>
        <tr>
          <th>Used / capacity</th>
          <td>
            ${bytes(node.usedBytes)} / ${bytes(node.capacityBytes)} ${usageBar(node.usedBytes, node.capacityBytes)}
          </td>
        </tr>
        <tr>
          <th>Last heartbeat</th>
          <td>${time(node.heartbeatAt)} <span class="muted">(down when its 5 s lease lapses)</span></td>
        </tr>
        <tr>
          <th>Drain jobs</th>
          <td>
            ${jobs.length === 0 ? 'none' : jobs.map((j) => html`${j.state} since ${time(j.startedAt)} by ${j.by}${j.error !== undefined && `: ${j.error}`}<br />`)}
          </td>
        </tr>
      </tbody>
    </table>`,
    events: eventsTable(mine, eventsShownMax),
  };
  const content = html`<h1>Node ${node.name}</h1>
    ${live('node', regions.node)}
    ${!draining.has(name) && actionForm(isAdmin(p), p.csrf, 'node-drain', 'Drain this node…', [], [['node', name]], true)}
    <h2>Events of this node</h2>
    ${live('events', regions.events)}`;
  return { title: `Node ${node.name}`, section: 'nodes', regions, content };
}

export async function zonesPage(p: PageContext): Promise<Page> {
  const zones = await attempt(call<unknown>(p.ctx, 'GET', '/zones').then((b) => listIn<ZoneRow>(b, 'zones')));
  if (failed(zones)) {
    const regions = { zones: unavailable('zones', zones) };
    return { title: 'Zones', section: 'zones', regions, content: live('zones', regions.zones) };
  }
  const colour = zoneClasses(zones.map((z) => z.zone));
  const each = zones.map(
    (z) =>
      html`<h2 id="${z.zone}"><span class="zone-chip ${colour.get(z.zone) ?? ''}"></span>Zone ${z.zone}</h2>
        <p>
          ${bytes(z.usedBytes)} of ${bytes(z.capacityBytes)} used ${usageBar(z.usedBytes, z.capacityBytes)};
          ${z.nodesUp} nodes up, ${z.nodesDown} down.
        </p>
        <table>
          <thead>
            <tr>
              <th>Target</th>
              <th>Kind</th>
              <th>State</th>
              <th class="num">Used / capacity</th>
              <th></th>
            </tr>
          </thead>
          <tbody>
            ${z.targets.map(
              (t) =>
                html`<tr class="${t.up ? (t.draining ? 'draining' : '') : 'down'}">
                  <td>${t.kind === 'node' ? html`<a href="${href('/nodes', t.name)}">${t.name}</a>` : t.name}</td>
                  <td>${t.kind}</td>
                  <td>${!t.up ? badge('down', 'bad') : t.draining ? badge('draining', 'warn') : badge('up', 'ok')}</td>
                  <td class="num">${bytes(t.usedBytes)} / ${bytes(t.capacityBytes)}</td>
                  <td>${usageBar(t.usedBytes, t.capacityBytes)}</td>
                </tr>`,
            )}
          </tbody>
        </table>`,
  );
  const regions = { summary: zonesTable(zones), zones: html`${each}` };
  const content = html`<h1>Zones</h1>
    <p class="muted">
      A volume's shards are spread over its required number of zones, so losing one zone costs each extent at most m
      shards.
    </p>
    ${live('summary', regions.summary)}${live('zones', regions.zones)}`;
  return { title: 'Zones', section: 'zones', regions, content };
}

export async function policiesPage(p: PageContext): Promise<Page> {
  const policies = await attempt(
    call<unknown>(p.ctx, 'GET', '/policies').then((b) => listIn<PolicyRow>(b, 'policies')),
  );
  const regions = {
    policies: failed(policies)
      ? unavailable('policies', policies)
      : policies.length === 0
        ? html`<p class="muted">
            No policy rules: new volumes take the cluster's defaults (cairnctl policy add makes one).
          </p>`
        : html`<table id="policies">
            <thead>
              <tr>
                <th>Rule</th>
                <th>Selector</th>
                <th>Sets</th>
                <th>Overrides the request</th>
                <th>Created</th>
              </tr>
            </thead>
            <tbody>
              ${policies.map(
                (r) =>
                  html`<tr>
                    <td>${r.name}</td>
                    <td><code>${r.selector}</code></td>
                    <td>${Object.entries(r.set).map(([k, v]) => html`<code>${k}=${v}</code> `)}</td>
                    <td>${r.override ? 'yes' : 'no'}</td>
                    <td>${time(r.createdAt)}</td>
                  </tr>`,
              )}
            </tbody>
          </table>`,
  };
  const content = html`<h1>Policies</h1>
    <p class="muted">
      Rules that fill in a new volume's settings from its labels, in the order listed; see docs/policies.md.
    </p>
    ${live('policies', regions.policies)}`;
  return { title: 'Policies', section: 'policies', regions, content };
}

export async function eventsPage(p: PageContext): Promise<Page> {
  const events = await attempt(
    call<unknown>(p.ctx, 'GET', `/events?limit=${eventsShownMax}`).then((b) => listIn<EventRow>(b, 'events')),
  );
  const regions = { events: failed(events) ? unavailable('events', events) : eventsTable(events, eventsShownMax) };
  const content = html`<h1>Events</h1>
    <p class="muted">
      Changes asked of the API (the audit log, allowed or refused) and storage nodes going down or up, newest first.
    </p>
    ${live('events', regions.events)}`;
  return { title: 'Events', section: 'events', regions, content };
}
