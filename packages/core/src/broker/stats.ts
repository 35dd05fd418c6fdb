import type { Cluster, Redis } from 'ioredis';
import { ServiceName } from '../requirements';
import { parseWith } from '../validation';
import { type BrokerContext, checkedPool, checkedShard } from './context';
import { FUNCTIONS } from './functions';
import type { QueueStatsRow } from './replies';
import type { ClassStats, PausedService, QueueStats, ServiceJobCounts } from './types';

/** Runs one shard's due work (a pool's name is its shard 0). */
export async function tick(ctx: BrokerContext, shard: string): Promise<{ handled: number; nextDueInMs?: number }> {
  const c = ctx.config;
  const [handled, wait] = await ctx.calls.call(FUNCTIONS.tick, checkedShard(shard), [
    c.tickLimit,
    c.offlineAfterMs,
    c.registryRetentionMs,
    c.clockGapMs,
    c.leaseGraceMs ?? Math.ceil(c.leaseMs / 3),
  ]);
  return wait === '' ? { handled } : { handled, nextDueInMs: Number(wait) };
}

/**
 * A pool's queues over its served shards: per class the depths summed and the
 * oldest head; timers summed; the workers as shard 0 counts them (a worker is
 * registered in every shard of its pool).
 */
export async function queueStats(ctx: BrokerContext, pool: string): Promise<QueueStats> {
  checkedPool(pool);
  const shards = await ctx.poolShardNames(pool, 'served');
  if (shards.length === 1) return shardQueueStats(ctx, pool);
  const each = await Promise.all(shards.map((shard) => shardQueueStats(ctx, shard)));
  const classes = new Map<string, ClassStats>();
  for (const stats of each) {
    for (const c of stats.classes) {
      const seen = classes.get(c.requirementClass);
      if (!seen) classes.set(c.requirementClass, { ...c });
      else {
        seen.depth += c.depth;
        seen.routable ||= c.routable;
        if (c.headSubmittedAt !== undefined && (seen.headSubmittedAt === undefined || c.headSubmittedAt < seen.headSubmittedAt)) {
          seen.headJob = c.headJob;
          seen.headSubmittedAt = c.headSubmittedAt;
        }
      }
    }
  }
  const home = each[0]!;
  return { ...home, pool, classes: [...classes.values()], timers: each.reduce((sum, stats) => sum + stats.timers, 0) };
}

/** One shard's queues (a pool's name is its shard 0). */
export async function shardQueueStats(ctx: BrokerContext, pool: string): Promise<QueueStats> {
  checkedShard(pool);
  // a page of classes per call (SSCAN: a class may come twice), the totals with the first
  const rows = new Map<string, QueueStatsRow>();
  let totals: number[] = [];
  let cursor = '0';
  do {
    const reply = await ctx.calls.call(FUNCTIONS.queueStats, pool, [cursor]);
    for (const row of reply[0]) rows.set(row[0], row);
    if (cursor === '0') totals = reply[1];
    cursor = reply[2];
  } while (cursor !== '0');
  return {
    pool,
    classes: [...rows.values()].map(([id, definition, routable, depth, head, submitted]) => ({
      requirementClass: id,
      definition: JSON.parse(definition) as Record<string, unknown>,
      routable: routable === '1',
      depth,
      headJob: head || undefined,
      headSubmittedAt: head ? Number(submitted) : undefined,
    })),
    timers: totals[0] ?? 0,
    idleWorkers: totals[1] ?? 0,
    onlineWorkers: totals[2] ?? 0,
    offlineWorkers: totals[3] ?? 0,
  };
}

/** A pool's live jobs per service and state, summed over its served shards. */
export async function jobCounts(ctx: BrokerContext, pool: string): Promise<ServiceJobCounts[]> {
  checkedPool(pool);
  const shards = await ctx.poolShardNames(pool, 'served');
  const each = await Promise.all(shards.map((shard) => shardJobCounts(ctx, shard)));
  if (each.length === 1) return each[0]!;
  const counts = new Map<string, ServiceJobCounts>();
  for (const row of each.flat()) {
    const sum = counts.get(row.service);
    counts.set(row.service, sum ? sumCounts(sum, row) : row);
  }
  return [...counts.values()];
}

