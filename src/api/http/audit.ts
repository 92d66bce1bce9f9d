/**
 * The audit log: every change asked of the API (POST, PATCH, DELETE), allowed or refused, as one
 * etcd key `cairn/v1/audit/<id>` and one JSON line in the server's log. The id is the time in
 * milliseconds, zero-padded to 15 digits, then 8 random hex digits: etcd's byte order is time
 * order, and two replicas writing in the same millisecond do not collide.
 *
 * What it keeps true: at most auditEntriesMax entries stay in etcd (the oldest are deleted after
 * each write); a failure to write the entry is logged and never turns a done change into an error.
 * What it leaves out: reads (GET), which change nothing.
 */
import { randomBytes } from 'node:crypto';
import { errorMessage } from '../../core/index.js';
import { keys, type EtcdMeta } from '../../meta/index.js';
import { auditEntriesMax } from './limits.js';
import type { Role } from './tokens.js';

export interface AuditEntry {
  readonly id: string;
  /** ISO 8601. */
  readonly at: string;
  /** The principal's name (token name or certificate CN), or "anonymous" for a refused request without one. */
  readonly who: string;
  readonly role: Role | null;
  readonly method: string;
  readonly path: string;
  readonly status: number;
  /** What was asked and what came of it, in a few words. */
  readonly summary: string;
}

export function auditId(nowMs: number): string {
  return `${String(nowMs).padStart(15, '0')}-${randomBytes(4).toString('hex')}`;
}

export class AuditLog {
  constructor(
    private readonly meta: EtcdMeta,
    private readonly log: (line: string) => void,
  ) {}

  /** Records an entry; never throws. */
  async record(entry: Omit<AuditEntry, 'id' | 'at'>, now = new Date()): Promise<AuditEntry> {
    const full: AuditEntry = { id: auditId(now.getTime()), at: now.toISOString(), ...entry };
    this.log(JSON.stringify({ audit: full }));
    try {
      await this.meta.client.put(keys.audit(full.id)).value(JSON.stringify(full)).exec();
      await this.prune();
    } catch (err) {
      this.log(JSON.stringify({ msg: 'cannot write the audit entry to etcd', id: full.id, error: errorMessage(err) }));
    }
    return full;
  }

  /** The newest `limit` entries, newest first. */
  async list(limit = auditEntriesMax): Promise<AuditEntry[]> {
    const all = await this.meta.client
      .getAll()
      .prefix(keys.auditPrefix())
      .sort('Key', 'Descend')
      .limit(Math.min(limit, auditEntriesMax))
      .strings();
    return Object.values(all)
      .map((text) => JSON.parse(text) as AuditEntry)
      .sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  }

  private async prune(): Promise<void> {
    const ids = await this.meta.client.getAll().prefix(keys.auditPrefix()).keys();
    if (ids.length <= auditEntriesMax) return;
    const old = ids.sort().slice(0, ids.length - auditEntriesMax);
    for (const key of old) await this.meta.client.delete().key(key).exec();
  }
}
