import { z } from 'zod';

/**
 * The planner's record of a pool (`<ns>:{<pool>}:planner`, written by the
 * function planner_decision once per planning round): what the planner service
 * wrote and what `emp planner`, GET /v1/planner, the monitor's Planner view and
 * the capacity metric read. The planning itself is @emp/planning's; these are
 * the shapes that cross Redis and HTTP.
 */

/** prefetch / evict: the model cache on disk; load: a model on disk into an idle GPU's memory (a warm load) */
export const PLANNER_ACTIONS = ['prefetch', 'evict', 'load'] as const;
export type PlannerAction = (typeof PLANNER_ACTIONS)[number];

/** One model's forecast as the planner stored it (jobs per 5-minute bucket). */
export const PlannerForecast = z
  .looseObject({
    model: z.string().min(1),
    /** forecast jobs per bucket over the planner's horizon */
    rate: z.number().nonnegative(),
    /** jobs in the last complete bucket */
    current: z.number().nonnegative(),
    /** jobs over the last hour */
    lastHour: z.number().nonnegative(),
    method: z.string(),
    explanation: z.string(),
    seasonal: z.number().optional(),
  })
  .meta({ id: 'PlannerForecast' });
export type PlannerForecast = z.infer<typeof PlannerForecast>;

/** A prefetch, evict or load command the planner sent, with why. */
export const PlannerDecision = z
  .object({
    ts: z.number().int(),
    machine: z.string(),
    action: z.enum(PLANNER_ACTIONS),
    model: z.string(),
    reason: z.string(),
    /** the model's forecast rate when decided */
    forecast: z.number(),
  })
  .meta({ id: 'PlannerDecision' });
export type PlannerDecision = z.infer<typeof PlannerDecision>;

/** The pool's capacity hint: machines that would have met the wait target over the last hour (M/M/c; docs/planner.md). */
export const PlannerCapacity = z
  .looseObject({
    machines: z.number().int().nonnegative(),
    servers: z.number().int().nonnegative(),
    offeredLoad: z.number().nonnegative(),
    waitExceedsTarget: z.number().min(0).max(1),
    explanation: z.string(),
    /** jobs that arrived in the hour */
    arrivals: z.number().int().nonnegative().optional(),
    /** mean execution time of the hour's jobs (ms) */
    meanExecutionMs: z.number().nonnegative().optional(),
    workersPerMachine: z.number().int().positive().optional(),
    /** machines of the pool that were ready when it was computed */
    readyMachines: z.number().int().nonnegative().optional(),
  })
  .meta({ id: 'PlannerCapacity' });
export type PlannerCapacity = z.infer<typeof PlannerCapacity>;

/** A pool's planner hash, decoded; a field that cannot be read is left out and said so in `problems`. */
export const PlannerState = z
  .object({
    pool: z.string(),
    /** when the last round ran (ms) */
    run_at: z.number().int().optional(),
    wait_target_ms: z.number().int().optional(),
    forecast: z.array(PlannerForecast),
    capacity: PlannerCapacity.optional(),
    /** the last 50 decisions, oldest first */
    decisions: z.array(PlannerDecision),
    problems: z.array(z.string()),
  })
  .meta({ id: 'PlannerState' });
export type PlannerState = z.infer<typeof PlannerState>;

/** A pool's planner hash as stored, decoded field by field (an unreadable field never hides the others). */
export function decodePlannerState(pool: string, hash: Record<string, string>): PlannerState {
  const problems: string[] = [];
  const json = <S extends z.ZodType>(field: string, schema: S): z.output<S> | undefined => {
    const stored = hash[field];
    if (stored === undefined || stored === '') return undefined;
    try {
      const parsed = schema.safeParse(JSON.parse(stored));
      if (parsed.success) return parsed.data;
      problems.push(`${field}: ${parsed.error.issues[0]?.path.join('.')} ${parsed.error.issues[0]?.message}`);
    } catch {
      problems.push(`${field}: not JSON`);
    }
    return undefined;
  };
  const int = (field: string): number | undefined => {
    const stored = hash[field];
    if (stored === undefined || stored === '') return undefined;
    const n = Number(stored);
    if (Number.isInteger(n)) return n;
    problems.push(`${field}: ${JSON.stringify(stored)} is not a whole number`);
    return undefined;
  };
  // Lua's cjson writes an empty table as {}: no decisions
  const list = <S extends z.ZodType>(field: string, schema: S) => (hash[field] === '{}' ? [] : (json(field, z.array(schema)) ?? []));
  const state: PlannerState = {
    pool,
    forecast: list('forecast', PlannerForecast),
    decisions: list('decisions', PlannerDecision),
    problems,
  };
  const runAt = int('run_at');
  if (runAt !== undefined) state.run_at = runAt;
  const target = int('wait_target_ms');
  if (target !== undefined) state.wait_target_ms = target;
  const capacity = json('capacity', PlannerCapacity);
  if (capacity) state.capacity = capacity;
  return state;
}

