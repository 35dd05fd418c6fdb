import { type PlannerCapacity, type PlannerDecision, type PlannerForecast, type PlannerState, decodePlannerState } from '../planner';
import { type BrokerContext, checkedPool } from './context';
import { type Arg, FUNCTIONS } from './functions';

/** One planning round of a pool, as the planner service records it. */
export interface PlannerRound {
  forecast: PlannerForecast[];
  capacity: PlannerCapacity;
  waitTargetMs: number;
  decisions: Array<Omit<PlannerDecision, 'ts'>>;
}

/** Records a round: one planner.decision event per decision, and the pool's planner hash. Returns how many decisions were recorded. */
export async function recordPlannerRound(ctx: BrokerContext, pool: string, round: PlannerRound): Promise<number> {
  const decisions: Arg[] = round.decisions.flatMap((d) => [d.machine, d.action, d.model, d.reason.slice(0, 500), d.forecast.toFixed(3)]);
  return ctx.calls.call(FUNCTIONS.plannerDecision, checkedPool(pool), [
    JSON.stringify(round.forecast),
    JSON.stringify(round.capacity),
    Math.round(round.waitTargetMs),
    round.decisions.length,
    ...decisions,
  ]);
}

/** The pool's planner hash, or null when no planner has run for it. */
export async function plannerState(ctx: BrokerContext, pool: string): Promise<PlannerState | null> {
  const hash = await ctx.redis.hgetall(ctx.keys.planner(checkedPool(pool)));
  return Object.keys(hash).length === 0 ? null : decodePlannerState(pool, hash);
}
