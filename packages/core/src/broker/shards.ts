/// <reference path="../cluster-key-slot.d.ts" />
import calculateSlot from 'cluster-key-slot';
import type { Cluster, Redis } from 'ioredis';
import type { PoolShards, PoolShardsView, ShardNodeView, ShardReport, ShardView } from '../api-protocol';
import type { BrokerContext } from './context';
import { ShardCount, poolOfShard, shardIndex, shardsOf } from '../pool-shards';
import { parseWith } from '../validation';
import { checkedPool } from './context';
import { FUNCTIONS } from './functions';
import { infoNumber, nodeAddress, pausedServices, shardJobCounts, shardQueueStats } from './stats';

const SLOT_COUNT = 16384;

/** One slot range of `CLUSTER SLOTS`: from, to, then the master and its replicas as [host, port, id, ...]. */
type SlotRange = [number, number, ...Array<[string, number, ...unknown[]]>];

/** Who serves each slot, by a fresh CLUSTER SLOTS (not the client's cached map, which may be behind a failover). */
interface SlotMap {
  masterOf(slot: number): string | undefined;
  /** every node in the map: masters with the slots they serve, replicas with their master */
  nodes: Map<string, { role: 'master' | 'replica'; slots: number; replicaOf?: string }>;
}

/**
 * Where each shard lives: every pool (those that have seen a job or a worker,
 * and the configured ones) with its shard counts and served shards; each of
 * their shards (the served ones and any other they used) and the webhook shard,
 * with its slot, the master serving it and what it holds; and each Redis server
 * with the shards it serves, its memory and its ops/s. On one Redis every shard
 * is on that server (its slot is where it would go on a cluster).
 */
export async function shardReport(ctx: BrokerContext): Promise<ShardReport> {
  const { keys, redis } = ctx;
  const used = await ctx.shards();
  // a pool's name is its shard 0; the counts read now, so that a reshard just made shows
  const poolNames = [...new Set([...used.map(poolOfShard), ...ctx.config.pools.map((p) => p.name)])].sort();
  const pools: PoolShardsView[] = await Promise.all(
    poolNames.map(async (pool) => {
      const counts = await ctx.poolShards(pool, true);
      return { ...counts, shards: shardsOf(pool, counts.serve) };
    }),
  );
  const shardNames = [...new Set([...used, ...pools.flatMap((p) => p.shards)])].sort(byPoolThenIndex);
  const cluster = redis.isCluster ? (redis as Cluster) : undefined;
  const connections = new Map<string, Redis>(
    cluster ? cluster.nodes('all').map((node) => [nodeAddress(node), node] as const) : [[nodeAddress(redis as Redis), redis as Redis]],
  );
  const slotMap = cluster ? await readSlotMap(cluster) : undefined;
  const single = cluster ? '' : nodeAddress(redis as Redis);
  const nodeOf = (slot: number) => (slotMap ? (slotMap.masterOf(slot) ?? 'unassigned') : single);
  /** keys in the slot, asked of its master (cheap: Redis keeps a count per slot); none on one Redis, or when the master does not answer */
  const keysIn = async (slot: number, node: string): Promise<number | undefined> => {
    const connection = cluster ? connections.get(node) : undefined;
    if (!connection) return undefined;
    return connection.call('CLUSTER', 'COUNTKEYSINSLOT', slot).then(Number, () => undefined);
  };

  const poolShards = await Promise.all(
    shardNames.map(async (pool): Promise<ShardView> => {
      const slot = calculateSlot(keys.anchor(pool));
      const node = nodeOf(slot);
      const [stats, counts, keyCount] = await Promise.all([shardQueueStats(ctx, pool), shardJobCounts(ctx, pool), keysIn(slot, node)]);
      const shard: ShardView = {
        shard: keys.shardTag(pool),
        name: pool,
        kind: 'pool',
        pool: poolOfShard(pool),
        slot,
        node,
        queued: stats.classes.reduce((sum, c) => sum + c.depth, 0),
        running: counts.reduce((sum, c) => sum + c.starting + c.running, 0),
        workers: stats.onlineWorkers,
      };
      if (keyCount !== undefined) shard.keys = keyCount;
      return shard;
    }),
  );
  const webhookSlot = calculateSlot(keys.webhookAnchor());
  const webhookNode = nodeOf(webhookSlot);
  const [undelivered, webhookKeys] = await Promise.all([redis.zcard(keys.webhookUndelivered()), keysIn(webhookSlot, webhookNode)]);
  const webhooks: ShardView = { shard: keys.webhookShardTag(), name: '_webhooks', kind: 'webhooks', slot: webhookSlot, node: webhookNode, queued: undelivered };
  if (webhookKeys !== undefined) webhooks.keys = webhookKeys;
  const shards = [...poolShards, webhooks];

  const described: Array<Omit<ShardNodeView, 'shards' | 'queued' | 'used_memory_bytes' | 'ops_per_sec' | 'error'>> = slotMap
    ? [...slotMap.nodes.entries()].map(([node, n]) => (n.replicaOf ? { node, role: n.role, replica_of: n.replicaOf, slots: n.slots } : { node, role: n.role, slots: n.slots }))
    : [{ node: single, role: 'single node', slots: SLOT_COUNT }];
  const nodes = await Promise.all(
    described.map(async (n): Promise<ShardNodeView> => {
      const own = shards.filter((s) => s.node === n.node);
      const view: ShardNodeView = { ...n, shards: own.length, queued: own.reduce((sum, s) => sum + s.queued, 0) };
      const connection = connections.get(n.node);
      if (!connection) return { ...view, error: 'no connection to this node' };
      try {
        const info = await connection.info();
        const usedMemory = infoNumber(info, 'used_memory');
        const ops = infoNumber(info, 'instantaneous_ops_per_sec');
        if (usedMemory !== undefined) view.used_memory_bytes = usedMemory;
        if (ops !== undefined) view.ops_per_sec = ops;
      } catch (error) {
        view.error = (error as Error).message;
      }
      return view;
    }),
  );
  const rank = { master: 0, 'single node': 0, replica: 1 } as const;
  nodes.sort((a, b) => rank[a.role] - rank[b.role] || a.node.localeCompare(b.node, undefined, { numeric: true }));
  return { mode: cluster ? 'cluster' : 'single', pools, shards, nodes };
}

