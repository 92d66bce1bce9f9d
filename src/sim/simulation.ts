/**
 * runSimulation(seed): builds the world of a seed, runs its workload one client operation at a
 * time with faults injected between them, checks every answer against the model, and reports
 * the first violation with the seed to replay it.
 *
 * What it checks:
 * - every read returns bytes the model allows (never wrong bytes, whatever the faults);
 * - an operation fails only with a typed error the world justifies (more than m shards of an
 *   extent unavailable, a refused placement while targets are down, an injected commit failure
 *   or fencing); with at most m shards lost per extent, reads succeed;
 * - after a successful FLUSH (or FUA), a crash of the frontend, or a fresh reader of the
 *   published map, finds exactly what the model held;
 * - after every fault heals, a FLUSH succeeds, the whole volume reads back, and every shard of a
 *   published generation is still stored (nothing was garbage-collected too early);
 * - no operation hangs (within its deadline of simulated time), and nothing anomalous happened
 *   below (a checksum mismatch nobody planted, a published shard deleted);
 * - with a journal: a FLUSH answered by journal appends is as durable as one that published
 *   generations, through journal node crashes before fsync, torn records, partitioned and flaky
 *   journal nodes, a frontend crash mid-fold (shards stored, commit not sent; or committed, journal
 *   not trimmed), and a takeover while the old writer's flush is in flight (if that flush is
 *   answered, what it covered must survive; a flush the old writer tries afterwards must fail).
 * - on half the seeds, snapshots: taken under the cache's gate after a flush and fold, read back
 *   whole against their own models whatever the volume did since, deleted, and rolled back to
 *   (a clean detach, the map becomes the snapshot's, a new writer attaches); a shard a snapshot
 *   reaches is never deleted (the writer leaves it to gc) and counts as published.
 * What it leaves out: performance, concurrent client operations (see workload.ts), and clones
 * and resizes (the map simulator, map_sim.ts, runs those against record models of every
 * snapshot and clone; the integration tests run them with real clients).
 */
import { CairnError, FencedError, assert, parseShardKey } from '../core/index.js';
import type { CodecPool } from '../codec/index.js';
import { WasmKernel } from '../codec/index.js';
import { PersistError } from '../volume/index.js';
import { VolumeModel, extentStatesMax, judgeFailure } from './checker.js';
import { GatedPool, KernelCodec, type SimCodec } from './codec_gate.js';
import { journalBugOf, plantBug, type PlantedBug } from './planted_bugs.js';
import { Prng } from './prng.js';
import type { Outcome } from './scheduler.js';
import { Trace } from './trace.js';
import { Workload, type Op } from './workload.js';
import { World, configFromSeed, describeConfig, type Frontend } from './world.js';
import type { CommitStage } from './sim_map.js';
import { journalTrimDelayMs } from './sim_journal.js';

export interface SimulationOptions {
  /** Client operations to run (default stepsDefault). */
  readonly steps?: number;
  /**
   * The real worker-thread codec pool to code on (behind a gate that releases completions in
   * submission order). Without it the wasm kernel codes on this thread; both give one trace.
   */
  readonly pool?: CodecPool;
  /** The kernel to use when no pool is given (default: one shared per process). */
  readonly kernel?: WasmKernel;
  /** Plant a bug, to prove the checker fails (see planted_bugs.ts). */
  readonly bug?: PlantedBug;
  /** Probability of a fault before each operation (default faultRateDefault). */
  readonly faultRate?: number;
  /**
   * Draw the engine's read hedge and the cache's flush retries from the seed. Only for code whose
   * hedge and retries wait on the injected Clock (see world.ts ConfigOptions); default off.
   */
  readonly clockedTimers?: boolean;
  /** Receives every trace line as it is written (the verbose replay). */
  readonly log?: (line: string) => void;
}

export interface SimulationFailure {
  /** The operation (0-based) during or after which the violation was found; steps for the final check. */
  readonly step: number;
  readonly message: string;
  /** The command that replays this seed with a verbose trace. */
  readonly replay: string;
  /** The last lines of the trace, oldest first. */
  readonly trace: readonly string[];
}

export interface SimulationResult {
  readonly seed: number;
  readonly steps: number;
  /** Client operations run (including the checks' own reads, flushes and crashes). */
  readonly ops: number;
  /** Faults injected. */
  readonly faults: number;
  readonly ok: boolean;
  readonly failure?: SimulationFailure;
  /** SHA-256 of the whole trace: one seed, one hash. */
  readonly traceHash: string;
  readonly traceLines: number;
  readonly simulatedMs: number;
  readonly config: string;
}

