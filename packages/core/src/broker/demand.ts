import { z } from 'zod';
import { ValidationError } from '../errors';
import { parseWith } from '../validation';
import { type BrokerContext, checkedPool } from './context';

/** The width of a demand bucket: submit counts jobs per model in 5-minute buckets (`<ns>:{<pool>}:demand:<bucket>`). */
export const DEMAND_BUCKET_MS = 300_000;
/** How long a bucket is kept after its first write (the key's TTL, set by submit). */
export const DEMAND_RETENTION_MS = 8 * 24 * 3_600_000;
/** The most buckets one read covers: the whole retention and a day more. */
const MAX_BUCKETS_PER_READ = Math.ceil((DEMAND_RETENTION_MS + 24 * 3_600_000) / DEMAND_BUCKET_MS);

/** A count that is not a non-negative integer (written by something other than submit). */
export interface UnreadableDemandCount {
  field: string;
  value: string;
}

/**
 * Jobs submitted in one 5-minute bucket, per model of their requirement class
 * (`counts[<model>]`; each model of a job once), per service for jobs whose
 * class names no model (`counts['service:<service>']`), and in all (`counts['*']`).
 */
export interface DemandBucket {
  /** ms, the bucket's start (a multiple of DEMAND_BUCKET_MS) */
  start: number;
  counts: Record<string, number>;
  /** fields that could not be read as counts (left out of `counts`); absent when all could */
  unreadable?: UnreadableDemandCount[];
}

const Ms = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const DemandRange = z
  .object({ from: Ms, to: Ms })
  .strict()
  .refine((r) => r.from <= r.to, { message: 'from must not be after to' });
const COUNT = /^(0|[1-9]\d{0,15})$/;

/**
 * The demand buckets that start in [from, to), ascending, each with at least
 * one count; read with one pipeline. A field whose value is not a count is
 * reported in the bucket's `unreadable`, not counted.
 */
export async function modelDemand(ctx: BrokerContext, pool: string, range: { from: number; to: number }): Promise<DemandBucket[]> {
  checkedPool(pool);
  const { from, to } = parseWith(DemandRange, range, 'demand range');
  const first = Math.ceil(from / DEMAND_BUCKET_MS);
  const end = Math.ceil(to / DEMAND_BUCKET_MS);
  if (end - first > MAX_BUCKETS_PER_READ) {
    throw new ValidationError('demand range', [
      { path: '', message: `covers ${end - first} buckets of 5 minutes; one read covers at most ${MAX_BUCKETS_PER_READ} (counts are kept 8 days)` },
    ]);
  }
  if (end <= first) return [];
  const pipeline = ctx.redis.pipeline();
  for (let bucket = first; bucket < end; bucket++) pipeline.hgetall(ctx.keys.demand(pool, bucket));
  const replies = (await pipeline.exec()) ?? [];
  const buckets: DemandBucket[] = [];
  replies.forEach(([error, hash], i) => {
    if (error) throw error;
    const entries = Object.entries((hash ?? {}) as Record<string, string>);
    if (entries.length === 0) return;
    const counted: Array<[string, number]> = [];
    const unreadable: UnreadableDemandCount[] = [];
    for (const [field, value] of entries) {
      if (COUNT.test(value)) counted.push([field, Number(value)]);
      else unreadable.push({ field, value: value.slice(0, 100) });
    }
    // fromEntries defines each field as its own property, whatever its name (a model may be called __proto__)
    const counts: Record<string, number> = Object.fromEntries(counted);
    buckets.push({ start: (first + i) * DEMAND_BUCKET_MS, counts, ...(unreadable.length > 0 && { unreadable }) });
  });
  return buckets;
}