/** Shards by pool name (as `sort()` orders the pools), then by index within the pool: `standard`, `standard_2`, `standard_10`. */
function byPoolThenIndex(a: string, b: string): number {
  const [poolA, poolB] = [poolOfShard(a), poolOfShard(b)];
  return poolA < poolB ? -1 : poolA > poolB ? 1 : shardIndex(a) - shardIndex(b);
}

async function readSlotMap(cluster: Cluster): Promise<SlotMap> {
  const probe = cluster.nodes('master')[0];
  if (!probe) throw new Error('the Redis Cluster client knows no master yet');
  const ranges = (await probe.call('CLUSTER', 'SLOTS')) as SlotRange[];
  // a node may announce an empty host: the one the probe reached it by
  const address = ([host, port]: [string, number, ...unknown[]]) => `${host || (probe.options.host ?? 'localhost')}:${port}`;
  const nodes: SlotMap['nodes'] = new Map();
  const owners: Array<{ from: number; to: number; master: string }> = [];
  for (const [from, to, master, ...replicas] of ranges) {
    if (!master) continue;
    const owner = address(master);
    owners.push({ from, to, master: owner });
    const entry = nodes.get(owner) ?? { role: 'master' as const, slots: 0 };
    entry.slots += to - from + 1;
    nodes.set(owner, entry);
    for (const replica of replicas) nodes.set(address(replica), { role: 'replica', slots: 0, replicaOf: owner });
  }
  return { masterOf: (slot) => owners.find((r) => slot >= r.from && slot <= r.to)?.master, nodes };
}

/** Sets how many shards the pool's submits go to; a smaller count keeps the rest served until settleShards finds them empty. */
export async function setShardCount(ctx: BrokerContext, pool: string, count: number): Promise<PoolShards> {
  checkedPool(pool);
  parseWith(ShardCount, count, 'shard count');
  const before = await ctx.poolShards(pool, true);
  const serve = Math.max(count, before.serve);
  // the new shards first: known to every view and tick, and pausing what the pool's shard 0 has paused
  const added = shardsOf(pool, serve).slice(before.serve);
  const paused = added.length > 0 ? await pausedServices(ctx, pool) : [];
  for (const shard of added) {
    await ctx.rememberPool(shard);
    for (const { service, by, reason } of paused) await ctx.calls.call(FUNCTIONS.pauseService, shard, [service, '1', by ?? '', reason ?? '']);
  }
  await ctx.redis.hset(ctx.keys.shardCounts(), pool, count, `${pool}:serve`, serve);
  ctx.forgetShardCounts(pool);
  const settled = await settleShards(ctx, pool);
  await tellWorkers(ctx, pool);
  return settled;
}

/**
 * Tells the pool's online workers (their signal lists in shard 0, which every
 * worker of the pool waits on) that its shards changed, so that an idle one
 * registers in new shards now rather than at its next heartbeat. Borrowers of
 * the pool wait in their own pools and learn at their heartbeat.
 */
async function tellWorkers(ctx: BrokerContext, pool: string): Promise<void> {
  const [online, borrowers] = await Promise.all([ctx.redis.zrange(ctx.keys.workers(pool), 0, -1), ctx.redis.smembers(ctx.keys.borrowers(pool))]);
  const own = online.filter((worker) => !borrowers.includes(worker));
  if (own.length === 0) return;
  const pipeline = ctx.redis.pipeline();
  for (const worker of own) pipeline.rpush(ctx.keys.signal(pool, worker), 'shards:');
  await pipeline.exec();
}

/**
 * Serves exactly the shards that need it: those submits go to, and above them
 * every shard of the pool that still holds a live job (queued, delayed,
 * starting, running or retrying) or a running workflow's step. Workers learn a
 * change within SHARD_COUNT_TTL_MS (and at their next heartbeat).
 */
export async function settleShards(ctx: BrokerContext, pool: string): Promise<PoolShards> {
  checkedPool(pool);
  const { count, serve } = await ctx.poolShards(pool, true);
  const used = (await ctx.shards()).filter((shard) => poolOfShard(shard) === pool && shardIndex(shard) >= count);
  let needed = count;
  for (const shard of used) {
    const live = (await shardJobCounts(ctx, shard)).some((c) => c.queued + c.delayed + c.starting + c.running + c.retrying > 0);
    if (live) needed = Math.max(needed, shardIndex(shard) + 1);
  }
  if (needed !== serve) {
    await ctx.redis.hset(ctx.keys.shardCounts(), `${pool}:serve`, needed);
    ctx.forgetShardCounts(pool);
  }
  return { pool, count, serve: needed };
}
