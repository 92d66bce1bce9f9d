/**
 * A CSI client for tests: a running `cairnctl csi serve` on a dev cluster, gRPC clients of its
 * Unix socket, calls that return their outcome, and the specification's codes checked.
 */
import { expect } from 'chai';
import { existsSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { cairnctlPath } from './cli.js';
import { waitFor } from '../../src/dev/index.js';
import { CsiNode, NbdfuseAttacher, csiServices, mountTable, statusName } from '../../src/csi/index.js';
import { ClientProcess, runOk, type Stack } from './stack.js';

export type Message = Record<string, unknown>;
export type Service = 'Identity' | 'Controller' | 'Node';

export const mountWriter = { mount: { fs_type: 'ext4' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
export const blockWriter = { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

/** A unary call: its response (fields at their default, as protobuf omits them, are absent), or the gRPC status it failed with. */
export type Outcome = { ok: true; response: Message } | { ok: false; code: number; details: string };

export class CsiClient {
  private readonly clients: Record<string, grpc.Client>;
  constructor(readonly path: string) {
    const services = csiServices();
    const creds = grpc.credentials.createInsecure();
    this.clients = {
      Identity: new services.Identity(`unix://${path}`, creds),
      Controller: new services.Controller(`unix://${path}`, creds),
      Node: new services.Node(`unix://${path}`, creds),
    };
  }
  call(service: Service, method: string, request: Message): Promise<Outcome> {
    const client = this.clients[service] as unknown as Record<
      string,
      (r: Message, cb: (err: grpc.ServiceError | null, res: Message) => void) => void
    >;
    return new Promise((resolve) =>
      client[method]!.call(client, request, (err, res) =>
        resolve(err === null ? { ok: true, response: res } : { ok: false, code: err.code, details: err.details }),
      ),
    );
  }
  async ok(service: Service, method: string, request: Message): Promise<Message> {
    const r = await this.call(service, method, request);
    if (!r.ok) throw new Error(`${method} failed: ${statusName(r.code)}: ${r.details}`);
    return r.response;
  }
  /** The call must fail with `code`, its details matching `pattern`. */
  async refused(method: string, request: Message, code: number, pattern: RegExp): Promise<void> {
    const r = await this.call(method.startsWith('Node') ? 'Node' : 'Controller', method, request);
    expect(r.ok, `${method} ${JSON.stringify(request)} should fail`).to.equal(false);
    if (r.ok) return;
    expect(statusName(r.code), `${method}: ${r.details}`).to.equal(statusName(code));
    expect(r.details).to.match(pattern);
  }
  close(): void {
    for (const c of Object.values(this.clients)) c.close();
  }
}

/** A running `cairnctl csi serve`, a client of its socket, and how to stop both (also deferred). */
export async function startDriver(
  s: Stack,
  extra: readonly string[] = [],
): Promise<CsiClient & { stop(): Promise<void> }> {
  const path = s.path('csi/csi.sock');
  const driver = new ClientProcess(
    process.execPath,
    [cairnctlPath, 'csi', 'serve', '--endpoint', `unix://${path}`, '--controller', ...extra],
    { deadlineMs: 600_000, env: { CAIRN_ETCD: s.etcd } },
  );
  const client = new CsiClient(path);
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    client.close();
    if (driver.running()) driver.kill('SIGTERM');
    const r = await driver.exit();
    expect(r.code, `the driver's exit: ${r.stderr.slice(-1000)}`).to.equal(0);
  };
  s.defer('the CSI driver', stop);
  await driver.waitForOutput(/serving CSI on/);
  await waitFor('the CSI socket', () => existsSync(path), 30_000);
  return Object.assign(client, { stop });
}

/**
 * Undoes, before the cluster goes down, whatever a failing test leaves staged by an nbdfuse node
 * plugin: pod mounts under `s.path('kubelet')`, then each device recorded in `stateDir` (umount,
 * losetup -d, fusermount -u, nbdfuse by pid). `base` is the plugin's --nbd URI.
 */
export function deferStagedCleanup(s: Stack, base: string, stateDir: string): void {
  s.defer('volumes left staged', async () => {
    for (const [point] of mountTable())
      if (point.startsWith(s.path('kubelet')))
        await runOk('umount', '/usr/bin/umount', ['-l', point], { deadlineMs: 60_000 });
    const attacher = new NbdfuseAttacher(base);
    const node = new CsiNode({ nodeId: 'cleanup', stateDir, attacher, log: () => undefined });
    for (const v of node.staged()) await attacher.detach(v.attached);
  });
}
