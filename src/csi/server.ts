/**
 * The CSI gRPC server: the Identity service always, the Controller service with `controller`, on
 * a Unix socket (the CSI convention: the CO's sidecars and kubelet talk to the driver through one).
 *
 * What it keeps true: a call never crashes the server (every handler's error becomes the call's
 * status: CsiError's own code, Cairn's errors mapped by statusOf); a second call for a volume or
 * snapshot with one in flight is ABORTED (the specification's answer: the CO retries later), so
 * two CreateVolume calls for one name never race; requests are logged with their outcome.
 *
 * @example
 * const server = await serveCsi({ endpoint: 'unix:///run/cairn/csi.sock', controller, services: ['controller'] });
 * ...
 * await server.close();
 */
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { InvalidArgumentError, errorMessage } from '../core/index.js';
import type { CsiController } from './controller.js';
import type { CsiNode } from './node.js';
import { CsiError, cairnName } from './requests.js';
import { status, statusName, statusOf } from './status.js';

/** Where csi.proto is: next to this module once built, or in src/ beside dist/. */
function protoPath(): string {
  const candidates = [new URL('./csi.proto', import.meta.url), new URL('../../../src/csi/csi.proto', import.meta.url)];
  for (const url of candidates) {
    const path = fileURLToPath(url);
    if (existsSync(path)) return path;
  }
  throw new Error(`Cannot find csi.proto (looked at ${candidates.map((u) => fileURLToPath(u)).join(', ')})`);
}

