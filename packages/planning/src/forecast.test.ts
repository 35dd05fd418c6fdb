import { describe, expect, it } from 'vitest';
import { DAY_MS, type DemandBucket, forecastDemand, holt, isModelKey } from './forecast';

const BUCKET = 300_000;
const T0 = Date.UTC(2026, 0, 10, 0, 0, 0);

/** Buckets from `from` for `count` buckets, with counts per key from `f(i, start)`. */
function series(from: number, count: number, f: (i: number, start: number) => Record<string, number>): DemandBucket[] {
  return Array.from({ length: count }, (_, i) => ({ start: from + i * BUCKET, counts: f(i, from + i * BUCKET) }));
}

describe('holt', () => {
  it('follows a straight line exactly', () => {
    const { level, trend } = holt([2, 4, 6, 8, 10], 0.5, 0.3);
    expect(level).toBeCloseTo(10, 9);
    expect(trend).toBeCloseTo(2, 9);
  });
});

describe('forecastDemand', () => {
  it('forecasts a steady model at its rate', () => {
    const now = T0 + 12 * BUCKET;
    const [f] = forecastDemand(series(T0, 12, () => ({ sdxl: 6 })), now);
    expect(f!.model).toBe('sdxl');
    expect(f!.rate).toBeCloseTo(6, 5);
    expect(f!.method).toBe('holt');
    expect(f!.lastHour).toBe(72);
  });

  it('forecasts a rising model above its current rate', () => {
    const now = T0 + 12 * BUCKET;
    const buckets = series(T0, 12, (i) => ({ flux: i * 2, sdxl: 5 }));
    const flux = forecastDemand(buckets, now).find((f) => f.model === 'flux')!;
    expect(flux.current).toBe(22);
    expect(flux.rate).toBeGreaterThan(flux.current);
    expect(flux.explanation).toMatch(/holt\(alpha 0.5, beta 0.3\)/);
  });

  it('does not read the bucket still filling', () => {
    const now = T0 + 12 * BUCKET + 1_000;
    const buckets = series(T0, 13, (i) => ({ sdxl: i === 12 ? 500 : 4 }));
    expect(forecastDemand(buckets, now)[0]!.rate).toBeCloseTo(4, 5);
  });

  it("anticipates yesterday's daily peak before it starts today", () => {
    // yesterday: quiet (1/bucket) except a peak of 40/bucket from 10:00 to 11:00
    const peak = (start: number) => {
      const minute = ((start % DAY_MS) + DAY_MS) % DAY_MS / 60_000;
      return minute >= 600 && minute < 660 ? 40 : 1;
    };
    const dayBuckets = (24 * 60 * 60 * 1_000) / BUCKET;
    const now = T0 + DAY_MS + 9 * 3_600_000 + 55 * 60_000; // 09:55 today: the peak is 5 minutes away
    // yesterday whole, and today up to now: as quiet as yesterday before its peak
    const buckets = series(T0, dayBuckets + (9 * 60 + 55) / 5, (_, start) => ({ video: peak(start) }));
    const [f] = forecastDemand(buckets, now);
    expect(f!.current).toBe(1);
    expect(f!.method).toBe('holt+seasonal');
    expect(f!.seasonal).toBeGreaterThan(20);
    expect(f!.rate).toBeGreaterThan(10 * f!.current);
    expect(f!.explanation).toContain('yesterday');
  });

  it('without a day of history uses Holt alone', () => {
    const now = T0 + 12 * BUCKET;
    expect(forecastDemand(series(T0, 12, () => ({ a: 1 })), now)[0]!.seasonal).toBeUndefined();
  });

  it('gives a model first seen today Holt alone, even where other models have a day of history', () => {
    const now = T0 + DAY_MS + 12 * BUCKET;
    const buckets = [...series(T0, 12, () => ({ old: 5 })), ...series(T0 + DAY_MS, 12, (i) => ({ old: 5, fresh: i }))];
    const byModel = Object.fromEntries(forecastDemand(buckets, now).map((f) => [f.model, f]));
    expect(byModel.old!.method).toBe('holt+seasonal');
    expect(byModel.fresh!.method).toBe('holt');
    expect(byModel.fresh!.rate).toBeGreaterThan(11);
  });

  it('leaves out keys with no demand in the last hour and none forecast', () => {
    const now = T0 + 30 * BUCKET;
    const buckets = series(T0, 30, (i): Record<string, number> => (i < 5 ? { old: 3, cur: 1 } : { cur: 1 }));
    expect(forecastDemand(buckets, now).map((f) => f.model)).toEqual(['cur']);
  });

  it('tells models apart from the service and total counters', () => {
    expect(isModelKey('sdxl')).toBe(true);
    expect(isModelKey('*')).toBe(false);
    expect(isModelKey('service:ollama')).toBe(false);
  });

  it('is deterministic', () => {
    const now = T0 + 12 * BUCKET;
    const buckets = series(T0, 12, (i) => ({ a: i % 3, b: 7 - (i % 2) }));
    expect(forecastDemand(buckets, now)).toEqual(forecastDemand([...buckets].reverse(), now));
  });
});
