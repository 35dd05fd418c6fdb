import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Broker, type BrokerConfig, type ClaimResult, type ClaimedJob, type Lease, DEFAULT_SERVICES, brokerConfig, fallbackRules, poolOfJobId } from '@emp/core';
import { startRedis } from '@emp/core/redis-server';
import { type DemandBucket, type FleetMachine, type PastDecision, planRound } from '@emp/planning';
import { Redis } from 'ioredis';
import type { MachineType, SimulationConfig } from './config';
import { EventQueue } from './event-queue';
import { type Policy } from './policies';
import { Random, drawLogNormal } from './random';
import { type JobClass, MODEL_LOAD, type Model, type SimJob, dailyShape, modelCatalogue } from './workload';

/**
 * Virtual time starts at midnight of a day far from any real one, so a
 * timestamp written under the virtual clock can never pass for a real one.
 */
export const VIRTUAL_EPOCH_MS = Date.UTC(2100, 0, 1);
const POOL = 'sim';
/** executions of each class the history worker runs before the day (routing needs routingMinSamples, 20 by default) */
const HISTORY_JOBS = 24;
/** the published model load p50 (docs/simulator.md), for sizing pools by the work they get */
const MODEL_LOAD_P50_S = 23;
/**
 * How often the simulated planner plans: once per demand bucket (5 min), when the
 * forecast has a new bucket to go on (the service's default round is 30 s: its
 * rounds in between see the same buckets, bar commands already in flight).
 */
const PLAN_EVERY_MS = 300_000;
const GB = 1024 ** 3;
/**
 * The simulated scheduler ticks on a grid of this step (the production
 * scheduler's longest sleep), but calls the broker only at the grid instants
 * where something can be due, and only in the pools where it can: each tick's
 * reply says when the next item of its pool's shard falls due (a lease running
 * out, a worker falling silent, a timer), and the pool is ticked at the first
 * grid instant at or after it. A tick in between would find nothing. The
 * grid's events stay in the agenda (they cost no call), so everything happens
 * in the same order as with every tick.
 */
const TICK_MS = 1_000;
/**
 * The longest a tick waits when nothing is due: anything that can fall due
 * later is created after the tick, and falls due at least this long after its
 * creation (a new lease runs leaseMs, a new worker falls silent after
 * offlineAfterMs), so a tick this soon sees it first. A failure (which may set
 * a retry timer) brings the next tick forward to the next grid instant.
 */
function maxTickGapMs(config: BrokerConfig): number {
  return Math.min(config.leaseMs, config.offlineAfterMs);
}

export interface JobRecord {
  job: SimJob;
  id: string;
  /** the pool the broker put it in (its id starts with it) */
  pool: string;
  startedAtMs?: number;
  completedAtMs?: number;
  downloadMs: number;
  /** model loads into GPU memory its attempts waited for */
  loadMs: number;
  attempts: number;
}

export interface MachineRecord {
  id: string;
  /** the pool its worker serves */
  pool: string;
  type: MachineType;
  /** when the autoscaler asked for it (machine-hours count from here) */
  bootedAtMs: number;
  /** when its worker registered (occupancy counts from here) */
  registeredAtMs?: number;
  goneAtMs?: number;
  busyMs: number;
  downloads: number;
  redundantDownloads: number;
  preempted: boolean;
}

export interface RunOutcome {
  policy: string;
  hours: number;
  jobs: JobRecord[];
  /** jobs the broker no longer knows, or ended failed, when the run stopped: must be none */
  lost: string[];
  failed: string[];
  machines: MachineRecord[];
  preemptions: number;
  requeued: number;
  /** where each started attempt found its model: loaded in the GPU, on disk, or neither (downloaded) */
  modelHits: { warm: number; disk: number; cold: number };
  /** jobs taken by another pool's worker (cross-pool fallback) */
  fallbackClaims: number;
  /** models the planner had machines download ahead of demand */
  plannerPrefetches: number;
  /** models the planner had idle machines load into GPU memory ahead of demand, loaded before a job took the machine */
  plannerLoads: number;
  /** per simulated hour: milliseconds of machines up, of machines holding a job (download, load, run) and of jobs running to completion */
  hourly: HourlyMs[];
  /** the hour of the day at which arrivals and the fleet curve peak */
  peakHour: number;
}

export interface HourlyMs {
  upMs: number;
  occupiedMs: number;
  executionMs: number;
  arrivals: number;
}

type Event =
  | { kind: 'arrival'; job: SimJob }
  | { kind: 'tick' }
  | { kind: 'scale' }
  | { kind: 'booted'; machine: Machine }
  | { kind: 'notice'; machine: Machine }
  | { kind: 'preempt'; machine: Machine }
  | { kind: 'heartbeat'; machine: Machine }
  | { kind: 'retry'; machine: Machine }
  | { kind: 'borrow'; machine: Machine }
  | { kind: 'borrow-due'; pool: string }
  | { kind: 'plan' }
  | { kind: 'prefetched'; machine: Machine; model: string }
  | { kind: 'warmed'; machine: Machine; load: WarmLoad }
  | { kind: 'ready'; machine: Machine; claimed: ClaimedJob }
  | { kind: 'done'; machine: Machine; claimed: ClaimedJob };

/** A planner's load of a model into an idle machine's GPU memory, under way. */
interface WarmLoad {
  model: string;
  /** when the model is in GPU memory */
  doneAtMs: number;
}

/** One simulated machine: a GPU, its disk and VRAM caches (least recently used first), and the one worker it runs. */
class Machine {
  alive = true;
  registered = false;
  draining = false;
  lease: Lease | undefined;
  /** when the worker took its current job (occupied from then until it completes or loses it) */
  leaseSinceMs = 0;
  /** model -> last use; iteration order is use order (re-inserted on each use) */
  readonly disk = new Map<string, number>();
  readonly vram = new Map<string, number>();
  readonly everDownloaded = new Set<string>();
  /** a model being downloaded for its job (reported as downloading) */
  downloading: string | undefined;
  /** fallback: when it last told each pool it borrows from that it is alive; whether it waits for a job there to qualify */
  readonly beats = new Map<string, number>();
  sleepingBorrower = false;
  /** its model caches changed for the current job: report once the job starts */
  pendingReport = false;
  /** the model its current job runs (a planner never evicts it) */
  inUse: string | undefined;
  /** models the planner asked it to download, still coming */
  readonly prefetching = new Set<string>();
  /** the planner's load into its GPU under way (at most one), and those waiting for it or for their prefetch to land */
  warming: WarmLoad | undefined;
  readonly warmQueue: string[] = [];
  /** when its spot interruption comes, and its notice (if any) */
  preemptAtMs = Infinity;
  noticeAtMs = Infinity;
  /** its last heartbeat was left out (see #heartbeat): the next one goes out */
  skippedBeat = false;
  /** where it stands in its pool's idle set in the broker (0: not in it; see #dispatch) */
  waitingSince = 0;
  constructor(
    readonly record: MachineRecord,
    readonly random: Random,
  ) {}
  get workerId(): string {
    return `${this.record.id}-gpu0`;
  }
}

