import { describe, expect, it } from 'vitest';
import type { ModelForecast } from './forecast';
import { type FleetMachine, type PastDecision, type PlacementDecision, knownModelSizes } from './placement';
import { planRound } from './round';
import { type WarmInput, planWarmLoads } from './warm';

const GB = 1024 ** 3;
const NOW = Date.UTC(2026, 0, 10, 12, 0, 0);

function forecast(model: string, rate: number): ModelForecast {
  return { model, rate, current: rate, lastHour: Math.round(rate * 12), holt: rate, method: 'holt', explanation: 'test' };
}

/** An idle ready machine with an 80 GB GPU and the models on disk (extra fields per model: loaded, in_use, last_used). */
function machine(id: string, models: Array<[name: string, gb: number, extra?: Partial<FleetMachine['models'][number]>]> = [], extra: Partial<FleetMachine> = {}): FleetMachine {
  return {
    id,
    state: 'ready',
    budgetBytes: 250 * GB,
    models: models.map(([name, size, more]) => ({ name, size_bytes: size * GB, last_used: NOW - 60_000, ...more })),
    downloading: [],
    gpuMemoryBytes: 80 * GB,
    idle: true,
    ...extra,
  };
}

function warm(input: Partial<WarmInput> & Pick<WarmInput, 'machines' | 'forecasts' | 'wanted'>) {
  return planWarmLoads({ pool: 'heavy', now: NOW, sizes: knownModelSizes(input.machines), placed: [], ...input });
}

const loads = (decisions: PlacementDecision[]) => decisions.filter((d) => d.action === 'load').map((d) => `${d.machine} ${d.model}`);

