import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type BlockingConnection,
  type Broker,
  type ClaimResult,
  type ClaimedJob,
  EmpError,
  type JobErrorInfo,
  JobProgress,
  LeaseLostError,
  MOST_CLAIMS_PER_CALL,
  type ModelProvider,
  PayloadTooLargeError,
  type ReleaseModels,
  UnknownWorkerError,
  WorkerCapabilities,
  capabilityProfile,
  endSpan,
  fnv1a,
  parseWith,
  poolOfShard,
  type Span,
  TRACING_OFF,
  traceLogFormatter,
  type Tracing,
} from '@emp/core';
import { type Logger, pino } from 'pino';
import { AttemptAbort } from './attempt-abort';
import { type AbortCause, type Connector, JobAbortError, type JobContext, JobFailure, type JobProgressInput, ModelLoadError } from './connector';
import { ensureJobModels } from './job-models';
import { ModelReporter } from './model-report';
import { ProgressReporter } from './progress-reporter';

export interface WorkerOptions {
  broker: Broker;
  id: string;
  pool: string;
  /** the machine this worker runs on; 'local' by default */
  machineId?: string;
  capabilities: WorkerCapabilities;
  /** one per service in `capabilities.services` */
  connectors: Connector[];
  /** jobs run at once; default 1 */
  concurrency?: number;
  /** how often leases are renewed; default a third of the broker's leaseMs */
  heartbeatMs?: number;
  /**
   * Longest single BLMPOP on the signal list (default 30 s). A timeout only
   * starts the next wait: wake-ups are atomic with the idle index, so an idle
   * worker never claims on a timer.
   */
  signalWaitMs?: number;
  /**
   * Makes the models a job's requirements name ready on local disk before its
   * connector runs (the job stays `starting`, reporting `downloading_model`)
   * and keeps them pinned until the job ends; without it, models are the
   * connector's business.
   */
  models?: ModelProvider;
  /**
   * how many models of the jobs it completed last the worker reports as loaded in
   * its service's memory (an approximation of what is in VRAM; claims prefer jobs
   * whose models are loaded: docs/broker.md, "Model affinity"); default 4, 0: none
   */
  warmModels?: number;
  /** progress reports of one job: at most one per slot of this many ms on a grid shared by the process, so a worker's jobs report together (one call per tick); default 250 ms */
  progressIntervalMs?: number;
  /** e.g. 'production', 'staging': logged with every line, so fleets can share a log store */
  deploymentEnv?: string;
  /** e.g. 'eu-west': logged with every line */
  region?: string;
  logger?: Logger;
  /** where the jobs' spans go (queue.wait, job.run, its outgoing calls); default: none (main.ts starts it from the environment) */
  tracing?: Tracing;
  /**
   * Cross-pool fallback: when its own pool has nothing for it, the worker takes
   * jobs of these pools (in this order) that have waited at least `afterMs`
   * there and are expected to take at most `maxExpectedS` (see
   * Broker.claimFallback). It registers in each of them as a borrower. Its
   * pool's `fallback` rules in the broker config (docs/pools.md). Default: none.
   */
  borrow?: BorrowRule[];
}

export interface BorrowRule {
  pool: string;
  afterMs: number;
  maxExpectedS?: number;
  unknownExpectedS?: number;
}

export type FailOutcome = 'queued' | 'retrying' | 'failed';

/** Why an attempt ended without this worker recording an outcome: someone else already did. */
export type DropReason = Exclude<AbortCause, 'shutdown'>;

export interface WorkerEvents {
  'job:started': [job: ClaimedJob];
  'job:completed': [job: ClaimedJob, result: unknown];
  'job:failed': [job: ClaimedJob, error: JobErrorInfo, outcome: FailOutcome];
  /** canceled, expired, timed out by the broker or lease lost: the broker already ended the attempt */
  'job:dropped': [job: ClaimedJob, reason: DropReason];
}

/**
 * A job this worker runs, from its claim to its recorded outcome. A class, not
 * an object literal with getters: a literal's getter is a new closure per job,
 * which gives each job's object a hidden class of its own, held in old space
 * with the job's fields until a full GC (every job then survived the young
 * generation, and minor GCs took several us a job).
 */
class ActiveJob {
  /** the attempt's job.run span (non-recording with tracing off), ended with its outcome */
  readonly span: Span;
  readonly abort = new AttemptAbort();
  /** made on the job's first progress report (see progressOf): a job that reports none pays for none */
  progress: ProgressReporter | undefined = undefined;
  /** the outcome is being recorded (or the attempt dropped): later progress reports are ignored */
  progressClosed = false;
  started: Promise<void> | undefined = undefined;
  /** releases the models the job's requirements named (held while it runs; see WorkerOptions.models) */
  releaseModels: ReleaseModels | undefined = undefined;
  timeoutTimer: NodeJS.Timeout | undefined = undefined;
  /** the broker timed the attempt out itself (and already recorded the failure) */
  timedOutByBroker = false;
  /** made on first use: a job that logs nothing above the level does not pay for binding its fields */
  private jobLogger: Logger | undefined = undefined;

  constructor(
    readonly job: ClaimedJob,
    readonly connector: Connector | undefined,
    /** the worker's logger */
    readonly parent: Logger,
    span: Span,
  ) {
    this.span = span;
  }

  /** the job's logger (the worker's, with the job's fields bound) */
  get logger(): Logger {
    const { job, connector, span } = this;
    // trace_id and span_id join the job's log lines to its trace: the active span's (a connector's call), else job.run's
    const bindings = { job_id: job.id, service: job.service, service_type: job.service, connector_id: connector?.id ?? job.service };
    return (this.jobLogger ??= span.isRecording() ? this.parent.child(bindings, { formatters: { log: traceLogFormatter(span) } }) : this.parent.child(bindings));
  }
}

/**
 * What a connector sees of its attempt (a class for the reason ActiveJob is
 * one). `start` and `progress` are the worker's, bound to the job: a
 * connector may pass them on unbound.
 */
class AttemptContext implements JobContext {
  constructor(
    private readonly active: ActiveJob,
    readonly start: () => Promise<void>,
    readonly progress: (progress: JobProgressInput) => void,
  ) {}

  get signal(): AbortSignal {
    return this.active.abort.signal;
  }

  get logger(): Logger {
    return this.active.logger;
  }
}

type Outcome = { ok: true; result: unknown } | { ok: false; error: unknown };

/** models of its last completed jobs a worker reports as loaded (see WorkerOptions.warmModels) */
const DEFAULT_WARM_MODELS = 4;
const DEFAULT_SIGNAL_WAIT_MS = 30_000;
const DEFAULT_GRACE_MS = 10_000;
const CLAIM_ERROR_BACKOFF_MS = 1_000;
/** Jobs a sharded pool's worker takes in a row in one shard with its completions before it looks in the next (staysInShard). */
const SHARD_STREAK = 4;
/** a result or failure is recorded with up to this many tries (about 30 s in all) */
const RECORD_ATTEMPTS = 6;
const RECORD_BACKOFF_MS = 500;
const MAX_MESSAGE = 10_000;
const MAX_TYPE = 200;