export const stepsDefault = 300;
/** Chance of a snapshot operation before a client operation. */
export const snapshotOpRate = 0.04;
export const faultRateDefault = 0.1;
/** Simulated time given to work in flight at a heal to finish before success is demanded. */
export const healSettleMs = 10_000;
/** Simulated time one client operation may take before it counts as hung. */
export const operationDeadlineMs = 600_000;

/** The failure that ends a run: thrown to unwind from wherever the violation was found. */
class Violation extends Error {}

let sharedKernel: WasmKernel | undefined;

export function replayCommand(
  seed: number,
  options: { steps?: number; bug?: PlantedBug; clockedTimers?: boolean } = {},
): string {
  const extra =
    (options.steps !== undefined && options.steps !== stepsDefault ? ` --steps ${options.steps}` : '') +
    (options.bug !== undefined ? ` --bug ${options.bug}` : '') +
    (options.clockedTimers === true ? ' --clocked-timers' : '');
  return `node scripts/sim.mjs --seed ${seed}${extra}`;
}

/** Runs the simulation of `seed`. Never throws for a violation: the result says what failed. */
export async function runSimulation(seed: number, options: SimulationOptions = {}): Promise<SimulationResult> {
  const root = new Prng(seed, 'cairn-sim');
  const config = configFromSeed(root.fork('config'), { clockedTimers: options.clockedTimers ?? false });
  const codec: SimCodec =
    options.pool !== undefined
      ? new GatedPool(options.pool)
      : new KernelCodec(options.kernel ?? (sharedKernel ??= new WasmKernel()));
  const trace = new Trace(options.log);
  // Forked in this order (new streams last), so adding a stream reshuffles none of the others.
  const store = root.fork('store');
  const map = root.fork('map');
  const workload = root.fork('workload');
  const faults = root.fork('faults');
  const journal = root.fork('journal');
  const seeds = root.fork('extent-seeds');
  const integrity = root.fork('integrity');
  const snapshots = root.fork('snapshots');
  const world = new World(config, codec, trace, { store, map, journal, seeds }, journalBugOf(options.bug), {
    skipEndToEndCheck: options.bug === 'skip-end-to-end-check',
    snapshotNotRetained: options.bug === 'snapshot-not-retained',
  });
  const sim = new Simulation(seed, world, workload, faults, options, integrity, snapshots);
  try {
    await sim.run();
  } finally {
    await world.shutdown();
  }
  return sim.result(describeConfig(config));
}

class Simulation {
  /** Chance that a 'bit-flip' fault is a wrong shard or a vanished one instead (0 for half the seeds). */
  private readonly integrityFaultP: number;
  private readonly model: VolumeModel;
  /** Each snapshot's model: the contents its extents may hold. */
  private readonly snapshotModels = new Map<string, VolumeModel>();
  private snapshotsTaken = 0;
  private readonly snapshotsOn: boolean;
  private readonly workload: Workload;
  private readonly steps: number;
  private readonly faultRate: number;
  private frontend: Frontend | undefined;
  private step = 0;
  private ops = 0;
  private faults = 0;
  private failure: { step: number; message: string } | undefined;
  /** Store failures from here on may justify a failure: everything since the last heal. */
  private healMark = 0;

  constructor(
    private readonly seed: number,
    private readonly world: World,
    workloadRng: Prng,
    private readonly faultRng: Prng,
    private readonly options: SimulationOptions,
    /** Integrity faults' own stream: whether this seed has them, and which each time. */
    private readonly integrity: Prng,
    /** Snapshot operations' own stream: when, which, and of what. */
    private readonly snapRng: Prng,
  ) {
    this.integrityFaultP = integrity.chance(0.5) ? 0.5 : 0;
    // Half the seeds take snapshots; the other half run the schedules they ran before snapshots
    // existed (the seeds that caught earlier bugs keep catching them).
    this.snapshotsOn = snapRng.chance(0.5);
    this.model = new VolumeModel(world.config.volume);
    this.workload = new Workload(workloadRng, world.config.volume);
    this.steps = options.steps ?? stepsDefault;
    this.faultRate = options.faultRate ?? faultRateDefault;
  }

  private get trace(): Trace {
    return this.world.trace;
  }

  private get fe(): Frontend {
    const f = this.frontend;
    assert(f !== undefined, 'no frontend attached');
    return f;
  }