describe('planWarmLoads', () => {
  it('loads a forecast-hot model into an idle machine that holds it on disk, up to the wanted copies, with why', () => {
    const machines = [machine('m1', [['video', 28]]), machine('m2', [['video', 28]]), machine('m3', [['video', 28]])];
    const result = warm({ machines, forecasts: [forecast('video', 4)], wanted: { video: 2 } });
    expect(loads(result.decisions)).toEqual(['m1 video', 'm2 video']);
    expect(result.decisions[0]!.reason).toMatch(/forecast 4\/bucket \(holt\), 0 of 2 loaded copies wanted in heavy; idle, on disk; 28.0 GB fits \(80.0 GB of GPU memory free\)/);
    expect(result.decisions[0]!.forecast).toBe(4);
  });

  it('counts copies already loaded: none when the wanted copies are in GPU memory', () => {
    const machines = [machine('m1', [['video', 28, { loaded: true }]]), machine('m2', [['video', 28]])];
    expect(warm({ machines, forecasts: [forecast('video', 4)], wanted: { video: 1 } }).decisions).toEqual([]);
    expect(loads(warm({ machines, forecasts: [forecast('video', 4)], wanted: { video: 2 } }).decisions)).toEqual(['m2 video']);
  });

  it('plans loads on idle machines only: not on a busy one, nor one whose idleness or GPU memory is unknown, nor one not ready', () => {
    const machines = [
      machine('busy', [['video', 28]], { idle: false, inUse: ['other'] }),
      machine('unknown', [['video', 28]], { idle: undefined }),
      machine('no-gpu', [['video', 28]], { gpuMemoryBytes: undefined }),
      machine('draining', [['video', 28]], { state: 'draining' }),
    ];
    expect(warm({ machines, forecasts: [forecast('video', 4)], wanted: { video: 4 } }).decisions).toEqual([]);
  });

  it('loads only models with a forecast, and only those the machine holds or has coming', () => {
    const machines = [machine('m1', [['cold', 5], ['hot', 5]])];
    const sizes = new Map([['cold', 5 * GB], ['hot', 5 * GB], ['elsewhere', 5 * GB]]);
    const result = warm({ machines, sizes, forecasts: [forecast('cold', 0), forecast('hot', 2), forecast('elsewhere', 9)], wanted: { cold: 1, hot: 1, elsewhere: 1 } });
    expect(loads(result.decisions)).toEqual(['m1 hot']);
  });

  it('follows a prefetch: one decided this round, one sent within the hold time, or a download under way', () => {
    const sizes = new Map([['video', 28 * GB]]);
    const forecasts = [forecast('video', 4)];
    const prefetch: PlacementDecision = { machine: 'm1', pool: 'heavy', action: 'prefetch', model: 'video', reason: 'test', forecast: 4 };
    const thisRound = warm({ machines: [machine('m1')], sizes, forecasts, wanted: { video: 1 }, placed: [prefetch] });
    expect(loads(thisRound.decisions)).toEqual(['m1 video']);
    expect(thisRound.decisions[0]!.reason).toMatch(/once its prefetch lands/);
    const sent: PastDecision = { machine: 'm1', action: 'prefetch', model: 'video', ts: NOW - 60_000 };
    expect(loads(warm({ machines: [machine('m1')], sizes, forecasts, wanted: { video: 1 }, history: [sent] }).decisions)).toEqual(['m1 video']);
    expect(loads(warm({ machines: [machine('m1', [], { downloading: ['video'] })], sizes, forecasts, wanted: { video: 1 } }).decisions)).toEqual(['m1 video']);
    // a prefetch sent longer ago than the hold time that never showed up is not followed
    expect(warm({ machines: [machine('m1')], sizes, forecasts, wanted: { video: 1 }, history: [{ ...sent, ts: NOW - 60 * 60_000 }] }).decisions).toEqual([]);
  });

  it('never displaces a model in use, a hotter one, or one that would fall below its wanted loaded copies', () => {
    const small = (extra: Partial<FleetMachine> = {}) => ({ gpuMemoryBytes: 24 * GB, ...extra });
    const forecasts = [forecast('hot', 5), forecast('old', 1)];
    // 24 GB: old (16 GB) loaded leaves 8 GB, hot (12 GB) needs old to go
    const inUse = warm({ machines: [machine('m1', [['hot', 12], ['old', 16, { loaded: true, in_use: true }]], small())], forecasts, wanted: { hot: 1, old: 0 } });
    expect(inUse.decisions).toEqual([]);
    expect(inUse.skipped[0]!.reason).toMatch(/old is in use/);
    const hotter = warm({ machines: [machine('m1', [['hot', 12], ['old', 16, { loaded: true }]], small())], forecasts: [forecast('hot', 5), forecast('old', 9)], wanted: { hot: 1, old: 0 } });
    expect(hotter.decisions).toEqual([]);
    expect(hotter.skipped[0]!.reason).toMatch(/as hot as hot or hotter/);
    const lastCopy = warm({ machines: [machine('m1', [['hot', 12], ['old', 16, { loaded: true }]], small())], forecasts, wanted: { hot: 1, old: 1 } });
    expect(lastCopy.decisions).toEqual([]);
    expect(lastCopy.skipped[0]!.reason).toMatch(/old would fall below its wanted loaded copies/);
    // colder, not in use, a spare copy elsewhere: it may go
    const spare = warm({
      machines: [machine('m1', [['hot', 12], ['old', 16, { loaded: true }]], small()), machine('m2', [['old', 16, { loaded: true }]], small({ idle: false }))],
      forecasts,
      wanted: { hot: 1, old: 1 },
    });
    expect(loads(spare.decisions)).toEqual(['m1 hot']);
    expect(spare.decisions[0]!.reason).toMatch(/letting go of old \(forecast 1\/bucket\)/);
  });

  it('lets go of the least recently used loaded models first, as the backends do', () => {
    const machines = [
      machine('m1', [['hot', 10], ['a', 7, { loaded: true, last_used: NOW - 1_000 }], ['b', 7, { loaded: true, last_used: NOW - 9_000 }], ['c', 7, { loaded: true, last_used: NOW - 5_000 }]], { gpuMemoryBytes: 24 * GB }),
    ];
    const result = warm({ machines, forecasts: [forecast('hot', 5)], wanted: { hot: 1 } });
    expect(result.decisions[0]!.reason).toMatch(/letting go of b \(forecast 0\/bucket\)$/);
  });

  it('does not thrash: a load sent within the hold time counts as loaded, and a model the planner loaded is not displaced within it', () => {
    const machines = [machine('m1', [['video', 28]]), machine('m2', [['video', 28]])];
    const first = warm({ machines, forecasts: [forecast('video', 4)], wanted: { video: 1 } });
    expect(loads(first.decisions)).toEqual(['m1 video']);
    const history = first.decisions.map((d) => ({ machine: d.machine, action: d.action, model: d.model, ts: NOW }));
    // the next round (30 s later): the load is on its way, not sent again, not sent to another machine
    expect(planWarmLoads({ pool: 'heavy', machines, forecasts: [forecast('video', 4)], wanted: { video: 1 }, sizes: knownModelSizes(machines), placed: [], history, now: NOW + 30_000 }).decisions).toEqual([]);

    const gpu = { gpuMemoryBytes: 24 * GB };
    const loadedByPlanner = [machine('m1', [['hot', 12], ['old', 16, { loaded: true }]], gpu), machine('m2', [['old', 16, { loaded: true }]], { ...gpu, idle: false })];
    const recent: PastDecision[] = [{ machine: 'm1', action: 'load', model: 'old', ts: NOW - 60_000 }];
    const held = warm({ machines: loadedByPlanner, forecasts: [forecast('hot', 5), forecast('old', 1)], wanted: { hot: 1, old: 1 }, history: recent });
    expect(held.decisions).toEqual([]);
    expect(held.skipped[0]!.reason).toMatch(/old was loaded within the hold time/);
    const later = warm({ machines: loadedByPlanner, forecasts: [forecast('hot', 5), forecast('old', 1)], wanted: { hot: 1, old: 1 }, history: [{ ...recent[0]!, ts: NOW - 60 * 60_000 }] });
    expect(loads(later.decisions)).toEqual(['m1 hot']);
  });

  it('shares the machine command budget with the round\'s placement', () => {
    const placed: PlacementDecision[] = ['x', 'y'].map((model) => ({ machine: 'm1', pool: 'heavy', action: 'prefetch', model, reason: 'test', forecast: 1 }));
    const machines = [machine('m1', [['video', 28]])];
    expect(warm({ machines, forecasts: [forecast('video', 4)], wanted: { video: 1 }, placed, policy: { maxCommandsPerMachine: 2 } }).decisions).toEqual([]);
    expect(loads(warm({ machines, forecasts: [forecast('video', 4)], wanted: { video: 1 }, placed, policy: { maxCommandsPerMachine: 3 } }).decisions)).toEqual(['m1 video']);
  });

  it('never plans a model larger than the GPU', () => {
    const result = warm({ machines: [machine('m1', [['huge', 90]])], forecasts: [forecast('huge', 4)], wanted: { huge: 1 } });
    expect(result.decisions).toEqual([]);
  });
});