/**
 * Pulls jobs this worker can run from the broker and drives a connector for
 * each. It claims for every free slot; after a job it records the outcome and
 * claims the next job in the same call. With nothing to do it blocks on its
 * signal list (one blocking connection per worker, whatever its concurrency),
 * which also brings cancel, expiry and timeout notices for running jobs within
 * milliseconds; the heartbeat renews leases and is a second channel for them.
 */
export class Worker extends EventEmitter<WorkerEvents> {
  readonly id: string;
  readonly pool: string;
  readonly machineId: string;
  readonly concurrency: number;

  private readonly broker: Broker;
  private capabilities: WorkerCapabilities;
  private readonly connectors = new Map<string, Connector>();
  private readonly heartbeatMs: number;
  private readonly signalWaitMs: number;
  private readonly progressIntervalMs: number;
  private readonly models: ModelProvider | undefined;
  private readonly modelReport: ModelReporter;
  private readonly logger: Logger;
  private readonly tracing: Tracing;

  private state: 'new' | 'running' | 'stopping' | 'stopped' = 'new';
  private readonly active = new Map<string, ActiveJob>();
  private claimsInFlight = 0;
  private filling = false;
  private refill: { wokenFor: string | undefined; shard?: string } | undefined;
  /** a wake-up that arrived while every slot was busy: the next free slot claims for it */
  private pendingWake: string | undefined;
  /**
   * The shards of its pool it serves (pool-shards.ts; just the pool when it has
   * one): registered in each, blocking on each one's signal list (shard 0 on
   * `blocking`, the others on `shardWaits`), claiming in each in turn.
   */
  private shards: string[];
  private readonly shardWaits = new Map<string, { connection: BlockingConnection; loop: Promise<void> }>();
  /** shards where its last claim found nothing: it is in their idle sets, which a full worker leaves */
  private readonly idleIn = new Set<string>();
  /**
   * Where a sharded pool's worker looks first when no wake-up says where: its
   * home shard (by its id's hash), then the shard after the one it last left;
   * and how many jobs in a row it has taken in one shard with its completions.
   */
  private nextShard: string | undefined;
  /** a reshard being followed: no claim is queued behind a signal wait meanwhile (it would hold a slot the new shards need) */
  private resharding: Promise<void> | undefined;
  private streak = { shard: '', jobs: 0 };
  private handingBack = false;
  private idleWaiters: Array<() => void> = [];
  /**
   * An idle worker queues a claim on its signal connection behind its blocking
   * wait (Broker.claimWhenWoken): a wake-up ends the wait and Redis runs the
   * claim at once, with no round trip between the wake-up and the claim.
   * `armed` is that claim while it is queued (it holds a slot); `wantArm`: the
   * last claim found nothing, so queue one behind the wait.
   */
  private armed: Promise<void> | undefined;
  private wantArm = false;
  /**
   * A BLMPOP with no timeout is pending on the signal connection: a claim sent
   * now runs when it ends (behind a wait that can time out, the claim would run
   * for nothing: an idle worker never claims on a timer).
   */
  private waitPending = false;
  /** a wake-up that arrived while armed, for when the armed claim did not see it (see onArmedClaim) */
  private wakeWhileArmed: string | undefined;

  private blocking: BlockingConnection | undefined;
  private waiter: Promise<void> | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private heartbeatInFlight: Promise<void> | undefined;
  private stopRenewingOnReconnect: (() => void) | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryDueAt = Infinity;
  private readonly borrowRules: BorrowRule[];
  private borrowTimer: NodeJS.Timeout | undefined;
  private borrowDueAt = Infinity;
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;

  constructor(options: WorkerOptions) {
    super();
    this.broker = options.broker;
    this.id = options.id;
    this.pool = options.pool;
    this.shards = [options.pool];
    this.machineId = options.machineId ?? 'local';
    this.capabilities = options.capabilities;
    this.concurrency = options.concurrency ?? 1;
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1) {
      throw new RangeError(`worker ${this.id}: concurrency must be a positive integer, got ${options.concurrency}`);
    }
    this.heartbeatMs = options.heartbeatMs ?? Math.max(50, Math.floor(this.broker.config.leaseMs / 3));
    this.signalWaitMs = options.signalWaitMs ?? DEFAULT_SIGNAL_WAIT_MS;
    this.progressIntervalMs = options.progressIntervalMs ?? 250;
    this.models = options.models;
    this.tracing = options.tracing ?? TRACING_OFF;
    this.borrowRules = options.borrow ?? [];
    if (this.borrowRules.some((rule) => rule.pool === this.pool)) throw new Error(`worker ${this.id}: it cannot borrow from its own pool ${this.pool}`);
    const warmModels = options.warmModels ?? DEFAULT_WARM_MODELS;
    if (!Number.isInteger(warmModels) || warmModels < 0) {
      throw new RangeError(`worker ${this.id}: warmModels must be a whole number, got ${options.warmModels}`);
    }

    const services = parseWith(WorkerCapabilities, options.capabilities, `capabilities of worker ${this.id}`).services;
    for (const connector of options.connectors) {
      if (this.connectors.has(connector.service)) {
        throw new Error(`worker ${this.id}: two connectors for service '${connector.service}'`);
      }
      this.connectors.set(connector.service, connector);
    }
    const missing = services.filter((service) => !this.connectors.has(service));
    if (missing.length > 0) {
      throw new Error(`worker ${this.id}: no connector for service(s) ${missing.join(', ')} listed in its capabilities`);
    }

