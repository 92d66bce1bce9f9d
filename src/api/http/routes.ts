/**
 * The route table: every route of /api/v1 with its method, path, the least role that may call it,
 * its request and response schemas and its handler. The server dispatches from it, the OpenAPI
 * document is generated from it, and the request validator compiles its schemas: one source.
 *
 * Handlers reuse the control-plane operations of src/api (the same ones cairnctl calls) and the
 * injected ports for work other layers do; they validate nothing the edge already validated.
 */
import { InvalidArgumentError, assert, parseSize, snapshotName, volumeName } from '../../core/index.js';
import type { EtcdMeta, VolumeRecord } from '../../meta/index.js';
import { readClusterHealth } from '../health.js';
import { listNodes } from '../nodes.js';
import { addPolicy } from '../policies.js';
import { cloneVolume, resizeVolume, takeSnapshot } from '../snapshots.js';
import { createVolume } from '../volumes.js';
import type { AuditLog } from './audit.js';
import type { EventHub } from './events.js';
import type { IoStats } from './io_stats.js';
import type { Jobs } from './jobs.js';
import type { ApiPorts } from './ports.js';
import { placementOf, setVolumeLabels, zonesOf, targetsOf, repairStatus } from './reads.js';
import { arr, bool, input, int, obj, ref, str, strMap, type Schema } from './schema.js';
import type { Principal, Role } from './tokens.js';
import { snapshotRows, volumeInfo } from './views.js';

export type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE';

/** What a handler is given. */
export interface Call {
  readonly meta: EtcdMeta;
  readonly ports: ApiPorts;
  readonly principal: Principal;
  readonly params: Readonly<Record<string, string>>;
  readonly query: URLSearchParams;
  /** The request body, already validated against the route's schema (undefined without one). */
  readonly body: unknown;
  readonly server: ServerState;
}

/** What the server keeps between requests. */
export interface ServerState {
  readonly events: EventHub;
  readonly audit: AuditLog;
  readonly io: IoStats;
  readonly jobs: Jobs;
  /** The OpenAPI document (built once). */
  readonly document: () => unknown;
}

export interface Route {
  readonly method: Method;
  /** Under /api/v1, with {param} segments. */
  readonly path: string;
  readonly summary: string;
  /** The least role that may call it; `public` routes need no credential. */
  readonly role: Role | 'public';
  readonly query?: Readonly<Record<string, { schema: Schema; description: string }>>;
  readonly body?: Schema;
  /** Status of a success. */
  readonly status: number;
  readonly response: Schema;
  /** text/event-stream instead of JSON: the server streams events itself. */
  readonly stream?: boolean;
  handle(call: Call): Promise<unknown>;
}

const sizeField: Schema = {
  anyOf: [int, str],
  description: 'bytes (an integer) or a size such as "20GiB"',
};

const sizeOf = (value: unknown, what: string): number =>
  typeof value === 'number' ? value : parseSize(String(value), what);

const param = (call: Call, name: string): string => {
  const value = call.params[name];
  if (value === undefined) throw new InvalidArgumentError(`Missing path parameter ${name}`);
  return value;
};

const body = (call: Call): Record<string, unknown> => (call.body ?? {}) as Record<string, unknown>;

const intQuery = (call: Call, name: string, fallback: number, max: number): number => {
  const text = call.query.get(name);
  if (text === null) return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1 || n > max)
    throw new InvalidArgumentError(`Invalid ${name} "${text}": a whole number from 1 to ${max}`);
  return n;
};

const deleted = obj({ deleted: str }, { id: str, trashed: str, gcPid: { type: ['integer', 'null'] } });

