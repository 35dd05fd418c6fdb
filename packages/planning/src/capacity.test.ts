import { describe, expect, it } from 'vitest';
import { capacityHint, erlangB, erlangC, waitExceedsProbability } from './capacity';

describe('Erlang formulas', () => {
  it('match values computed by hand from the closed forms', () => {
    // B(1, 1) = 1/2; B(2, 1) = (1/2) / (1 + 1 + 1/2) = 1/5
    expect(erlangB(1, 1)).toBeCloseTo(0.5, 12);
    expect(erlangB(2, 1)).toBeCloseTo(0.2, 12);
    // C(2, 1) = 1/3; C(3, 2) = 4/9
    expect(erlangC(2, 1)).toBeCloseTo(1 / 3, 12);
    expect(erlangC(3, 2)).toBeCloseTo(4 / 9, 12);
    // M/M/1: C(1, rho) = rho
    expect(erlangC(1, 0.7)).toBeCloseTo(0.7, 12);
  });

  it('match the published table value C(12, 10) ~ 0.4494', () => {
    expect(erlangC(12, 10)).toBeCloseTo(0.4494, 3);
  });

  it('say every job waits when the servers cannot keep up', () => {
    expect(erlangC(3, 3)).toBe(1);
    expect(waitExceedsProbability(2, 5, 1, 10)).toBe(1);
  });

  it('give M/M/1 its wait tail rho * exp(-(1 - rho) t / s)', () => {
    expect(waitExceedsProbability(1, 0.5, 10, 20)).toBeCloseTo(0.5 * Math.exp(-1), 12);
  });
});

describe('capacityHint', () => {
  it('is zero machines without jobs', () => {
    expect(capacityHint({ arrivals: 0, windowMs: 3_600_000, meanExecutionMs: 10_000, waitTargetMs: 2_000, percentile: 0.95, workersPerMachine: 1 }).machines).toBe(0);
  });

  it('finds the smallest c whose wait tail meets the target', () => {
    // 3600 jobs of 10 s in an hour: 10 Erlangs
    const hint = capacityHint({ arrivals: 3_600, windowMs: 3_600_000, meanExecutionMs: 10_000, waitTargetMs: 2_000, percentile: 0.95, workersPerMachine: 1 });
    expect(hint.offeredLoad).toBe(10);
    expect(waitExceedsProbability(hint.servers, 10, 10_000, 2_000)).toBeLessThanOrEqual(0.05);
    expect(waitExceedsProbability(hint.servers - 1, 10, 10_000, 2_000)).toBeGreaterThan(0.05);
    expect(hint.machines).toBe(hint.servers);
    expect(hint.explanation).toContain('10 Erlangs');
  });

  it('counts machines by their worker slots, rounding up', () => {
    const one = capacityHint({ arrivals: 3_600, windowMs: 3_600_000, meanExecutionMs: 10_000, waitTargetMs: 2_000, percentile: 0.95, workersPerMachine: 1 });
    const four = capacityHint({ arrivals: 3_600, windowMs: 3_600_000, meanExecutionMs: 10_000, waitTargetMs: 2_000, percentile: 0.95, workersPerMachine: 4 });
    expect(four.machines).toBe(Math.ceil(one.servers / 4));
  });

  it('asks for more machines for a stricter target', () => {
    const loose = capacityHint({ arrivals: 1_000, windowMs: 3_600_000, meanExecutionMs: 30_000, waitTargetMs: 60_000, percentile: 0.95, workersPerMachine: 1 });
    const strict = capacityHint({ arrivals: 1_000, windowMs: 3_600_000, meanExecutionMs: 30_000, waitTargetMs: 1_000, percentile: 0.99, workersPerMachine: 1 });
    expect(strict.machines).toBeGreaterThan(loose.machines);
    expect(loose.machines).toBeGreaterThan(1_000 * 30 / 3_600); // more than the offered load
  });
});
