import { type Broker, DEMAND_BUCKET_MS, type Job, type PlannerCapacity, type PlannerDecision, type PlannerRound, type PlannerState } from '@emp/core';
import {
  DAY_MS,
  type DemandBucket,
  type FleetMachine,
  type PlacementDecision,
  capacityHint,
  planRound,
} from '@emp/planning';
import type { Logger } from 'pino';
import { type PlannerConfig, type PlannerConfigInput, plannerConfig, waitTargetMs } from './config';
import { evictionBlocker, fleetMachine, workersPerMachine } from './fleet';

const HOUR_MS = 60 * 60 * 1_000;

/** A prefetch, evict or load command for a machine's agent (the machine command channel). */
export interface ModelCommand {
  action: 'prefetch' | 'evict' | 'load';
  model: string;
  by?: string;
  reason: string;
}

/**
 * What the planner needs of the broker: the fleet, the demand counters, the
 * jobs of the last hour, the machine command channel and its own record.
 */
export type PlannerBroker = Pick<Broker, 'config' | 'pools' | 'machines' | 'machine' | 'workers' | 'listJobs' | 'getJobsSettled' | 'queueStats' | 'recordPlannerRound' | 'plannerState' | 'serverTime'> & {
  modelDemand(pool: string, range: { from: number; to: number }): Promise<DemandBucket[]>;
  machineCommand(pool: string, machine: string, command: ModelCommand): Promise<string>;
};

export interface PlannerOptions {
  broker: PlannerBroker;
  logger: Logger;
  config?: PlannerConfigInput;
  /** now (ms): Redis's clock by default; the simulator's virtual one in a simulation */
  now?: () => Promise<number>;
}

/** What one round did in one pool. */
export interface PoolRound {
  pool: string;
  now: number;
  /** decisions sent (and recorded) */
  sent: PlacementDecision[];
  /** decisions dropped at the last check, with why */
  dropped: Array<{ decision: PlacementDecision; why: string }>;
  skipped: Array<{ model: string; reason: string }>;
  capacity: PlannerCapacity;
}

/**
 * The planner: every `intervalMs`, for each pool, forecasts demand per model
 * from the broker's demand counters, plans placement over the pool's machines,
 * sends the prefetch / evict commands through the machine command channel and
 * records each as a planner.decision event, with the round (forecast, capacity
 * hint, last decisions) in the pool's planner hash.
 */
export class Planner {
  readonly config: PlannerConfig;
  readonly #broker: PlannerBroker;
  readonly #logger: Logger;
  readonly #now: () => Promise<number>;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<unknown> | undefined;
  #stopped = false;

  constructor(options: PlannerOptions) {
    this.config = plannerConfig(options.config);
    this.#broker = options.broker;
    this.#logger = options.logger;
    this.#now = options.now ?? (() => options.broker.serverTime());
  }