  result(config: string): SimulationResult {
    const base = {
      seed: this.seed,
      steps: this.steps,
      ops: this.ops,
      faults: this.faults,
      simulatedMs: this.world.clock.now(),
      config,
      traceLines: this.trace.lines,
    };
    if (this.failure === undefined) return { ...base, ok: true, traceHash: this.trace.digest() };
    const replay = replayCommand(this.seed, {
      ...(this.options.steps !== undefined ? { steps: this.options.steps } : {}),
      ...(this.options.bug !== undefined ? { bug: this.options.bug } : {}),
      ...(this.options.clockedTimers !== undefined ? { clockedTimers: this.options.clockedTimers } : {}),
    });
    this.trace.add(`replay with: ${replay}`);
    const lines = this.trace.lastLines();
    return {
      ...base,
      ok: false,
      traceHash: this.trace.digest(),
      failure: { step: this.failure.step, message: this.failure.message, replay, trace: lines },
    };
  }

  private fail(message: string): never {
    this.failure = { step: this.step, message };
    this.trace.add(`FAIL at step ${this.step} (seed ${this.seed}): ${message}`);
    throw new Violation(message);
  }

  async run(): Promise<void> {
    this.trace.add(`seed ${this.seed}: ${describeConfig(this.world.config)}`);
    try {
      this.frontend = await this.world.attach();
      this.frontend.device = plantBug(this.frontend.cache, this.options.bug);
      for (this.step = 0; this.step < this.steps; this.step++) {
        if (this.faultRng.chance(this.faultRate)) await this.injectFault();
        if (this.snapshotsOn && this.snapRng.chance(snapshotOpRate)) await this.snapshotOp();
        await this.execute(this.workload.next());
        this.checkAnomalies();
        const thinkMs = this.workload.thinkMs();
        if (thinkMs > 0) await this.world.scheduler.advance(thinkMs);
        this.checkAnomalies();
        if (this.model.ambiguity > extentStatesMax / 2) {
          await this.healAndVerify(`the model allows ${this.model.ambiguity} contents for an extent`);
        }
      }
      this.step = this.steps;
      await this.healAndVerify('end of run');
      await this.crash('final crash', true);
    } catch (err) {
      if (err instanceof Violation) return;
      // Anything else escaping is a bug in the code under test or the simulator: report it too.
      this.failure ??= {
        step: this.step,
        message: `uncaught ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`,
      };
      this.trace.add(`FAIL at step ${this.step} (seed ${this.seed}): ${this.failure.message}`);
      if (err instanceof Error && err.stack !== undefined) this.trace.add(err.stack);
    }
  }

  private checkAnomalies(): void {
    const [first] = this.world.anomalies;
    if (first !== undefined) this.fail(`anomaly below the cache: ${first}`);
  }

  // ---- running one operation ----

  private async settle<T>(what: string, start: () => Promise<T>): Promise<Outcome<T>> {
    this.ops += 1;
    const out = await this.world.scheduler.settle(start, operationDeadlineMs);
    if ('hung' in out) this.fail(`${what}: ${out.error.message}`);
    return out;
  }

  /** Fails the run unless the world justifies `err`; records it in the trace either way. */
  private justify(what: string, err: unknown, extents: readonly number[]): void {
    const why = judgeFailure(err, {
      k: this.world.k,
      m: this.world.m,
      durableShardsMin: this.world.config.durableShardsMin,
      events: this.world.failuresSince(this.healMark),
      injected: this.world.injected,
      extents,
      topologyDegraded: this.world.topologyDegraded,
    });
    if (why !== null) this.fail(`${what} failed without a cause in the world: ${why}`);
  }

  private describe(op: Op): string {
    const range = (o: number, l: number) => `[${o}, +${l})`;
    switch (op.kind) {
      case 'write': {
        const head = Buffer.from(op.data.subarray(0, 4)).toString('hex');
        return `write ${range(op.offset, op.data.length)} ${head}..${op.fua ? ' fua' : ''}`;
      }
      case 'read':
      case 'status':
        return `${op.kind} ${range(op.offset, op.length)}`;
      case 'trim':
        return `trim ${range(op.offset, op.length)}${op.fua ? ' fua' : ''}`;
      case 'zero':
        return `write-zeroes ${range(op.offset, op.length)}${op.noHole ? ' no-hole' : ''}${op.fua ? ' fua' : ''}`;
      default:
        return op.kind;
    }
  }