/** The CSI v1 services, loaded from csi.proto: field names as the specification spells them. */
export function csiServices(): {
  Identity: grpc.ServiceClientConstructor;
  Controller: grpc.ServiceClientConstructor;
  Node: grpc.ServiceClientConstructor;
} {
  const definition = protoLoader.loadSync(protoPath(), {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: false,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    csi: { v1: Record<string, grpc.ServiceClientConstructor> };
  };
  const { Identity, Controller, Node } = pkg.csi.v1;
  return { Identity: Identity!, Controller: Controller!, Node: Node! };
}

/** `unix:///path` (or `unix:/path`): the socket path; anything else is refused. */
export function socketPath(endpoint: string): string {
  const m = /^unix:\/\/(\/.+)$/.exec(endpoint) ?? /^unix:(\/.+)$/.exec(endpoint);
  if (m === null)
    throw new InvalidArgumentError(`Invalid --endpoint "${endpoint}": use unix:///PATH (a Unix socket, as CSI does)`);
  return m[1]!;
}

export interface CsiServerOptions {
  readonly endpoint: string;
  readonly controller: CsiController;
  /** Serve the Controller service too (the Identity service is always served). */
  readonly withController: boolean;
  /** Serve the Node service with this node. */
  readonly node?: CsiNode;
  readonly log: (line: string) => void;
}

export interface CsiServer {
  readonly path: string;
  close(): Promise<void>;
}

type Handler = (request: Record<string, unknown>) => Promise<Record<string, unknown>> | Record<string, unknown>;

export async function serveCsi(options: CsiServerOptions): Promise<CsiServer> {
  const path = socketPath(options.endpoint);
  mkdirSync(dirname(path), { recursive: true });
  // A socket left by a previous run (the CO restarts plugins): binding over it would fail.
  rmSync(path, { force: true });
  const services = csiServices();
  const server = new grpc.Server();
  const inFlight = new Set<string>();
  const { controller: c, log } = options;

  /** Wraps a handler: op lock on `key`, errors to statuses, one log line per failed call. */
  const unary =
    (method: string, handler: Handler, key?: (r: Record<string, unknown>) => string | undefined) =>
    (call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>, callback: grpc.sendUnaryData<unknown>): void => {
      const request = call.request ?? {};
      let lockKey: string | undefined;
      void (async () => {
        try {
          lockKey = key?.(request);
          if (lockKey !== undefined) {
            if (inFlight.has(lockKey))
              throw new CsiError(status.ABORTED, `An operation on ${lockKey} is in progress; try again`);
            inFlight.add(lockKey);
          }
          callback(null, await handler(request));
        } catch (err) {
          const { code, message } = statusOf(err);
          log(`${method}: ${statusName(code)}: ${message}`);
          callback({ code, details: message, name: 'CsiError', message });
        } finally {
          if (lockKey !== undefined) inFlight.delete(lockKey);
        }
      })().catch((err: unknown) => log(`${method}: ${errorMessage(err)}`));
    };
  // Op-lock keys: one namespace per kind of object, by Cairn name (a CO name as cairnName maps it).
  const volumeKey = (id: unknown): string | undefined =>
    typeof id === 'string' && id !== '' ? `volume ${id}` : undefined;
  const named = (field: string) => (r: Record<string, unknown>) => {
    try {
      return typeof r[field] === 'string' && r[field] !== '' ? `volume ${cairnName(r[field], field)}` : undefined;
    } catch {
      return undefined; // the handler refuses it with the reason
    }
  };
  const str = (field: string) => (r: Record<string, unknown>) =>
    typeof r[field] === 'string' && r[field] !== '' ? `${field} ${String(r[field])}` : undefined;

  server.addService(services.Identity.service, {
    GetPluginInfo: unary('GetPluginInfo', () => c.getPluginInfo()),
    GetPluginCapabilities: unary('GetPluginCapabilities', () => c.getPluginCapabilities(options.withController)),
    Probe: unary('Probe', () => c.probe()),
  });
  if (options.withController)
    server.addService(services.Controller.service, {
      CreateVolume: unary('CreateVolume', (r) => c.createVolume(r), named('name')),
      DeleteVolume: unary(
        'DeleteVolume',
        (r) => c.deleteVolume(r),
        (r) => volumeKey(r['volume_id']),
      ),
      ValidateVolumeCapabilities: unary('ValidateVolumeCapabilities', (r) => c.validateVolumeCapabilities(r)),
      ListVolumes: unary('ListVolumes', (r) => c.listVolumes(r)),
      GetCapacity: unary('GetCapacity', (r) => c.getCapacity(r)),
      ControllerGetCapabilities: unary('ControllerGetCapabilities', () => c.controllerGetCapabilities()),
      CreateSnapshot: unary(
        'CreateSnapshot',
        (r) => c.createSnapshot(r),
        (r) => {
          const snap = named('name')(r);
          return snap === undefined ? undefined : `snapshot ${snap.slice('volume '.length)}`;
        },
      ),
      DeleteSnapshot: unary('DeleteSnapshot', (r) => c.deleteSnapshot(r), str('snapshot_id')),
      ListSnapshots: unary('ListSnapshots', (r) => c.listSnapshots(r)),
      ControllerExpandVolume: unary(
        'ControllerExpandVolume',
        (r) => c.controllerExpandVolume(r),
        (r) => volumeKey(r['volume_id']),
      ),
    });

  const n = options.node;
  if (n !== undefined)
    server.addService(services.Node.service, {
      NodeStageVolume: unary(
        'NodeStageVolume',
        (r) => n.nodeStageVolume(r),
        (r) => volumeKey(r['volume_id']),
      ),
      NodeUnstageVolume: unary(
        'NodeUnstageVolume',
        (r) => n.nodeUnstageVolume(r),
        (r) => volumeKey(r['volume_id']),
      ),
      NodePublishVolume: unary(
        'NodePublishVolume',
        (r) => n.nodePublishVolume(r),
        (r) => volumeKey(r['volume_id']),
      ),
      NodeUnpublishVolume: unary(
        'NodeUnpublishVolume',
        (r) => n.nodeUnpublishVolume(r),
        (r) => volumeKey(r['volume_id']),
      ),
      NodeGetVolumeStats: unary('NodeGetVolumeStats', (r) => n.nodeGetVolumeStats(r)),
      NodeExpandVolume: unary(
        'NodeExpandVolume',
        (r) => n.nodeExpandVolume(r),
        (r) => volumeKey(r['volume_id']),
      ),
      NodeGetCapabilities: unary('NodeGetCapabilities', () => n.nodeGetCapabilities()),
      NodeGetInfo: unary('NodeGetInfo', () => n.nodeGetInfo()),
    });

  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${path}`, grpc.ServerCredentials.createInsecure(), (err) =>
      err ? reject(err) : resolve(),
    ),
  );
  const served = ['identity', ...(options.withController ? ['controller'] : []), ...(n === undefined ? [] : ['node'])];
  log(`serving CSI (${served.join(', ')}) on unix://${path}`);
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => {
          rmSync(path, { force: true });
          resolve();
        });
      }),
  };
}