export const routes: readonly Route[] = [
  {
    method: 'GET',
    path: '/openapi.json',
    summary: 'This document',
    role: 'public',
    status: 200,
    response: { type: 'object' },
    handle: async (call) => call.server.document(),
  },
  {
    method: 'GET',
    path: '/whoami',
    summary: 'The principal the request authenticated as',
    role: 'viewer',
    status: 200,
    response: ref('Principal'),
    handle: async (call) => call.principal,
  },
  {
    method: 'GET',
    path: '/cluster',
    summary: 'Cluster health and verdict, as `cairnctl status --json`',
    role: 'viewer',
    status: 200,
    response: ref('ClusterHealth'),
    handle: async (call) => {
      const health = await readClusterHealth(call.meta);
      call.server.jobs.noteBacklog(health.totals.repairBacklogExtents);
      return health;
    },
  },
  {
    method: 'GET',
    path: '/nodes',
    summary: 'Storage nodes, up and down, as `cairnctl node list --json`',
    role: 'viewer',
    status: 200,
    response: arr(ref('Node')),
    handle: (call) => listNodes(call.meta.client, { endpoints: call.meta.endpoints }),
  },
  {
    method: 'POST',
    path: '/nodes/{name}/drain',
    summary:
      'Mark a node draining (placement stops choosing it) and move its shards off in the background; {"undo": true} stops draining',
    role: 'admin',
    body: input({}, { undo: bool }),
    status: 202,
    response: obj({ target: str, draining: bool, job: { anyOf: [ref('Job'), { type: 'null' }] } }),
    handle: async (call) => {
      const name = param(call, 'name');
      const undo = body(call)['undo'] === true;
      const record = await call.meta.setDraining(name, !undo);
      if (undo) return { target: record.name, draining: false, job: null };
      const job = call.server.jobs.start('drain', name, call.principal.name, () => call.ports.drain(name));
      return { target: record.name, draining: true, job };
    },
  },
  {
    method: 'GET',
    path: '/zones',
    summary: 'Capacity and use per zone, with each storage node and S3 target in it',
    role: 'viewer',
    status: 200,
    response: arr(ref('Zone')),
    handle: async (call) => zonesOf(await call.meta.listTargets(), await call.meta.listAlive()),
  },
  {
    method: 'GET',
    path: '/targets',
    summary: 'S3 targets (registered with `cairnctl target add-s3`)',
    role: 'viewer',
    status: 200,
    response: arr(ref('Target')),
    handle: async (call) => targetsOf(await call.meta.listTargets(), await call.meta.listAlive(), 's3'),
  },
  {
    method: 'GET',
    path: '/volumes',
    summary: 'Volumes, as `cairnctl volume list --json`',
    role: 'viewer',
    status: 200,
    response: arr(ref('Volume')),
    handle: (call) => call.meta.listVolumes(),
  },
  {
    method: 'POST',
    path: '/volumes',
    summary: 'Create a thin volume, as `cairnctl volume create` (encrypted volumes: use cairnctl, which holds the key)',
    role: 'admin',
    body: input(
      { name: str, size: sizeField },
      {
        profile: { type: 'string', description: 'K+M, e.g. "4+2"' },
        extentSize: sizeField,
        zonesRequired: int,
        targets: { type: 'string', enum: ['node', 's3', 'any'] },
        durableShards: int,
        journalReplicas: int,
        allowNoRedundancy: bool,
        inZones: arr(str),
        labels: strMap,
      },
    ),
    status: 201,
    response: ref('Volume'),
    handle: async (call) => {
      const b = body(call);
      return createVolume(call.meta, {
        name: String(b['name']),
        sizeBytes: sizeOf(b['size'], 'volume size'),
        ...(b['profile'] === undefined ? {} : { profile: String(b['profile']) }),
        ...(b['extentSize'] === undefined ? {} : { extentBytes: sizeOf(b['extentSize'], 'extent size') }),
        ...(b['zonesRequired'] === undefined ? {} : { zonesRequired: Number(b['zonesRequired']) }),
        ...(b['targets'] === undefined ? {} : { targets: String(b['targets']) }),
        ...(b['durableShards'] === undefined ? {} : { durableShardsMin: Number(b['durableShards']) }),
        ...(b['journalReplicas'] === undefined ? {} : { journalReplicas: Number(b['journalReplicas']) }),
        allowNoRedundancy: b['allowNoRedundancy'] === true,
        labels: (b['labels'] ?? {}) as Record<string, string>,
        ...(b['inZones'] === undefined ? {} : { allowedZones: b['inZones'] as string[] }),
      });
    },
  },
  {
    method: 'GET',
    path: '/volumes/{name}',
    summary: 'One volume and its map root, as `cairnctl volume info --json`',
    role: 'viewer',
    status: 200,
    response: ref('VolumeInfo'),
    handle: (call) => volumeInfo(call.meta, volumeName(param(call, 'name'))),
  },
  {
    method: 'PATCH',
    path: '/volumes/{name}',
    summary: 'Resize a volume (online if attached; a shrink only detached, with allowShrink) and/or replace its labels',
    role: 'admin',
    body: input({}, { size: sizeField, allowShrink: bool, labels: strMap }),
    status: 200,
    response: ref('Volume'),
    handle: async (call) => {
      const name = volumeName(param(call, 'name'));
      const b = body(call);
      if (b['size'] === undefined && b['labels'] === undefined)
        throw new InvalidArgumentError('Give size, labels or both to change');
      let volume: VolumeRecord = await call.meta.requireVolume(name);
      if (b['size'] !== undefined) {
        const sizeBytes = sizeOf(b['size'], 'volume size');
        volume = await resizeVolume(call.meta, name, sizeBytes, {
          owner: call.ports.owner,
          attachAndResize: () => call.ports.attachAndResize(name, sizeBytes, b['allowShrink'] === true),
        });
      }
      if (b['labels'] !== undefined)
        volume = await setVolumeLabels(call.meta, name, b['labels'] as Record<string, string>);
      return volume;
    },
  },
  {
    method: 'DELETE',
    path: '/volumes/{name}',
    summary: 'Move a volume to the trash (restorable with cairnctl trash restore); ?now=true deletes it for good',
    role: 'admin',
    query: { now: { schema: { type: 'string', enum: ['true', 'false'] }, description: 'skip the trash' } },
    status: 200,
    response: deleted,
    handle: async (call) => {
      const now = call.query.get('now') === 'true';
      const volume = await call.meta.deleteVolume(volumeName(param(call, 'name')), { trash: !now });
      if (!now) return { deleted: volume.name, trashed: volume.name, id: volume.id };
      return { deleted: volume.name, id: volume.id, gcPid: call.ports.startGc() };
    },
  },
  {
    method: 'GET',
    path: '/volumes/{name}/placement',
    summary: "Where each written extent's shards are: target, zone and state (ok, missing, wrong-zone)",
    role: 'viewer',
    query: {
      limit: { schema: { type: 'string', pattern: '^[0-9]+$' }, description: 'extents listed at most (default 4096)' },
    },
    status: 200,
    response: ref('Placement'),
    handle: (call) => placementOf(call.meta, volumeName(param(call, 'name')), intQuery(call, 'limit', 4096, 65_536)),
  },
  {
    method: 'GET',
    path: '/volumes/{name}/snapshots',
    summary: "A volume's snapshots with the bytes each alone holds, as `cairnctl snapshot list --json`",
    role: 'viewer',
    status: 200,
    response: arr(ref('SnapshotRow')),
    handle: (call) => snapshotRows(call.meta, param(call, 'name')),
  },
  {
    method: 'POST',
    path: '/volumes/{name}/snapshots',
    summary: 'Take a crash-consistent snapshot (through the frontend holding the volume, or attached here)',
    role: 'admin',
    body: input({ name: str }),
    status: 201,
    response: ref('Snapshot'),
    handle: async (call) => {
      const volume = volumeName(param(call, 'name'));
      const snap = snapshotName(String(body(call)['name']));
      return takeSnapshot(call.meta, volume, snap, {
        owner: call.ports.owner,
        attachAndTake: () => call.ports.attachAndSnapshot(volume, snap),
      });
    },
  },
  {
    method: 'DELETE',
    path: '/volumes/{name}/snapshots/{snapshot}',
    summary: 'Delete a snapshot (refused while clones of it exist); gc frees what it alone held',
    role: 'admin',
    status: 200,
    response: deleted,
    handle: async (call) => {
      const v = await call.meta.requireVolume(volumeName(param(call, 'name')));
      const gone = await call.meta.deleteSnapshot(v.id, snapshotName(param(call, 'snapshot')), v.name);
      return { deleted: `${v.name}@${gone.name}`, gcPid: call.ports.startGc() };
    },
  },
  {
    method: 'POST',
    path: '/volumes/{name}/clone',
    summary: 'Create a writable volume from a snapshot of this one, instantly (no data copied)',
    role: 'admin',
    body: input({ snapshot: str, name: str }),
    status: 201,
    response: ref('Volume'),
    handle: async (call) => {
      const b = body(call);
      return cloneVolume(call.meta, `${volumeName(param(call, 'name'))}@${String(b['snapshot'])}`, String(b['name']));
    },
  },
  {
    method: 'GET',
    path: '/policies',
    summary: 'Policy rules',
    role: 'viewer',
    status: 200,
    response: arr(ref('Policy')),
    handle: (call) => call.meta.listPolicies(),
  },
  {
    method: 'POST',
    path: '/policies',
    summary: 'Add a policy rule, as `cairnctl policy add`',
    role: 'admin',
    body: input({ name: str, selector: str, set: strMap }, { override: bool }),
    status: 201,
    response: ref('Policy'),
    handle: async (call) => {
      const b = body(call);
      return addPolicy(call.meta, {
        name: String(b['name']),
        selector: String(b['selector']),
        set: b['set'] as Record<string, string>,
        override: b['override'] === true,
      });
    },
  },
  {
    method: 'DELETE',
    path: '/policies/{name}',
    summary: 'Remove a policy rule (volumes made under it keep their settings)',
    role: 'admin',
    status: 200,
    response: obj({ deleted: str }),
    handle: async (call) => {
      const name = param(call, 'name');
      await call.meta.deletePolicy(name);
      return { deleted: name };
    },
  },
  {
    method: 'GET',
    path: '/repair',
    summary: 'Repair backlog with rate and ETA, the repairer, gc backlog, and background jobs of this server',
    role: 'viewer',
    status: 200,
    response: ref('RepairStatus'),
    handle: (call) => repairStatus(call.meta, call.server.jobs),
  },
  {
    method: 'POST',
    path: '/repair',
    summary: 'Start a repair pass over every volume in the background, as `cairnctl repair`',
    role: 'admin',
    body: input({}),
    status: 202,
    response: ref('Job'),
    handle: async (call) => call.server.jobs.start('repair', null, call.principal.name, () => call.ports.repair()),
  },
  {
    method: 'GET',
    path: '/events',
    summary: 'Recent events, newest first: changes made through the API (from the audit log) and node transitions',
    role: 'viewer',
    query: {
      limit: { schema: { type: 'string', pattern: '^[0-9]+$' }, description: 'events at most (default 100)' },
    },
    status: 200,
    response: arr(ref('Event')),
    handle: async (call) => {
      const limit = intQuery(call, 'limit', 100, 1000);
      const audit = (await call.server.audit.list(limit)).map((a) => ({ type: 'audit', ...a }));
      const local = call.server.events.recent().filter((e) => e.type !== 'audit');
      return [...audit, ...local].sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0)).slice(0, limit);
    },
  },
  {
    method: 'GET',
    path: '/events/stream',
    summary: 'Events as they happen (text/event-stream): one `data:` line of JSON per event',
    role: 'viewer',
    status: 200,
    stream: true,
    response: ref('Event'),
    handle: async () => undefined,
  },
  {
    method: 'GET',
    path: '/audit',
    summary: 'The audit log, newest first',
    role: 'admin',
    query: {
      limit: { schema: { type: 'string', pattern: '^[0-9]+$' }, description: 'entries at most (default 100)' },
    },
    status: 200,
    response: arr(ref('AuditEntry')),
    handle: (call) => call.server.audit.list(intQuery(call, 'limit', 100, 1000)),
  },
  {
    method: 'GET',
    path: '/stats/io',
    summary: 'Client IOPS and throughput over the last hour, sampled from the frontends every 10 s',
    role: 'viewer',
    status: 200,
    response: ref('IoStats'),
    handle: async (call) => call.server.io.report(),
  },
];

/** Refuses a route table with two routes of one method and path (a bug). */
export function checkRoutes(table: readonly Route[]): void {
  const seen = new Set<string>();
  for (const r of table) {
    const key = `${r.method} ${r.path}`;
    assert(!seen.has(key), `route ${key} is listed twice`);
    seen.add(key);
  }
}
