import { parseWith } from '@emp/core';
import { z } from 'zod';

const SECOND = 1_000;
const MINUTE = 60 * SECOND;

/** A pool's wait target when neither the planner's settings nor the pool config (target_wait_s) name one. */
export const DEFAULT_WAIT_TARGET_MS = 10 * SECOND;

export const PlannerConfig = z
  .object({
    /** how often a planning round runs over every pool */
    intervalMs: z.number().int().min(100).default(30 * SECOND),
    /** the pools planned (empty: every pool the broker knows, looked up each round) */
    pools: z.array(z.string().min(1)).default([]),
    /**
     * wait target per pool (ms), `*` for the pools not named: overrides of the pool
     * config's target_wait_s (docs/pools.md), which is used otherwise
     */
    waitTargetsMs: z.record(z.string(), z.number().int().positive()).default({}),
    /** the share of jobs that must meet the wait target (the capacity hint's percentile) */
    percentile: z.number().gt(0).lt(1).default(0.95),
    /** how far ahead the forecast looks: about a model download, so a copy is ready when demand comes */
    horizonMs: z.number().int().min(60 * SECOND).default(15 * MINUTE),
    /** weight of yesterday's demand in the forecast when a day of history exists */
    seasonalWeight: z.number().min(0).max(1).default(0.5),
    /** commands per machine per round */
    maxCommandsPerMachine: z.number().int().min(1).max(20).default(2),
    /** a model is not evicted within this long of being prefetched on a machine, nor prefetched back this long after an eviction */
    holdMs: z.number().int().min(0).default(15 * MINUTE),
    /** finished jobs sampled per pool for the mean execution time of the last hour */
    executionSample: z.number().int().min(1).max(500).default(200),
    /** who the commands are from, as machine.command events show it */
    by: z.string().min(1).default('planner'),
    /** plan and record (each reason says `dry run, not sent`), but send no command: an operator trying it out */
    dryRun: z.boolean().default(false),
    /** also load forecast-hot models into idle machines' GPU memory (`load` commands; docs/planner.md, "Warm loads") */
    warmLoads: z.boolean().default(true),
  })
  .strict();
export type PlannerConfig = z.output<typeof PlannerConfig>;
export type PlannerConfigInput = z.input<typeof PlannerConfig>;

export function plannerConfig(input: PlannerConfigInput = {}): PlannerConfig {
  return parseWith(PlannerConfig, input, 'planner config');
}

/** The wait target of a pool: the planner's own setting for it, else the pool config's target_wait_s, else `*`, else 10 s. */
export function waitTargetMs(config: PlannerConfig, pool: string, pools: ReadonlyArray<{ name: string; target_wait_s: number }> = []): number {
  const configured = pools.find((p) => p.name === pool)?.target_wait_s;
  return config.waitTargetsMs[pool] ?? (configured !== undefined ? configured * 1_000 : undefined) ?? config.waitTargetsMs['*'] ?? DEFAULT_WAIT_TARGET_MS;
}

/**
 * Settings from the environment (EMP_PLANNER_*), for `main.ts`: INTERVAL_MS, POOLS (comma-separated),
 * WAIT_TARGETS_MS (`fast=2000,*=10000`), PERCENTILE, HORIZON_MS, SEASONAL_WEIGHT, MAX_COMMANDS, HOLD_MS, DRY_RUN,
 * WARM_LOADS (0 or false: prefetch and evict only).
 */
export function configFromEnv(env: NodeJS.ProcessEnv): PlannerConfigInput {
  const input: Record<string, unknown> = {};
  const num = (name: string, key: string) => {
    const value = env[`EMP_PLANNER_${name}`];
    if (value !== undefined && value !== '') input[key] = Number(value);
  };
  num('INTERVAL_MS', 'intervalMs');
  num('PERCENTILE', 'percentile');
  num('HORIZON_MS', 'horizonMs');
  num('SEASONAL_WEIGHT', 'seasonalWeight');
  num('MAX_COMMANDS', 'maxCommandsPerMachine');
  num('HOLD_MS', 'holdMs');
  if (env.EMP_PLANNER_POOLS) input.pools = env.EMP_PLANNER_POOLS.split(',').map((s) => s.trim()).filter(Boolean);
  if (env.EMP_PLANNER_WAIT_TARGETS_MS) {
    input.waitTargetsMs = Object.fromEntries(
      env.EMP_PLANNER_WAIT_TARGETS_MS.split(',').map((pair) => {
        const [pool, ms] = pair.split('=');
        return [pool!.trim(), Number(ms)];
      }),
    );
  }
  const dry = env.EMP_PLANNER_DRY_RUN;
  if (dry !== undefined) input.dryRun = dry === '1' || dry === 'true';
  const warm = env.EMP_PLANNER_WARM_LOADS;
  if (warm !== undefined && warm !== '') input.warmLoads = !(warm === '0' || warm === 'false');
  return input as PlannerConfigInput;
}
