import { type DemandBucket, type ForecastOptions, type ModelForecast, forecastDemand } from './forecast';
import { type FleetMachine, type PastDecision, type PlacementPlan, type PlacementPolicy, planPlacement } from './placement';

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
}

/**
 * One planning round of a pool, as the planner service runs it and the fleet
 * simulator can under its virtual clock: the forecast per model, then the placement.
 */
export function planRound(input: PlanningRoundInput): { forecasts: ModelForecast[]; plan: PlacementPlan } {
  const forecasts = forecastDemand(input.demand, input.now, input.forecast);
  const plan = planPlacement({ pool: input.pool, machines: input.machines, forecasts, history: input.history ?? [], now: input.now, policy: input.policy });
  return { forecasts, plan };
}
