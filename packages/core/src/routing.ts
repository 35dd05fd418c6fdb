import { z } from 'zod';
import type { BrokerContext } from './broker/context';
import { canonicalJson, contentId } from './canonical';
import type { PoolConfig } from './config';
import { type JobRouting, RouteSource, type SubmitJob } from './job';
import { ModelName, ServiceName } from './requirements';

/**
 * Routing by expected duration (docs/pools.md). A job that names no pool goes
 * to the first configured pool whose cutoff is above its expected duration:
 * the submit's `expected_duration_s` hint, else the p90 of the execution times
 * learned from its duration class (service + models), else the default pool.
 * A pool with no online worker is skipped for the nearest one that has one.
 */

/** A job's duration class: its service and its models, sorted. Jobs of one class take about as long. */
export function durationClass(service: string, models: readonly string[] = []): string {
  // every submit asks, and most ask about the same few classes: the hash is made once per (service, models)
  const key = models.length === 0 ? service : `${service}\u0000${models.join('\u0000')}`;
  let id = durationClasses.get(key);
  if (id === undefined) {
    if (durationClasses.size >= CACHE_ENTRIES) durationClasses.clear();
    id = contentId(canonicalJson({ d: 1, service, models: [...new Set(models)].sort() }));
    durationClasses.set(key, id);
  }
  return id;
}
const durationClasses = new Map<string, string>();

/** Execution times a duration list keeps, newest first (complete.lua trims it back to these every 32 pushes). */
export const DURATIONS_KEPT = 256;

/** What `<ns>:{<pool>}:dclasses` says of a duration class (complete.lua writes it; models null: none). */
export const DurationClassInfo = z.object({ service: ServiceName, models: z.array(ModelName).nullable().catch(null) });

/** Past executions of a class (or service) needed before its durations are trusted. */
export const DEFAULT_MIN_SAMPLES = 20;
/** How long an estimate or a pool's worker count is reused, by the broker's clock. */
export const ROUTING_CACHE_MS = 5_000;
/** Most duration classes whose estimates are cached at once (the cache starts over past it). */
const CACHE_ENTRIES = 10_000;

export interface DurationStats {
  /** execution time (s) half of the recorded executions stayed under */
  p50_s: number;
  /** execution time (s) nine in ten of them stayed under */
  p90_s: number;
  samples: number;
}

/** The estimate of a duration class: its own durations when there are enough, else its service's. */
export interface DurationEstimate extends DurationStats {
  level: 'class' | 'service';
}

/** p50/p90 (nearest rank) of durations in ms, in seconds; null for none. */
export function durationStats(durationsMs: readonly number[]): DurationStats | null {
  if (durationsMs.length === 0) return null;
  // a typed array sorts numbers as numbers, in native code (a routing read sorts up to 3 x 256 of them)
  const sorted = Float64Array.from(durationsMs).sort();
  const rank = (q: number) => sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)]! / 1_000;
  return { p50_s: rank(0.5), p90_s: rank(0.9), samples: sorted.length };
}

interface Cached<T> {
  at: number;
  value: Promise<T>;
  /** the value, once read (a routing decision that finds it needs no wait) */
  settled?: { value: T };
}

/** A cache entry for `value`, which records it once it is read. */
function cachedAt<T>(at: number, value: Promise<T>): Cached<T> {
  const entry: Cached<T> = { at, value };
  value.then((read) => (entry.settled = { value: read }), () => undefined);
  return entry;
}

/** The entry's value when it is read and still fresh at `now`. */
function freshValue<T>(entry: Cached<T> | undefined, now: number): { value: T } | undefined {
  return entry && now - entry.at < ROUTING_CACHE_MS && now >= entry.at ? entry.settled : undefined;
}

/**
 * Reads the learned execution times of a duration class and of its service
 * across the configured pools' served shards (each keeps its own), and caches
 * the estimate for ROUTING_CACHE_MS of the broker's clock (a virtual one when
 * the broker runs on one): a submit reads Redis at most once per class per 5 s.
 */
export class DurationEstimator {
  readonly minSamples: number;
  readonly #cache = new Map<string, Cached<DurationEstimate | null>>();
  /** duration classes a read found with enough samples of their own */
  readonly #enough = new Set<string>();

  constructor(
    private readonly ctx: BrokerContext,
    options: { minSamples?: number } = {},
  ) {
    this.minSamples = options.minSamples ?? DEFAULT_MIN_SAMPLES;
  }

