import { usePrivateRedis } from '@emp/testkit/private-redis';
import { describe, expect, it } from 'vitest';
import { Broker } from './broker';
import { EmpError } from './errors';
import { streamEntryProblems } from './events';
import { decodePlannerState } from './planner';

const { redis } = usePrivateRedis();

const capacity = { machines: 3, servers: 3, offeredLoad: 1.2, waitExceedsTarget: 0.03, explanation: 'M/M/c' };
const forecast = [{ model: 'flux', rate: 4.5, current: 3, lastHour: 30, method: 'holt', explanation: 'rising' }];

describe('the planner record (planner_decision)', () => {
  it('appends one planner.decision event per decision and keeps the round in the pool hash', async () => {
    const b = await Broker.connect({ redis });
    expect(await b.plannerState('standard')).toBeNull();
    const recorded = await b.recordPlannerRound('standard', {
      forecast,
      capacity,
      waitTargetMs: 10_000,
      decisions: [
        { machine: 'm1', action: 'evict', model: 'old', reason: 'make room for flux', forecast: 0 },
        { machine: 'm1', action: 'prefetch', model: 'flux', reason: 'forecast 4.5/bucket', forecast: 4.5 },
        { machine: 'm2', action: 'load', model: 'flux', reason: 'idle, on disk', forecast: 4.5 },
      ],
    });
    expect(recorded).toBe(3);

    const events = (await b.readEvents('standard', '0', { count: 100 })).filter((e) => e.type === 'planner.decision');
    expect(events).toEqual([
      expect.objectContaining({ type: 'planner.decision', machine: 'm1', action: 'evict', model: 'old', forecast: 0 }),
      expect.objectContaining({ type: 'planner.decision', machine: 'm1', action: 'prefetch', model: 'flux', reason: 'forecast 4.5/bucket', forecast: 4.5 }),
      expect.objectContaining({ type: 'planner.decision', machine: 'm2', action: 'load', model: 'flux', reason: 'idle, on disk', forecast: 4.5 }),
    ]);
    const raw = await redis.xrange(b.keys.events('standard'), '-', '+');
    for (const [, fields] of raw) expect(streamEntryProblems(fields)).toEqual([]);

    const state = await b.plannerState('standard');
    expect(state).toMatchObject({ pool: 'standard', wait_target_ms: 10_000, forecast, capacity, problems: [] });
    expect(state!.run_at).toBeGreaterThan(0);
    expect(state!.decisions.map((d) => `${d.action} ${d.model}`)).toEqual(['evict old', 'prefetch flux', 'load flux']);
  });

  it('keeps the last 50 decisions, and a round without decisions keeps the earlier ones', async () => {
    const b = await Broker.connect({ redis });
    const decisions = Array.from({ length: 60 }, (_, i) => ({ machine: 'm1', action: 'prefetch' as const, model: `m${i}`, reason: 'r', forecast: i }));
    await b.recordPlannerRound('fast', { forecast, capacity, waitTargetMs: 2_000, decisions });
    await b.recordPlannerRound('fast', { forecast: [], capacity, waitTargetMs: 2_000, decisions: [] });
    const state = await b.plannerState('fast');
    expect(state!.decisions).toHaveLength(50);
    expect(state!.decisions[0]!.model).toBe('m10');
    expect(state!.decisions[49]!.model).toBe('m59');
    expect(state!.forecast).toEqual([]);
  });

  it('refuses an action that is not prefetch, evict or load, recording nothing', async () => {
    const b = await Broker.connect({ redis });
    await expect(
      b.recordPlannerRound('heavy', { forecast, capacity, waitTargetMs: 1, decisions: [
        { machine: 'm', action: 'prefetch', model: 'ok', reason: '', forecast: 1 },
        { machine: 'm', action: 'delete' as 'evict', model: 'x', reason: '', forecast: 0 },
      ] }),
    ).rejects.toThrow(EmpError);
    expect(await b.plannerState('heavy')).toBeNull();
    expect((await b.readEvents('heavy', '0', { count: 100 })).filter((e) => e.type === 'planner.decision')).toEqual([]);
  });
});

describe('decodePlannerState', () => {
  it('reads each field on its own: an unreadable one is reported, the others kept', () => {
    const state = decodePlannerState('p', { run_at: '12', forecast: 'nope', capacity: JSON.stringify(capacity), decisions: '{}' });
    expect(state).toMatchObject({ pool: 'p', run_at: 12, capacity, forecast: [], decisions: [] });
    expect(state.problems).toEqual(['forecast: not JSON']);
  });
});
