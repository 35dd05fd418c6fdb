import { type DemandBucket, type ForecastOptions, type ModelForecast, forecastDemand } from './forecast';
import { type FleetMachine, type PastDecision, type PlacementPlan, type PlacementPolicy, knownModelSizes, planPlacement } from './placement';
import { planWarmLoads } from './warm';

export interface PlanningRoundInput {
  pool: string;
  /** the pool's demand buckets: the last hour and the same hours yesterday at least */
  demand: readonly DemandBucket[];
  machines: FleetMachine[];
  /** the pool's recent decisions (the planner's record), for hysteresis and commands in flight */
  history?: PastDecision[];
  now: number;
  forecast?: Partial<ForecastOptions>;
  policy?: Partial<PlacementPolicy>;
  /** also load forecast-hot models into idle machines' GPU memory (warm.ts); default true */
  warm?: boolean;
}

/**
 * One planning round of a pool, as the planner service runs it and the fleet
 * simulator can under its virtual clock: the forecast per model, then the
 * placement on disk, then the warm loads into idle GPUs (after the machine's
 * placement decisions, so a load can follow a prefetch of the same round).
 */
export function planRound(input: PlanningRoundInput): { forecasts: ModelForecast[]; plan: PlacementPlan } {
  const forecasts = forecastDemand(input.demand, input.now, input.forecast);
  const history = input.history ?? [];
  // the sizes the machines report, read once for the placement and the loads
  const sizes = knownModelSizes(input.machines);
  const plan = planPlacement({ pool: input.pool, machines: input.machines, forecasts, history, now: input.now, policy: input.policy, sizes });
  if (input.warm === false) return { forecasts, plan };
  const warm = planWarmLoads({
    pool: input.pool,
    machines: input.machines,
    forecasts,
    wanted: plan.wanted,
    sizes,
    placed: plan.decisions,
    history,
    now: input.now,
    policy: input.policy,
  });
  return { forecasts, plan: { ...plan, decisions: [...plan.decisions, ...warm.decisions], skipped: [...plan.skipped, ...warm.skipped] } };
}