  estimate(dclass: string, service: string): Promise<DurationEstimate | null> {
    const now = clockOf(this.ctx);
    const key = `${dclass}|${service}`;
    const hit = this.#cache.get(key);
    if (hit && now - hit.at < ROUTING_CACHE_MS && now >= hit.at) return hit.value;
    if (this.#cache.size >= CACHE_ENTRIES) this.#cache.clear();
    const value = this.#read(dclass, service);
    this.#cache.set(key, cachedAt(now, value));
    // a failed read is not kept: the next submit asks again
    value.catch(() => this.#cache.delete(key));
    return value;
  }

  /** `estimate` when it is cached, read and fresh (undefined otherwise: `estimate` then reads or waits). */
  estimateNow(dclass: string, service: string): { value: DurationEstimate | null } | undefined {
    return freshValue(this.#cache.get(`${dclass}|${service}`), clockOf(this.ctx));
  }

  async #read(dclass: string, service: string): Promise<DurationEstimate | null> {
    // a class that had enough samples has them still (its lists only grow, up to DURATIONS_KEPT): its service's
    // lists, which only a class short of samples is estimated by, need not be read; should it fall short after all
    // (its lists deleted), they are read then
    const known = this.#enough.has(dclass);
    const lists = await this.#lists(dclass, known ? undefined : service);
    const own = durationStats(lists.flatMap((pair) => pair[0] ?? []));
    if (own && own.samples >= this.minSamples) {
      if (!known) {
        if (this.#enough.size >= CACHE_ENTRIES) this.#enough.clear();
        this.#enough.add(dclass);
      }
      return { ...own, level: 'class' };
    }
    this.#enough.delete(dclass);
    const ofService = durationStats((known ? await this.#lists(undefined, service) : lists).flatMap((pair) => pair[1] ?? []));
    if (ofService && ofService.samples >= this.minSamples) return { ...ofService, level: 'service' };
    return null;
  }

  /**
   * The class's duration list and the service's, each where asked for, in every
   * served shard of every pool (a shard records the executions of its own jobs):
   * one pipeline per shard ([class, service] per shard).
   */
  async #lists(dclass: string | undefined, service: string | undefined): Promise<Array<[number[] | undefined, number[] | undefined]>> {
    const { keys, redis } = this.ctx;
    return Promise.all(
      (await everyServedShard(this.ctx)).map(async (name) => {
        const pipeline = redis.pipeline();
        if (dclass !== undefined) pipeline.lrange(keys.durations(name, dclass), 0, DURATIONS_KEPT - 1);
        if (service !== undefined) pipeline.lrange(keys.serviceDurations(name, service), 0, DURATIONS_KEPT - 1);
        const lists = (await pipeline.exec() ?? []).map(([error, list]) => {
          if (error) throw error;
          return (list as string[]).map(Number);
        });
        return dclass === undefined ? [undefined, lists[0]] : [lists[0], lists[1]];
      }),
    );
  }
}

/** Every served shard of every configured pool: where executions are recorded. */
export async function everyServedShard(ctx: BrokerContext): Promise<string[]> {
  return (await Promise.all(ctx.config.pools.map(({ name }) => ctx.poolShardNames(name, 'served')))).flat();
}

/** Where a submit goes, and the job fields that record why (short values: a job hash stays compact). */
export interface Route {
  pool: string;
  /** field/value pairs for the job hash; readers rebuild its routing from them (routeOf) */
  fields: Array<string | number>;
}

/** The first configured pool whose cutoff is above `seconds`; the last pool takes the rest. */
export function poolForDuration(pools: readonly PoolConfig[], seconds: number): PoolConfig {
  return pools.find((pool) => pool.max_duration_s !== undefined && seconds < pool.max_duration_s) ?? pools[pools.length - 1]!;
}

export class Router {
  readonly estimator: DurationEstimator;
  #online: Cached<Map<string, number>> | undefined;

  constructor(private readonly ctx: BrokerContext) {
    this.estimator = new DurationEstimator(ctx, { minSamples: ctx.config.routingMinSamples });
  }

  /** Online workers per configured pool (its own: borrowers from other pools do not count), cached like the estimates. */
  onlineWorkers(): Promise<Map<string, number>> {
    const now = clockOf(this.ctx);
    if (this.#online && now - this.#online.at < ROUTING_CACHE_MS && now >= this.#online.at) return this.#online.value;
    const { keys, redis, config } = this.ctx;
    const own = async (name: string) => {
      const [online, borrowers] = await Promise.all([
        redis.zcard(keys.workers(name)),
        redis.call('ZINTERCARD', 2, keys.workers(name), keys.borrowers(name)) as Promise<number>,
      ]);
      return online - borrowers;
    };
    const value = Promise.all(config.pools.map(async ({ name }) => [name, await own(name)] as const)).then((pairs) => new Map(pairs));
    this.#online = cachedAt(now, value);
    value.catch(() => (this.#online = undefined));
    return value;
  }

  async route(job: SubmitJob, dclass: string): Promise<Route> {
    const named = job.requirements.pool;
    if (named) return finished({ pool: named, source: 'named' });
    let history: DurationEstimate | null = null;
    if (job.expected_duration_s === undefined) {
      history = await this.estimator.estimate(dclass, job.service);
      if (!history) return finished({ pool: this.ctx.config.defaultPool, source: 'default' });
    }
    return this.#towards(job, history, await this.onlineWorkers());
  }

  /**
   * `route` when every figure it needs is cached, read and fresh: no read and no wait (a bulk
   * submit routes most of its jobs so, with no promise per job); undefined otherwise.
   */
  routeNow(job: SubmitJob, dclass: string): Route | undefined {
    const named = job.requirements.pool;
    if (named) return finished({ pool: named, source: 'named' });
    let history: DurationEstimate | null = null;
    if (job.expected_duration_s === undefined) {
      const estimate = this.estimator.estimateNow(dclass, job.service);
      if (!estimate) return undefined;
      history = estimate.value;
      if (!history) return finished({ pool: this.ctx.config.defaultPool, source: 'default' });
    }
    const online = freshValue(this.#online, clockOf(this.ctx));
    return online && this.#towards(job, history, online.value);
  }

  /** The pool of the job's expected duration (its history's p90, else its hint), or the nearest one served. */
  #towards(job: SubmitJob, history: DurationEstimate | null, online: Map<string, number>): Route {
    const pools = this.ctx.config.pools;
    const estimate = history ? history.p90_s : job.expected_duration_s!;
    const wanted = poolForDuration(pools, estimate).name;
    const pool = nearestServed(pools, wanted, online);
    return finished({
      pool,
      source: history ? 'history' : 'hint',
      estimate_s: estimate,
      samples: history?.samples,
      level: history?.level,
      skipped: pool === wanted ? undefined : wanted,
    });
  }
}

/** `wanted`, or the configured pool nearest to it (the longer one first) that has an online worker; `wanted` when none has. */
function nearestServed(pools: readonly PoolConfig[], wanted: string, online: Map<string, number>): string {
  if ((online.get(wanted) ?? 0) > 0) return wanted;
  const at = pools.findIndex((pool) => pool.name === wanted);
  for (let distance = 1; distance < pools.length; distance++) {
    for (const index of [at + distance, at - distance]) {
      const pool = pools[index];
      if (pool && (online.get(pool.name) ?? 0) > 0) return pool.name;
    }
  }
  return wanted;
}

/** What a job hash keeps of its route: short fields, from which routeOf rebuilds the whole (and its reason). */
export const StoredRoute = z.object({
  pool: z.string(),
  source: RouteSource,
  estimate_s: z.number().nonnegative().optional(),
  samples: z.number().int().nonnegative().optional(),
  level: z.enum(['class', 'service']).optional(),
  /** the pool the estimate pointed at, when it had no online worker */
  skipped: z.string().optional(),
});
export type StoredRoute = z.infer<typeof StoredRoute>;

function finished(route: StoredRoute): Route {
  // the default route is the absence of route_source on a job with a dclass: the commonest case stores nothing
  const fields: Array<string | number> = route.source === 'default' ? [] : ['route_source', route.source];
  if (route.source === 'history') fields.push('route_estimate_s', round(route.estimate_s!), 'route_samples', route.samples!, 'route_level', route.level!);
  if (route.skipped) fields.push('route_skipped', route.skipped);
  return { pool: route.pool, fields };
}

/** The routing a job shows: its stored route with its reason in words. */
export function routeOf(route: StoredRoute): JobRouting {
  const routing: JobRouting = { pool: route.pool, source: route.source, reason: routeReason(route) };
  if (route.estimate_s !== undefined) routing.estimate_s = round(route.estimate_s);
  if (route.samples !== undefined) routing.samples = route.samples;
  return routing;
}

/** e.g. "routed to fast: p90 of 212 similar jobs = 8 s". */
export function routeReason(route: StoredRoute): string {
  const to = `routed to ${route.pool}`;
  const skipped = route.skipped ? `; ${route.skipped} has no online worker` : '';
  switch (route.source) {
    case 'named':
      return `${to}: named in its requirements`;
    case 'default':
      return `${to}, the default pool: no expected_duration_s and too few similar jobs finished to estimate`;
    case 'hint':
      return `${to}: expected_duration_s = ${seconds(route.estimate_s)}${skipped}`;
    case 'history':
      return `${to}: p90 of ${route.samples} ${route.level === 'service' ? 'jobs of its service' : 'similar jobs'} = ${seconds(route.estimate_s)}${skipped}`;
  }
}

function round(value: number): number {
  return value >= 10 ? Math.round(value) : Math.round(value * 10) / 10;
}

function seconds(value: number | undefined): string {
  return `${round(value ?? 0)} s`;
}

function clockOf(ctx: BrokerContext): number {
  return ctx.clock ? ctx.clock() : Date.now();
}