    const base = options.logger ?? pino({ name: 'emp-worker', level: process.env.EMP_LOG_LEVEL ?? 'info' });
    this.logger = base.child({
      worker_id: this.id,
      machine_id: this.machineId,
      pool: this.pool,
      ...(options.deploymentEnv !== undefined && { deployment_env: options.deploymentEnv }),
      ...(options.region !== undefined && { region: options.region }),
    });
    this.modelReport = new ModelReporter({
      send: (models) => this.broker.reportModels(this.pool, this.id, models),
      ...(this.models && { provider: this.models }),
      warmModels,
      logger: this.logger,
    });
  }

  /** Jobs in flight. */
  get running(): number {
    return this.active.size;
  }

  /**
   * Replaces what the worker offers besides its services (its machine's
   * models on disk changed, say). A running worker registers again at once
   * with the new capabilities, keeping its jobs, and claims: a job that only
   * now matches is taken without waiting for the next wake-up. Resolves
   * false when nothing changed.
   */
  async updateCapabilities(changes: Partial<Omit<WorkerCapabilities, 'services'>>): Promise<boolean> {
    const next: WorkerCapabilities = { ...this.capabilities, ...changes };
    const profile = (capabilities: WorkerCapabilities) => capabilityProfile(parseWith(WorkerCapabilities, capabilities, `capabilities of worker ${this.id}`)).id;
    if (profile(next) === profile(this.capabilities)) return false;
    this.capabilities = next;
    if (this.state !== 'running') return true; // a worker not started yet registers with them; a stopping one takes no more jobs
    await this.starting?.catch(() => undefined); // a failed start is start()'s to report
    if (this.state !== 'running') return true;
    await this.register();
    this.logger.info({ capabilities: changes }, 'capabilities changed; registered again');
    void this.fillSlots();
    return true;
  }

  /**
   * Loads `model` into its service's GPU memory with no job (the planner's warm
   * load, a `load` machine command), through the first connector that can and
   * whose service has the model; once loaded, the worker reports it loaded
   * (model affinity then sends its next job here). Refused while a job runs:
   * the load is for an idle GPU and must not take memory from a running job.
   * Resolves with what happened; throws with why not.
   */
  async loadModel(model: string, signal: AbortSignal = new AbortController().signal): Promise<string> {
    if (this.state !== 'running') throw new Error(`worker ${this.id} is ${this.state === 'new' ? 'not started yet' : 'stopping'}: no load`);
    if (this.running > 0) throw new Error(`worker ${this.id} is busy (${this.running} job${this.running === 1 ? '' : 's'} running): a load is for an idle GPU, it would take memory from a running job`);
    const why: string[] = [];
    for (const connector of this.connectors.values()) {
      const name = connector.id ?? connector.service;
      if (!connector.loadModel) {
        why.push(`${name}: ${connector.cannotLoad ?? 'this connector cannot load a model without a job'}`);
        continue;
      }
      try {
        const done = await connector.loadModel(model, signal);
        this.modelReport.used([model]);
        this.logger.info({ model, connector: name }, 'model loaded without a job');
        return done;
      } catch (error) {
        if (!(error instanceof ModelLoadError)) throw error;
        why.push(error.message);
      }
    }
    throw new Error(`no connector of worker ${this.id} could load ${model}: ${why.join('; ')}`);
  }

  /**
   * Registers the worker and makes its first claims; resolves once it is
   * running. It then keeps claiming and running jobs in the background until
   * `stop()`.
   */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error(`worker ${this.id} was already started`);
    this.state = 'running';
    this.starting = this.register(true);
    try {
      // a new process: whatever an earlier process under this id held goes back to the queue now
      await this.starting;
    } catch (error) {
      if (this.state === 'running') this.state = 'new';
      throw error;
    }
    if (this.state !== 'running') return; // stopped while registering
    this.modelReport.start();
    this.blocking = this.broker.blockingConnection({ onError: (error) => this.logger.debug({ err: error }, 'signal connection error') });
    this.waitOnShards();
    this.scheduleHeartbeat();
    this.stopRenewingOnReconnect = this.broker.onReconnect(this.renewOnReconnect);
    // the first claims first: a worker they leave idle waits with a claim queued behind its wait
    await this.fillSlots();
    this.waiter = this.waitForSignals();
    this.logger.info({ concurrency: this.concurrency, services: [...this.connectors.keys()] }, 'worker started');
  }

  /**
   * Graceful stop: marks the worker draining (no more claims), lets running
   * jobs finish for up to `graceMs` (default 10 s), then aborts the rest and
   * hands them back at once (kind 'infrastructure', so the user's attempts are
   * untouched), marks the worker offline and closes its signal connection.
   * The broker (and its Redis connection) belongs to the caller and stays open.
   */
  async stop(options: { graceMs?: number } = {}): Promise<void> {
    if (this.state === 'new') {
      this.state = 'stopped';
      return;
    }
    this.stopping ??= this.shutdown(options.graceMs ?? DEFAULT_GRACE_MS);
    return this.stopping;
  }

  // ---------------------------------------------------------------- claiming

  private freeSlots(): number {
    return this.concurrency - this.active.size - this.claimsInFlight - (this.armed ? 1 : 0);
  }

  /**
   * Claims until every slot is busy or the broker has nothing for this worker.
   * `shard`: where the wake-up came from (a sharded pool's worker looks there
   * first); `skip`: shards just found empty.
   */
  private async fillSlots(wokenFor?: string, shard?: string, skip?: string): Promise<void> {
    if (this.filling) {
      // the first wake-up of the round is the one claimed for
      if (this.refill?.wokenFor === undefined) this.refill = { wokenFor, shard };
      return;
    }
    this.filling = true;
    try {
      let woken = wokenFor;
      let wokenShard = shard;
      const empty = new Set<string>(skip === undefined ? [] : [skip]);
      for (;;) {
        this.refill = undefined;
        if (this.shards.length > 1) await this.claimAcrossShards(woken, wokenShard, empty);
        while (this.shards.length === 1 && this.state === 'running' && this.freeSlots() > 0) {
          // several free slots (starting, or woken with room): one call claims for all of them
          const free = this.freeSlots();
          const result =
            free > 1
              ? await this.claimSeveral(Math.min(free, MOST_CLAIMS_PER_CALL), woken ?? '')
              : await this.claim(() => this.broker.claim(this.pool, this.id, woken ?? ''));
          // only the first claim of a round passes the wake-up on if it takes another class's job
          woken = undefined;
          if (!result?.job) break;
        }
        // a wake-up may have arrived while claiming (TypeScript cannot see the awaits change it)
        const refill = this.refill as { wokenFor: string | undefined; shard?: string } | undefined;
        if (!refill || this.state !== 'running') break;
        woken = refill.wokenFor;
        wokenShard = refill.shard;
        // a wake-up says its shard has a job now
        if (wokenShard !== undefined) empty.delete(wokenShard);
      }
    } finally {
      this.filling = false;
    }
    // its own pool has nothing for a free slot: the pools it may borrow from, now
    if (this.borrowRules.length > 0 && this.state === 'running' && this.freeSlots() > 0) this.borrowAt(Date.now());
  }

  /**
   * A sharded pool's claims: the shard that woke it first, then the others, until
   * every slot is busy or every shard was found empty (`empty`, kept across the
   * rounds of one fillSlots). A worker that filled its last slot leaves the idle
   * sets of the shards it found empty, so that their submits wake a free worker.
   */
  private async claimAcrossShards(woken: string | undefined, wokenShard: string | undefined, empty: Set<string>): Promise<void> {
    while (this.state === 'running' && this.freeSlots() > 0 && empty.size < this.shards.length) {
      const count = Math.min(this.freeSlots(), MOST_CLAIMS_PER_CALL);
      this.claimsInFlight += count;
      let found;
      try {
        found = await this.broker.claimInShards(this.pool, this.id, { first: wokenShard ?? this.firstShard(), wokenFor: woken, count, skip: empty });
      } catch (error) {
        await this.onClaimError(error);
        return;
      } finally {
        this.claimsInFlight -= count;
        this.checkIdle();
      }
      woken = undefined;
      wokenShard = undefined;
      for (const shard of found.idleIn) {
        empty.add(shard);
        this.idleIn.add(shard);
      }
      if (found.retryAt !== undefined) this.claimAgainAt(found.retryAt);
      if (!found.shard) break;
      this.idleIn.delete(found.shard);
      // the jobs fill its last slots: it leaves the idle sets it is in before they run, so that the claims their
      // ends make (recording it idle again) come after, not before (see borrow)
      const taking = found.results.filter((result) => result.job).length;
      if (this.state === 'running' && this.freeSlots() - taking <= 0 && this.idleIn.size > 0) await this.leaveIdleSets();
      for (const result of found.results) {
        if (result.job) this.launch(result.job);
        else {
          // claimMany's last claim found no more there: idle in that shard too
          empty.add(found.shard);
          this.idleIn.add(found.shard);
          if (result.retryAt !== undefined) this.claimAgainAt(result.retryAt);
        }
      }
    }
    if (this.state === 'running' && this.freeSlots() <= 0 && this.idleIn.size > 0) await this.leaveIdleSets();
  }

  /** The shard to look in first without a wake-up: its home shard at first, then the one after the shard it last left. */
  private firstShard(): string {
    const shard = this.nextShard !== undefined && this.shards.includes(this.nextShard) ? this.nextShard : this.shards[fnv1a(this.id) % this.shards.length]!;
    this.nextShard = undefined;
    return shard;
  }

  /**
   * Whether the completion of a job of `shard` may claim the worker's next job
   * there. A worker claims its next job in the shard of the one it completes
   * (the same call), so workers would stay on the shards they started on, and a
   * shard where no worker happens to be would wait for another to empty; after
   * SHARD_STREAK jobs in a row it moves on to the next shard instead (one more
   * call, every SHARD_STREAK jobs), so every shard is visited while all are busy.
   */
  private staysInShard(shard: string): boolean {
    if (this.shards.length <= 1) return true;
    if (this.streak.shard !== shard) this.streak = { shard, jobs: 0 };
    if (++this.streak.jobs <= SHARD_STREAK) return true;
    this.streak = { shard: '', jobs: 0 };
    const at = this.shards.indexOf(shard);
    this.nextShard = this.shards[(at + 1) % this.shards.length];
    return false;
  }

  /** A full worker leaves the idle sets it is in (a wake-up it got there meanwhile is passed on by the broker). */
  private async leaveIdleSets(): Promise<void> {
    const shards = [...this.idleIn];
    this.idleIn.clear();
    await this.broker.setWorkerState(this.pool, this.id, 'borrowing', { shards }).catch((error: unknown) => this.logger.warn({ err: error, shards }, 'could not leave the idle sets of its shards'));
  }

  // ---------------------------------------------------------------- cross-pool fallback

  /** Looks at the pools it may borrow from at `at` (the earliest of the times asked for wins). */
  private borrowAt(at: number): void {
    if (this.state !== 'running' || at >= this.borrowDueAt) return;
    if (this.borrowTimer) clearTimeout(this.borrowTimer);
    this.borrowDueAt = at;
    this.borrowTimer = setTimeout(() => {
      this.borrowTimer = undefined;
      this.borrowDueAt = Infinity;
      void this.borrow();
    }, Math.max(at - Date.now(), 0));
  }

  /**
   * One look at the other pools for each free slot. A job there qualifies only
   * after waiting its rule's `afterMs`, so with nothing to take the worker looks
   * again when the oldest job it could take qualifies (the broker says when), or
   * after the shortest `afterMs`: a job arriving meanwhile cannot qualify sooner. This is
   * the one timer an idle worker with a fallback policy keeps; its own pool
   * still wakes it as it wakes any worker.
   */
  private async borrow(): Promise<void> {
    let next = Date.now() + Math.min(...this.borrowRules.map((rule) => rule.afterMs));
    for (const rule of this.borrowRules) {
      const { pool } = rule;
      if (this.state !== 'running' || this.freeSlots() <= 0 || this.filling) return;
      this.claimsInFlight++;
      try {
        const result = await this.broker.claimFallback(pool, this.id, {
          homePool: this.pool,
          afterMs: rule.afterMs,
          maxExpectedS: rule.maxExpectedS,
          unknownExpectedS: rule.unknownExpectedS,
        });
        if (result.job) {
          this.logger.info({ job_id: result.job.id, from_pool: pool }, 'took a job of another pool (cross-pool fallback)');
          if (this.freeSlots() <= 0) {
            // its last free slot is taken (this claim holds it): its own pool should wake someone else meanwhile. Left
            // before the job runs, so that the claim in its own pool that the job's end makes (recording it idle
            // there again) always comes after; left after, a short job's end could come first and leave it out of
            // its pool's idle set with a slot free, deaf to the next submit (borrow.test failed so under load)
            await this.broker.setWorkerState(this.pool, this.id, 'borrowing').catch((error: unknown) => this.logger.warn({ err: error }, 'could not leave the idle set of its own pool'));
          }
          this.launch(result.job);
        } else if (result.retryAt !== undefined) {
          next = Math.min(next, result.retryAt);
        }
      } catch (error) {
        if (error instanceof UnknownWorkerError) await this.registerAsBorrower(pool).catch((e: unknown) => this.logger.warn({ err: e, pool }, 'registering as a borrower failed'));
        else this.logger.warn({ err: error, pool }, 'fallback claim failed');
      } finally {
        this.claimsInFlight--;
        this.checkIdle();
      }
    }
    if (this.state === 'running' && this.pendingWake !== undefined && this.freeSlots() > 0) {
      // its own pool woke it while this claim held its free slot (onWake kept the wake-up): claim for it now
      const wokenFor = this.pendingWake;
      this.pendingWake = undefined;
      void this.fillSlots(wokenFor);
      return;
    }
    if (this.state === 'running' && this.freeSlots() > 0) this.borrowAt(next);
  }

  private registerAsBorrower(pool: string, freshStart = false): Promise<unknown> {
    return this.broker.registerWorker(
      { id: this.id, pool, home_pool: this.pool, machine_id: this.machineId, capabilities: this.capabilities, concurrency: this.concurrency, hostname: hostname() },
      { freshStart },
    );
  }

  /** Runs one claim call with its slot reserved; launches the job it returns. */
  private async claim(call: () => Promise<ClaimResult | null>): Promise<ClaimResult | undefined> {
    this.claimsInFlight++;
    try {
      const result = await call();
      if (!result) return undefined;
      this.afterClaim(result);
      return result;
    } catch (error) {
      await this.onClaimError(error);
      return undefined;
    } finally {
      this.claimsInFlight--;
      this.armIfWaiting();
      this.checkIdle();
    }
  }

  /** Claims up to `count` jobs in one call with that many slots reserved; launches them. Returns the last result. */
  private async claimSeveral(count: number, wokenFor: string): Promise<ClaimResult | undefined> {
    this.claimsInFlight += count;
    try {
      const results = await this.broker.claimMany(this.pool, this.id, count, wokenFor);
      for (const result of results) this.afterClaim(result);
      return results.at(-1);
    } catch (error) {
      await this.onClaimError(error);
      return undefined;
    } finally {
      this.claimsInFlight -= count;
      this.armIfWaiting();
      this.checkIdle();
    }
  }

  private afterClaim(result: ClaimResult): void {
    this.wantArm = false;
    if (result.job) this.launch(result.job);
    else if (result.retryAt !== undefined) this.claimAgainAt(result.retryAt);
    // recorded idle: the claim a wake-up calls for can wait behind the signal wait
    else this.wantArm = true;
  }

  /** Queues a claim behind the pending signal wait, when one is wanted and a slot is free. */
  private armIfWaiting(): void {
    // a worker that borrows claims in its own pool only through fillSlots: a claim queued behind
    // its wait could take a job of its own pool while a borrowed job holds its last slot
    if (this.borrowRules.length > 0) return;
    // a sharded pool's worker claims across its shards: a claim queued behind one shard's wait could not
    if (this.shards.length > 1 || this.resharding) return;
    if (!this.wantArm || !this.waitPending || this.armed || this.state !== 'running' || this.freeSlots() <= 0) return;
    this.wantArm = false;
    this.armed = this.broker.claimWhenWoken(this.blocking!, this.pool, this.id).then(
      (result) => this.onArmedClaim(result),
      (error: unknown) => this.onArmedClaimError(error),
    );
  }

  private onArmedClaim(result: ClaimResult | null): void {
    this.armed = undefined;
    const wake = this.wakeWhileArmed;
    this.wakeWhileArmed = undefined;
    if (result === null) {
      // the wait ended without a wake-up the broker recorded for this worker (a notice, a
      // timeout, or a wake-up naming no class): claim for a wake-up as usual, else wait again
      if (wake !== undefined) this.onWake(wake);
      // its pool was resharded meanwhile: the slot this claim held claims across the shards now
      else if (this.shards.length > 1) void this.fillSlots();
      else this.wantArm = true;
    } else {
      this.afterClaim(result);
      // woken: the other free slots claim as a woken worker's would
      if (result.job && this.state === 'running' && this.freeSlots() > 0) void this.fillSlots();
    }
    this.armIfWaiting();
    this.checkIdle();
  }

  private onArmedClaimError(error: unknown): void {
    this.armed = undefined;
    this.wakeWhileArmed = undefined;
    // the signal connection failed (or stop() closed it): a running worker claims as usual
    if (this.state === 'running') void this.onClaimError(error);
    this.checkIdle();
  }

  private async onClaimError(error: unknown): Promise<void> {
    if (error instanceof UnknownWorkerError && this.state === 'running') {
      this.logger.warn('the broker no longer knows this worker; registering again');
      try {
        await this.register();
        this.modelReport.changed();
        this.claimAgainAt(Date.now());
        return;
      } catch (registerError) {
        error = registerError;
      }
    }
    this.logger.warn({ err: error }, 'claim failed; trying again shortly');
    this.claimAgainAt(Date.now() + CLAIM_ERROR_BACKOFF_MS);
  }

  /** Claims again at `at` (a job this worker skipped becomes its to take, or after an error). */
  private claimAgainAt(at: number): void {
    if (this.state !== 'running' || at >= this.retryDueAt) return;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryDueAt = at;
    const delay = Math.max(at - Date.now(), 0);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.retryDueAt = Infinity;
      void this.fillSlots();
    }, delay);
  }

  private onWake(requirementClass: string, shard = this.pool): void {
    if (this.state !== 'running') return;
    // the wake-up took it out of that shard's idle set
    this.idleIn.delete(shard);
    if (this.filling || this.freeSlots() > 0) {
      void this.fillSlots(requirementClass, shard);
    } else if (this.shards.length > 1) {
      // raced with a claim that filled the last slot: the broker passes the wake-up on to a free worker
      void this.broker
        .setWorkerState(this.pool, this.id, 'borrowing', { shards: [shard] })
        .catch((error: unknown) => this.logger.warn({ err: error, shard }, 'could not pass a wake-up on'));
    } else {
      // raced with a claim that filled the last slot; whoever frees one claims for this class
      this.pendingWake = requirementClass;
    }
  }

  // ---------------------------------------------------------------- signals

  /**
   * A blocking waiter for each served shard but the pool's own (shard 0, which
   * `waitForSignals` waits on): a blocking read cannot span cluster slots. Each
   * has its own connection; a shard no longer served has its wait closed.
   */
  private waitOnShards(): void {
    if (this.state !== 'running' || !this.blocking) return;
    for (const shard of this.shards) {
      if (shard === this.pool || this.shardWaits.has(shard)) continue;
      const connection = this.broker.blockingConnection({ onError: (error) => this.logger.debug({ err: error, shard }, 'signal connection error') });
      // in the map before its loop starts: the loop runs while its connection is the shard's
      const wait = { connection, loop: Promise.resolve() };
      this.shardWaits.set(shard, wait);
      wait.loop = this.waitInShard(shard, connection);
    }
    for (const [shard, wait] of this.shardWaits) {
      if (this.shards.includes(shard)) continue;
      this.shardWaits.delete(shard);
      wait.connection.close();
    }
  }

  /** One shard's waiter: wake-ups claim (that shard first), notices abort the job they name. */
  private async waitInShard(shard: string, connection: BlockingConnection): Promise<void> {
    while (this.state !== 'stopped' && this.shardWaits.get(shard)?.connection === connection) {
      let signals;
      try {
        signals = await this.broker.waitForSignals(connection, shard, this.id, this.signalWaitMs);
      } catch (error) {
        if (this.isStopped() || this.shardWaits.get(shard)?.connection !== connection) return;
        this.logger.warn({ err: error, shard }, 'waiting for signals failed; retrying');
        await sleep(CLAIM_ERROR_BACKOFF_MS);
        continue;
      }
      let wake: string | undefined;
      for (const signal of signals) {
        if (signal.type === 'wake') wake ??= signal.requirementClass;
        else if (signal.type === 'shards') this.followReshard();
        else this.abortJob(signal.jobId, signal.type === 'cancel' ? 'canceled' : signal.type, undefined, signal.type === 'timeout');
      }
      if (wake !== undefined) this.onWake(wake, shard);
    }
  }

  /** The worker's one blocking waiter: wake-ups for free slots, notices for busy ones. */
  private async waitForSignals(): Promise<void> {
    const blocking = this.blocking!;
    while (this.state !== 'stopped') {
      let signals;
      try {
        // a wait that has (or is to have) a claim behind it lasts until something arrives
        const armed = this.armed !== undefined || (this.wantArm && !this.resharding);
        const waiting = this.broker.waitForSignals(blocking, this.pool, this.id, armed ? 0 : this.signalWaitMs);
        this.waitPending = armed;
        this.armIfWaiting();
        signals = await waiting;
      } catch (error) {
        if (this.isStopped()) return;
        this.logger.warn({ err: error }, 'waiting for signals failed; retrying');
        await sleep(CLAIM_ERROR_BACKOFF_MS);
        continue;
      } finally {
        this.waitPending = false;
      }
      if (signals.length === 0) continue;
      let wake: string | undefined;
      for (const signal of signals) {
        if (signal.type === 'wake') wake ??= signal.requirementClass;
        else if (signal.type === 'shards') this.followReshard();
        else this.abortJob(signal.jobId, signal.type === 'cancel' ? 'canceled' : signal.type, undefined, signal.type === 'timeout');
      }
      // the claim queued behind this wait runs now and claims for the wake-up itself
      if (wake !== undefined && this.armed) this.wakeWhileArmed ??= wake;
      else if (wake !== undefined) this.onWake(wake);
    }
  }

  private abortJob(jobId: string, cause: AbortCause, token?: string, byBroker = false): void {
    const active = this.active.get(jobId);
    if (!active || (token !== undefined && active.job.lease.token !== token)) return;
    if (active.abort.aborted) return;
    if (byBroker) active.timedOutByBroker = true;
    debugLog(active, 'aborting job', { cause });
    active.abort.abort(new JobAbortError(cause));
  }

  // ---------------------------------------------------------------- heartbeat

  private scheduleHeartbeat(delayMs = this.heartbeatMs): void {
    if (this.state === 'stopped') return;
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = setTimeout(() => {
      this.heartbeatTimer = undefined;
      this.heartbeatInFlight = this.heartbeat().finally(() => {
        this.heartbeatInFlight = undefined;
        if (this.state === 'running' || this.state === 'stopping') this.scheduleHeartbeat();
      });
    }, delayMs);
  }

  /**
   * The broker's connection to Redis is back (ioredis 'ready' after a reconnect): leases ran
   * on while it was down, and the broker gives them only a renewal interval of grace
   * after an outage, so renew now rather than at the next timer. A heartbeat still
   * in flight goes out on the new connection by itself.
   */
  private readonly renewOnReconnect = (): void => {
    if (this.heartbeatTimer === undefined) return; // in flight, or stopped
    this.logger.info({ running: this.active.size }, 'connection to Redis is back; renewing leases now');
    this.scheduleHeartbeat(0);
  };

  private async heartbeat(): Promise<void> {
    for (const pool of this.pools) await this.heartbeatIn(pool);
    if (this.state === 'running') await this.syncShards();
  }

  /** Told that its pool's shards changed: follows at once (one at a time). */
  private followReshard(): void {
    this.resharding ??= this.syncShards().finally(() => {
      this.resharding = undefined;
    });
  }

  /**
   * Follows a reshard of its pool (told by a 'shards' signal, and read at each heartbeat): registers in the
   * shards it does not serve yet and waits on their signals; stops waiting on
   * shards no longer served (emptied after a reshard to fewer).
   */
  private async syncShards(): Promise<void> {
    let served: string[];
    try {
      served = await this.broker.servedShards(this.pool, { fresh: true });
    } catch (error) {
      this.logger.warn({ err: error }, 'reading the shards of its pool failed');
      return;
    }
    if (served.join() === this.shards.join()) return;
    if (served.some((shard) => !this.shards.includes(shard))) {
      try {
        await this.register();
      } catch (error) {
        this.logger.warn({ err: error }, 'registering in the new shards of its pool failed');
        return;
      }
      this.logger.info({ shards: this.shards }, 'its pool was resharded: now serving these shards');
      // even with no slot free this moment: a claim in flight in the old shards leaves the refill to look in the new ones
      if (this.state === 'running') void this.fillSlots();
    } else {
      this.shards = served;
      this.waitOnShards();
    }
  }

  private async heartbeatIn(pool: string): Promise<void> {
    const leases = [...this.active.values()].filter(({ job }) => poolOfShard(job.lease.pool) === pool).map(({ job }) => ({ jobId: job.id, token: job.lease.token }));
    try {
      const drops = await this.broker.heartbeat(pool, this.id, leases);
      for (const { jobId, verdict } of drops) {
        const sent = leases.find((lease) => lease.jobId === jobId);
        this.abortJob(jobId, verdict, sent?.token);
      }
    } catch (error) {
      if (!(error instanceof UnknownWorkerError)) {
        this.logger.warn({ err: error }, 'heartbeat failed');
        return;
      }
      // removed from the registry (e.g. silent for longer than its retention): announce it again
      this.logger.warn('the broker no longer knows this worker; registering again');
      try {
        await this.register();
        if (this.state === 'stopping') await this.broker.setWorkerState(this.pool, this.id, 'draining');
        if (this.state === 'running') void this.fillSlots();
      } catch (registerError) {
        this.logger.warn({ err: registerError }, 'registering again failed');
      }
    }
  }

  private async register(freshStart = false): Promise<void> {
    const registered = await this.broker.registerWorker(
      {
        id: this.id,
        pool: this.pool,
        machine_id: this.machineId,
        capabilities: this.capabilities,
        concurrency: this.concurrency,
        hostname: hostname(),
      },
      { freshStart },
    );
    this.shards = registered.shards;
    this.waitOnShards();
    for (const rule of this.borrowRules) await this.registerAsBorrower(rule.pool, freshStart);
  }

  /** Its own pool and the pools it borrows from: where it heartbeats and says when it stops. */
  private get pools(): string[] {
    return [this.pool, ...this.borrowRules.map((rule) => rule.pool)];
  }

  // ---------------------------------------------------------------- running a job

  private launch(job: ClaimedJob): void {
    const active = new ActiveJob(job, this.connectors.get(job.service), this.logger, this.traceAttempt(job));
    this.active.set(job.id, active);
    debugLog(active, 'job received', { attempt: job.attempt, token: job.lease.token });
    if (this.handingBack) active.abort.abort(new JobAbortError('shutdown'));
    // it rejects only on a bug (its outcome's errors are its own to handle): then the process fails loudly
    void this.runJob(active);
  }

  /**
   * The attempt's spans, in the trace the submit began (the job's traceparent):
   * queue.wait from submit to now (the claim), and job.run, returned, which the
   * attempt's work runs under. A job submitted untraced starts a trace here.
   */
  private traceAttempt(job: ClaimedJob): Span {
    if (!this.tracing.enabled) return this.tracing.startSpan('job.run');
    const attributes = {
      'emp.job.id': job.id, 'emp.service': job.service, 'emp.pool': this.pool, 'emp.worker.id': this.id,
      'emp.machine.id': this.machineId, 'emp.attempt': job.attempt,
    };
    // '' (no traceparent): a root span, not a child of whatever is active (a claim-next runs inside the last job's span)
    const parent = job.traceparent ?? '';
    if (job.traceparent) this.tracing.startSpan('queue.wait', { parent, startTime: job.submittedAt, attributes }).end();
    const models = job.requirements.models;
    return this.tracing.startSpan('job.run', { parent, attributes: models?.length ? { ...attributes, 'emp.models': models.join(',') } : attributes });
  }

  private async runJob(active: ActiveJob): Promise<void> {
    const { job } = active;
    let outcome: Outcome;
    try {
      outcome = await (this.tracing.enabled ? this.tracing.withSpan(active.span, () => this.runConnector(active)) : this.runConnector(active));
    } catch (error) {
      outcome = { ok: false, error };
    }
    if (active.timeoutTimer) clearTimeout(active.timeoutTimer);
    if (active.releaseModels) await active.releaseModels().catch((error: unknown) => active.logger.warn({ err: error }, "releasing the job's models failed"));

    let next: ClaimResult | null = null;
    try {
      next = await this.settle(active, outcome);
    } catch (error) {
      // outcome unknown (Redis unreachable through every retry): the broker still counts the
      // job as this worker's, so it is re-run only once this worker's lease runs out
      active.logger.error({ err: error }, 'could not record the outcome of the job');
      endSpan(active.span, 'unrecorded', error);
    } finally {
      if (active.timeoutTimer) clearTimeout(active.timeoutTimer);
      closeProgress(active);
      this.active.delete(job.id);
    }
    if (next) this.afterClaim(next);
    // the claim that came with the outcome looked in the job's shard only: a sharded pool's other shards next
    const nothingInShard = next !== null && !next.job && this.shards.length > 1;
    if (nothingInShard) this.idleIn.add(job.lease.pool);
    // no claim was made for the freed slot, or a wake-up came in while every slot was busy
    if (this.state === 'running' && (!next || nothingInShard || this.pendingWake !== undefined) && this.freeSlots() > 0) {
      const wokenFor = this.pendingWake;
      this.pendingWake = undefined;
      void this.fillSlots(wokenFor, undefined, nothingInShard ? job.lease.pool : undefined);
    }
    this.armIfWaiting();
    this.checkIdle();
  }

  /** The attempt's work: its models, then the connector; the models' release is kept on `active` as soon as they are held. */
  private async runConnector(active: ActiveJob): Promise<Outcome> {
    const { job, abort } = active;
    try {
      const connector = active.connector;
      if (!connector) {
        throw new JobFailure('non_retryable', `worker ${this.id} has no connector for service '${job.service}'`);
      }
      abort.throwIfAborted();
      const ctx = this.contextOf(active);
      // only a job that names models pays for an AbortSignal here
      if (this.models && job.requirements.models?.length) {
        const models = job.requirements.models;
        this.modelReport.ensureStarted(models);
        let ensured = false;
        try {
          active.releaseModels = await this.tracing.inSpan('job.models', { attributes: { 'emp.models': models.join(',') } }, () => ensureJobModels(this.models!, models, ctx.progress, abort.signal));
          ensured = true;
        } finally {
          this.modelReport.ensureEnded(models, ensured);
        }
        // the download's last report goes out before the job is running, not after
        await active.progress?.sendNow();
      }
      if (!connector.startsItself) await this.startJob(active);
      // Promise.resolve: a connector written in plain JavaScript may return a value rather than a promise
      return { ok: true, result: await abort.race(Promise.resolve(connector.run(job, ctx))) };
    } catch (error) {
      return { ok: false, error };
    }
  }

  private contextOf(active: ActiveJob): JobContext {
    return new AttemptContext(
      active,
      () => this.startJob(active),
      (progress) => {
        parseWith(JobProgress, progress, 'progress');
        this.progressOf(active)?.report(progress);
      },
    );
  }

  /** The job's progress reporter, made on its first report; none once its outcome is being recorded. */
  private progressOf(active: ActiveJob): ProgressReporter | undefined {
    if (active.progressClosed) return undefined;
    const { job } = active;
    return (active.progress ??= new ProgressReporter(
      (progress) => this.broker.progress(job.lease, progress),
      (error) => {
        if (error instanceof LeaseLostError) this.abortJob(job.id, 'lost', job.lease.token);
        else active.logger.warn({ err: error }, 'progress report failed');
      },
      this.progressIntervalMs,
    ));
  }

  /** Moves the job to running (once) and arms its execution timeout. */
  private startJob(active: ActiveJob): Promise<void> {
    active.started ??= this.broker.start(active.job.lease).then(
      () => {
        const { job } = active;
        debugLog(active, 'job started');
        this.notify('job:started', job);
        if (job.executionTimeoutMs !== undefined && !active.abort.aborted) {
          active.timeoutTimer = setTimeout(() => this.abortJob(job.id, 'timeout', job.lease.token), job.executionTimeoutMs);
        }
      },
      (error: unknown) => {
        if (error instanceof LeaseLostError) this.abortJob(active.job.id, 'lost', active.job.lease.token);
        throw error;
      },
    );
    return active.started;
  }

  /**
   * Records the attempt's outcome, claiming the next job in the same call while
   * the worker is running; returns that claim's result (null: none was made).
   */
  private async settle(active: ActiveJob, outcome: Outcome): Promise<ClaimResult | null> {
    const { job, abort } = active;
    const cause = abort.aborted ? abortCause(abort.reason) : undefined;
    // canceled, expired, lost, or timed out by the broker: the attempt's outcome is already recorded
    const dropped = dropReason(cause, active.timedOutByBroker) ?? (isLeaseLost(outcome) ? 'lost' : undefined);
    if (dropped) return this.drop(active, dropped);

    // a borrowed job's pool is not this worker's to claim in: the freed slot claims in its own
    const claimNext = this.state === 'running' && this.pendingWake === undefined && poolOfShard(job.lease.pool) === this.pool && this.staysInShard(job.lease.pool);
    if (outcome.ok && !isSerialisable(outcome.result)) {
      outcome = { ok: false, error: new JobFailure('non_retryable', 'the result is not JSON-serialisable', { type: 'BadResult' }) };
    }
    if (outcome.ok) {
      const { result } = outcome;
      // most jobs report no progress: nothing to wait for
      const flushing = flushProgress(active);
      if (flushing) await flushing;
      try {
        // its service has the job's models in memory now (what the next report calls loaded)
        if (job.requirements.models) this.modelReport.used(job.requirements.models);
        const next = await this.record(active, 'result', () => this.broker.complete(job.lease, result, { claimNext }));
        debugLog(active, 'job completed');
        endSpan(active.span, 'succeeded');
        this.notify('job:completed', job, outcome.result);
        return next;
      } catch (error) {
        if (error instanceof LeaseLostError) return this.drop(active, dropReason(abortCause(abort.reason), false) ?? 'lost');
        if (!(error instanceof PayloadTooLargeError)) throw error;
        outcome = { ok: false, error: new JobFailure('non_retryable', error.message, { type: error.name }) };
      }
    }

    const info = classify(outcome.error, cause, job);
    if (cause === 'shutdown') closeProgress(active);
    else await flushProgress(active);
    try {
      const { outcome: result, next } = await this.record(active, 'failure', () => this.broker.fail(job.lease, info, { claimNext }));
      debugLog(active, 'job failed', { kind: info.kind, outcome: result, err: outcome.error });
      endSpan(active.span, result, info.message);
      this.notify('job:failed', job, info, result);
      return next;
    } catch (error) {
      if (error instanceof LeaseLostError) return this.drop(active, dropReason(abortCause(abort.reason), false) ?? 'lost');
      throw error;
    }
  }

  /**
   * Runs a call that records the attempt's outcome, again after transient
   * (connection) errors: fencing makes a repeat harmless (it is refused with
   * LeaseLostError when the first one went through).
   */
  private async record<T>(active: ActiveJob, what: string, call: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await call();
      } catch (error) {
        if (error instanceof EmpError || attempt >= RECORD_ATTEMPTS) throw error;
        active.logger.warn({ err: error, attempt }, `recording the job's ${what} failed; trying again`);
        await sleep(Math.min(RECORD_BACKOFF_MS * 2 ** (attempt - 1), 8_000));
      }
    }
  }

  private drop(active: ActiveJob, reason: DropReason): null {
    closeProgress(active);
    active.logger.info({ reason }, 'job dropped: its attempt was ended by the broker');
    endSpan(active.span, reason);
    this.notify('job:dropped', active.job, reason);
    return null;
  }

  private notify<K extends keyof WorkerEvents>(event: K, ...args: WorkerEvents[K]): void {
    try {
      (this.emit as (event: K, ...args: WorkerEvents[K]) => boolean)(event, ...args);
    } catch (error) {
      this.logger.error({ err: error, event }, 'a worker event listener threw');
    }
  }

  // ---------------------------------------------------------------- stopping

  private isStopped(): boolean {
    return this.state === 'stopped';
  }

  private isIdle(): boolean {
    return this.active.size === 0 && this.claimsInFlight === 0;
  }

  private checkIdle(): void {
    if (!this.isIdle()) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }

  private whenIdle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async shutdown(graceMs: number): Promise<void> {
    this.state = 'stopping';
    await this.starting?.catch(() => undefined);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.borrowTimer) clearTimeout(this.borrowTimer);
    this.logger.info({ running: this.active.size, grace_ms: graceMs }, 'worker draining');
    for (const pool of this.pools) {
      try {
        await this.broker.setWorkerState(pool, this.id, 'draining');
      } catch (error) {
        this.logger.warn({ err: error, pool }, 'could not mark the worker draining');
      }
    }

    let graceTimer: NodeJS.Timeout | undefined;
    // draining ended the signal wait, so a claim queued behind it has run (and taken nothing, or a job to finish)
    const settled = Promise.all([this.whenIdle(), this.armed]);
    await Promise.race([settled, new Promise((resolve) => (graceTimer = setTimeout(resolve, graceMs)))]);
    clearTimeout(graceTimer);

    this.handingBack = true;
    if (this.active.size > 0) this.logger.info({ running: this.active.size }, 'handing back unfinished jobs');
    for (const { job } of this.active.values()) this.abortJob(job.id, 'shutdown', job.lease.token);
    // a job leaves `active` in the last await of its run: idle, every run has returned
    await this.whenIdle();

    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
    this.stopRenewingOnReconnect?.();
    this.state = 'stopped';
    await this.heartbeatInFlight;
    await this.modelReport.stop();
    for (const pool of this.pools) {
      try {
        await this.broker.setWorkerState(pool, this.id, 'offline');
      } catch (error) {
        this.logger.warn({ err: error, pool }, 'could not mark the worker offline');
      }
    }
    this.blocking?.close();
    const shardWaits = [...this.shardWaits.values()];
    this.shardWaits.clear();
    for (const wait of shardWaits) wait.connection.close();
    await Promise.all([this.waiter, ...shardWaits.map((wait) => wait.loop)]);
    this.logger.info('worker stopped');
  }
}