function sumCounts(a: ServiceJobCounts, b: ServiceJobCounts): ServiceJobCounts {
  return {
    service: a.service,
    queued: a.queued + b.queued,
    delayed: a.delayed + b.delayed,
    starting: a.starting + b.starting,
    running: a.running + b.running,
    retrying: a.retrying + b.retrying,
  };
}

/** One shard's live jobs per service and state (a pool's name is its shard 0). */
export async function shardJobCounts(ctx: BrokerContext, pool: string): Promise<ServiceJobCounts[]> {
  checkedShard(pool);
  // the queued jobs a page of classes per call, summed here
  const counts = new Map<string, ServiceJobCounts>();
  let page = '';
  do {
    const reply = await ctx.calls.call(FUNCTIONS.jobCounts, pool, [page]);
    for (const [service, queued, delayed, starting, running, retrying] of reply[0]) {
      const row = { service, queued, delayed, starting, running, retrying };
      const sum = counts.get(service);
      counts.set(service, sum ? sumCounts(sum, row) : row);
    }
    page = reply[1];
  } while (page !== '');
  return [...counts.values()];
}

export async function classCapacity(ctx: BrokerContext, pool: string, classes: string[]): Promise<number[]> {
  checkedPool(pool);
  if (classes.length === 0) return [];
  return ctx.calls.call(FUNCTIONS.classCapacity, pool, classes);
}

export async function setServicePaused(
  ctx: BrokerContext,
  pool: string,
  service: string,
  paused: boolean,
  options: { by?: string; reason?: string },
): Promise<boolean> {
  parseWith(ServiceName, service, 'service');
  await ctx.rememberPool(checkedPool(pool));
  // every shard of the pool: a claim in any of them must see it
  const shards = await ctx.poolShardNames(pool, 'all');
  const changed = await Promise.all(
    shards.map((shard) => ctx.calls.call(FUNCTIONS.pauseService, shard, [service, paused ? '1' : '0', options.by ?? '', (options.reason ?? '').slice(0, 500)])),
  );
  return changed.some(Boolean);
}

export async function pausedServices(ctx: BrokerContext, pool: string): Promise<PausedService[]> {
  const hash = await ctx.redis.hgetall(ctx.keys.paused(checkedPool(pool)));
  return Object.entries(hash)
    .map(([service, text]) => {
      const info = JSON.parse(text) as { since: number; by?: string; reason?: string };
      return { service, since: info.since, by: info.by || undefined, reason: info.reason || undefined };
    })
    .sort((a, b) => a.service.localeCompare(b.service));
}

/** Now by the Redis server's clock (ms): the clock every job timestamp uses. */
export async function serverTime(ctx: BrokerContext): Promise<number> {
  const [seconds, micros] = await ctx.redis.time();
  return Number(seconds) * 1_000 + Math.floor(Number(micros) / 1_000);
}

/** One Redis server's memory as INFO memory reports it. */
export interface RedisMemory {
  /** host:port of the server (each master of a cluster is one) */
  node: string;
  usedBytes: number;
  /** the maxmemory limit; 0 when none is set */
  maxBytes: number;
}

/** Memory in use and its limit on every server that holds the broker's data (each master of a cluster). */
export async function redisMemory(ctx: BrokerContext): Promise<RedisMemory[]> {
  const redis = ctx.redis;
  const nodes = redis.isCluster ? (redis as Cluster).nodes('master') : [redis as Redis];
  return Promise.all(
    nodes.map(async (node) => {
      const info = await node.info('memory');
      return { node: nodeAddress(node), usedBytes: infoNumber(info, 'used_memory') ?? 0, maxBytes: infoNumber(info, 'maxmemory') ?? 0 };
    }),
  );
}

/** A number field of an INFO reply (`used_memory`, `instantaneous_ops_per_sec`), or undefined when it has none. */
export function infoNumber(info: string, field: string): number | undefined {
  const match = new RegExp(`^${field}:([\\d.]+)\\r?$`, 'm').exec(info);
  return match ? Number(match[1]) : undefined;
}

/** host:port of one Redis connection, as its options name the server. */
export function nodeAddress(node: Redis): string {
  const { host, port } = node.options as { host?: string; port?: number };
  return `${host ?? 'localhost'}:${port ?? 6379}`;
}
