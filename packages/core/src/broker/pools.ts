import type { PoolReport, PoolView } from '../api-protocol';
import { DURATIONS_KEPT, DurationClassInfo, durationStats, everyServedShard, poolForDuration } from '../routing';
import { parseJsonOrNull } from '../validation';
import type { BrokerContext } from './context';
import { queueStats, serverTime } from './stats';

/** Duration classes a pool lists. */
const TOP_CLASSES = 10;

/**
 * The configured pools (docs/pools.md): cutoffs, target wait and profile, the
 * queue (depth, oldest wait) and workers of each from the pool's stats, and the
 * duration classes whose learned p90 routes them there, with their p50/p90 over
 * every pool's recorded executions (the estimator's view).
 */
export async function poolReport(ctx: BrokerContext): Promise<PoolReport> {
  const { config } = ctx;
  const [stats, classes] = await Promise.all([Promise.all(config.pools.map((pool) => queueStats(ctx, pool.name))), learnedClasses(ctx)]);
  // the clock job timestamps use: the virtual one when the broker runs on one
  const now = ctx.clock ? ctx.clock() : await serverTime(ctx);
  const views: PoolView[] = config.pools.map((pool, i) => {
    const s = stats[i]!;
    const heads = s.classes.flatMap((c) => (c.headSubmittedAt === undefined || c.depth === 0 ? [] : [c.headSubmittedAt]));
    const view: PoolView = {
      name: pool.name,
      min_duration_s: config.pools[i - 1]?.max_duration_s ?? 0,
      target_wait_s: pool.target_wait_s,
      profile: pool.profile,
      default: pool.name === config.defaultPool,
      depth: s.classes.reduce((sum, c) => sum + c.depth, 0),
      workers: { online: s.onlineWorkers, idle: s.idleWorkers, busy: Math.max(0, s.onlineWorkers - s.idleWorkers) },
      durations: classes
        .filter((c) => poolForDuration(config.pools, c.p90_s).name === pool.name)
        .sort((a, b) => b.samples - a.samples || a.dclass.localeCompare(b.dclass))
        .slice(0, TOP_CLASSES),
    };
    if (pool.max_duration_s !== undefined) view.max_duration_s = pool.max_duration_s;
    if (heads.length > 0) view.oldest_age_ms = Math.max(0, now - Math.min(...heads));
    return view;
  });
  return { now, min_samples: ctx.router.estimator.minSamples, pools: views };
}

/** Every duration class any shard of a configured pool recorded, with its durations over all of them. */
async function learnedClasses(ctx: BrokerContext): Promise<PoolView['durations']> {
  const { keys, redis } = ctx;
  const shards = await everyServedShard(ctx);
  const infos = await Promise.all(shards.map((shard) => redis.hgetall(keys.durationClasses(shard))));
  const known = new Map<string, { service: string; models: string[] }>();
  for (const hash of infos) {
    for (const [dclass, text] of Object.entries(hash)) {
      if (known.has(dclass)) continue;
      const info = DurationClassInfo.safeParse(parseJsonOrNull(text));
      if (info.success) known.set(dclass, { service: info.data.service, models: info.data.models ?? [] });
    }
  }
  const dclasses = [...known.keys()];
  const lists = await Promise.all(
    shards.map(async (shard) => {
      if (dclasses.length === 0) return [];
      const pipeline = redis.pipeline();
      for (const dclass of dclasses) pipeline.lrange(keys.durations(shard, dclass), 0, DURATIONS_KEPT - 1);
      return ((await pipeline.exec()) ?? []).map(([error, list]) => (error ? [] : (list as string[]).map(Number)));
    }),
  );
  return dclasses.flatMap((dclass, d) => {
    const stats = durationStats(lists.flatMap((perShard) => perShard[d] ?? []));
    return stats ? [{ dclass, ...known.get(dclass)!, ...stats }] : [];
  });
}