  private say(text: string, out: Outcome<unknown>): void {
    const how = out.ok ? 'ok' : `failed: ${errorText(out.error)}`;
    this.trace.add(`#${this.step} t=${this.world.clock.now()} ${text} -> ${how}`);
  }

  private async execute(op: Op): Promise<void> {
    const text = this.describe(op);
    switch (op.kind) {
      case 'write':
        return this.mutate(text, op.offset, op.data.length, op.data, op.fua, () =>
          this.fe.device.write(op.offset, op.data, { fua: op.fua }),
        );
      case 'trim':
        return this.mutate(text, op.offset, op.length, null, op.fua, () =>
          this.fe.device.trim(op.offset, op.length, { fua: op.fua }),
        );
      case 'zero':
        return this.mutate(text, op.offset, op.length, null, op.fua, () =>
          this.fe.device.writeZeroes(op.offset, op.length, { fua: op.fua, noHole: op.noHole }),
        );
      case 'read':
        return this.read(text, op.offset, op.length);
      case 'flush':
        await this.flush(text);
        return;
      case 'status':
        return this.status(text, op.offset, op.length);
      case 'crash':
        return this.crash('crash');
      case 'probe':
        return this.probe(false);
    }
  }

  private async mutate(
    text: string,
    offset: number,
    length: number,
    data: Uint8Array | null,
    fua: boolean,
    start: () => Promise<void>,
  ): Promise<void> {
    const extents = this.model.extentsOf(offset, length);
    const out = await this.settle(text, start);
    this.say(text, out);
    if (out.ok) {
      this.model.write(offset, length, data, true);
      if (fua) this.model.markPublished(extents);
      return;
    }
    // A back-pressure flush inside the write may have failed on any extent.
    this.justify(text, out.error, this.model.allExtents());
    // A failed write may or may not have changed what a read returns (NBD leaves it undefined).
    this.model.write(offset, length, data, false);
    if (isFenced(out.error)) await this.failover();
  }

  private async read(text: string, offset: number, length: number): Promise<void> {
    const out = await this.settle(text, () => this.fe.device.read(offset, length));
    this.say(text, out);
    if (out.ok) {
      if (out.value.length !== length) this.fail(`${text} returned ${out.value.length} bytes`);
      const wrong = this.model.checkRead(offset, out.value);
      if (wrong !== null) this.fail(wrong);
      return;
    }
    this.justify(text, out.error, this.model.extentsOf(offset, length));
  }

  private async flush(text: string, strict = false): Promise<boolean> {
    const out = await this.settle(text, () => this.fe.device.flush());
    this.say(text, out);
    if (out.ok) {
      this.model.markPublished();
      return true;
    }
    if (strict) this.fail(`${text} failed after every fault healed: ${errorText(out.error)}`);
    this.justify(text, out.error, this.model.allExtents());
    if (isFenced(out.error)) await this.failover();
    return false;
  }

  private async status(text: string, offset: number, length: number): Promise<void> {
    const out = await this.settle(text, () => this.fe.device.blockStatus(offset, length));
    this.say(text, out);
    if (!out.ok) return this.justify(text, out.error, this.model.extentsOf(offset, length));
    let at = offset;
    for (const run of out.value) {
      if (run.offset !== at) this.fail(`${text}: a run starts at ${run.offset}, expected ${at}`);
      if (run.hole) {
        const wrong = this.model.checkZeros(run.offset, run.length);
        if (wrong !== null) this.fail(wrong);
      }
      at += run.length;
    }
    if (at !== offset + length) this.fail(`${text}: runs end at ${at}, expected ${offset + length}`);
  }

  /** Reads every extent through the device; each must be a content the model allows. */
  private async readAll(why: string, strict: boolean, recovered: boolean): Promise<void> {
    const { extentBytes, sizeBytes } = this.world.config.volume;
    for (let e = 0; e < this.model.extents; e++) {
      const offset = e * extentBytes;
      const length = Math.min(extentBytes, sizeBytes - offset);
      const text = `${why}: read extent ${e}`;
      const out = await this.settle(text, () => this.fe.device.read(offset, length));
      if (!out.ok) {
        this.say(text, out);
        if (strict) this.fail(`${text} failed after every fault healed: ${errorText(out.error)}`);
        this.justify(text, out.error, [e]);
        continue;
      }
      const wrong = recovered ? this.model.checkRecovered(e, out.value) : this.model.checkRead(offset, out.value);
      if (wrong !== null) this.fail(`${why}: ${wrong}`);
    }
    this.trace.add(`#${this.step} t=${this.world.clock.now()} ${why}: read every extent`);
  }

