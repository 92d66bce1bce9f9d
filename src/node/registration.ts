/**
 * A storage node's presence in etcd: its permanent `targets/<name>` record (kind node, zone,
 * address, capacity) and its `alive/<name>` key under a lease (TTL 5 s, kept alive by the etcd3
 * client every TTL / 3), refreshed with usedBytes as it changes.
 *
 * What it keeps true:
 * - A node never changes zone silently: a target record with another zone (or kind) refuses
 *   the start with the reason.
 * - One live process per name: the alive key is created only if absent (or ours); a key left by
 *   an earlier instance (SIGKILLed, lease not yet expired) is waited out for a bounded time.
 * - A lost lease (etcd restarted without its data, or unreachable past 2 x TTL) is re-granted
 *   and both records written again, with backoff, until stop().
 * - Every etcd call runs under withDeadline, so a dead etcd is an UnavailableError naming it.
 *
 * What it leaves out: removing the target record (an admin's `cairnctl` job, not the node's).
 */
import type { Etcd3, Lease } from 'etcd3';
import { CairnError, InvalidArgumentError, errorMessage } from '../core/index.js';
import { withDeadline, keys, decodeAlive, decodeTarget, type AliveRecord, type TargetRecord } from '../meta/index.js';
import type { StoreUsage } from '../shard/index.js';

const aliveKey = keys.alive;
const targetKey = keys.target;

/** The schema's lease TTL: a SIGKILLed node shows down within about this long. */
export const aliveLeaseTtlS = 5;
/** How often usedBytes is compared with what etcd holds. */
const usageCheckIntervalMs = 5_000;
/** The alive record is rewritten at least this often, so heartbeatAt stays fresh. */
const heartbeatRewriteMs = 30_000;
/**
 * An earlier instance's alive key lives at most one TTL after its last keepalive (etcd checks
 * expiry every 500 ms); twice the TTL is ample, and a key still there after it is a live twin.
 */
const takeoverWaitMs = 2 * aliveLeaseTtlS * 1000;
const takeoverPollMs = 250;
/** Re-registration backoff after a lost lease: starts small, caps so etcd's return is noticed fast. */
const retryDelayMinMs = 250;
const retryDelayMaxMs = 5_000;
/** Compare-and-swap attempts on the target record before giving up (only racing writers retry). */
const targetWriteAttemptsMax = 5;

export interface RegistrationOptions {
  readonly etcd: Etcd3;
  readonly endpoints: readonly string[];
  readonly timeoutMs: number;
  readonly name: string;
  readonly zone: string;
  /** host:port where the shard API listens. */
  readonly address: string;
  /** host:port where the journal protocol listens (written as `journal` in both records). */
  readonly journal?: string;
  /** Both addresses serve TLS only: written as `tls: true` in both records, so clients use TLS. */
  readonly tls?: boolean;
  readonly usage: () => Promise<StoreUsage>;
  readonly log: (line: string) => void;
}

export class NodeRegistration {
  private readonly options: RegistrationOptions;
  private readonly startedAt = new Date().toISOString();
  private lease: Lease | undefined;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private heartbeatBusy = false;
  private written: { usedBytes: number; capacityBytes: number; atMs: number } | undefined;
  private retrying = false;

  constructor(options: RegistrationOptions) {
    this.options = options;
  }

  /**
   * Writes both records and starts the heartbeat. Throws InvalidArgumentError when the target
   * record says another zone or kind, UnavailableError when etcd does not answer, CairnError
   * ENAMEINUSE when another live process holds the name.
   */
  async start(): Promise<void> {
    await this.register(true);
    this.timer = setInterval(() => void this.heartbeat(), usageCheckIntervalMs);
    this.timer.unref();
  }

