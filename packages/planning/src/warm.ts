/**
 * Warm loads: which idle machine should load which forecast-hot model into its
 * GPU's memory this round, so that the next job of that model starts without
 * a load (tens of seconds: p50 23 s in the published trace). Placement
 * (placement.ts) puts copies on disk; this puts the hot ones in GPU memory.
 * Pure: the fleet, the forecast, the round's placement and `now` come from the caller.
 *
 * Rules (docs/planner.md, "Warm loads"):
 * - only a ready machine that is idle (no job runs on any of its workers) and
 *   reports its GPU memory gets a load; a machine whose idleness is unknown is busy;
 * - only a model with a forecast (rate > 0), hottest first, up to as many
 *   loaded copies in the pool as the placement wants copies on disk;
 * - the machine holds the model on disk, or a prefetch of it is under way
 *   (decided this round or within `holdMs`, or downloading): the agent loads
 *   it once the download lands;
 * - it fits in the GPU's memory beside what is loaded, or the models the GPU
 *   would let go (least recently used first, as the backends do) are none in
 *   use, each colder than it, each keeping its own wanted loaded copies, and
 *   none loaded by the planner within `holdMs` (no thrash);
 * - a load sent within `holdMs` counts as loaded (it is not sent again, and
 *   its memory is taken), as does a prefetch for placement;
 * - at most `maxCommandsPerMachine` commands per machine per round, the
 *   round's prefetches and evictions included.
 */

import type { ModelForecast } from './forecast';
import type { FleetMachine, PastDecision, PlacedModel, PlacementDecision, PlacementPolicy } from './placement';
import { DEFAULT_PLACEMENT_POLICY } from './placement';

export interface WarmInput {
  pool: string;
  machines: FleetMachine[];
  forecasts: ModelForecast[];
  /** copies wanted per model (the placement's): the loaded copies wanted too */
  wanted: Record<string, number>;
  sizes: Map<string, number>;
  /** the round's placement decisions (a load may follow a prefetch decided in it) */
  placed: PlacementDecision[];
  /** recent decisions, for hysteresis */
  history?: PastDecision[];
  now: number;
  policy?: Partial<PlacementPolicy>;
}

export interface WarmPlan {
  decisions: PlacementDecision[];
  /** hot models short of loaded copies that no idle machine could take, with why */
  skipped: Array<{ model: string; reason: string }>;
}

const GB = 1024 ** 3;
const gb = (bytes: number) => `${(bytes / GB).toFixed(1)} GB`;

interface GpuPlan {
  machine: FleetMachine;
  /** models loaded, or on their way (a load sent within holdMs or decided this round), by name */
  loaded: Map<string, PlacedModel>;
  /** what the disk holds or will (listed, downloading, prefetch in flight or decided this round) */
  coming: Set<string>;
  free: number;
  commands: number;
}