  /** The frontend process dies; a new one attaches at a new epoch and reads what survived. */
  private async crash(why: string, strict = false): Promise<void> {
    this.trace.add(`#${this.step} t=${this.world.clock.now()} ${why}: process p${this.fe.process.id} dies`);
    this.fe.process.kill();
    this.model.crash();
    this.frontend = await this.world.attach();
    this.frontend.device = plantBug(this.frontend.cache, this.options.bug);
    await this.readAll(`recovery after ${why}`, strict, true);
  }

  /** The writer was fenced (its lease expired): it stops, and a new writer takes the volume. */
  private async failover(): Promise<void> {
    await this.crash('fenced writer replaced');
  }

  /**
   * A fresh reader of the published map must find only contents a crash may reveal. Each extent
   * gets its own reader, opened just before its read: a reader's map is a snapshot, and with a
   * short grace the writer may delete a superseded generation while a slower reader still reads
   * it; that read is retried once on a new snapshot, as a real reader would reopen.
   */
  private async probe(strict: boolean): Promise<void> {
    for (let e = 0; e < this.model.extents; e++) {
      const text = `probe: read published extent ${e}`;
      for (let attempt = 0; ; attempt++) {
        const mark = this.world.mark();
        const reader = await this.world.openReader();
        const out = await this.settle(text, () => reader.readExtent(e));
        reader.process.kill();
        if (out.ok) {
          const wrong = this.model.checkPublished(e, out.value);
          if (wrong !== null) this.fail(`probe: ${wrong}`);
          break;
        }
        this.say(text, out);
        const superseded = this.world
          .failuresSince(mark)
          .some((ev) => ev.reason === 'superseded' && parseShardKey(ev.key)?.extent === e);
        if (superseded && attempt === 0) continue;
        if (strict) this.fail(`${text} failed after every fault healed: ${errorText(out.error)}`);
        this.justify(text, out.error, [e]);
        break;
      }
    }
    this.trace.add(`#${this.step} t=${this.world.clock.now()} probe: every published extent is publishable`);
  }

  /** Ends every fault, then demands a clean flush, a full read, a matching map and no lost shard. */
  private async healAndVerify(why: string): Promise<void> {
    this.world.healAll();
    this.trace.add(`#${this.step} t=${this.world.clock.now()} heal (${why}): every fault ends`);
    // Work started before the heal (a load, a flush waiting on a slow store) may still fail for
    // faults that were real when it ran; let it finish before demanding success.
    await this.world.scheduler.advance(healSettleMs);
    this.checkAnomalies();
    // From here on only new failures can excuse anything (and the strict checks accept none).
    this.healMark = this.world.mark();
    this.world.forgetBefore(this.healMark);
    if (this.world.map.lockEpoch !== this.fe.process.epoch) await this.failover();
    await this.flush('flush after heal', true);
    await this.readAll('after heal', true, false);
    this.model.markPublished();
    await this.probe(true);
    const missing = this.world.missingPublishedShards();
    if (missing.length > 0) this.fail(`published shards are gone from their targets: ${missing.join('; ')}`);
  }

  // ---- snapshots ----