  /** Stops the heartbeat and revokes the lease, so the node shows down at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    const lease = this.lease;
    this.lease = undefined;
    if (lease !== undefined) await this.call(lease.revoke(), `revoke the lease of ${aliveKey(this.options.name)}`);
  }

  // ---------------------------------------------------------------------------------------------

  private call<T>(work: Promise<T>, what: string): Promise<T> {
    return withDeadline(work, { timeoutMs: this.options.timeoutMs, endpoints: this.options.endpoints, what });
  }

  private async register(first: boolean): Promise<void> {
    const { etcd, name } = this.options;
    const usage = await this.options.usage();
    await this.writeTarget(usage.capacityBytes);
    const lease = etcd.lease(aliveLeaseTtlS, { autoKeepAlive: true });
    lease.on('lost', (err) => this.onLost(lease, err));
    try {
      const leaseId = await this.call(lease.grant(), `grant a lease for ${aliveKey(name)}`);
      await this.claimAlive(leaseId, usage, first);
    } catch (err) {
      lease.release();
      throw err;
    }
    if (this.stopped) {
      await this.call(lease.revoke(), `revoke the lease of ${aliveKey(name)}`).catch(() => undefined);
      return;
    }
    this.lease = lease;
  }

  /** Creates or updates `targets/<name>`, refusing another zone or kind. */
  private async writeTarget(capacityBytes: number): Promise<void> {
    const { etcd, name, zone, address, journal } = this.options;
    const tls = this.options.tls === true ? { tls: true } : {};
    const key = targetKey(name);
    for (let attempt = 1; attempt <= targetWriteAttemptsMax; attempt++) {
      const found = await this.call(etcd.get(key).exec(), `read ${key}`);
      const kv = found.kvs[0];
      let txn;
      if (kv === undefined) {
        const record: TargetRecord = {
          name,
          kind: 'node',
          zone,
          address,
          ...(journal === undefined ? {} : { journal }),
          ...tls,
          capacityBytes,
          addedAt: new Date().toISOString(),
        };
        txn = etcd.if(key, 'Create', '==', 0).then(etcd.put(key).value(JSON.stringify(record)));
      } else {
        const old = decodeTarget(key, kv.value.toString('utf8'));
        if (old.kind !== 'node') {
          throw new InvalidArgumentError(
            `Cannot start node "${name}": the name belongs to an ${old.kind} target (${key}); choose another --name`,
          );
        }
        if (old.zone !== zone) {
          throw new InvalidArgumentError(
            `Cannot start node "${name}" in zone "${zone}": it is registered in zone "${old.zone}" (${key}); start it with --zone ${old.zone}, or remove the target first`,
          );
        }
        if (
          old.address === address &&
          old.journal === journal &&
          (old.tls === true) === (this.options.tls === true) &&
          old.capacityBytes === capacityBytes
        )
          return;
        const { journal: _oldJournal, tls: _oldTls, ...rest } = old;
        const record: TargetRecord = {
          ...rest,
          address,
          ...(journal === undefined ? {} : { journal }),
          ...tls,
          capacityBytes,
        };
        txn = etcd.if(key, 'Mod', '==', kv.mod_revision).then(etcd.put(key).value(JSON.stringify(record)));
      }
      if ((await this.call(txn.commit(), `write ${key}`)).succeeded) return;
    }
    throw new CairnError(
      'ECONFLICT',
      `Cannot register node "${name}": ${key} kept changing under ${targetWriteAttemptsMax} attempts`,
    );
  }

  private aliveRecord(usage: StoreUsage): AliveRecord {
    const { name, zone, address, journal } = this.options;
    return {
      name,
      zone,
      address,
      ...(journal === undefined ? {} : { journal }),
      ...(this.options.tls === true ? { tls: true } : {}),
      capacityBytes: usage.capacityBytes,
      usedBytes: usage.usedBytes,
      pid: process.pid,
      startedAt: this.startedAt,
      heartbeatAt: new Date().toISOString(),
    };
  }

