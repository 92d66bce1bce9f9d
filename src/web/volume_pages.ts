/**
 * The volume list (/volumes) and one volume's page (/volumes/NAME): its health, the placement of
 * every written extent as a picture, its snapshots and clones as a tree, its journal, and the
 * admin actions on it.
 *
 * The placement picture is a table, one row per written extent and one column per shard (k data
 * then m parity): each cell names the target holding that shard and takes its zone's colour; a
 * missing shard (its target down or unregistered, or the census found it absent) is red, its
 * target's name after a cross, a shard outside the volume's allowed zones is marked "!". Sources: GET
 * /volumes/NAME, /volumes/NAME/placement, /volumes/NAME/snapshots, and the volume's entry of
 * /cluster (health, journal).
 */
import { actionForm } from './actions.js';
import {
  call,
  listIn,
  type ClusterHealth,
  type Placement,
  type RepairStatus,
  type SnapshotRow,
  type VolumeHealth,
  type VolumeInfo,
} from './api_shapes.js';
import { bytes, count, time } from './format.js';
import { href, html, type Html } from './html.js';
import { badge, live } from './layout.js';
import { placementExtentsShownMax } from './limits.js';
import { attempt, failed, isAdmin, unavailable, type Page, type PageContext } from './page.js';
import { healthGroup, repairing, zoneClasses } from './views.js';

const groupTone = { healthy: 'ok', degraded: 'warn', rebuilding: 'warn', 'at risk': 'bad' } as const;

function volumeRows(volumes: readonly VolumeHealth[], busy: boolean): Html {
  if (volumes.length === 0) return html`<p class="muted" id="volumes">No volumes yet.</p>`;
  return html`<table id="volumes">
    <thead>
      <tr>
        <th>Volume</th>
        <th class="num">Size</th>
        <th>Profile</th>
        <th>Health</th>
        <th class="num">Written extents</th>
        <th class="num">At risk</th>
        <th>Served by</th>
        <th class="num">Journal</th>
      </tr>
    </thead>
    <tbody>
      ${volumes.map((v) => {
        const g = healthGroup(v, busy);
        return html`<tr id="volume-${v.name}" data-group="${g}">
          <td><a href="${href('/volumes', v.name)}">${v.name}</a></td>
          <td class="num">${bytes(v.sizeBytes)}</td>
          <td>${v.profile}</td>
          <td>${badge(g, groupTone[g])}</td>
          <td class="num">${v.writtenExtents}</td>
          <td class="num">${bytes(v.atRiskBytes)}</td>
          <td>${v.attachedBy === null ? html`<span class="state detached">detached</span>` : v.attachedBy.owner}</td>
          <td class="num">${v.journal === null ? '—' : bytes(v.journal.unfoldedBytes)}</td>
        </tr>`;
      })}
    </tbody>
  </table>`;
}

export async function volumeListPage(p: PageContext): Promise<Page> {
  const health = await attempt(call<ClusterHealth>(p.ctx, 'GET', '/cluster'));
  const repair = await attempt(call<RepairStatus>(p.ctx, 'GET', '/repair'));
  const busy = !failed(repair) && repairing(repair);
  const regions = { volumes: failed(health) ? unavailable('volumes', health) : volumeRows(health.volumes, busy) };
  const content = html`<h1>Volumes</h1>
    ${live('volumes', regions.volumes)}
    ${
      isAdmin(p) &&
      html`<h2>New volume</h2>
        ${actionForm(true, p.csrf, 'volume-create', 'Create…', [
          ['name', 'Name', 'db-1'],
          ['size', 'Size', '10GiB'],
        ])}
        <p class="muted">
          Profile: the cluster's default (or a policy rule's); cairnctl volume create takes every option.
        </p>`
    }`;
  return { title: 'Volumes', section: 'volumes', regions, content };
}