  /**
   * One snapshot operation: take one (flush and fold under the cache's gate, then save the
   * published map, as the frontend does), read one whole through a reader of its records, delete
   * one, or roll the volume back to one (the writer detaches cleanly first, then a new one
   * attaches). Each snapshot keeps its own model: the contents its extents may have.
   */
  private async snapshotOp(): Promise<void> {
    const r = this.snapRng;
    const names = [...this.snapshotModels.keys()];
    const kind =
      names.length === 0
        ? 'take'
        : r.weighted<string>([
            ['take', names.length < 4 ? 4 : 0],
            ['read', 4],
            ['delete', 2],
            ['rollback', 1],
          ]);
    const name = kind === 'take' ? `s${this.snapshotsTaken++}` : names[r.int(names.length)]!;
    const at = `#${this.step} t=${this.world.clock.now()}`;
    switch (kind) {
      case 'take': {
        const fe = this.fe;
        const skip = this.options.bug === 'snapshot-skips-fold';
        const text = `snapshot ${name}`;
        const out = await this.settle(text, () =>
          fe.cache.exclusive(async () => {
            if (!skip) {
              await fe.cache.flush();
              await fe.cache.foldAll();
            }
            if (!skip && (fe.cache.dirtyBytes > 0 || fe.cache.journaledBytes > 0))
              throw new CairnError('EUNAVAILABLE', 'snapshot: not everything could be folded', { retryable: true });
            // Saved inside the gate: no write lands between the fold and the cut.
            this.world.takeSnapshot(name, fe.engine.generationMark);
          }),
        );
        this.say(text, out);
        if (!out.ok) {
          this.justify(text, out.error, this.model.allExtents());
          if (isFenced(out.error)) await this.failover();
          return;
        }
        if (!skip) this.model.markPublished();
        this.snapshotModels.set(name, this.model.snapshot());
        return;
      }
      case 'read': {
        const model = this.snapshotModels.get(name)!;
        const reader = await this.world.openSnapshotReader(name);
        try {
          for (let e = 0; e < this.model.extents; e++) {
            const text = `read extent ${e} of snapshot ${name}`;
            const out = await this.settle(text, () => reader.readExtent(e));
            if (!out.ok) {
              this.say(text, out);
              this.justify(text, out.error, [e]);
              continue;
            }
            const wrong = model.checkRecovered(e, out.value);
            if (wrong !== null) this.fail(`snapshot ${name}: ${wrong}`);
          }
        } finally {
          reader.process.kill();
        }
        this.trace.add(`${at} snapshot ${name}: read every extent`);
        return;
      }
      case 'delete':
        this.world.deleteSnapshot(name);
        this.snapshotModels.delete(name);
        this.trace.add(`${at} snapshot ${name} deleted`);
        return;
      case 'rollback': {
        // A clean detach first: everything flushed and folded, else no rollback (it would be refused).
        const fe = this.fe;
        const text = `detach before rolling back to ${name}`;
        const out = await this.settle(text, async () => {
          await fe.cache.flush();
          await fe.cache.foldAll();
          if (fe.cache.dirtyBytes > 0 || fe.cache.journaledBytes > 0)
            throw new CairnError('EUNAVAILABLE', 'detach: not everything could be folded', { retryable: true });
        });
        this.say(text, out);
        if (!out.ok) {
          this.justify(text, out.error, this.model.allExtents());
          if (isFenced(out.error)) await this.failover();
          return;
        }
        // The layout must say everything is folded (the writer trims it a little after its
        // folds); cairnctl refuses a rollback while the journal holds unfolded records.
        await this.world.scheduler.advance(4 * journalTrimDelayMs);
        const layout = this.world.journal?.layout;
        if (fe.journal !== undefined && layout !== undefined && layout.foldedLsn < fe.journal.nextLsn - 1) {
          this.trace.add(
            `${at} rollback to ${name} refused: the journal layout says folded ${layout.foldedLsn}, records up to ${fe.journal.nextLsn - 1}`,
          );
          return;
        }
        this.trace.add(`${at} rollback to ${name}: process p${fe.process.id} detaches`);
        fe.process.kill();
        this.world.rollbackTo(name);
        this.model.restore(this.snapshotModels.get(name)!);
        this.frontend = await this.world.attach();
        this.frontend.device = plantBug(this.frontend.cache, this.options.bug);
        await this.readAll(`after rollback to ${name}`, false, true);
        return;
      }
    }
  }

  // ---- faults ----

