import { z } from 'zod';
import { ValidationError } from '../errors';
import { parseJsonOrNull, parseWith } from '../validation';
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
  // each shard counts the submits placed on it: one pipeline per shard (a cluster pipeline stays in one slot), summed
  const shards = await ctx.poolShardNames(pool, 'all');
  const perShard = await Promise.all(
    shards.map(async (shard) => {
      const pipeline = ctx.redis.pipeline();
      for (let bucket = first; bucket < end; bucket++) pipeline.hgetall(ctx.keys.demand(shard, bucket));
      return (await pipeline.exec()) ?? [];
    }),
  );
  const buckets: DemandBucket[] = [];
  for (let i = 0; i < end - first; i++) {
    let merged: Pick<DemandBucket, 'counts' | 'unreadable'> | null = null;
    for (const replies of perShard) {
      const [error, hash] = replies[i] ?? [null, {}];
      if (error) throw error;
      const bucket = bucketCounts((hash ?? {}) as Record<string, string>);
      merged = merged && bucket ? mergeBuckets(merged, bucket) : (merged ?? bucket);
    }
    if (merged) buckets.push({ start: (first + i) * DEMAND_BUCKET_MS, ...merged });
  }
  return buckets;
}

/** Two shards' counts of the same bucket, added. */
function mergeBuckets(a: Pick<DemandBucket, 'counts' | 'unreadable'>, b: Pick<DemandBucket, 'counts' | 'unreadable'>): Pick<DemandBucket, 'counts' | 'unreadable'> {
  const counts = new Map(Object.entries(a.counts));
  for (const [field, n] of Object.entries(b.counts)) counts.set(field, (counts.get(field) ?? 0) + n);
  const unreadable = [...(a.unreadable ?? []), ...(b.unreadable ?? [])];
  return { counts: Object.fromEntries(counts), ...(unreadable.length > 0 && { unreadable }) };
}

/** A class's demand fields as submit writes them in `d:<class>`: its distinct models, or `service:<service>`. */
const DemandFields = z.array(z.string().min(1)).min(1);

/**
 * The counts of one bucket. Submit counts jobs per requirement class (`c:<class>`)
 * and writes what the class stands for beside it (`d:<class>`, DemandFields);
 * here each class count goes to each of its fields and to `*`. Any other field
 * is a count as an older library wrote it (`<model>`, `service:<service>`, `*`)
 * and is added as it is. Null for a bucket without counts.
 */
function bucketCounts(hash: Record<string, string>): Pick<DemandBucket, 'counts' | 'unreadable'> | null {
  // a Map, not an object: a model may be called __proto__
  const counts = new Map<string, number>();
  const add = (field: string, n: number) => counts.set(field, (counts.get(field) ?? 0) + n);
  const unreadable: UnreadableDemandCount[] = [];
  const bad = (field: string, value: string) => unreadable.push({ field, value: value.slice(0, 100) });
  for (const [field, value] of Object.entries(hash)) {
    if (field.startsWith('d:')) continue;
    if (!COUNT.test(value)) {
      bad(field, value);
      continue;
    }
    const n = Number(value);
    if (!field.startsWith('c:')) {
      add(field, n);
      continue;
    }
    const definition = `d:${field.slice(2)}`;
    const text = Object.hasOwn(hash, definition) ? hash[definition]! : '';
    const fields = DemandFields.safeParse(parseJsonOrNull(text));
    if (!fields.success) {
      // the class is counted in all, but what it stands for is unknown
      bad(definition, text);
      add('*', n);
      continue;
    }
    add('*', n);
    for (const name of fields.data) add(name, n);
  }
  if (counts.size === 0 && unreadable.length === 0) return null;
  // fromEntries defines each field as its own property, whatever its name (a model may be called __proto__)
  return { counts: Object.fromEntries(counts), ...(unreadable.length > 0 && { unreadable }) };
}
