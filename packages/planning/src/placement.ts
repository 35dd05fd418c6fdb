/**
 * Model placement over one pool's machines: which machine should prefetch or
 * evict which model this round, given the demand forecast. Pure: the fleet,
 * the forecast, the recent decisions and `now` come from the caller.
 *
 * Rules (docs/planner.md):
 * - copies wanted per model = round(its share of the forecast x machines), at
 *   least 1 for a model with demand in the last hour (or forecast), at most
 *   the machines of the pool;
 * - a missing copy is prefetched on the machine with the most free budget
 *   (machines where it fits without evicting first);
 * - room is made by evicting, lowest forecast first then least recently used,
 *   only models not in use, not loaded, not downloading, whose forecast is
 *   below the incoming model's and that keep their own wanted copies;
 * - never past a machine's budget (downloads in progress count as used);
 * - at most `maxCommandsPerMachine` commands per machine per round;
 * - hysteresis: a model is not evicted from a machine within `holdMs` of being
 *   prefetched there, nor prefetched back within `holdMs` of being evicted;
 * - a command sent within `holdMs` that the machine record does not show yet
 *   counts as done (a prefetch holds its copy and its size), so it is not sent again.
 */

import type { ModelForecast } from './forecast';

/** A model on a machine's disk, as the machine's registry record lists it. */
export interface PlacedModel {
  name: string;
  size_bytes?: number;
  last_used?: number;
  in_use?: boolean;
  loaded?: boolean;
}

export interface FleetMachine {
  id: string;
  /** the agent's state: only `ready` machines get commands */
  state?: string;
  /** the model cache's budget (bytes); without it nothing is planned for the machine */
  budgetBytes?: number;
  /** what the cache holds (bytes) */
  usedBytes?: number;
  models: PlacedModel[];
  /** models being downloaded */
  downloading: string[];
  /** names of models jobs hold right now (beside `in_use` on each model) */
  inUse?: string[];
  /** memory of the GPU a model is loaded into (bytes; the smallest of the machine's GPUs); without it no load is planned for the machine */
  gpuMemoryBytes?: number;
  /** no job runs on any of its workers: only then does the planner load a model into its GPU (warm.ts); unknown counts as busy */
  idle?: boolean;
}

/** prefetch / evict: the model cache on disk (this file); load: a model on disk into an idle GPU's memory (warm.ts) */
export type PlacementAction = 'prefetch' | 'evict' | 'load';

export interface PlacementDecision {
  machine: string;
  pool: string;
  action: PlacementAction;
  model: string;
  reason: string;
  /** the model's forecast rate (jobs per bucket) when decided */
  forecast: number;
}

/** A decision already made (for hysteresis): what, where and when. */
export interface PastDecision {
  machine: string;
  action: PlacementAction;
  model: string;
  /** when it was decided (ms) */
  ts: number;
}

export interface PlacementPolicy {
  /** commands per machine per round */
  maxCommandsPerMachine: number;
  /** a model prefetched to a machine is not evicted from it for this long, nor prefetched back this long after an eviction (ms) */
  holdMs: number;
}

export const DEFAULT_PLACEMENT_POLICY: PlacementPolicy = { maxCommandsPerMachine: 2, holdMs: 15 * 60 * 1_000 };

export interface PlacementInput {
  pool: string;
  machines: FleetMachine[];
  forecasts: ModelForecast[];
  /** model sizes known from any machine's record (else read from `machines`) */
  sizes?: Map<string, number>;
  /** recent decisions, for hysteresis */
  history?: PastDecision[];
  now: number;
  policy?: Partial<PlacementPolicy>;
}

export interface PlacementPlan {
  decisions: PlacementDecision[];
  /** copies wanted per model */
  wanted: Record<string, number>;
  /** models that wanted a copy and could not get one, with why */
  skipped: Array<{ model: string; reason: string }>;
}

/** The largest size any machine reports for each model. */
export function knownModelSizes(machines: readonly FleetMachine[]): Map<string, number> {
  const sizes = new Map<string, number>();
  for (const machine of machines) {
    for (const model of machine.models) {
      if (model.size_bytes !== undefined && model.size_bytes > 0) sizes.set(model.name, Math.max(sizes.get(model.name) ?? 0, model.size_bytes));
    }
  }
  return sizes;
}

