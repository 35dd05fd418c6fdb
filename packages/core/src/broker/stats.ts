import type { Cluster, Redis } from 'ioredis';
import { ServiceName } from '../requirements';
import { parseWith } from '../validation';
import { type BrokerContext, checkedPool } from './context';
import { FUNCTIONS } from './functions';
import type { QueueStatsRow } from './replies';
import type { PausedService, QueueStats, ServiceJobCounts } from './types';

export async function tick(ctx: BrokerContext, pool: string): Promise<{ handled: number; nextDueInMs?: number }> {
  const c = ctx.config;
  const [handled, wait] = await ctx.calls.call(FUNCTIONS.tick, checkedPool(pool), [
    c.tickLimit,
    c.offlineAfterMs,
    c.registryRetentionMs,
    c.clockGapMs,
    c.leaseGraceMs ?? Math.ceil(c.leaseMs / 3),
  ]);
  return wait === '' ? { handled } : { handled, nextDueInMs: Number(wait) };
}

export async function queueStats(ctx: BrokerContext, pool: string): Promise<QueueStats> {
  checkedPool(pool);
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

export async function jobCounts(ctx: BrokerContext, pool: string): Promise<ServiceJobCounts[]> {
  checkedPool(pool);
  // the queued jobs a page of classes per call, summed here
  const counts = new Map<string, ServiceJobCounts>();
  let page = '';
  do {
    const reply = await ctx.calls.call(FUNCTIONS.jobCounts, pool, [page]);
    for (const [service, queued, delayed, starting, running, retrying] of reply[0]) {
      const sum = counts.get(service) ?? { service, queued: 0, delayed: 0, starting: 0, running: 0, retrying: 0 };
      counts.set(service, {
        service,
        queued: sum.queued + queued,
        delayed: sum.delayed + delayed,
        starting: sum.starting + starting,
        running: sum.running + running,
        retrying: sum.retrying + retrying,
      });
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
  return ctx.calls.call(FUNCTIONS.pauseService, pool, [service, paused ? '1' : '0', options.by ?? '', (options.reason ?? '').slice(0, 500)]);
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