  /** Runs a round at once, then one every intervalMs until close(). */
  start(): void {
    const loop = async () => {
      if (this.#stopped) return;
      this.#running = this.runOnce().catch((error) => this.#logger.error({ err: error }, 'planning round failed'));
      await this.#running;
      if (!this.#stopped) this.#timer = setTimeout(loop, this.config.intervalMs);
    };
    void loop();
  }

  /** Stops the loop; a round in progress finishes first. */
  async close(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#running;
  }

  /** One planning round over every pool. */
  async runOnce(): Promise<PoolRound[]> {
    const pools = this.config.pools.length > 0 ? this.config.pools : await this.#broker.pools();
    const rounds: PoolRound[] = [];
    for (const pool of pools) {
      try {
        rounds.push(await this.planPool(pool));
      } catch (error) {
        this.#logger.error({ err: error, pool }, 'planning the pool failed');
      }
    }
    return rounds;
  }

  /** One round in one pool. */
  async planPool(pool: string): Promise<PoolRound> {
    const now = await this.#now();
    const c = this.config;
    // a day back and a horizon past it (yesterday's window), and the recent hour
    const from = now - DAY_MS - HOUR_MS;
    const [demand, machineEntries, workerEntries, previous] = await Promise.all([
      this.#broker.modelDemand(pool, { from, to: now }),
      this.#broker.machines(pool),
      this.#broker.workers(pool),
      this.#broker.plannerState(pool),
    ]);
    const machines = machineEntries.map((entry) => fleetMachine(pool, entry, workerEntries)).filter((m): m is FleetMachine => m !== null);
    const { forecasts, plan } = planRound({
      pool,
      demand,
      machines,
      history: previous?.decisions ?? [],
      now,
      forecast: { bucketMs: DEMAND_BUCKET_MS, horizonMs: c.horizonMs, seasonalWeight: c.seasonalWeight },
      policy: { maxCommandsPerMachine: c.maxCommandsPerMachine, holdMs: c.holdMs },
      warm: c.warmLoads,
    });

    const { sent, dropped } = await this.send(pool, plan.decisions);
    const capacity = await this.capacity(pool, now, demand, machines, workerEntries);
    const target = waitTargetMs(c, pool, this.#broker.config.pools);
    const round: PlannerRound = {
      forecast: forecasts.map(({ holt: _holt, ...f }) => f),
      capacity,
      waitTargetMs: target,
      decisions: sent.map(({ machine, action, model, reason, forecast }) => ({ machine, action, model, reason, forecast })),
    };
    await this.#broker.recordPlannerRound(pool, round);
    if (sent.length > 0 || dropped.length > 0) {
      this.#logger.info({ pool, sent: sent.length, dropped: dropped.length, skipped: plan.skipped.length }, 'planning round');
    }
    return { pool, now, sent, dropped, skipped: plan.skipped, capacity };
  }

  /**
   * Sends the plan, machine by machine, in its order (a machine's evictions
   * before the prefetch they make room for). Each eviction is checked again on
   * the machine record as it is now: a model a job took since the plan was made
   * is not evicted, and what the machine's plan still had for it is dropped.
   */
  private async send(pool: string, decisions: PlacementDecision[]): Promise<{ sent: PlacementDecision[]; dropped: PoolRound['dropped'] }> {
    const sent: PlacementDecision[] = [];
    const dropped: PoolRound['dropped'] = [];
    const byMachine = new Map<string, PlacementDecision[]>();
    for (const d of decisions) byMachine.set(d.machine, [...(byMachine.get(d.machine) ?? []), d]);
    for (const [machineId, list] of byMachine) {
      let blocked: string | undefined;
      for (const decision of list) {
        if (blocked) {
          dropped.push({ decision, why: blocked });
          continue;
        }
        if (decision.action === 'evict') {
          const entry = await this.#broker.machine(pool, machineId);
          const now = entry ? fleetMachine(pool, entry) : null;
          const why = now ? evictionBlocker(now, decision.model) : 'machine gone';
          if (why) {
            blocked = `${decision.model} on ${machineId} is ${why} now`;
            dropped.push({ decision, why: blocked });
            continue;
          }
        }
        if (this.config.dryRun) {
          sent.push({ ...decision, reason: `dry run, not sent: ${decision.reason}` });
          continue;
        }
        try {
          await this.#broker.machineCommand(pool, machineId, { action: decision.action, model: decision.model, by: this.config.by, reason: decision.reason });
          sent.push(decision);
        } catch (error) {
          blocked = `the ${decision.action} of ${decision.model} was refused: ${(error as Error).message}`;
          dropped.push({ decision, why: blocked });
          this.#logger.warn({ err: error, pool, machine_id: machineId, model: decision.model }, 'planner command refused');
        }
      }
    }
    return { sent, dropped };
  }

  /** The pool's capacity hint from the last hour's arrivals and the mean execution time of its finished jobs. */
  private async capacity(pool: string, now: number, demand: DemandBucket[], machines: FleetMachine[], workers: Awaited<ReturnType<PlannerBroker['workers']>>): Promise<PlannerCapacity> {
    const hourStart = now - HOUR_MS;
    const arrivals = demand.filter((b) => b.start >= hourStart && b.start < now).reduce((sum, b) => sum + (b.counts['*'] ?? 0), 0);
    const meanExecutionMs = await this.meanExecutionMs(pool, hourStart);
    const perMachine = workersPerMachine(pool, workers, machines);
    const hint = capacityHint({
      arrivals,
      windowMs: HOUR_MS,
      meanExecutionMs,
      waitTargetMs: waitTargetMs(this.config, pool, this.#broker.config.pools),
      percentile: this.config.percentile,
      workersPerMachine: perMachine,
    });
    return {
      ...hint,
      arrivals,
      meanExecutionMs: Math.round(meanExecutionMs),
      workersPerMachine: perMachine,
      readyMachines: machines.filter((m) => m.state === 'ready').length,
    };
  }

  /** Mean execution time (ms) of up to executionSample jobs of the pool that finished in the hour (0: none). */
  private async meanExecutionMs(pool: string, since: number): Promise<number> {
    const page = await this.#broker.listJobs({ pool, states: ['succeeded', 'failed'], since, limit: this.config.executionSample });
    const settled = await this.#broker.getJobsSettled(page.jobs.map((j) => j.id));
    const durations = settled
      .map((s) => (s.status === 'fulfilled' ? s.value : null))
      .filter((job): job is Job => job !== null)
      .map((job) => (job.timestamps.finished_at ?? 0) - (job.timestamps.started_at ?? Number.POSITIVE_INFINITY))
      .filter((ms) => ms >= 0 && Number.isFinite(ms));
    return durations.length === 0 ? 0 : durations.reduce((a, b) => a + b, 0) / durations.length;
  }
}

export type { PlannerDecision, PlannerState };