/** The placement picture (see the file comment). */
export function placementGrid(pl: Placement): Html {
  if (pl.mapError !== null) return html`<p class="notice error">Cannot read the extent map: ${pl.mapError}</p>`;
  if (pl.placement.length === 0)
    return html`<p class="muted" id="placement">No extent written yet: nothing is stored.</p>`;
  const width = pl.profile.k + pl.profile.m;
  const zones = zoneClasses(pl.placement.flatMap((e) => e.shards.map((s) => s.zone ?? '(unregistered)')));
  const rows = pl.placement.slice(0, placementExtentsShownMax);
  const missing = pl.placement.reduce((n, e) => n + e.shards.filter((s) => s.state === 'missing').length, 0);
  const header = Array.from(
    { length: width },
    (_, i) => html`<th>${i < pl.profile.k ? `d${i}` : `p${i - pl.profile.k}`}</th>`,
  );
  return html`<p>
      ${pl.writtenExtents} of ${pl.extents} extents written;
      <b id="missing-shards">${missing}</b> shard${missing === 1 ? '' : 's'} missing. Zones:
      ${[...zones].map(([z, c]) => html`<span class="zone-chip ${c}"></span>${z} `)}
      <span class="muted">(✕ missing, ! outside the allowed zones)</span>
    </p>
    <table class="grid" id="placement">
      <thead>
        <tr>
          <th>extent</th>
          ${header}
        </tr>
      </thead>
      <tbody>
        ${rows.map(
          (e) =>
            html`<tr data-extent="${e.extent}">
              <th>${e.extent}</th>
              ${e.shards.map((s) => {
                const zone = s.zone ?? '(unregistered)';
                const label = `shard ${s.index} of extent ${e.extent} (generation ${e.generation}): ${s.target} in zone ${zone}, ${s.state}`;
                return html`<td
                  class="shard ${s.state === 'missing' ? 'missing' : (zones.get(zone) ?? '')}"
                  data-state="${s.state}"
                  title="${label}"
                >
                  ${s.state === 'missing' ? `✕${s.target}` : s.state === 'wrong-zone' ? `!${s.target}` : s.target}
                </td>`;
              })}
            </tr>`,
        )}
      </tbody>
    </table>
    ${
      (pl.truncated || pl.placement.length > rows.length) &&
      html`<p class="muted">
        Showing the first ${rows.length} written extents; cairnctl placement explain shows any other.
      </p>`
    }`;
}

/** The snapshot and clone tree: the parent this volume was cloned from, the volume, its snapshots, their clones. */
export function lineageTree(v: VolumeInfo, snapshots: readonly SnapshotRow[], cloneForm: (snap: string) => Html): Html {
  const self = html`<li>
    <b>${v.name}</b> <span class="muted">(this volume, ${bytes(v.sizeBytes)})</span> ${
      snapshots.length === 0
        ? html`<p class="muted">No snapshots.</p>`
        : html`<ul class="tree" id="snapshots">
            ${snapshots.map(
              (s) =>
                html`<li data-snapshot="${s.name}">
                  @<b>${s.name}</b>
                  <span class="muted"
                    >${time(s.createdAt)}, ${bytes(s.sizeBytes)}, ${count(s.writtenExtents)} extents,
                    ${bytes(s.uniqueBytes)} held by it alone</span
                  >
                  ${
                    s.clones.length > 0 &&
                    html`<ul class="tree">
                      ${s.clones.map((c) => html`<li>clone <a href="${href('/volumes', c)}">${c}</a></li>`)}
                    </ul>`
                  }
                  ${cloneForm(s.name)}
                </li>`,
            )}
          </ul>`
    }
  </li>`;
  if (v.parent === undefined)
    return html`<ul class="tree">
      ${self}
    </ul>`;
  return html`<ul class="tree">
    <li>
      cloned from <a href="${href('/volumes', v.parent.volume)}">${v.parent.volume}</a>@${v.parent.snapshot}
      <ul class="tree">
        ${self}
      </ul>
    </li>
  </ul>`;
}

