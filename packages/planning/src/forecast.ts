/**
 * Demand forecast per model for the next interval, from the broker's 5-minute
 * demand buckets (jobs submitted per model). Two explainable methods, blended:
 *
 * - Holt's linear exponential smoothing over the recent buckets (level + trend),
 *   projected to the middle of the horizon: follows a model that is rising now;
 * - seasonal-naive: what the same model did over the same window yesterday,
 *   when the history reaches a day back (a model first seen after yesterday's
 *   window has Holt alone): anticipates a daily peak before it starts.
 *
 * Pure and deterministic: `now` comes from the caller (the planner's clock, or
 * the simulator's virtual one). Rates are jobs per bucket.
 */

export const DAY_MS = 24 * 60 * 60 * 1_000;
/** The broker's demand bucket (core's DEMAND_BUCKET_MS). */
export const DEFAULT_BUCKET_MS = 5 * 60 * 1_000;

/** One bucket of the broker's demand counters: its start (ms) and jobs submitted per key in it. */
export interface DemandBucket {
  start: number;
  counts: Record<string, number>;
}

export interface ForecastOptions {
  /** width of a bucket (ms) */
  bucketMs: number;
  /** how far ahead the forecast looks (ms): about the time a download takes, so a copy is ready when demand comes */
  horizonMs: number;
  /** buckets of recent history Holt smooths over */
  recentBuckets: number;
  /** Holt's level smoothing (0..1) */
  alpha: number;
  /** Holt's trend smoothing (0..1) */
  beta: number;
  /** weight of the seasonal-naive forecast when a day of history exists (0..1); Holt has the rest */
  seasonalWeight: number;
}

export const DEFAULT_FORECAST_OPTIONS: ForecastOptions = {
  bucketMs: DEFAULT_BUCKET_MS,
  horizonMs: 15 * 60 * 1_000,
  recentBuckets: 12,
  alpha: 0.5,
  beta: 0.3,
  seasonalWeight: 0.5,
};

export interface ModelForecast {
  /** the demand key: a model name, or `service:<name>` for jobs without models */
  model: string;
  /** forecast jobs per bucket over the horizon */
  rate: number;
  /** jobs in the last complete bucket */
  current: number;
  /** jobs over the last hour of complete buckets */
  lastHour: number;
  /** Holt's projection (jobs per bucket) */
  holt: number;
  /** yesterday's mean over the same window (jobs per bucket); absent without a day of history */
  seasonal?: number;
  method: 'holt' | 'holt+seasonal';
  /** the method and its inputs, in words */
  explanation: string;
}

/** The keys of the demand counters that are not models (`*`: all jobs; `service:<name>`: jobs without models). */
export function isModelKey(key: string): boolean {
  return key !== '*' && !key.startsWith('service:');
}

/** Holt's linear smoothing of a series; returns level and trend after its last value. */
export function holt(series: readonly number[], alpha: number, beta: number): { level: number; trend: number } {
  if (series.length === 0) return { level: 0, trend: 0 };
  let level = series[0]!;
  let trend = series.length > 1 ? series[1]! - series[0]! : 0;
  for (let i = 1; i < series.length; i++) {
    const previous = level;
    level = alpha * series[i]! + (1 - alpha) * (level + trend);
    trend = beta * (level - previous) + (1 - beta) * trend;
  }
  return { level, trend };
}

const round = (n: number) => Math.round(n * 100) / 100;

/**
 * A forecast for every key that has demand in the buckets given (those of the
 * last day and the recent ones; empty buckets may be left out: they count as 0).
 * Only complete buckets are read (the one `now` falls in is still filling).
 */
export function forecastDemand(buckets: readonly DemandBucket[], now: number, options: Partial<ForecastOptions> = {}): ModelForecast[] {
  const o = { ...DEFAULT_FORECAST_OPTIONS, ...options };
  const byStart = new Map<number, Record<string, number>>();
  for (const bucket of buckets) {
    if (bucket.start + o.bucketMs > now) continue;
    const slot = Math.floor(bucket.start / o.bucketMs) * o.bucketMs;
    const into = byStart.get(slot) ?? {};
    for (const [key, n] of Object.entries(bucket.counts)) into[key] = (into[key] ?? 0) + n;
    byStart.set(slot, into);
  }
  if (byStart.size === 0) return [];
  const lastComplete = Math.floor(now / o.bucketMs) * o.bucketMs - o.bucketMs;
  // when each key first shows: a model first seen today has no yesterday to compare with
  const firstSeen = new Map<string, number>();
  for (const [start, counts] of byStart) {
    for (const key of Object.keys(counts)) firstSeen.set(key, Math.min(firstSeen.get(key) ?? start, start));
  }
  const keys = new Set(firstSeen.keys());
  const oldest = Math.min(...firstSeen.values());

  // the recent window, oldest first (missing buckets: no jobs)
  const recentStarts: number[] = [];
  for (let i = o.recentBuckets - 1; i >= 0; i--) recentStarts.push(lastComplete - i * o.bucketMs);
  // yesterday's window: the buckets of the horizon, one day back
  const horizonBuckets = Math.max(1, Math.round(o.horizonMs / o.bucketMs));
  const seasonalStarts: number[] = [];
  for (let i = 1; i <= horizonBuckets; i++) seasonalStarts.push(lastComplete + i * o.bucketMs - DAY_MS);
  // Holt projects to the middle of the horizon
  const steps = (horizonBuckets + 1) / 2;
  const hourBuckets = Math.round((60 * 60 * 1_000) / o.bucketMs);

  const forecasts: ModelForecast[] = [];
  for (const key of [...keys].sort()) {
    const count = (start: number) => byStart.get(start)?.[key] ?? 0;
    const series = recentStarts.map(count);
    const { level, trend } = holt(series, o.alpha, o.beta);
    const holtRate = Math.max(0, level + steps * trend);
    const current = series[series.length - 1] ?? 0;
    const lastHour = series.slice(-hourBuckets).reduce((a, b) => a + b, 0);
    let rate = holtRate;
    let seasonal: number | undefined;
    let explanation = `holt(alpha ${o.alpha}, beta ${o.beta}) over ${series.length} buckets [${series.join(' ')}]: level ${round(level)}, trend ${round(trend)}/bucket -> ${round(holtRate)}`;
    // the history reaches a day back, and the model is no newer than yesterday's window
    if (oldest <= seasonalStarts[0]! && firstSeen.get(key)! <= seasonalStarts[seasonalStarts.length - 1]!) {
      seasonal = seasonalStarts.map(count).reduce((a, b) => a + b, 0) / seasonalStarts.length;
      rate = o.seasonalWeight * seasonal + (1 - o.seasonalWeight) * holtRate;
      explanation += `; yesterday over the next ${horizonBuckets} buckets ${round(seasonal)}/bucket; blend ${o.seasonalWeight} seasonal -> ${round(rate)}`;
    }
    if (rate === 0 && lastHour === 0 && !(seasonal ?? 0)) continue;
    forecasts.push({
      model: key,
      rate: round(rate),
      current,
      lastHour,
      holt: round(holtRate),
      ...(seasonal !== undefined ? { seasonal: round(seasonal) } : {}),
      method: seasonal !== undefined ? 'holt+seasonal' : 'holt',
      explanation,
    });
  }
  return forecasts;
}