/** Copies wanted per model: its forecast share of the pool's machines (rounded), 1..machines for any model with demand. */
export function wantedCopies(forecasts: readonly ModelForecast[], machineCount: number): Record<string, number> {
  const wanted: Record<string, number> = {};
  const total = forecasts.reduce((sum, f) => sum + f.rate, 0);
  for (const f of forecasts) {
    if (f.rate <= 0 && f.lastHour <= 0) continue;
    const share = total > 0 ? f.rate / total : 0;
    wanted[f.model] = Math.min(machineCount, Math.max(1, Math.round(share * machineCount)));
  }
  return wanted;
}

const GB = 1024 ** 3;
const gb = (bytes: number) => `${(bytes / GB).toFixed(1)} GB`;

interface MachinePlan {
  machine: FleetMachine;
  free: number;
  commands: number;
  holds: Set<string>;
}

export function planPlacement(input: PlacementInput): PlacementPlan {
  const policy = { ...DEFAULT_PLACEMENT_POLICY, ...input.policy };
  const { pool, now } = input;
  const sizes = input.sizes ?? knownModelSizes(input.machines);
  const history = input.history ?? [];
  const forecastOf = new Map(input.forecasts.map((f) => [f.model, f]));
  const rateOf = (model: string) => forecastOf.get(model)?.rate ?? 0;
  const recently = (machine: string, model: string, action: PlacementAction) =>
    history.some((d) => d.machine === machine && d.model === model && d.action === action && now - d.ts < policy.holdMs);

  /** the machine's commands sent within holdMs, the newest per model only (an evict after a prefetch wins) */
  const inFlight = (machine: string): PastDecision[] => {
    const newest = new Map<string, PastDecision>();
    for (const d of history) {
      // a load (warm.ts) changes GPU memory, not what the disk holds
      if (d.machine !== machine || d.action === 'load' || now - d.ts >= policy.holdMs) continue;
      const seen = newest.get(d.model);
      if (!seen || d.ts >= seen.ts) newest.set(d.model, d);
    }
    return [...newest.values()];
  };
  const skipped: PlacementPlan['skipped'] = [];
  const usable = input.machines.filter((m) => (m.state ?? 'ready') === 'ready');
  const plans: MachinePlan[] = [];
  for (const machine of usable) {
    if (machine.budgetBytes === undefined) continue;
    const onDisk = machine.models.reduce((sum, m) => sum + (m.size_bytes ?? sizes.get(m.name) ?? 0), 0);
    const listed = new Set(machine.models.map((m) => m.name));
    const incoming = machine.downloading.filter((name) => !listed.has(name)).reduce((sum, name) => sum + (sizes.get(name) ?? 0), 0);
    const used = Math.max(machine.usedBytes ?? 0, onDisk) + incoming;
    const plan: MachinePlan = { machine, free: machine.budgetBytes - used, commands: 0, holds: new Set([...listed, ...machine.downloading]) };
    // commands sent within holdMs that the record does not show yet count as done: a prefetch
    // is a copy on its way (its size reserved), an evict a copy going, so a round does not send them again
    for (const d of inFlight(machine.id)) {
      const size = sizes.get(d.model) ?? 0;
      if (d.action === 'prefetch' && !plan.holds.has(d.model)) {
        plan.holds.add(d.model);
        plan.free -= size;
      } else if (d.action === 'evict' && listed.has(d.model) && plan.holds.has(d.model)) {
        plan.holds.delete(d.model);
        plan.free += size;
      }
    }
    plans.push(plan);
  }

  const demand = input.forecasts.filter((f) => f.model !== '*' && !f.model.startsWith('service:'));
  const wanted = wantedCopies(demand, usable.length);
  const copies = new Map<string, number>();
  for (const plan of plans) for (const model of plan.holds) copies.set(model, (copies.get(model) ?? 0) + 1);
  // machines without a budget still hold copies
  for (const machine of usable) {
    if (plans.some((p) => p.machine === machine)) continue;
    for (const model of new Set([...machine.models.map((m) => m.name), ...machine.downloading])) copies.set(model, (copies.get(model) ?? 0) + 1);
  }

  const decisions: PlacementDecision[] = [];
  const decide = (plan: MachinePlan, action: PlacementAction, model: string, reason: string) => {
    decisions.push({ machine: plan.machine.id, pool, action, model, reason, forecast: rateOf(model) });
    plan.commands += 1;
    if (action === 'prefetch') plan.holds.add(model);
    else plan.holds.delete(model);
    copies.set(model, (copies.get(model) ?? 0) + (action === 'prefetch' ? 1 : -1));
  };

  const hottest = [...demand].sort((a, b) => b.rate - a.rate || a.model.localeCompare(b.model));
  for (const f of hottest) {
    const want = wanted[f.model] ?? 0;
    if ((copies.get(f.model) ?? 0) >= want) continue;
    const size = sizes.get(f.model);
    if (size === undefined) {
      skipped.push({ model: f.model, reason: 'size unknown: no machine of the pool reports it' });
      continue;
    }
    let lastWhy = 'no machine of the pool with a known budget';
    while ((copies.get(f.model) ?? 0) < want) {
      // machines it would fit on, without evicting first, then the most free budget
      const candidates = plans
        .filter((p) => !p.holds.has(f.model) && p.commands < policy.maxCommandsPerMachine && p.machine.budgetBytes! >= size)
        .filter((p) => !recently(p.machine.id, f.model, 'evict'))
        .sort((a, b) => Number(b.free >= size) - Number(a.free >= size) || b.free - a.free || a.machine.id.localeCompare(b.machine.id));
      let placed = false;
      for (const plan of candidates) {
        const evictions = plan.free >= size ? [] : roomFor(plan, f, size);
        if (evictions === undefined) {
          lastWhy = `no room: ${plan.machine.id} has ${gb(plan.free)} free and nothing evictable colder than ${f.model}`;
          continue;
        }
        if (plan.commands + evictions.length + 1 > policy.maxCommandsPerMachine) {
          lastWhy = `${plan.machine.id} would need more than ${policy.maxCommandsPerMachine} commands this round`;
          continue;
        }
        for (const victim of evictions) {
          decide(plan, 'evict', victim.name, `make room for ${f.model} (${gb(size)}): ${victim.name} forecast ${rateOf(victim.name)}/bucket, last used ${victim.last_used ? new Date(victim.last_used).toISOString() : 'never'}`);
          plan.free += victim.size_bytes ?? sizes.get(victim.name) ?? 0;
        }
        plan.free -= size;
        decide(plan, 'prefetch', f.model, `forecast ${f.rate}/bucket (${f.method}), ${copies.get(f.model) ?? 0} of ${want} copies wanted in ${pool}; ${gb(size)} fits (${gb(plan.free + size)} free)`);
        placed = true;
        break;
      }
      if (!placed) {
        if (candidates.length === 0) lastWhy = `every machine of ${pool} holds it, is busy with commands this round, or evicted it recently`;
        skipped.push({ model: f.model, reason: `${copies.get(f.model) ?? 0} of ${want} copies: ${lastWhy}` });
        break;
      }
    }
  }
  return { decisions, wanted, skipped };

  /** Models to evict from the machine so that `size` fits, or undefined when it cannot be made to fit. */
  function roomFor(plan: MachinePlan, incoming: ModelForecast, size: number): PlacedModel[] | undefined {
    const inUse = new Set(plan.machine.inUse ?? []);
    const evictable = plan.machine.models
      .filter((m) => plan.holds.has(m.name) && !m.in_use && !m.loaded && !inUse.has(m.name) && !plan.machine.downloading.includes(m.name))
      .filter((m) => rateOf(m.name) < incoming.rate)
      .filter((m) => (copies.get(m.name) ?? 0) - 1 >= (wanted[m.name] ?? 0))
      .filter((m) => !recently(plan.machine.id, m.name, 'prefetch'))
      .sort((a, b) => rateOf(a.name) - rateOf(b.name) || (a.last_used ?? 0) - (b.last_used ?? 0) || a.name.localeCompare(b.name));
    const chosen: PlacedModel[] = [];
    let free = plan.free;
    for (const model of evictable) {
      if (free >= size) break;
      chosen.push(model);
      free += model.size_bytes ?? sizes.get(model.name) ?? 0;
    }
    return free >= size ? chosen : undefined;
  }
}