/** Debug lines are the busiest: only a logger that writes them binds the job's fields. */
function debugLog(active: ActiveJob, message: string, fields: object = {}): void {
  if (active.parent.isLevelEnabled('debug')) active.logger.debug(fields, message);
}

function abortCause(reason: unknown): AbortCause | undefined {
  return reason instanceof JobAbortError ? reason.reason : undefined;
}

function dropReason(cause: AbortCause | undefined, timedOutByBroker: boolean): DropReason | undefined {
  if (cause === 'canceled' || cause === 'expired' || cause === 'lost') return cause;
  if (cause === 'timeout' && timedOutByBroker) return 'timeout';
  return undefined;
}

function isLeaseLost(outcome: Outcome): boolean {
  return !outcome.ok && outcome.error instanceof LeaseLostError;
}

/** Turns whatever ended an attempt into the failure the broker records. */
function classify(error: unknown, cause: AbortCause | undefined, job: ClaimedJob): JobErrorInfo {
  if (cause === 'shutdown') return { kind: 'infrastructure', message: 'worker shutting down', type: 'WorkerShutdown' };
  if (cause === 'timeout') {
    return {
      kind: 'timeout',
      message: `execution timeout of ${job.executionTimeoutMs} ms exceeded`,
      type: 'ExecutionTimeout',
    };
  }
  if (error instanceof JobFailure) {
    const info: JobErrorInfo = { kind: error.kind, message: truncate(error.message, MAX_MESSAGE) };
    if (error.type) info.type = truncate(error.type, MAX_TYPE);
    if (error.details !== undefined && isSerialisable(error.details)) info.details = error.details;
    return info;
  }
  if (error instanceof Error) {
    return { kind: 'retryable', message: truncate(error.message || error.name, MAX_MESSAGE), type: truncate(error.name, MAX_TYPE) };
  }
  return { kind: 'retryable', message: truncate(String(error), MAX_MESSAGE) };
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** Sends the job's last progress report, if one is waiting; later reports are ignored. */
function flushProgress(active: ActiveJob): Promise<void> | undefined {
  active.progressClosed = true;
  return active.progress?.flush();
}

/** Drops the job's waiting progress report, if any; later reports are ignored. */
function closeProgress(active: ActiveJob): void {
  active.progressClosed = true;
  active.progress?.close();
}

function isSerialisable(value: unknown): boolean {
  try {
    JSON.stringify(value);
    return true;
  } catch {
    return false;
  }
}
