import { describe, expect, it } from 'vitest';
import type { ModelForecast } from './forecast';
import { type FleetMachine, type PlacementInput, planPlacement, wantedCopies } from './placement';

const GB = 1024 ** 3;
const NOW = Date.UTC(2026, 0, 10, 12, 0, 0);

function forecast(model: string, rate: number, lastHour = Math.round(rate * 12)): ModelForecast {
  return { model, rate, current: rate, lastHour, holt: rate, method: 'holt', explanation: 'test' };
}

function machine(id: string, budgetGb: number, models: Array<[name: string, gb: number, extra?: Partial<FleetMachine['models'][number]>]> = [], extra: Partial<FleetMachine> = {}): FleetMachine {
  return {
    id,
    state: 'ready',
    budgetBytes: budgetGb * GB,
    models: models.map(([name, size, more]) => ({ name, size_bytes: size * GB, last_used: NOW - 60_000, ...more })),
    downloading: [],
    ...extra,
  };
}

function plan(input: Partial<PlacementInput> & Pick<PlacementInput, 'machines' | 'forecasts'>) {
  return planPlacement({ pool: 'standard', now: NOW, ...input });
}

describe('wantedCopies', () => {
  it('gives copies by forecast share, at least one for any model with demand, at most the machines', () => {
    const wanted = wantedCopies([forecast('hot', 90), forecast('warm', 9), forecast('cold', 0, 1)], 10);
    expect(wanted).toEqual({ hot: 9, warm: 1, cold: 1 });
    expect(wantedCopies([forecast('only', 5)], 3)).toEqual({ only: 3 });
  });
});