export interface RunOptions {
  policy: Policy;
  config: SimulationConfig;
  workload: SimJob[];
  hours: number;
  seed: number;
  /** a fixed fleet size instead of the daily curve */
  machines?: number;
  /** multiplies the daily fleet curve (or the fixed size): `--fit` looks for the smallest scale that meets the targets (default 1) */
  fleetScale?: number;
  /**
   * Ticks at every grid instant and sends every heartbeat, leaving out none of
   * those that cannot make a difference: slower, the same report (a test checks it).
   */
  reference?: boolean;
}

/**
 * Runs one policy over a workload on a private redis-server that this call
 * starts and stops: the real Redis Function library under a virtual clock.
 * The simulator takes no Redis address, so its virtual time can never be
 * written into a Redis that real workers use.
 */
export async function runPolicy(options: RunOptions): Promise<RunOutcome> {
  // the run talks to its server over a Unix socket in the server's folder: a round trip costs less than over TCP
  const dir = await mkdtemp(join(tmpdir(), 'emp-sim-'));
  const socket = join(dir, 'redis.sock');
  // no per-command latency histograms (Redis 7's latency-tracking): nobody reads them from a private server, and
  // recording them was about 2% of its CPU on a default day
  const server = await startRedis({ dir, args: ['--unixsocket', socket, '--unixsocketperm', '700', '--latency-tracking', 'no'] }).catch(async (error: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw error;
  });
  const redis = new Redis({ path: socket, lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    return await new Simulation(redis, options).run();
  } finally {
    redis.disconnect();
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/** One pool of the simulated fleet: its share of the machines and the machine types that may serve in it. */
export interface SimPool {
  name: string;
  /** share of the fleet curve's machines (pools are sized by their share of the work, not of the jobs) */
  share: number;
  types: MachineType[];
}

class Simulation {
  readonly #events = new EventQueue<Event>();
  readonly #machines: Machine[] = [];
  /** registered workers with no job, not draining */
  readonly #idle = new Set<Machine>();
  /** idle workers that must claim at the next dispatch (just registered, woken, or a retry time came) */
  readonly #claimDue = new Set<Machine>();
  readonly #jobs = new Map<string, JobRecord>();
  readonly #models: Map<string, Model>;
  readonly #random: Random;
  readonly #services: string[];
  readonly #pools: SimPool[];
  readonly #config: BrokerConfig;
  /** the planner's recent decisions per pool (hysteresis), as the service keeps them in its record */
  readonly #planned = new Map<string, PastDecision[]>();
  #prefetches = 0;
  #warmLoads = 0;
  #broker!: Broker;
  #now = 0;
  #machineSeq = 0;
  #preempted = 0;
  /** every machine's spot interruption time, ascending (an interruption makes the autoscaler act) */
  readonly #preemptions: number[] = [];
  #requeued = 0;
  #borrowed = 0;
  readonly #hits = { warm: 0, disk: 0, cold: 0 };
  #dispatchDue = false;
  /** counts the times a worker joined its pool's idle set in the broker (Machine.waitingSince) */
  #waitSeq = 0;
  /** with affinity: per pool, the models of the jobs submitted since the last dispatch (whose holders a submit wakes first) */
  readonly #submittedModels = new Map<string, string[]>();
  /** per pool, when the broker's tick of its shard next has something to do (the grid's first tick at or after it calls it) */
  readonly #tickDueAt = new Map<string, number>();
  #nextScaleAt = 0;
  /** the last call the run did not wait for, while its reply is out (replies come in order: once it is in, all are), and since when */
  #inFlight: Promise<void> | undefined;
  #inFlightSince = 0;
  /** the first error of a call the run did not wait for: the run stops with it */
  #failure: Error | undefined;
  /** the connection's writes are held until the run next waits for a reply (then all go in one write) */
  #corked = false;
  readonly #hourly: HourlyMs[];

  constructor(
    readonly redis: Redis,
    readonly options: RunOptions,
  ) {
    this.#random = new Random(options.seed).fork('fleet');
    this.#models = modelCatalogue(new Random(options.seed).fork('models'));
    this.#services = [...new Set(options.workload.map((j) => j.service))].sort();
    for (const job of options.workload) if (!this.#models.has(job.model)) this.#models.set(job.model, { name: job.model, sizeGb: 5 });
    this.#hourly = Array.from({ length: Math.ceil(options.hours) }, () => ({ upMs: 0, occupiedMs: 0, executionMs: 0, arrivals: 0 }));
    this.#config = brokerConfig({
      namespace: 'sim',
      services: [...new Set([...DEFAULT_SERVICES, ...this.#services])],
      affinityWaitMs: options.policy.affinity ? options.config.affinity_wait_s * 1000 : 0,
      // the simulated scheduler never stops: ticks skipped because nothing was due are no outage
      // (the tick takes a longer gap than this for one, see TICK_MS)
      clockGapMs: 7 * 86_400_000,
    });
    this.#pools = options.policy.pools ? poolsByWork(this.#config, options.config.fleet.types, options.workload) : [{ name: POOL, share: 1, types: options.config.fleet.types }];
  }

  get #endMs(): number {
    return this.options.hours * 3_600_000;
  }

  async run(): Promise<RunOutcome> {
    this.#broker = await Broker.connect({
      redis: this.redis,
      clock: () => VIRTUAL_EPOCH_MS + this.#now,
      config: this.#config,
    });
    // the calls made on replies (inside the broker's methods too) go out together once they are all made
    this.redis.stream.prependListener('data', () => this.#batch());
    if (this.options.policy.pools) await this.#learnHistory();
    for (const job of this.options.workload) if (job.arrivalMs < this.#endMs) this.#schedule(job.arrivalMs, { kind: 'arrival', job });
    this.#schedule(0, { kind: 'scale' });
    this.#schedule(0, { kind: 'tick' });
    if (this.options.policy.planner) this.#schedule(PLAN_EVERY_MS, { kind: 'plan' });

    for (;;) {
      const at = this.#events.peekTime();
      if (at === undefined || at >= this.#endMs) break;
      // replies not waited for are read at least once a heartbeat interval, as a worker reads its heartbeat's
      if (this.#inFlight && at - this.#inFlightSince >= this.options.config.heartbeat_s * 1000) await this.#settle();
      // everything due at one instant happens before the idle workers look for work
      while (this.#events.peekTime() === at) {
        this.#now = at;
        this.#batch();
        await this.#handle(this.#events.pop()!.event);
      }
      if (this.#dispatchDue) await this.#dispatch();
      if (this.#failure) throw this.#failure;
    }
    await this.#settle();
    this.#now = this.#endMs;
    for (const machine of this.#machines) {
      if (machine.lease) this.#spend('occupiedMs', machine.leaseSinceMs, this.#endMs);
      if (machine.record.goneAtMs === undefined) machine.record.goneAtMs = this.#endMs;
      if (machine.record.registeredAtMs !== undefined) this.#spend('upMs', machine.record.registeredAtMs, machine.record.goneAtMs);
    }
    return this.#outcome();
  }

  /**
   * Routing by learned durations needs history: a deployment that ran last week
   * has it, a fresh Redis does not. Before the day starts, a worker of last week
   * runs, through the real submit / claim / start / complete, the first
   * HISTORY_JOBS jobs of each class (service and model) with their durations,
   * seven days before the day (so that the planner's view of yesterday's demand
   * stays empty: its demand buckets are last week's); then it goes offline.
   */
  async #learnHistory(): Promise<void> {
    const worker = 'last-week';
    const pool = this.#config.defaultPool;
    await this.#broker.registerWorker({ id: worker, pool, machine_id: worker, capabilities: { services: this.#services, hardware: { gpu_memory_gb: 80 }, models: Object.fromEntries(this.#services.map((s) => [s, '*' as const])) } });
    const seen = new Map<string, number>();
    this.#now = -7 * 86_400_000;
    for (const job of this.options.workload) {
      const key = `${job.service}|${job.model}`;
      const count = seen.get(key) ?? 0;
      if (count >= HISTORY_JOBS) continue;
      seen.set(key, count + 1);
      await this.#broker.submit({ service: job.service, tenant: job.tenant, payload: {}, requirements: { pool, models: [job.model] } });
      const { job: claimed } = await this.#broker.claim(pool, worker);
      if (!claimed) throw new Error(`the history worker found no job to run (${key})`);
      await this.#broker.start(claimed.lease);
      this.#now += job.durationMs;
      await this.#broker.complete(claimed.lease, null);
      this.#now += 1_000;
    }
    await this.#broker.setWorkerState(pool, worker, 'offline');
    this.#now = 0;
  }

  /**
   * Holds the connection's writes until the run next waits for a reply: the
   * calls of one stretch of the run (those it does not wait for, then the one
   * it does) go to Redis in one write, in the order they were made. Only
   * batching: what Redis runs, and in which order, is the same.
   */
  #batch(): void {
    if (this.#corked) return;
    const stream = this.redis.stream;
    stream.cork();
    this.#corked = true;
    // once the run waits for a reply: after every continuation queued so far, and the ones they queue
    queueMicrotask(() =>
      process.nextTick(() => {
        this.#corked = false;
        stream.uncork();
      }),
    );
  }

  /**
   * Makes a call whose reply the run does not wait for (a heartbeat, a start, a
   * model report): it goes out now, in order with every other call, and its
   * reply is handled when it comes in (`onReply`), by the time the run next
   * waits for one. `call` must send its command at once: one that first waits
   * for something else would reach Redis after calls made later.
   */
  #background<T>(call: () => Promise<T>, onReply?: (reply: T) => void): void {
    this.#batch();
    const stream = this.redis.stream;
    const before = stream.writableLength;
    const reply = call();
    if (stream.writableLength === before) throw new Error('a call made without waiting for its reply sent nothing at once: it would reach Redis out of order');
    if (!this.#inFlight) this.#inFlightSince = this.#now;
    const settled: Promise<void> = reply.then(
      (value) => {
        if (this.#inFlight === settled) this.#inFlight = undefined;
        onReply?.(value);
      },
      (error: Error) => {
        if (this.#inFlight === settled) this.#inFlight = undefined;
        this.#failure ??= error;
      },
    );
    this.#inFlight = settled;
  }

  /** Waits for the replies of the calls made without waiting. */
  async #settle(): Promise<void> {
    if (this.#inFlight) await this.#inFlight;
    if (this.#failure) throw this.#failure;
  }

  /** Something may have set a timer (a failure's retry): the next tick of the grid calls the broker, in every pool. */
  #tickSoon(): void {
    for (const pool of this.#pools) this.#tickDueAt.set(pool.name, Math.min(this.#tickDueAt.get(pool.name) ?? 0, this.#now));
  }

  /** Virtual time moves in whole milliseconds: the broker stores integer timestamps. */
  #schedule(at: number, event: Event): void {
    this.#events.push(Math.round(at), event);
  }

  async #handle(event: Event): Promise<void> {
    switch (event.kind) {
      case 'arrival':
        return this.#submit(event.job);
      case 'tick': {
        // each pool is its own shard, whose tick says when it next has something to do: only the pools where
        // something is due are ticked, together, in pool order (none waits on another's)
        const due = this.#pools.filter((pool) => this.options.reference || this.#now >= (this.#tickDueAt.get(pool.name) ?? 0));
        if (due.length > 0) {
          const replies = await Promise.all(due.map((pool) => this.#broker.tick(pool.name)));
          due.forEach((pool, i) => {
            const { handled, nextDueInMs } = replies[i]!;
            if (handled > 0) this.#dispatchDue = true;
            // a full batch: more may be due now
            const dueIn = Math.min(maxTickGapMs(this.#config), handled >= this.#config.tickLimit ? 0 : (nextDueInMs ?? Infinity));
            this.#tickDueAt.set(pool.name, this.#now + dueIn);
          });
        }
        this.#schedule(this.#now + TICK_MS, { kind: 'tick' });
        return;
      }
      case 'scale':
        this.#scale();
        this.#nextScaleAt = Math.round(this.#now + this.options.config.fleet.scale_every_s * 1000);
        this.#schedule(this.#nextScaleAt, { kind: 'scale' });
        return;
      case 'booted':
        return this.#booted(event.machine);
      case 'notice':
        if (!event.machine.alive) return;
        event.machine.draining = true;
        this.#idle.delete(event.machine);
        this.#claimDue.delete(event.machine);
        return;
      case 'preempt':
        return this.#preempt(event.machine);
      case 'heartbeat':
        return this.#heartbeat(event.machine);
      case 'retry':
        if (this.#idle.has(event.machine)) {
          this.#claimDue.add(event.machine);
          this.#dispatchDue = true;
        }
        return;
      case 'borrow':
        if (this.#idle.has(event.machine)) await this.#borrow(event.machine);
        return;
      case 'borrow-due':
        return this.#borrowDue(event.pool);
      case 'plan':
        await this.#plan();
        this.#schedule(this.#now + PLAN_EVERY_MS, { kind: 'plan' });
        return;
      case 'prefetched':
        return this.#prefetched(event.machine, event.model);
      case 'warmed':
        return this.#warmed(event.machine, event.load);
      case 'ready':
        return this.#ready(event.machine, event.claimed);
      case 'done':
        return this.#done(event.machine, event.claimed);
    }
  }

  async #submit(job: SimJob): Promise<void> {
    const model = this.#models.get(job.model)!;
    const result = await this.#broker.submit({
      service: job.service,
      tenant: job.tenant,
      priority: this.options.policy.priority(job.jobClass),
      payload: { model: job.model, duration_ms: job.durationMs, class: job.jobClass },
      // the model must fit in the GPU's memory: a 28 GB video model runs only on the large GPUs;
      // with pools, the broker routes the job by the durations it has learned
      requirements: { ...(this.options.policy.pools ? {} : { pool: POOL }), models: [job.model], hardware: { gpu_memory_gb: Math.ceil(model.sizeGb) } },
    });
    const pool = poolOfJobId(result.id);
    this.#jobs.set(result.id, { job, id: result.id, pool, downloadMs: 0, loadMs: 0, attempts: 0 });
    if (this.options.policy.fallback) this.#lendingJob(pool);
    if (this.options.policy.affinity) this.#submittedModels.set(pool, [...(this.#submittedModels.get(pool) ?? []), job.model]);
    const hour = this.#hourly[Math.floor(this.#now / 3_600_000)];
    if (hour) hour.arrivals++;
    this.#dispatchDue = true;
  }

  // ------------------------------------------------------------------ fleet

  /** The autoscaler's target for a pool: its share of the daily curve (or of the fixed size), times the fit's scale. */
  #target(pool: SimPool): number {
    const scale = this.options.fleetScale ?? 1;
    let total: number;
    if (this.options.machines !== undefined) {
      total = this.options.machines;
    } else {
      const { min_machines, max_machines } = this.options.config.fleet;
      total = min_machines + (max_machines - min_machines) * dailyShape(this.#now, this.options.config.workload.trough_hour);
    }
    return Math.max(1, Math.round(total * scale * pool.share));
  }

  /** The autoscaler: per pool, asks for machines below the target, and drains surplus ones (idle ones leave at once). */
  #scale(): void {
    for (const pool of this.#pools) {
      const live = this.#machines.filter((m) => m.alive && !m.draining && m.record.pool === pool.name);
      const target = this.#target(pool);
      for (let n = live.length; n < target; n++) this.#boot(pool);
      for (const machine of live.slice(target).reverse()) {
        machine.draining = true;
        if (!machine.lease) this.#retire(machine);
      }
    }
  }

  #boot(pool: SimPool): void {
    const fleet = this.options.config.fleet;
    const random = this.#random;
    let pick = random.next() * pool.types.reduce((s, t) => s + t.weight, 0);
    const type = pool.types.find((t) => (pick -= t.weight) < 0) ?? pool.types[pool.types.length - 1]!;
    const id = `sim-m${String(++this.#machineSeq).padStart(4, '0')}`;
    const record: MachineRecord = { id, pool: pool.name, type, bootedAtMs: this.#now, busyMs: 0, downloads: 0, redundantDownloads: 0, preempted: false };
    const machine = new Machine(record, random.fork(id));
    this.#machines.push(machine);
    this.#schedule(this.#now + random.uniform(fleet.boot_s.min, fleet.boot_s.max) * 1000, { kind: 'booted', machine });
    if (fleet.preemptions_per_hour > 0) {
      const at = this.#now + random.exponential(3_600_000 / fleet.preemptions_per_hour);
      if (random.next() < fleet.notice_share) {
        machine.noticeAtMs = Math.round(Math.max(this.#now, at - fleet.notice_s * 1000));
        this.#schedule(machine.noticeAtMs, { kind: 'notice', machine });
      }
      machine.preemptAtMs = Math.round(at);
      this.#schedule(at, { kind: 'preempt', machine });
      this.#preemptions.splice(sortedIndex(this.#preemptions, machine.preemptAtMs), 0, machine.preemptAtMs);
    }
  }

  async #booted(machine: Machine): Promise<void> {
    if (!machine.alive) return;
    await this.#broker.registerWorker(
      {
        id: machine.workerId,
        pool: machine.record.pool,
        machine_id: machine.record.id,
        capabilities: this.#capabilities(machine),
      },
      { freshStart: true },
    );
    for (const rule of this.#rules(machine)) {
      await this.#broker.registerWorker(
        { id: machine.workerId, pool: rule.pool, home_pool: machine.record.pool, machine_id: machine.record.id, capabilities: this.#capabilities(machine) },
        { freshStart: true },
      );
      machine.beats.set(rule.pool, this.#now);
    }
    machine.registered = true;
    machine.record.registeredAtMs = this.#now;
    this.#report(machine);
    this.#schedule(this.#now + this.options.config.heartbeat_s * 1000, { kind: 'heartbeat', machine });
    if (machine.draining) return this.#retire(machine);
    this.#becomeIdle(machine, true);
  }

  #capabilities(machine: Machine) {
    return {
      services: this.#services,
      hardware: { gpu_memory_gb: machine.record.type.gpu_memory_gb },
      models: Object.fromEntries(this.#services.map((s) => [s, '*' as const])),
    };
  }

  /** The machine's pool's fallback rules, when the policy has fallback. */
  #rules(machine: Machine) {
    return this.options.policy.fallback ? fallbackRules(this.#config, machine.record.pool) : [];
  }

  /** Model affinity: the worker tells the broker what it holds now (the real worker reports after each change). */
  #report(machine: Machine): void {
    if (!this.options.policy.affinity || !machine.alive) return;
    const models = {
      loaded: [...machine.vram.keys()],
      on_disk: [...machine.disk.keys()].filter((m) => m !== machine.downloading),
      downloading: machine.downloading ? [machine.downloading] : [],
    };
    this.#background(() => this.#broker.reportModels(machine.record.pool, machine.workerId, models));
  }

  /** The worker has no job: it claims at the next dispatch when `claim`, else it waits to be woken. */
  #becomeIdle(machine: Machine, claim: boolean): void {
    this.#idle.add(machine);
    if (claim) {
      this.#claimDue.add(machine);
      this.#dispatchDue = true;
    }
  }

  #retire(machine: Machine): void {
    machine.alive = false;
    machine.record.goneAtMs = this.#now;
    this.#idle.delete(machine);
    this.#claimDue.delete(machine);
  }

  /** A spot interruption: with notice the worker hands its job back; without, the job's lease runs out and the broker's tick requeues it. */
  async #preempt(machine: Machine): Promise<void> {
    if (!machine.alive) return;
    this.#preempted++;
    machine.record.preempted = true;
    const lease = machine.lease;
    const noticed = machine.draining;
    this.#retire(machine);
    machine.lease = undefined;
    if (lease) this.#spend('occupiedMs', machine.leaseSinceMs, this.#now);
    if (lease && noticed) {
      const { outcome } = await this.#broker.fail(lease, { kind: 'infrastructure', message: 'spot interruption' });
      if (outcome === 'queued') this.#requeued++;
      this.#dispatchDue = true;
      this.#tickSoon();
    } else if (lease) {
      this.#requeued++; // the tick will reap it when its lease runs out
    }
    this.#scale(); // the autoscaler replaces it
  }

  /**
   * Renews the worker's leases (and its borrowed job's, in that pool). The run
   * does not wait for the reply: it names the jobs the worker must drop, none
   * while the worker renews in time, and is handled when it comes in.
   */
  #heartbeat(machine: Machine): void {
    if (!machine.alive) return;
    const interval = this.options.config.heartbeat_s * 1000;
    this.#schedule(this.#now + interval, { kind: 'heartbeat', machine });
    if (this.#beatUnseen(machine, interval)) {
      machine.skippedBeat = true;
      return;
    }
    machine.skippedBeat = false;
    const lease = machine.lease;
    const leases = lease ? [{ jobId: lease.jobId, token: lease.token }] : [];
    const borrowed = lease !== undefined && lease.pool !== machine.record.pool;
    this.#background(() => this.#broker.heartbeat(machine.record.pool, machine.workerId, borrowed ? [] : leases), (dropped) => this.#dropped(machine, dropped));
    if (borrowed) {
      this.#background(() => this.#broker.heartbeat(lease.pool, machine.workerId, leases), (dropped) => this.#dropped(machine, dropped));
      machine.beats.set(lease.pool, this.#now);
    }
  }

  /**
   * Whether this heartbeat can make no difference, so it need not be sent: a
   * heartbeat only moves the worker's liveness and lease deadlines (the broker's
   * tick acts on them), and while the worker beats again one interval later,
   * both stay at least (lease, or silence before offline) - 2 intervals ahead of
   * every tick meanwhile. So every other heartbeat may go, when the next one
   * surely comes and renews the same: the machine is not draining, holds no
   * borrowed job (whose pool it stops beating in once the job is done), and
   * nothing that could stop it (its interruption or notice, an autoscaler
   * round, which any interruption also starts) falls before it. The deadlines
   * of a machine that stops are those of its last heartbeat, as if none had
   * been left out (RunOptions.reference sends them all; a test compares).
   */
  #beatUnseen(machine: Machine, interval: number): boolean {
    const from = this.#now;
    const to = from + interval;
    // an event at this very instant may still come after this heartbeat, one at the next heartbeat's before it
    const within = (at: number) => at >= from && at <= to;
    return (
      !this.options.reference &&
      !machine.skippedBeat &&
      2 * interval < Math.min(this.#config.leaseMs, this.#config.offlineAfterMs) &&
      to < this.#endMs &&
      !machine.draining &&
      // a borrowed job's pool hears from the worker only while it holds the job: its last heartbeat there must go
      (machine.lease === undefined || machine.lease.pool === machine.record.pool) &&
      !within(machine.preemptAtMs) &&
      !within(machine.noticeAtMs) &&
      !within(this.#nextScaleAt) &&
      !within(this.#preemptions[sortedIndex(this.#preemptions, from)] ?? Infinity)
    );
  }

  /** A heartbeat's reply: the jobs the broker took back (the worker stops the one it holds and looks for another). */
  #dropped(machine: Machine, dropped: Array<{ jobId: string }>): void {
    if (dropped.length === 0) return;
    this.#tickSoon(); // the requeue may have set a timer
    if (!machine.alive || !machine.lease || !dropped.some((d) => d.jobId === machine.lease!.jobId)) return;
    machine.lease = undefined;
    machine.inUse = undefined;
    this.#spend('occupiedMs', machine.leaseSinceMs, this.#now);
    if (!machine.draining) this.#becomeIdle(machine, true);
  }

  // ------------------------------------------------------------------ work

  /**
   * What an idle worker does when it wakes: the ones the broker woke (a wake-up
   * on their signal list, as the real worker's blocking wait receives it), the
   * ones that just came up and the ones whose retry time came claim, in a fixed
   * order. A claim that finds nothing leaves the worker waiting in the broker's
   * idle set, to be woken by the next job it can run.
   */
  async #dispatch(): Promise<void> {
    this.#dispatchDue = false;
    // A submit wakes one idle worker: with affinity, a holder of the job's model (loaded before on disk, then the
    // greatest id), else the capable worker that has waited longest in its pool's idle set (the set keeps the order
    // in which workers joined it). takeSignals reads past a list that held something in one more round trip, none
    // when it was the last, so the lists go in the reverse order of that choice. Any order pops the same lists:
    // this changes round trips, not what happens.
    const byPool = new Map<string, Machine[]>();
    for (const machine of this.#idle) {
      if (this.#claimDue.has(machine)) continue;
      const list = byPool.get(machine.record.pool) ?? [];
      list.push(machine);
      byPool.set(machine.record.pool, list);
    }
    for (const [pool, list] of byPool) {
      const models = this.#submittedModels.get(pool) ?? [];
      const tier = (m: Machine) => Math.max(0, ...models.map((model) => (m.vram.has(model) ? 2 : m.disk.has(model) && m.downloading !== model ? 1 : 0)));
      const tiers = new Map(list.map((m) => [m, tier(m)]));
      list.sort((a, b) => tiers.get(a)! - tiers.get(b)! || (tiers.get(a)! > 0 ? (a.workerId < b.workerId ? -1 : 1) : b.waitingSince - a.waitingSince));
    }
    this.#submittedModels.clear();
    const taken = await Promise.all([...byPool].map(([pool, machines]) => this.#broker.takeSignals(pool, machines.map((m) => m.workerId))));
    [...byPool.values()].forEach((machines, i) => {
      for (const machine of machines) {
        if (taken[i]!.get(machine.workerId)?.some((s) => s.type === 'wake')) {
          // a wake-up takes the worker out of the idle set
          machine.waitingSince = 0;
          this.#claimDue.add(machine);
        }
      }
    });
    const due = [...this.#claimDue].sort((a, b) => (a.record.id < b.record.id ? -1 : 1));
    this.#claimDue.clear();
    for (const machine of due) {
      if (!this.#idle.has(machine)) continue;
      const result = await this.#broker.claim(machine.record.pool, machine.workerId);
      if (result.job) {
        this.#idle.delete(machine);
        await this.#begin(machine, result.job);
      } else {
        this.#waiting(machine);
        if (result.retryAt !== undefined) this.#schedule(Math.max(this.#now + 1, result.retryAt - VIRTUAL_EPOCH_MS), { kind: 'retry', machine });
        // its own pool had nothing: the pools it may borrow from, now
        if (this.#rules(machine).length > 0) await this.#borrow(machine);
      }
    }
  }

  // ------------------------------------------------------------------ planner

  /**
   * One round of the planner per pool, with the service's logic (@emp/planning's
   * planRound): the pool's demand counters of the last two hours and of the same
   * hours yesterday, read from the broker, and its machines' disks as their
   * status snapshots would show them; prefetches download beside the machine's
   * jobs at its bandwidth, evictions free disk at once.
   */
  async #plan(): Promise<void> {
    const now = VIRTUAL_EPOCH_MS + this.#now;
    for (const pool of this.#pools) {
      const demand: DemandBucket[] = [
        ...(await this.#broker.modelDemand(pool.name, { from: now - 86_400_000 - 3_600_000, to: now - 86_400_000 + 3_600_000 })),
        ...(await this.#broker.modelDemand(pool.name, { from: now - 2 * 3_600_000, to: now + 1 })),
      ];
      const machines = this.#machines.filter((m) => m.alive && m.registered && m.record.pool === pool.name);
      if (machines.length === 0) continue;
      const history = this.#planned.get(pool.name) ?? [];
      const { plan } = planRound({ pool: pool.name, demand, machines: machines.map((m) => this.#fleetMachine(m)), history, now });
      for (const decision of plan.decisions) {
        const machine = machines.find((m) => m.record.id === decision.machine);
        if (!machine) continue;
        history.push({ machine: decision.machine, action: decision.action, model: decision.model, ts: now });
        if (decision.action === 'prefetch') this.#prefetch(machine, decision.model);
        else if (decision.action === 'load') this.#load(machine, decision.model);
        else await this.#evict(machine, decision.model);
      }
      this.#planned.set(pool.name, history.slice(-500));
    }
  }

  /** A machine as the planner sees its registry record. */
  #fleetMachine(machine: Machine): FleetMachine {
    const size = (name: string) => Math.round((this.#models.get(name)?.sizeGb ?? 0) * GB);
    const onDisk = [...machine.disk.keys()].filter((name) => name !== machine.downloading);
    return {
      id: machine.record.id,
      state: machine.draining ? 'draining' : 'ready',
      budgetBytes: machine.record.type.disk_gb * GB,
      usedBytes: [...machine.disk.keys(), ...machine.prefetching].reduce((sum, name) => sum + size(name), 0),
      models: onDisk.map((name) => ({
        name,
        size_bytes: size(name),
        last_used: VIRTUAL_EPOCH_MS + machine.disk.get(name)!,
        in_use: name === machine.inUse,
        loaded: machine.vram.has(name),
      })),
      downloading: [...(machine.downloading ? [machine.downloading] : []), ...machine.prefetching],
      inUse: machine.inUse ? [machine.inUse] : [],
      gpuMemoryBytes: machine.record.type.gpu_memory_gb * GB,
      idle: machine.lease === undefined,
    };
  }

  #prefetch(machine: Machine, name: string): void {
    const model = this.#models.get(name);
    if (!model || machine.disk.has(name) || machine.prefetching.has(name)) return;
    machine.prefetching.add(name);
    this.#prefetches++;
    machine.record.downloads++;
    if (machine.everDownloaded.has(name)) machine.record.redundantDownloads++;
    machine.everDownloaded.add(name);
    this.#schedule(this.#now + ((model.sizeGb * 1024) / machine.record.type.download_mb_s) * 1000, { kind: 'prefetched', machine, model: name });
  }

  async #prefetched(machine: Machine, name: string): Promise<void> {
    if (!machine.alive || !machine.prefetching.delete(name)) return;
    if (machine.disk.has(name)) return; // a job downloaded it meanwhile
    const model = this.#models.get(name)!;
    makeRoom(machine.disk, this.#models, model, machine.record.type.disk_gb, machine.inUse);
    // on disk, not used yet: least recently used first among what it holds
    machine.disk.set(name, this.#now);
    this.#report(machine);
    // a load the planner sent with the prefetch starts once it has landed
    if (!machine.warming) this.#nextWarmLoad(machine);
  }

  /**
   * The planner's load of a model into the GPU of an idle machine, as the
   * agent runs it through the worker's connector (the simulation connector's
   * configured load time): it takes a load time drawn as a job's would, and
   * only while no job runs. Refused (nothing happens) on a machine that is
   * busy, draining or lacks the model; queued behind a load under way or the
   * model's prefetch. A job that comes first ends it: one of the same model
   * waits for the rest of the load, another abandons it (its memory is the job's).
   */
  #load(machine: Machine, name: string): void {
    if (!machine.alive || machine.draining || machine.lease || machine.vram.has(name)) return;
    const onDisk = machine.disk.has(name) && machine.downloading !== name;
    if (!onDisk && !machine.prefetching.has(name)) return;
    if (machine.warming?.model === name || machine.warmQueue.includes(name)) return;
    machine.warmQueue.push(name);
    if (!machine.warming) this.#nextWarmLoad(machine);
  }

  /** Starts the first queued load whose model is on disk. */
  #nextWarmLoad(machine: Machine): void {
    const index = machine.warmQueue.findIndex((name) => machine.disk.has(name));
    if (index < 0 || machine.lease || !machine.alive) return;
    const [name] = machine.warmQueue.splice(index, 1);
    const load: WarmLoad = { model: name!, doneAtMs: Math.round(this.#now + drawLogNormal(machine.random, MODEL_LOAD) * 1000) };
    machine.warming = load;
    this.#schedule(load.doneAtMs, { kind: 'warmed', machine, load });
  }

  #warmed(machine: Machine, load: WarmLoad): void {
    if (!machine.alive || machine.warming !== load) return;
    machine.warming = undefined;
    const model = this.#models.get(load.model)!;
    makeRoom(machine.vram, this.#models, model, machine.record.type.gpu_memory_gb);
    touch(machine.vram, model.name, this.#now);
    this.#warmLoads++;
    this.#report(machine);
    this.#nextWarmLoad(machine);
  }

  async #evict(machine: Machine, name: string): Promise<void> {
    if (name === machine.inUse || name === machine.downloading || machine.vram.has(name) || !machine.disk.delete(name)) return;
    this.#report(machine);
  }

  // ------------------------------------------------------------------ cross-pool fallback

  /**
   * One look at the pools the machine may borrow from, as the real worker's
   * borrow(): the first job a rule allows, else it looks again when the broker
   * says the oldest job it could take qualifies. With nothing there at all, the
   * real worker looks again after its rule's wait; the simulated one sleeps
   * until a job arrives there and looks when that job qualifies (borrowDue),
   * which is the same look without the empty ones in between.
   */
  async #borrow(machine: Machine): Promise<void> {
    machine.sleepingBorrower = false;
    let next: number | undefined;
    for (const rule of this.#rules(machine)) {
      // a borrower stays online in the pools it borrows from (the real worker heartbeats each)
      if (this.#now - (machine.beats.get(rule.pool) ?? -Infinity) >= this.options.config.heartbeat_s * 1000) {
        this.#background(() => this.#broker.heartbeat(rule.pool, machine.workerId, []));
        machine.beats.set(rule.pool, this.#now);
      }
      const result = await this.#broker.claimFallback(rule.pool, machine.workerId, {
        homePool: machine.record.pool,
        afterMs: rule.afterMs,
        maxExpectedS: rule.maxExpectedS,
        unknownExpectedS: rule.unknownExpectedS,
      });
      if (result.job) {
        this.#idle.delete(machine);
        this.#claimDue.delete(machine);
        this.#borrowed++;
        // its last slot is taken: its own pool wakes someone else meanwhile
        await this.#broker.setWorkerState(machine.record.pool, machine.workerId, 'borrowing');
        return this.#begin(machine, result.job);
      }
      if (result.retryAt !== undefined) next = Math.min(next ?? Infinity, result.retryAt - VIRTUAL_EPOCH_MS);
    }
    if (next !== undefined) this.#schedule(Math.max(this.#now + 1, next), { kind: 'borrow', machine });
    else machine.sleepingBorrower = true;
  }

  /** A job arrived in `pool`: borrowers sleeping on it look when it can first qualify. */
  #lendingJob(pool: string): void {
    const rules = this.#config.pools.flatMap((p) => p.fallback.filter((r) => r.from === pool));
    if (rules.length === 0) return;
    const after = Math.min(...rules.map((r) => r.after_s)) * 1000;
    this.#schedule(this.#now + after, { kind: 'borrow-due', pool });
  }

  async #borrowDue(pool: string): Promise<void> {
    const sleeping = [...this.#idle]
      .filter((m) => m.sleepingBorrower && this.#rules(m).some((r) => r.pool === pool))
      .sort((a, b) => (a.record.id < b.record.id ? -1 : 1));
    for (const machine of sleeping) {
      if (!this.#idle.has(machine)) continue;
      await this.#borrow(machine);
      if (!this.#idle.has(machine)) return; // it took the job; the others sleep on
    }
  }

  /** A claim in its own pool found nothing: the worker joins the pool's idle set in the broker, unless it is in it. */
  #waiting(machine: Machine): void {
    if (machine.waitingSince === 0) machine.waitingSince = ++this.#waitSeq;
  }

  /** Reactive model handling: download what the disk lacks, load what the GPU lacks, then run. */
  async #begin(machine: Machine, claimed: ClaimedJob): Promise<void> {
    machine.waitingSince = 0;
    machine.lease = claimed.lease;
    machine.leaseSinceMs = this.#now;
    const record = this.#jobs.get(claimed.id)!;
    record.attempts++;
    const model = this.#models.get(record.job.model)!;
    machine.inUse = model.name;
    let readyIn = 0;
    let changed = false;
    this.#hits[machine.vram.has(model.name) ? 'warm' : machine.disk.has(model.name) ? 'disk' : 'cold']++;
    // the GPU is the job's now: a warm load of its model goes on for the job, any other is abandoned
    const warming = machine.warming;
    machine.warming = undefined;
    machine.warmQueue.length = 0;
    if (warming?.model === model.name) {
      const restMs = warming.doneAtMs - this.#now;
      readyIn += restMs;
      record.loadMs += restMs;
      makeRoom(machine.vram, this.#models, model, machine.record.type.gpu_memory_gb);
      touch(machine.vram, model.name, this.#now);
      changed = true;
    }
    if (!machine.disk.has(model.name)) {
      changed = true;
      machine.downloading = model.name;
      const downloadMs = ((model.sizeGb * 1024) / machine.record.type.download_mb_s) * 1000;
      readyIn += downloadMs;
      record.downloadMs += downloadMs;
      machine.record.downloads++;
      if (machine.everDownloaded.has(model.name)) machine.record.redundantDownloads++;
      machine.everDownloaded.add(model.name);
      makeRoom(machine.disk, this.#models, model, machine.record.type.disk_gb);
    }
    touch(machine.disk, model.name, this.#now);
    if (!machine.vram.has(model.name)) {
      changed = true;
      const loadMs = drawLogNormal(machine.random, MODEL_LOAD) * 1000;
      readyIn += loadMs;
      record.loadMs += loadMs;
      makeRoom(machine.vram, this.#models, model, machine.record.type.gpu_memory_gb);
    }
    // while it downloads or loads, the model is not loaded yet: the report says so, and the next one (at start) that it is
    if (changed) this.#report(machine);
    touch(machine.vram, model.name, this.#now);
    machine.pendingReport = changed;
    this.#schedule(this.#now + Math.round(readyIn), { kind: 'ready', machine, claimed });
  }

  async #ready(machine: Machine, claimed: ClaimedJob): Promise<void> {
    if (!machine.alive || machine.lease?.token !== claimed.lease.token) return;
    this.#background(() => this.#broker.start(claimed.lease));
    machine.downloading = undefined;
    if (machine.pendingReport) {
      machine.pendingReport = false;
      this.#report(machine);
    }
    const record = this.#jobs.get(claimed.id)!;
    record.startedAtMs ??= this.#now;
    this.#schedule(this.#now + record.job.durationMs, { kind: 'done', machine, claimed });
  }

  async #done(machine: Machine, claimed: ClaimedJob): Promise<void> {
    if (!machine.alive || machine.lease?.token !== claimed.lease.token) return;
    const record = this.#jobs.get(claimed.id)!;
    machine.record.busyMs += record.job.durationMs;
    this.#spend('executionMs', this.#now - record.job.durationMs, this.#now);
    this.#spend('occupiedMs', machine.leaseSinceMs, this.#now);
    // a borrowed job's pool is not the worker's to claim in: it claims in its own right after
    const borrowed = claimed.lease.pool !== machine.record.pool;
    const next: ClaimResult | null = await this.#broker.complete(claimed.lease, { simulated: true }, { claimNext: !machine.draining && !borrowed });
    record.completedAtMs = this.#now;
    machine.lease = undefined;
    machine.inUse = undefined;
    if (borrowed && !machine.draining) return this.#becomeIdle(machine, true);
    if (next?.job) return this.#begin(machine, next.job);
    if (machine.draining) {
      if (!machine.record.preempted) this.#retire(machine);
      return;
    }
    // the completion's claim found nothing: the worker waits in the broker's idle set
    this.#waiting(machine);
    this.#becomeIdle(machine, false);
    if (next && !next.job && next.retryAt !== undefined) this.#schedule(Math.max(this.#now + 1, next.retryAt - VIRTUAL_EPOCH_MS), { kind: 'retry', machine });
  }

  /** Adds the span [fromMs, toMs) to the hours it covers. */
  #spend(field: 'upMs' | 'occupiedMs' | 'executionMs', fromMs: number, toMs: number): void {
    for (let hour = Math.floor(fromMs / 3_600_000); hour * 3_600_000 < toMs && hour < this.#hourly.length; hour++) {
      const span = Math.min(toMs, (hour + 1) * 3_600_000) - Math.max(fromMs, hour * 3_600_000);
      if (span > 0) this.#hourly[hour]![field] += span;
    }
  }

  // ------------------------------------------------------------------ outcome

  /** Every job not completed must still be known to the broker, waiting or running: anything else is lost. */
  async #outcome(): Promise<RunOutcome> {
    const open = [...this.#jobs.values()].filter((r) => r.completedAtMs === undefined);
    const lost: string[] = [];
    const failed: string[] = [];
    for (let i = 0; i < open.length; i += 500) {
      const ids = open.slice(i, i + 500).map((r) => r.id);
      const settled = await this.#broker.getJobsSettled(ids);
      settled.forEach((s, k) => {
        if (s.status === 'rejected' || s.value === null) lost.push(ids[k]!);
        else if (s.value.state === 'failed' || s.value.state === 'expired' || s.value.state === 'canceled') failed.push(ids[k]!);
      });
    }
    return {
      policy: this.options.policy.name,
      hours: this.options.hours,
      jobs: [...this.#jobs.values()],
      lost,
      failed,
      machines: this.#machines.map((m) => m.record),
      preemptions: this.#preempted,
      requeued: this.#requeued,
      modelHits: this.#hits,
      fallbackClaims: this.#borrowed,
      plannerPrefetches: this.#prefetches,
      plannerLoads: this.#warmLoads,
      hourly: this.#hourly,
      peakHour: (this.options.config.workload.trough_hour + 12) % 24,
    };
  }
}

/** The first index of the ascending `list` whose value is at least `value`. */
function sortedIndex(list: readonly number[], value: number): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function touch(cache: Map<string, number>, name: string, now: number): void {
  cache.delete(name);
  cache.set(name, now);
}

/** Evicts least recently used models (never `keep`) until `model` fits in `capacityGb`. */
function makeRoom(cache: Map<string, number>, models: Map<string, Model>, model: Model, capacityGb: number, keep?: string): void {
  let used = [...cache.keys()].reduce((sum, name) => sum + models.get(name)!.sizeGb, 0);
  for (const name of cache.keys()) {
    if (used + model.sizeGb <= capacityGb) break;
    if (name === keep) continue;
    cache.delete(name);
    used -= models.get(name)!.sizeGb;
  }
}

export type { JobClass };

/**
 * The pools of the broker's configuration with their share of the fleet: each
 * job class (service + model) goes to the pool of its p90 duration, as routing
 * learns it, and a pool's share is its part of the execution seconds (video,
 * a few percent of the jobs, is about half the work). A pool's machines are of
 * the types its profile admits.
 */
export function poolsByWork(config: BrokerConfig, types: MachineType[], workload: SimJob[]): SimPool[] {
  const byClass = new Map<string, number[]>();
  for (const job of workload) {
    const key = `${job.service}|${job.model}`;
    const list = byClass.get(key) ?? [];
    list.push(job.durationMs);
    byClass.set(key, list);
  }
  const poolOf = new Map<string, string>();
  for (const [key, durations] of byClass) {
    durations.sort((a, b) => a - b);
    const p90 = durations[Math.min(durations.length - 1, Math.ceil(0.9 * durations.length) - 1)]! / 1000;
    poolOf.set(key, config.pools.find((p) => p.max_duration_s === undefined || p90 < p.max_duration_s)!.name);
  }
  // a job occupies its machine for its run and, when its model is not the one loaded, a load
  // (p50 23 s): about (1 - the model's share of its pool's jobs) of the time
  const jobsIn = new Map<string, number>();
  for (const [key, durations] of byClass) jobsIn.set(poolOf.get(key)!, (jobsIn.get(poolOf.get(key)!) ?? 0) + durations.length);
  const work = new Map<string, number>(config.pools.map((p) => [p.name, 0]));
  for (const [key, durations] of byClass) {
    const pool = poolOf.get(key)!;
    const switchShare = 1 - durations.length / jobsIn.get(pool)!;
    const loadsMs = durations.length * switchShare * MODEL_LOAD_P50_S * 1000;
    work.set(pool, work.get(pool)! + durations.reduce((a, b) => a + b, 0) + loadsMs);
  }
  const total = [...work.values()].reduce((a, b) => a + b, 0) || 1;
  return config.pools.map((pool) => {
    const admitted = types.filter((t) => t.gpu_memory_gb >= (pool.profile.min_gpu_memory_gb ?? 0));
    if (admitted.length === 0) throw new Error(`no machine type meets pool ${pool.name}'s profile (${JSON.stringify(pool.profile)})`);
    return { name: pool.name, share: work.get(pool.name)! / total, types: admitted };
  });
}
