import { Broker, type ClaimResult, type ClaimedJob, type Lease, DEFAULT_SERVICES, poolOfJobId } from '@emp/core';
import { startRedis } from '@emp/core/redis-server';
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
/** the production scheduler's longest sleep: the broker's tick runs at least this often */
const TICK_MS = 1_000;

export interface JobRecord {
  job: SimJob;
  id: string;
  /** the pool the broker put it in (its id starts with it) */
  pool: string;
  startedAtMs?: number;
  completedAtMs?: number;
  downloadMs: number;
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
  | { kind: 'ready'; machine: Machine; claimed: ClaimedJob }
  | { kind: 'done'; machine: Machine; claimed: ClaimedJob };

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
}

/**
 * Runs one policy over a workload on a private redis-server that this call
 * starts and stops: the real Redis Function library under a virtual clock.
 * The simulator takes no Redis address, so its virtual time can never be
 * written into a Redis that real workers use.
 */
export async function runPolicy(options: RunOptions): Promise<RunOutcome> {
  const server = await startRedis();
  const redis = new Redis(server.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    return await new Simulation(redis, options).run();
  } finally {
    redis.disconnect();
    await server.stop();
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
  #broker!: Broker;
  #now = 0;
  #machineSeq = 0;
  #preemptions = 0;
  #requeued = 0;
  #dispatchDue = false;
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
    this.#pools = [{ name: POOL, share: 1, types: options.config.fleet.types }];
  }

  get #endMs(): number {
    return this.options.hours * 3_600_000;
  }

  async run(): Promise<RunOutcome> {
    const services = [...new Set([...DEFAULT_SERVICES, ...this.#services])];
    this.#broker = await Broker.connect({
      redis: this.redis,
      clock: () => VIRTUAL_EPOCH_MS + this.#now,
      config: { namespace: 'sim', services },
    });
    for (const job of this.options.workload) if (job.arrivalMs < this.#endMs) this.#schedule(job.arrivalMs, { kind: 'arrival', job });
    this.#schedule(0, { kind: 'scale' });
    this.#schedule(0, { kind: 'tick' });

    for (;;) {
      const at = this.#events.peekTime();
      if (at === undefined || at >= this.#endMs) break;
      // everything due at one instant happens before the idle workers look for work
      while (this.#events.peekTime() === at) {
        this.#now = at;
        await this.#handle(this.#events.pop()!.event);
      }
      if (this.#dispatchDue) await this.#dispatch();
    }
    this.#now = this.#endMs;
    for (const machine of this.#machines) {
      if (machine.lease) this.#spend('occupiedMs', machine.leaseSinceMs, this.#endMs);
      if (machine.record.goneAtMs === undefined) machine.record.goneAtMs = this.#endMs;
      if (machine.record.registeredAtMs !== undefined) this.#spend('upMs', machine.record.registeredAtMs, machine.record.goneAtMs);
    }
    return this.#outcome();
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
        for (const pool of this.#pools) {
          const { handled } = await this.#broker.tick(pool.name);
          if (handled > 0) this.#dispatchDue = true;
        }
        this.#schedule(this.#now + TICK_MS, { kind: 'tick' });
        return;
      }
      case 'scale':
        this.#scale();
        this.#schedule(this.#now + this.options.config.fleet.scale_every_s * 1000, { kind: 'scale' });
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
      // the model must fit in the GPU's memory: a 28 GB video model runs only on the large GPUs
      requirements: { pool: POOL, models: [job.model], hardware: { gpu_memory_gb: Math.ceil(model.sizeGb) } },
    });
    this.#jobs.set(result.id, { job, id: result.id, pool: poolOfJobId(result.id), downloadMs: 0, attempts: 0 });
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
      if (random.next() < fleet.notice_share) this.#schedule(Math.max(this.#now, at - fleet.notice_s * 1000), { kind: 'notice', machine });
      this.#schedule(at, { kind: 'preempt', machine });
    }
  }

  async #booted(machine: Machine): Promise<void> {
    if (!machine.alive) return;
    await this.#broker.registerWorker(
      {
        id: machine.workerId,
        pool: machine.record.pool,
        machine_id: machine.record.id,
        capabilities: {
          services: this.#services,
          hardware: { gpu_memory_gb: machine.record.type.gpu_memory_gb },
          models: Object.fromEntries(this.#services.map((s) => [s, '*' as const])),
        },
      },
      { freshStart: true },
    );
    machine.registered = true;
    machine.record.registeredAtMs = this.#now;
    this.#schedule(this.#now + this.options.config.heartbeat_s * 1000, { kind: 'heartbeat', machine });
    if (machine.draining) return this.#retire(machine);
    this.#becomeIdle(machine, true);
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
    this.#preemptions++;
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
    } else if (lease) {
      this.#requeued++; // the tick will reap it when its lease runs out
    }
    this.#scale(); // the autoscaler replaces it
  }

  async #heartbeat(machine: Machine): Promise<void> {
    if (!machine.alive) return;
    const leases = machine.lease ? [{ jobId: machine.lease.jobId, token: machine.lease.token }] : [];
    const dropped = await this.#broker.heartbeat(machine.record.pool, machine.workerId, leases);
    if (machine.lease && dropped.some((d) => d.jobId === machine.lease!.jobId)) {
      machine.lease = undefined; // the broker took the job back: the worker stops it and looks for another
      this.#spend('occupiedMs', machine.leaseSinceMs, this.#now);
      if (!machine.draining) this.#becomeIdle(machine, true);
    }
    this.#schedule(this.#now + this.options.config.heartbeat_s * 1000, { kind: 'heartbeat', machine });
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
    const byPool = new Map<string, Machine[]>();
    for (const machine of this.#idle) {
      if (this.#claimDue.has(machine)) continue;
      const list = byPool.get(machine.record.pool) ?? [];
      list.push(machine);
      byPool.set(machine.record.pool, list);
    }
    for (const [pool, machines] of byPool) {
      const signals = await this.#broker.takeSignals(pool, machines.map((m) => m.workerId));
      for (const machine of machines) {
        if (signals.get(machine.workerId)?.some((s) => s.type === 'wake')) this.#claimDue.add(machine);
      }
    }
    const due = [...this.#claimDue].sort((a, b) => (a.record.id < b.record.id ? -1 : 1));
    this.#claimDue.clear();
    for (const machine of due) {
      if (!this.#idle.has(machine)) continue;
      const result = await this.#broker.claim(machine.record.pool, machine.workerId);
      if (result.job) {
        this.#idle.delete(machine);
        this.#begin(machine, result.job);
      } else if (result.retryAt !== undefined) {
        this.#schedule(Math.max(this.#now + 1, result.retryAt - VIRTUAL_EPOCH_MS), { kind: 'retry', machine });
      }
    }
  }

  /** Reactive model handling: download what the disk lacks, load what the GPU lacks, then run. */
  #begin(machine: Machine, claimed: ClaimedJob): void {
    machine.lease = claimed.lease;
    machine.leaseSinceMs = this.#now;
    const record = this.#jobs.get(claimed.id)!;
    record.attempts++;
    const model = this.#models.get(record.job.model)!;
    let readyIn = 0;
    if (!machine.disk.has(model.name)) {
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
      readyIn += drawLogNormal(machine.random, MODEL_LOAD) * 1000;
      makeRoom(machine.vram, this.#models, model, machine.record.type.gpu_memory_gb);
    }
    touch(machine.vram, model.name, this.#now);
    this.#schedule(this.#now + Math.round(readyIn), { kind: 'ready', machine, claimed });
  }

  async #ready(machine: Machine, claimed: ClaimedJob): Promise<void> {
    if (!machine.alive || machine.lease?.token !== claimed.lease.token) return;
    await this.#broker.start(claimed.lease);
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
    const next: ClaimResult | null = await this.#broker.complete(claimed.lease, { simulated: true }, { claimNext: !machine.draining });
    record.completedAtMs = this.#now;
    machine.lease = undefined;
    if (next?.job) return this.#begin(machine, next.job);
    if (machine.draining) {
      if (!machine.record.preempted) this.#retire(machine);
      return;
    }
    // the completion's claim found nothing: the worker waits in the broker's idle set
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
      preemptions: this.#preemptions,
      requeued: this.#requeued,
      hourly: this.#hourly,
      peakHour: (this.options.config.workload.trough_hour + 12) % 24,
    };
  }
}

function touch(cache: Map<string, number>, name: string, now: number): void {
  cache.delete(name);
  cache.set(name, now);
}

/** Evicts least recently used models until `model` fits in `capacityGb`. */
function makeRoom(cache: Map<string, number>, models: Map<string, Model>, model: Model, capacityGb: number): void {
  let used = [...cache.keys()].reduce((sum, name) => sum + models.get(name)!.sizeGb, 0);
  for (const name of cache.keys()) {
    if (used + model.sizeGb <= capacityGb) break;
    cache.delete(name);
    used -= models.get(name)!.sizeGb;
  }
}

export type { JobClass };