describe('planPlacement', () => {
  it('prefetches a hot model where it is missing, on the machine with the most free budget', () => {
    const machines = [machine('m1', 100, [['sdxl', 10]]), machine('m2', 100, [['sdxl', 10], ['flux', 20]]), machine('m3', 30)];
    const result = plan({ machines, forecasts: [forecast('flux', 10)] });
    // flux wants all 3 machines (sole demand); m1 has 90 GB free, m3 30 GB
    expect(result.decisions.map((d) => [d.machine, d.action, d.model])).toEqual([
      ['m1', 'prefetch', 'flux'],
      ['m3', 'prefetch', 'flux'],
    ]);
    expect(result.decisions[0]!.reason).toMatch(/forecast 10\/bucket/);
    expect(result.decisions[0]!.forecast).toBe(10);
  });

  it('never plans past a machine budget: evicts a colder model that is not in use, or skips', () => {
    const machines = [machine('m1', 25, [['flux', 20]]), machine('m2', 25, [['old', 20]])];
    const result = plan({ machines, forecasts: [forecast('flux', 10), forecast('old', 0, 0)] });
    expect(result.decisions.map((d) => [d.machine, d.action, d.model])).toEqual([
      ['m2', 'evict', 'old'],
      ['m2', 'prefetch', 'flux'],
    ]);
    expect(result.decisions[0]!.reason).toMatch(/make room for flux/);
  });

  it('never evicts a model in use, loaded, or downloading', () => {
    for (const extra of [{ in_use: true }, { loaded: true }]) {
      const machines = [machine('m1', 25, [['flux', 20]]), machine('m2', 25, [['old', 20, extra]])];
      const result = plan({ machines, forecasts: [forecast('flux', 10)] });
      expect(result.decisions).toEqual([]);
      expect(result.skipped[0]!.reason).toMatch(/no room/);
    }
    const listedInUse = [machine('m1', 25, [['flux', 20]]), machine('m2', 25, [['old', 20]], { inUse: ['old'] })];
    expect(plan({ machines: listedInUse, forecasts: [forecast('flux', 10)] }).decisions).toEqual([]);
    const downloading = [machine('m1', 25, [['flux', 20]]), machine('m2', 25, [['old', 20]], { downloading: ['old'] })];
    expect(plan({ machines: downloading, forecasts: [forecast('flux', 10)] }).decisions).toEqual([]);
  });

  it('counts downloads in progress against the budget', () => {
    const machines = [machine('m1', 30, [['flux', 20]]), machine('m2', 30, [['sdxl', 10]], { downloading: ['big'] })];
    const sizes = new Map([['flux', 20 * GB], ['sdxl', 10 * GB], ['big', 15 * GB]]);
    // m2: 10 on disk + 15 coming = 25 of 30: flux (20) does not fit, and sdxl is as hot as flux
    const result = plan({ machines, sizes, forecasts: [forecast('flux', 10), forecast('sdxl', 10), forecast('big', 10)] });
    expect(result.decisions.filter((d) => d.machine === 'm2' && d.action === 'prefetch' && d.model === 'flux')).toEqual([]);
  });

  it('does not evict a hotter model to make room for a colder one', () => {
    const machines = [machine('m1', 25, [['hot', 20]]), machine('m2', 25, [['hot', 20]])];
    const result = plan({ machines, forecasts: [forecast('hot', 50), forecast('cool', 1)] });
    expect(result.decisions).toEqual([]);
    expect(result.skipped.map((s) => s.model)).toEqual(['cool']);
  });

  it('evicts the lowest forecast first, then the least recently used', () => {
    const machines = [
      machine('m1', 40, [['new', 20]]),
      machine('m2', 40, [['a', 10, { last_used: NOW - 1_000 }], ['b', 10, { last_used: NOW - 9_000 }], ['c', 10, { last_used: NOW - 5_000 }]]),
    ];
    const result = plan({ machines, forecasts: [forecast('new', 30), forecast('a', 0.5)] });
    expect(result.decisions.map((d) => `${d.action} ${d.model}`)).toEqual(['evict b', 'prefetch new']);
  });

  it('sends at most maxCommandsPerMachine commands to a machine per round', () => {
    // x reports the sizes but is still starting: m1 is the pool's only machine
    const machines = [machine('m1', 100), machine('x', 100, [['a', 1], ['b', 1], ['c', 1]], { state: 'starting' })];
    const result = plan({ machines, forecasts: [forecast('a', 3), forecast('b', 2), forecast('c', 1)], policy: { maxCommandsPerMachine: 2 } });
    expect(result.decisions.filter((d) => d.machine === 'm1')).toHaveLength(2);
    expect(result.skipped.map((s) => s.model)).toEqual(['c']);
  });

  it('keeps hysteresis: no evicting what it just prefetched, no prefetching back what it just evicted', () => {
    const machines = [machine('m1', 25, [['flux', 20]]), machine('m2', 25, [['old', 20]])];
    const forecasts = [forecast('flux', 10), forecast('old', 0, 0)];
    const justPrefetched = plan({ machines, forecasts, history: [{ machine: 'm2', model: 'old', action: 'prefetch', ts: NOW - 60_000 }] });
    expect(justPrefetched.decisions).toEqual([]);
    const later = plan({ machines, forecasts, history: [{ machine: 'm2', model: 'old', action: 'prefetch', ts: NOW - 60 * 60_000 }] });
    expect(later.decisions.map((d) => `${d.action} ${d.model}`)).toEqual(['evict old', 'prefetch flux']);

    const evicted = [machine('m1', 100, [['flux', 20]]), machine('m2', 100)];
    const recentlyEvicted = plan({ machines: evicted, forecasts: [forecast('flux', 10)], history: [{ machine: 'm2', model: 'flux', action: 'evict', ts: NOW - 60_000 }] });
    expect(recentlyEvicted.decisions).toEqual([]);
  });

  it('counts a prefetch sent recently as a copy on its way: the next round does not send it again, and reserves its size', () => {
    const machines = [machine('m1', 100, [['flux', 20]]), machine('m2', 30), machine('m3', 30)];
    const first = plan({ machines, forecasts: [forecast('flux', 10)] });
    expect(first.decisions.map((d) => d.machine)).toEqual(['m2', 'm3']);
    const history = first.decisions.map((d) => ({ machine: d.machine, model: d.model, action: d.action, ts: NOW }));
    const next = planPlacement({ pool: 'standard', machines, forecasts: [forecast('flux', 10), forecast('sdxl', 10)], history, now: NOW + 30_000, sizes: new Map([['flux', 20 * GB], ['sdxl', 15 * GB]]) });
    expect(next.decisions.filter((d) => d.model === 'flux')).toEqual([]);
    // m2 and m3 have 10 GB left once flux lands: sdxl (15 GB) goes to m1 only
    expect(next.decisions.filter((d) => d.model === 'sdxl').map((d) => d.machine)).toEqual(['m1']);
    // once holdMs has passed, a prefetch that never showed up is sent again
    const later = plan({ machines, forecasts: [forecast('flux', 10)], history: history.map((d) => ({ ...d, ts: NOW - 60 * 60_000 })) });
    expect(later.decisions.map((d) => d.machine)).toEqual(['m2', 'm3']);
  });

  it('skips a model whose size nobody reports, with the reason', () => {
    const result = plan({ machines: [machine('m1', 100)], forecasts: [forecast('mystery', 10)] });
    expect(result.decisions).toEqual([]);
    expect(result.skipped).toEqual([{ model: 'mystery', reason: 'size unknown: no machine of the pool reports it' }]);
  });

  it('plans nothing for machines that are not ready or have no budget', () => {
    const machines = [machine('m1', 100, [['flux', 20]]), machine('m2', 100, [], { state: 'draining' }), machine('m3', 100, [], { budgetBytes: undefined })];
    const result = plan({ machines, forecasts: [forecast('flux', 10)] });
    expect(result.decisions.map((d) => d.machine)).not.toContain('m2');
    expect(result.decisions.map((d) => d.machine)).not.toContain('m3');
  });

  it('ignores the service and total counters', () => {
    const result = plan({ machines: [machine('m1', 100, [['flux', 1]]), machine('m2', 100)], forecasts: [forecast('*', 100), forecast('service:ollama', 50), forecast('flux', 1)] });
    expect(result.decisions.map((d) => d.model)).toEqual(['flux']);
  });
});