describe('planRound with warm loads', () => {
  const demand = Array.from({ length: 12 }, (_, i) => ({ start: NOW - (12 - i) * 300_000, counts: { video: 4, '*': 4 } }));

  it('plans the loads after the placement, and not at all with warm: false', () => {
    const machines = [machine('m1', [['video', 28]]), machine('m2')];
    const { plan } = planRound({ pool: 'heavy', demand, machines, now: NOW });
    expect(plan.decisions.map((d) => `${d.action} ${d.machine} ${d.model}`)).toEqual(['prefetch m2 video', 'load m1 video', 'load m2 video']);
    const { plan: diskOnly } = planRound({ pool: 'heavy', demand, machines, now: NOW, warm: false });
    expect(diskOnly.decisions.map((d) => `${d.action} ${d.machine} ${d.model}`)).toEqual(['prefetch m2 video']);
  });

  it('placement is not fooled by a load in its history: a prefetch in flight still counts as a copy on its way', () => {
    const machines = [machine('m1', [['video', 28]]), machine('m2')];
    const history: PastDecision[] = [
      { machine: 'm2', action: 'prefetch', model: 'video', ts: NOW - 60_000 },
      { machine: 'm2', action: 'load', model: 'video', ts: NOW - 60_000 },
    ];
    const { plan } = planRound({ pool: 'heavy', demand, machines, history, now: NOW });
    expect(plan.decisions.map((d) => `${d.action} ${d.machine} ${d.model}`)).toEqual(['load m1 video']);
  });
});