  /** Puts `alive/<name>` under the lease if absent or ours; waits out an earlier instance's key. */
  private async claimAlive(leaseId: string, usage: StoreUsage, first: boolean): Promise<void> {
    const { etcd, name } = this.options;
    const key = aliveKey(name);
    const giveUpAt = Date.now() + takeoverWaitMs;
    let waitLogged = false;
    for (;;) {
      const record = this.aliveRecord(usage);
      const put = etcd.put(key).value(JSON.stringify(record)).lease(leaseId);
      const result = await this.call(
        etcd.if(key, 'Create', '==', 0).then(put).else(etcd.get(key)).commit(),
        `create ${key}`,
      );
      if (result.succeeded) {
        this.written = { usedBytes: usage.usedBytes, capacityBytes: usage.capacityBytes, atMs: Date.now() };
        return;
      }
      const kv = result.responses[0]?.response_range?.kvs[0];
      if (kv !== undefined) {
        const holder = decodeAlive(key, kv.value.toString('utf8'));
        if (holder.pid === process.pid && holder.startedAt === this.startedAt) {
          // Our own key from a lease that was lost: move it to the new lease.
          const moved = await this.call(
            etcd
              .if(key, 'Mod', '==', kv.mod_revision)
              .then(etcd.put(key).value(JSON.stringify(record)).lease(leaseId))
              .commit(),
            `update ${key}`,
          );
          if (moved.succeeded) {
            this.written = { usedBytes: usage.usedBytes, capacityBytes: usage.capacityBytes, atMs: Date.now() };
            return;
          }
          continue;
        }
        if (Date.now() > giveUpAt) {
          throw new CairnError(
            'ENAMEINUSE',
            `Cannot start node "${name}": another process holds ${key} (pid ${holder.pid} at ${holder.address}, started ${holder.startedAt}); is a second cairnd using this name?`,
          );
        }
        if (first && !waitLogged) {
          this.options.log(
            `waiting up to ${takeoverWaitMs} ms for ${key} of an earlier instance (pid ${holder.pid}, started ${holder.startedAt}) to expire`,
          );
          waitLogged = true;
        }
      }
      await new Promise((resolve) => setTimeout(resolve, takeoverPollMs));
      if (this.stopped) return;
    }
  }

  private onLost(lease: Lease, err: unknown): void {
    if (lease !== this.lease || this.stopped) return; // a lease that never finished registering, or ours after stop
    this.lease = undefined;
    this.options.log(`lost the etcd lease of ${aliveKey(this.options.name)} (${errorMessage(err)}); registering again`);
    void this.reRegister();
  }

  private async reRegister(): Promise<void> {
    if (this.retrying) return;
    this.retrying = true;
    let delayMs = retryDelayMinMs;
    let failures = 0;
    try {
      while (!this.stopped) {
        try {
          await this.register(false);
          this.options.log(`registered again in etcd after ${failures} failed attempts`);
          return;
        } catch (err) {
          failures += 1;
          // One line per failure would flood the log during a long etcd outage: log the first
          // and then every tenth.
          if (failures === 1 || failures % 10 === 0)
            this.options.log(`cannot register in etcd yet (attempt ${failures}): ${errorMessage(err)}`);
          await new Promise((resolve) => setTimeout(resolve, delayMs));
          delayMs = Math.min(retryDelayMaxMs, delayMs * 2);
        }
      }
    } finally {
      this.retrying = false;
    }
  }

  /** Rewrites the alive record when usage changed, or when it is getting old. */
  private async heartbeat(): Promise<void> {
    const lease = this.lease;
    if (this.stopped || lease === undefined || this.heartbeatBusy) return;
    this.heartbeatBusy = true;
    try {
      const usage = await this.options.usage();
      const last = this.written;
      const stale = last === undefined || Date.now() - last.atMs >= heartbeatRewriteMs;
      if (!stale && last.usedBytes === usage.usedBytes && last.capacityBytes === usage.capacityBytes) return;
      await this.call(
        lease
          .put(aliveKey(this.options.name))
          .value(JSON.stringify(this.aliveRecord(usage)))
          .exec(),
        `refresh ${aliveKey(this.options.name)}`,
      );
      this.written = { usedBytes: usage.usedBytes, capacityBytes: usage.capacityBytes, atMs: Date.now() };
    } catch (err) {
      // The lease's own keepalive decides whether the lease is lost; this only refreshes numbers.
      this.options.log(`cannot refresh ${aliveKey(this.options.name)}: ${errorMessage(err)}`);
    } finally {
      this.heartbeatBusy = false;
    }
  }
}