/**
 * A cell of the placement matrix (model x machine): loaded in GPU memory, on
 * disk, downloading, planned (the planner's last word is a prefetch that has
 * not shown on the machine yet), evicting (its last word is an evict of a model
 * still there), loading (on disk, not loaded yet, and the planner sent a load
 * into the idle GPU), or absent.
 */
export const PLACEMENT_CELLS = ['loaded', 'on_disk', 'downloading', 'planned', 'evicting', 'loading', 'absent'] as const;
export type PlacementCell = (typeof PLACEMENT_CELLS)[number];

export const PlacementMatrix = z
  .object({
    /** the forecast's models first (hottest first), then the others on disk by name */
    models: z.array(z.string()),
    machines: z.array(
      z.object({
        id: z.string(),
        state: z.string().optional(),
        budget_bytes: z.number().optional(),
        used_bytes: z.number().optional(),
        /** per model of `models` */
        cells: z.record(z.string(), z.enum(PLACEMENT_CELLS)),
      }),
    ),
  })
  .meta({ id: 'PlacementMatrix' });
export type PlacementMatrix = z.infer<typeof PlacementMatrix>;

/** A pool's planner view: its planner state (absent fields: the planner has not run there) and the placement matrix. */
export const PlannerPoolReport = PlannerState.extend({ matrix: PlacementMatrix }).meta({ id: 'PlannerPoolReport' });
export type PlannerPoolReport = z.infer<typeof PlannerPoolReport>;

export const PlannerReport = z.object({ now: z.number().int(), pools: z.array(PlannerPoolReport) }).meta({ id: 'PlannerReport' });
export type PlannerReport = z.infer<typeof PlannerReport>;

/** What the matrix needs of a machine record (core's decoded MachineRecord fits). */
export interface MatrixMachine {
  id: string;
  state?: string;
  model_cache_budget_bytes?: number;
  model_cache_used_bytes?: number;
  models?: unknown;
  models_downloading?: unknown;
}

/** The placement matrix of a pool from its machine records and the planner's decisions. */
export function placementMatrix(state: Pick<PlannerState, 'forecast' | 'decisions'>, machines: readonly MatrixMachine[]): PlacementMatrix {
  const held = (m: MatrixMachine) => (Array.isArray(m.models) ? (m.models as Array<{ name: string; loaded?: boolean }>) : []);
  const downloading = (m: MatrixMachine) => (Array.isArray(m.models_downloading) ? (m.models_downloading as Array<{ model: string }>).map((d) => d.model) : []);
  const forecastModels = [...state.forecast].sort((a, b) => b.rate - a.rate || a.model.localeCompare(b.model)).map((f) => f.model);
  const others = new Set<string>();
  for (const m of machines) {
    for (const model of held(m)) others.add(model.name);
    for (const model of downloading(m)) others.add(model);
  }
  for (const d of state.decisions) others.add(d.model);
  const models = [...forecastModels, ...[...others].filter((m) => !forecastModels.includes(m)).sort()];
  // the last word about the disk (prefetch, evict), and the loads sent: a load after a prefetch leaves it planned
  const lastWord = new Map<string, PlannerAction>();
  const loadSent = new Set<string>();
  for (const d of state.decisions) {
    if (d.action === 'load') loadSent.add(`${d.machine}\u0000${d.model}`);
    else lastWord.set(`${d.machine}\u0000${d.model}`, d.action);
  }
  return {
    models,
    machines: [...machines]
      .sort((a, b) => a.id.localeCompare(b.id))
      .map((m) => {
        const disk = new Map(held(m).map((model) => [model.name, model]));
        const coming = new Set(downloading(m));
        const cells: Record<string, PlacementCell> = {};
        for (const model of models) {
          const word = lastWord.get(`${m.id}\u0000${model}`);
          const onDisk = disk.get(model);
          if (onDisk && word === 'evict') cells[model] = 'evicting';
          else if (onDisk) cells[model] = onDisk.loaded ? 'loaded' : loadSent.has(`${m.id}\u0000${model}`) ? 'loading' : 'on_disk';
          else if (coming.has(model)) cells[model] = 'downloading';
          else cells[model] = word === 'prefetch' ? 'planned' : 'absent';
        }
        const row: PlacementMatrix['machines'][number] = { id: m.id, cells };
        if (m.state !== undefined) row.state = m.state;
        if (m.model_cache_budget_bytes !== undefined) row.budget_bytes = m.model_cache_budget_bytes;
        if (m.model_cache_used_bytes !== undefined) row.used_bytes = m.model_cache_used_bytes;
        return row;
      }),
  };
}