  private async injectFault(): Promise<void> {
    const r = this.faultRng;
    const w = this.world;
    const kinds: [string, number][] = [
      ['target-crash', 22],
      ['zone-loss', 7],
      ['bit-flip', 16],
      ['slow', 12],
      ['flaky', 12],
      ['map-flaky', 8],
      ['lease-expiry', 5],
      ['wipe', 3],
      ['heal', 8],
    ];
    // Journal faults only where there is a journal: a seed without one draws as it always did.
    if (w.journal !== undefined)
      kinds.push(
        ['journal-crash-before-fsync', 14],
        ['journal-partition', 7],
        ['journal-flaky', 6],
        ['takeover-during-flush', 8],
        ['crash-mid-fold', 10],
        ['fold', 8],
      );
    const kind = r.weighted<string>(kinds);
    this.faults += 1;
    const at = `#${this.step} t=${w.clock.now()} fault:`;
    switch (kind) {
      case 'target-crash': {
        const name = r.pick(w.targetNames());
        const ms = r.range(100, 8000);
        w.crashTarget(name, ms);
        this.trace.add(`${at} target ${name} crashes for ${ms} ms`);
        return;
      }
      case 'zone-loss': {
        const zone = r.pick(w.config.zones);
        const ms = r.range(500, 8000);
        w.loseZone(zone, ms);
        this.trace.add(`${at} zone ${zone} lost for ${ms} ms`);
        return;
      }
      case 'bit-flip': {
        // Half the seeds also see the damage only the extent record can tell, or a shard gone
        // from a live node; drawn from their own stream, so the other seeds run as before.
        const how = this.integrity.chance(this.integrityFaultP)
          ? this.integrity.pick(['substitute', 'vanish'] as const)
          : 'flip';
        if (how === 'flip') {
          const what = w.corruptRandomShard(r);
          this.trace.add(`${at} bit flip ${what ?? 'skipped (no shard may be damaged further)'}`);
        } else if (how === 'substitute') {
          const what = await w.substituteRandomShard(r);
          this.trace.add(`${at} wrong shard: ${what ?? 'skipped (no shard may be damaged further)'}`);
        } else {
          const what = await w.vanishRandomShard(r);
          this.trace.add(`${at} shard gone: ${what ?? 'skipped (no shard may be damaged further)'}`);
        }
        return;
      }
      case 'slow': {
        const name = r.pick(w.targetNames());
        const slowMs = r.pick([5, 20, 100, 400]);
        const ms = r.range(1000, 20_000);
        w.slowTarget(name, slowMs, ms);
        this.trace.add(`${at} target ${name} slow (up to ${slowMs} ms a call) for ${ms} ms`);
        return;
      }
      case 'flaky': {
        const name = r.pick(w.targetNames());
        const p = r.pick([0.05, 0.2, 0.5]);
        const ms = r.range(1000, 20_000);
        w.flakyTarget(name, p, ms);
        this.trace.add(`${at} target ${name} fails ${p * 100}% of calls for ${ms} ms`);
        return;
      }
      case 'map-flaky': {
        const before = r.pick([0, 0.2, 0.5]);
        const after = r.pick([0, 0.2, 0.5]);
        const ms = r.range(1000, 20_000);
        w.flakyMap(before, after, ms);
        this.trace.add(
          `${at} commits time out ${before * 100}% before and ${after * 100}% after applying, for ${ms} ms`,
        );
        return;
      }
      case 'lease-expiry':
        w.expireLease();
        this.trace.add(`${at} the writer's lease expires`);
        return;
      case 'wipe': {
        const name = w.wipeRandomTarget(r);
        this.trace.add(`${at} disk replaced ${name ?? 'skipped (no target may lose its shards)'}`);
        return;
      }
      case 'journal-crash-before-fsync': {
        // Aimed at the segment being appended to, so that the next append meets it.
        const name = r.pick(this.fe.journal!.currentReplicas);
        const ms = r.range(100, 5000);
        const tornP = r.pick([0, 0.5, 1]);
        w.armJournalCrash(name, ms, tornP);
        this.trace.add(
          `${at} journal node ${name} will crash between receiving its next append and its fsync (torn ${tornP * 100}%), down for ${ms} ms`,
        );
        return;
      }
      case 'journal-partition': {
        const name = r.chance(0.7) ? r.pick(this.fe.journal!.currentReplicas) : r.pick(w.targetNames());
        const ms = r.range(200, 8000);
        w.partitionJournalNode(name, ms);
        this.trace.add(`${at} journal node ${name} unreachable for ${ms} ms`);
        return;
      }
      case 'journal-flaky': {
        const name = r.pick(this.fe.journal!.currentReplicas);
        const p = r.pick([0.1, 0.3, 0.6]);
        const ms = r.range(1000, 10_000);
        w.flakyJournalNode(name, p, ms);
        this.trace.add(`${at} journal node ${name} loses ${p * 100}% of requests or replies for ${ms} ms`);
        return;
      }
      case 'takeover-during-flush':
        return this.takeoverDuringFlush(at);
      case 'crash-mid-fold':
        return this.crashMidFold(at);
      case 'fold': {
        this.trace.add(`${at} the writer folds what it journaled`);
        const out = await this.settle('fold', () => this.fe.cache.fold());
        if (!out.ok) {
          this.say('fold', out);
          this.justify('fold', out.error, this.model.allExtents());
        }
        return;
      }
      default:
        this.faults -= 1;
        await this.healAndVerify('scheduled');
    }
  }

