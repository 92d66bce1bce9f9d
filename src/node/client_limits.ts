/**
 * Shared bookkeeping for the node's limits (limits.ts): the budgets with a per-client share (of
 * bytes, or of connections) and the log that says when a limit bites live in core (budgets.ts,
 * shared with the NBD frontend); this file names a node's client and its log interval. A client
 * is a remote address (no port): what one host or NAT can open many connections from.
 */
import type { Socket } from 'node:net';
import { LimitLog as CoreLimitLog } from '../core/index.js';
import { nodeLimitLogIntervalMs, type NodeLimitName } from './limits.js';

export { ClientBudget, type BudgetRefusal } from '../core/index.js';

/** The client a socket belongs to: its remote address, without the port. */
export function clientOf(socket: Socket): string {
  return socket.remoteAddress ?? 'unknown';
}

/** A LimitLog over the node's limit names, one line per limit per nodeLimitLogIntervalMs. */
export class LimitLog extends CoreLimitLog<NodeLimitName> {
  constructor(log: (line: string) => void, onHit: ((limit: NodeLimitName) => void) | undefined) {
    super(log, onHit, nodeLimitLogIntervalMs);
  }
}
