/**
 * The storage node's defences against clients that take more than their share: every bound the
 * shard API (server.ts) and the journal connection (journal_server.ts) keep against a slow,
 * idle or greedy client, with its default, its unit last and why it has that value. cairnd
 * takes most of them as flags (src/node/args.ts); docs/operations.md lists them.
 *
 * What it keeps true: a bound that can be configured is a default here and a field of
 * NodeLimits; the relationships between the defaults are checked when this module loads, and
 * checkNodeLimits() checks a configured set the same way.
 * What it leaves out: the journal's own protocol bounds (src/journal/limits.ts) and the shard
 * size (src/shard/node_store.ts), which clients must know too.
 */
import { GiB, KiB, MiB, assert, completeLimits } from '../core/index.js';

/**
 * Shard bodies one node holds in memory at once, across every PUT on both of its servers. 64 MiB
 * shards from many clients would otherwise exhaust memory; past this a PUT is answered 503
 * (retryable) before its body is read.
 */
export const nodePutBytesMaxDefault = 1 * GiB;
/**
 * The share of the PUT budget one client (one remote address) may hold. A quarter: four busy
 * frontends can fill the node, and one client that stalls its bodies leaves three quarters to
 * everyone else. 256 MiB is still sixteen 16 MiB shards at once from one frontend.
 */
export const nodePutBytesPerClientMaxDefault = 256 * MiB;
/**
 * A request body must bring at least this many bytes per second, averaged over each window of
 * nodeBodyRateWindowMsDefault (after the first window: a grace for a slow start), or it is
 * aborted with 408 and its budget released. 64 KiB/s is 1000 times slower than a 1 Gbit/s link,
 * so only a stalled or hostile client trips it; at that rate 16 bodies of 64 MiB would otherwise
 * hold the whole PUT budget for minutes.
 */
export const nodeBodyRateMinBytesPerSDefault = 64 * KiB;
/** The window over which a body's rate is measured (and the grace before the first check). */
export const nodeBodyRateWindowMsDefault = 10_000;

/**
 * Open connections one node's shard API accepts at once. Each costs a file descriptor and some
 * tens of KiB; 19,990 idle connections reached the process's file limit and reset every new one.
 * A frontend opens at most 16 per node (nodeConcurrencyDefault), so 4096 serves 256 frontends.
 */
export const nodeConnectionsMaxDefault = 4096;
/** Open connections one remote address may hold, on each server: 16 frontends behind one NAT. */
export const nodeConnectionsPerClientMaxDefault = 256;
/**
 * A connection with no request in flight and no bytes moving for this long is closed, and so is
 * one whose client stopped reading a response for this long. Clients close idle keep-alive
 * sockets after 30 s (src/shard/node_store.ts), so this never cuts a well-behaved one.
 */
export const nodeIdleTimeoutMsDefault = 60_000;

/**
 * Response bytes (GET bodies) one node holds in memory until the kernel takes them, across every
 * connection. A GET whose body would pass this is answered 503 (retryable) before it is read.
 */
export const nodeResponseBytesMaxDefault = 1 * GiB;
/** The share of the response budget one remote address may hold (as for PUTs). */
export const nodeResponseBytesPerClientMaxDefault = 256 * MiB;
/**
 * Requests one HTTP connection may have received and not yet answered. A connection's requests
 * run one after another (HTTP/1.1 answers in order anyway), so a client pipelining GETs it never
 * reads holds one response in memory; past this many waiting requests the node stops reading the
 * connection until its answers are taken.
 */
export const nodeConnectionRequestsQueuedMax = 16;
/**
 * Requests one HTTP connection may have waiting at all. Stopping the socket cannot stop node:http
 * parsing the chunk already read (64 KiB holds some 1400 short GETs, each a few KiB of objects
 * while it waits), so a connection past this many is closed: no client Cairn ships pipelines.
 */
export const nodeConnectionRequestsPipelinedMax = 128;
/** Lines a refusing limit logs per nodeLimitLogIntervalMs; the rest are counted in the next line. */
export const nodeLimitLogIntervalMs = 10_000;

/** The bounds a ShardServer and a JournalServer keep against clients; cairnd flags set them. */
export interface NodeLimits {
  readonly putBytesMax: number;
  readonly putBytesPerClientMax: number;
  readonly bodyRateMinBytesPerS: number;
  readonly bodyRateWindowMs: number;
  readonly connectionsMax: number;
  readonly connectionsPerClientMax: number;
  readonly idleTimeoutMs: number;
  readonly responseBytesMax: number;
  readonly responseBytesPerClientMax: number;
}

export const nodeLimitsDefault: NodeLimits = {
  putBytesMax: nodePutBytesMaxDefault,
  putBytesPerClientMax: nodePutBytesPerClientMaxDefault,
  bodyRateMinBytesPerS: nodeBodyRateMinBytesPerSDefault,
  bodyRateWindowMs: nodeBodyRateWindowMsDefault,
  connectionsMax: nodeConnectionsMaxDefault,
  connectionsPerClientMax: nodeConnectionsPerClientMaxDefault,
  idleTimeoutMs: nodeIdleTimeoutMsDefault,
  responseBytesMax: nodeResponseBytesMaxDefault,
  responseBytesPerClientMax: nodeResponseBytesPerClientMaxDefault,
};

/** Which bound refused or cut a client: a metric label (cairn_node_limit_hits_total) and a log word. */
export const nodeLimitNames = [
  'connections',
  'connections_per_client',
  'put_bytes',
  'put_bytes_per_client',
  'slow_body',
  'response_bytes',
  'response_bytes_per_client',
  'unread_responses',
  'pipelined_requests',
  'idle',
] as const;
export type NodeLimitName = (typeof nodeLimitNames)[number];

/**
 * `limits` with the defaults filled in, checked: every bound a whole number above 0 and no
 * client share above its whole. Throws InvalidArgumentError naming the bad field.
 */
export function checkNodeLimits(limits: Partial<NodeLimits> = {}): NodeLimits {
  return completeLimits('node', nodeLimitsDefault, limits, [
    ['putBytesPerClientMax', 'putBytesMax'],
    ['responseBytesPerClientMax', 'responseBytesMax'],
    ['connectionsPerClientMax', 'connectionsMax'],
  ]);
}

assert(nodePutBytesPerClientMaxDefault <= nodePutBytesMaxDefault);
assert(nodeResponseBytesPerClientMaxDefault <= nodeResponseBytesMaxDefault);
assert(nodeConnectionsPerClientMaxDefault <= nodeConnectionsMaxDefault);
assert(nodeConnectionRequestsQueuedMax < nodeConnectionRequestsPipelinedMax);
assert(nodeBodyRateMinBytesPerSDefault > 0 && nodeBodyRateWindowMsDefault > 0);
