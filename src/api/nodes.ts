/**
 * Which storage nodes exist and which are up: every `targets/` record of kind node, joined with
 * the leased `alive/` keys. A node with a target record and no alive key is down (stopped, or
 * SIGKILLed and its lease expired); it is listed, not forgotten.
 *
 * nodeStatusesOf() is pure (records in, statuses out); listNodes() reads the two prefixes from
 * etcd, each call under a deadline.
 */
import type { Etcd3 } from 'etcd3';
import { decodeAlive, decodeTarget, etcdCallTimeoutMsDefault, keys, withDeadline } from '../meta/index.js';

const alivePrefix = keys.alivePrefix();
const targetsPrefix = keys.targetsPrefix();

export interface NodeStatus {
  readonly name: string;
  readonly zone: string;
  /** host:port of its shard API: the live one when up, else the last registered. */
  readonly address: string;
  readonly state: 'up' | 'down';
  readonly capacityBytes: number;
  /** Known only while the node is up. */
  readonly usedBytes: number | null;
  /** ISO 8601 time of the last refresh of the alive record, while up. */
  readonly heartbeatAt: string | null;
}

/**
 * Joins target and alive records (full etcd keys to values) into statuses sorted by name.
 * An alive key without a target record (a node that has not finished registering) is listed as
 * up from its alive record alone. Throws CorruptMetadataError naming the key of a malformed record.
 */
export function nodeStatusesOf(
  targets: Readonly<Record<string, string>>,
  alive: Readonly<Record<string, string>>,
): NodeStatus[] {
  const byName = new Map<string, NodeStatus>();
  const aliveByName = new Map(
    Object.entries(alive).map(([key, text]) => [key.slice(alivePrefix.length), decodeAlive(key, text)]),
  );
  for (const [key, text] of Object.entries(targets)) {
    const target = decodeTarget(key, text);
    if (target.kind !== 'node') continue;
    const up = aliveByName.get(target.name);
    byName.set(target.name, {
      name: target.name,
      zone: target.zone,
      address: up?.address ?? target.address ?? '',
      state: up === undefined ? 'down' : 'up',
      capacityBytes: up?.capacityBytes ?? target.capacityBytes ?? 0,
      usedBytes: up?.usedBytes ?? null,
      heartbeatAt: up?.heartbeatAt ?? null,
    });
  }
  for (const [name, up] of aliveByName) {
    if (byName.has(name)) continue;
    const target = targets[`${targetsPrefix}${name}`];
    if (target !== undefined && decodeTarget(`${targetsPrefix}${name}`, target).kind !== 'node') continue;
    byName.set(name, {
      name,
      zone: up.zone,
      address: up.address,
      state: 'up',
      capacityBytes: up.capacityBytes,
      usedBytes: up.usedBytes,
      heartbeatAt: up.heartbeatAt,
    });
  }
  return [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export interface ListNodesOptions {
  /** etcd endpoints, for messages when etcd does not answer. */
  readonly endpoints: readonly string[];
  readonly timeoutMs?: number;
}

/**
 * Every storage node registered in etcd, up or down, sorted by name. Throws UnavailableError
 * naming the endpoints when etcd does not answer in time, CorruptMetadataError for a malformed record.
 */
export async function listNodes(etcd: Etcd3, options: ListNodesOptions): Promise<NodeStatus[]> {
  const timeoutMs = options.timeoutMs ?? etcdCallTimeoutMsDefault;
  const deadline = (what: string) => ({ timeoutMs, endpoints: options.endpoints, what });
  // Targets first: a node registering between the two reads then shows up (from alive) rather
  // than as a target that looks down.
  const targets = await withDeadline(etcd.getAll().prefix(targetsPrefix).strings(), deadline(`list ${targetsPrefix}`));
  const alive = await withDeadline(etcd.getAll().prefix(alivePrefix).strings(), deadline(`list ${alivePrefix}`));
  return nodeStatusesOf(targets, alive);
}