  /**
   * A new writer takes the volume over while the old one's FLUSH is in flight (its journal append
   * on the wire). The takeover fences the journal; the old flush then either fails (fenced) or,
   * if every replica had its record before being fenced, succeeds, and then what it covered must
   * survive (the checker is told, as the old writer's client was). A flush the old writer tries
   * once the takeover is done must fail, and its bytes must never be read.
   */
  private async takeoverDuringFlush(at: string): Promise<void> {
    const r = this.faultRng;
    const old = this.fe;
    const { sizeBytes, extentBytes } = this.world.config.volume;
    if (old.cache.dirtyBytes === 0) {
      // Something for the flush to journal: a small write inside one extent.
      const offset = r.int(sizeBytes);
      const length = Math.min(r.range(1, 600), sizeBytes - offset, extentBytes - (offset % extentBytes));
      const data = r.bytes(length);
      await this.mutate(`write [${offset}, +${length}) before the takeover`, offset, length, data, false, () =>
        old.device.write(offset, data),
      );
      if (this.frontend !== old) return; // that write was fenced: a failover already happened
    }
    let settled = false;
    const flushing = old.device.flush();
    flushing.then(
      () => (settled = true),
      () => (settled = true),
    );
    await this.world.scheduler.advance(r.int(2 * this.world.config.journalLatencyMs + 2));
    this.trace.add(
      `${at} takeover while p${old.process.id} flushes (its flush ${settled ? 'already answered' : 'in flight'})`,
    );
    this.frontend = await this.world.attach();
    this.frontend.device = plantBug(this.frontend.cache, this.options.bug);
    const out = await this.settle('flush by the replaced writer', () => flushing);
    this.say('flush by the replaced writer', out);
    if (out.ok) this.model.markPublished();
    else this.justify('flush by the replaced writer', out.error, this.model.allExtents());
    // Fenced now: nothing it flushes may count. A small write inside extent 0, and a flush.
    const zombie = new Uint8Array(Math.min(64, extentBytes - 1, sizeBytes)).fill(0xee);
    const later = await this.settle('write and flush by the replaced writer', async () => {
      await old.device.write(0, zombie);
      await old.device.flush();
    });
    this.say('write and flush by the replaced writer after the takeover', later);
    if (later.ok)
      this.fail('the replaced writer flushed after the takeover: it could still gather every acknowledgement');
    old.process.kill();
    this.model.crash();
    await this.readAll('recovery after takeover', false, true);
  }

  /**
   * The writer dies in the middle of a fold: its shards stored and the commit not sent, or the
   * commit applied and the journal not yet trimmed (nor the reply heard). A fold that finds
   * nothing to publish does not die; half the time the writer then dies anyway, before any trim.
   */
  private async crashMidFold(at: string): Promise<void> {
    const r = this.faultRng;
    const fe = this.fe;
    const stage = r.pick<CommitStage>(['before-commit', 'after-commit']);
    this.trace.add(
      `${at} the writer will die ${stage === 'before-commit' ? 'between storing shards and committing' : 'after committing, before trimming'} in its next fold`,
    );
    this.world.armCommitCrash(fe.process, stage);
    const out = await this.settle('fold', () => Promise.race([fe.cache.fold(), fe.process.died]));
    this.world.disarmCommitCrash();
    if (fe.process.alive) {
      if (!out.ok) {
        this.say('fold', out);
        this.justify('fold', out.error, this.model.allExtents());
      }
      if (r.chance(0.5)) await this.crash('crash after a fold, before its trim');
      return;
    }
    await this.crash(`crash mid-fold (${stage})`);
  }
}

function errorText(err: unknown): string {
  if (err instanceof CairnError) return `${err.name} ${err.code}: ${err.message}`;
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}

/** True when `err` says this writer was fenced (directly, or as the cause of a failed persist). */
function isFenced(err: unknown): boolean {
  if (err instanceof FencedError) return true;
  if (err instanceof PersistError) {
    if (err.cause instanceof FencedError) return true;
    for (const leaf of err.failed.values()) if (leaf instanceof FencedError) return true;
  }
  return false;
}

/** A failed run as text: what failed, where, the seed, and the last lines of the trace. */
export function formatFailure(result: SimulationResult): string {
  if (result.failure === undefined) return `seed ${result.seed}: ok`;
  const f = result.failure;
  return [
    `seed ${result.seed} FAILED at step ${f.step}: ${f.message}`,
    `config: ${result.config}`,
    '--- last lines of the trace ---',
    ...f.trace,
    `replay with: ${f.replay}`,
  ].join('\n');
}