export function planWarmLoads(input: WarmInput): WarmPlan {
  const policy = { ...DEFAULT_PLACEMENT_POLICY, ...input.policy };
  const { pool, now, sizes, wanted } = input;
  const history = input.history ?? [];
  const forecastOf = new Map(input.forecasts.map((f) => [f.model, f]));
  const rateOf = (model: string) => forecastOf.get(model)?.rate ?? 0;
  const sizeOf = (model: PlacedModel) => model.size_bytes ?? sizes.get(model.name) ?? 0;
  const within = (d: PastDecision) => now - d.ts < policy.holdMs;
  const loadedByPlanner = (machine: string, model: string) => history.some((d) => d.machine === machine && d.model === model && d.action === 'load' && within(d));

  // the decisions within the hold time, read for every machine
  const recent = history.filter(within);
  const loadedCopies = new Map<string, number>();
  const plans: GpuPlan[] = [];
  for (const machine of input.machines) {
    if ((machine.state ?? 'ready') !== 'ready') continue;
    const loaded = new Map(machine.models.filter((m) => m.loaded).map((m) => [m.name, m]));
    for (const d of recent) {
      if (d.machine === machine.id && d.action === 'load' && !loaded.has(d.model)) loaded.set(d.model, { name: d.model, last_used: d.ts });
    }
    for (const name of loaded.keys()) loadedCopies.set(name, (loadedCopies.get(name) ?? 0) + 1);
    if (machine.idle !== true || machine.gpuMemoryBytes === undefined) continue;
    const coming = new Set([...machine.models.map((m) => m.name), ...machine.downloading]);
    for (const d of [...recent, ...input.placed]) {
      if (d.machine !== machine.id) continue;
      if (d.action === 'prefetch') coming.add(d.model);
    }
    // an eviction decided this round takes the copy away
    for (const d of input.placed) if (d.machine === machine.id && d.action === 'evict') coming.delete(d.model);
    const used = [...loaded.values()].reduce((sum, m) => sum + sizeOf(m), 0);
    const commands = input.placed.filter((d) => d.machine === machine.id).length;
    plans.push({ machine, loaded, coming, free: machine.gpuMemoryBytes - used, commands });
  }

  const decisions: PlacementDecision[] = [];
  const skipped: WarmPlan['skipped'] = [];
  const hottest = input.forecasts
    .filter((f) => f.rate > 0 && f.model !== '*' && !f.model.startsWith('service:'))
    .sort((a, b) => b.rate - a.rate || a.model.localeCompare(b.model));
  for (const f of hottest) {
    const want = wanted[f.model] ?? 0;
    const size = sizes.get(f.model);
    if ((loadedCopies.get(f.model) ?? 0) >= want || size === undefined) continue;
    let lastWhy = '';
    while ((loadedCopies.get(f.model) ?? 0) < want) {
      const candidates = plans
        .filter((p) => p.coming.has(f.model) && !p.loaded.has(f.model) && p.commands < policy.maxCommandsPerMachine && p.machine.gpuMemoryBytes! >= size)
        .sort((a, b) => Number(b.free >= size) - Number(a.free >= size) || b.free - a.free || a.machine.id.localeCompare(b.machine.id));
      let placed = false;
      for (const plan of candidates) {
        const displaced = plan.free >= size ? [] : displacedBy(plan, f, size);
        if (typeof displaced === 'string') {
          lastWhy = displaced;
          continue;
        }
        for (const victim of displaced) {
          plan.loaded.delete(victim.name);
          plan.free += sizeOf(victim);
          loadedCopies.set(victim.name, (loadedCopies.get(victim.name) ?? 1) - 1);
        }
        plan.loaded.set(f.model, { name: f.model, size_bytes: size, last_used: now });
        plan.free -= size;
        plan.commands += 1;
        loadedCopies.set(f.model, (loadedCopies.get(f.model) ?? 0) + 1);
        const where = plan.machine.models.some((m) => m.name === f.model) ? 'on disk' : 'once its prefetch lands';
        const room = displaced.length === 0 ? `${gb(size)} fits (${gb(plan.free + size)} of GPU memory free)` : `letting go of ${displaced.map((m) => `${m.name} (forecast ${rateOf(m.name)}/bucket)`).join(', ')}`;
        decisions.push({
          machine: plan.machine.id,
          pool,
          action: 'load',
          model: f.model,
          reason: `forecast ${f.rate}/bucket (${f.method}), ${(loadedCopies.get(f.model) ?? 1) - 1} of ${want} loaded copies wanted in ${pool}; idle, ${where}; ${room}`,
          forecast: f.rate,
        });
        placed = true;
        break;
      }
      if (!placed) {
        // with no idle machine holding it there is nothing to say: the placement's copies come first
        if (candidates.length > 0) skipped.push({ model: f.model, reason: `${loadedCopies.get(f.model) ?? 0} of ${want} loaded copies: ${lastWhy}` });
        break;
      }
    }
  }
  return { decisions, skipped };

  /** The loaded models the GPU would let go (least recently used first) for `size` to fit, or why it must not. */
  function displacedBy(plan: GpuPlan, incoming: ModelForecast, size: number): PlacedModel[] | string {
    const inUse = new Set(plan.machine.inUse ?? []);
    const order = [...plan.loaded.values()].sort((a, b) => (a.last_used ?? 0) - (b.last_used ?? 0) || a.name.localeCompare(b.name));
    const chosen: PlacedModel[] = [];
    let free = plan.free;
    for (const model of order) {
      if (free >= size) break;
      const id = plan.machine.id;
      if (model.in_use || inUse.has(model.name)) return `${id}: ${model.name} is in use`;
      if (rateOf(model.name) >= incoming.rate) return `${id}: ${model.name} (loaded) is as hot as ${incoming.model} or hotter`;
      if ((loadedCopies.get(model.name) ?? 0) - 1 < (wanted[model.name] ?? 0)) return `${id}: ${model.name} would fall below its wanted loaded copies`;
      if (loadedByPlanner(id, model.name)) return `${id}: ${model.name} was loaded within the hold time`;
      chosen.push(model);
      free += sizeOf(model);
    }
    return free >= size ? chosen : `${plan.machine.id}: ${gb(size)} does not fit in its GPU memory`;
  }
}