function summary(v: VolumeInfo, h: VolumeHealth | undefined, busy: boolean): Html {
  const g = h === undefined ? undefined : healthGroup(h, busy);
  return html`<table id="volume-summary">
    <tbody>
      <tr>
        <th>Health</th>
        <td>
          ${g === undefined ? '—' : badge(g, groupTone[g])}
          ${h !== undefined && h.atRiskBytes > 0 && html` ${bytes(h.atRiskBytes)} at risk in ${h.degradedExtents + h.unreadableExtents} extents`}
        </td>
      </tr>
      <tr>
        <th>Size</th>
        <td>${bytes(v.sizeBytes)}</td>
      </tr>
      <tr>
        <th>Profile</th>
        <td>
          ${v.profile.k}+${v.profile.m}, extents of ${bytes(v.extentBytes)}, ${v.zonesRequired} zones required, targets:
          ${v.targets}
        </td>
      </tr>
      <tr>
        <th>Written</th>
        <td>${h?.writtenExtents ?? v.map?.writtenExtents ?? 0} extents</td>
      </tr>
      <tr>
        <th>Served by</th>
        <td>
          ${h === undefined || h.attachedBy === null ? html`<span class="state detached">detached</span>` : html`${h.attachedBy.owner} (epoch ${h.attachedBy.epoch})`}
        </td>
      </tr>
      <tr>
        <th>Journal</th>
        <td id="journal">
          ${
            h?.journal == null
              ? 'none'
              : html`<b>${bytes(h.journal.unfoldedBytes)}</b> not yet folded into extents, ${h.journal.segments}
                  segments on ${h.journal.nodes.join(', ')} (LSN ${h.journal.foldedLsn} folded of ${h.journal.headLsn})`
          }
        </td>
      </tr>
      <tr>
        <th>Labels</th>
        <td>${Object.entries(v.labels ?? {}).map(([k, val]) => html`<code>${k}=${val}</code> `)}</td>
      </tr>
      <tr>
        <th>Encryption</th>
        <td>${v.encryption === undefined ? 'none' : `${v.encryption.cipher} (key ${v.encryption.keyId})`}</td>
      </tr>
      <tr>
        <th>Created</th>
        <td>${time(v.createdAt)}</td>
      </tr>
    </tbody>
  </table>`;
}

export async function volumePage(p: PageContext): Promise<Page> {
  const name = p.params[0] ?? '';
  const path = `/volumes/${encodeURIComponent(name)}`;
  const [info, placement, snaps, health, repair] = await Promise.all([
    attempt(call<VolumeInfo>(p.ctx, 'GET', path)),
    attempt(call<Placement>(p.ctx, 'GET', `${path}/placement?limit=${placementExtentsShownMax}`)),
    attempt(call<unknown>(p.ctx, 'GET', `${path}/snapshots`).then((b) => listIn<SnapshotRow>(b, 'snapshots'))),
    attempt(call<ClusterHealth>(p.ctx, 'GET', '/cluster')),
    attempt(call<RepairStatus>(p.ctx, 'GET', '/repair')),
  ]);
  if (failed(info)) {
    const regions = { summary: unavailable(`volume "${name}"`, info) };
    return { title: name, section: 'volumes', regions, content: live('summary', regions.summary), status: info.status };
  }
  const busy = !failed(repair) && repairing(repair);
  const h = failed(health) ? undefined : health.volumes.find((v) => v.name === info.name);
  const admin = isAdmin(p);
  const fixed = [['volume', info.name]] as const;
  const cloneForm = (snap: string) =>
    actionForm(
      admin,
      p.csrf,
      'volume-clone',
      'Clone…',
      [['name', 'New volume', `${info.name}-copy`]],
      [...fixed, ['snapshot', snap]],
    );
  const regions = {
    summary: summary(info, h, busy),
    placement: failed(placement) ? unavailable('placement', placement) : placementGrid(placement),
    tree: failed(snaps) ? unavailable('snapshots', snaps) : lineageTree(info, snaps, cloneForm),
  };
  const content = html`<h1>Volume ${info.name}</h1>
    ${live('summary', regions.summary)}
    ${
      admin &&
      html`<h2>Actions</h2>
        ${actionForm(true, p.csrf, 'volume-resize', 'Resize…', [['size', 'New size', bytes(info.sizeBytes).replace(' ', '')]], fixed)}
        ${actionForm(true, p.csrf, 'volume-snapshot', 'Take snapshot…', [['snapshot', 'Snapshot name', 'snap-1']], fixed)}
        ${actionForm(true, p.csrf, 'volume-delete', 'Delete…', [], fixed, true)}`
    }
    <h2>Snapshots and clones</h2>
    ${live('tree', regions.tree)}
    <h2>Placement: extents × shards</h2>
    ${live('placement', regions.placement)}`;
  return { title: `Volume ${info.name}`, section: 'volumes', regions, content };
}
