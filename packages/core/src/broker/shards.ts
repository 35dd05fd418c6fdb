/// <reference path="../cluster-key-slot.d.ts" />
import calculateSlot from 'cluster-key-slot';
import { type Cluster, Redis } from 'ioredis';
import { z } from 'zod';
import { NodeAddress, type PoolShards, type PoolShardsView, type ShardNodeView, type ShardPlacement, type ShardReport, type ShardView } from '../api-protocol';
import type { BrokerContext } from './context';
import { ShardCount, poolOfShard, shardIndex, shardsOf } from '../pool-shards';
import { EmpError, ValidationError } from '../errors';
import { ensureFunctionLibraryOn } from '../library';
import { parseWith } from '../validation';
import { checkedPool, nextFormerCounts } from './context';
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

export interface SetShardCountOptions {
  /**
   * Masters (`host:port`, as CLUSTER NODES names them) that the shards a grow
   * adds are put on, in turn, before any of them is used: their slots, still
   * empty, are reassigned to those masters first (moveEmptySlot). How a pool
   * grows onto masters just added to the cluster without moving a key.
   */
  onto?: string[];
}

/**
 * Sets how many shards the pool's submits go to; a smaller count keeps the rest
 * served until settleShards finds them empty. With `onto`, the added shards'
 * slots move to those masters first; `moved` lists them.
 */
export async function setShardCount(ctx: BrokerContext, pool: string, count: number, options: SetShardCountOptions = {}): Promise<PoolShards> {
  checkedPool(pool);
  parseWith(ShardCount, count, 'shard count');
  const before = await ctx.poolShards(pool, true);
  const serve = Math.max(count, before.serve);
  // the new shards first: known to every view and tick, and pausing what the pool's shard 0 has paused
  const added = shardsOf(pool, serve).slice(before.serve);
  const onto = options.onto === undefined ? undefined : parseWith(z.array(NodeAddress).min(1, 'onto names at least one master (host:port)'), options.onto, 'onto');
  const moved = onto ? await placeShards(ctx, pool, added, onto) : undefined;
  const paused = added.length > 0 ? await pausedServices(ctx, pool) : [];
  for (const shard of added) {
    await ctx.rememberPool(shard);
    for (const { service, by, reason } of paused) await ctx.calls.call(FUNCTIONS.pauseService, shard, [service, '1', by ?? '', reason ?? '']);
  }
  // the count it had: for the idempotency window, a keyed submit looks for its key where that count put it too
  const stored = await ctx.redis.hget(ctx.keys.shardCounts(), `${pool}:former`);
  const former = nextFormerCounts(stored, before.count, count, Date.now(), ctx.config.idempotencyTtlMs);
  await ctx.redis.hset(ctx.keys.shardCounts(), pool, count, `${pool}:serve`, serve, `${pool}:former`, former);
  ctx.forgetShardCounts(pool);
  const settled = await settleShards(ctx, pool);
  await tellWorkers(ctx, pool);
  return moved ? { ...settled, moved } : settled;
}

const badOnto = (message: string) => new ValidationError('onto', [{ path: '', message }]);

/** A node of the cluster as CLUSTER NODES describes it. */
interface ClusterNodeLine {
  id: string;
  /** `host:port` (the client port) */
  address: string;
  master: boolean;
  failed: boolean;
}

function parseClusterNodes(text: string): ClusterNodeLine[] {
  return text
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => {
      const [id = '', address = '', flags = ''] = line.trim().split(' ');
      return { id, address: address.split('@')[0]!, master: flags.split(',').includes('master'), failed: /fail/.test(flags) };
    });
}

/**
 * Puts the shards `added` (not used yet) on the masters `onto`, in turn: each
 * shard's slot, which must hold no key, is reassigned to its master the way
 * `redis-cli --cluster reshard` moves a slot (IMPORTING on the target,
 * MIGRATING on the owner, then NODE on the target, the owner and every other
 * master), with no key to migrate. A slot that holds keys is refused: moving it
 * while calls reach it would split a shard's keys over two nodes, and the
 * functions, which name only the shard's anchor key, would read half a shard
 * (docs/scale-out.md, "Adding masters").
 */
async function placeShards(ctx: BrokerContext, pool: string, added: string[], onto: string[]): Promise<ShardPlacement[]> {
  if (!ctx.redis.isCluster) throw badOnto(`onto places new shards on masters of a Redis Cluster; this is one Redis server`);
  if (added.length === 0) {
    throw badOnto(`onto places the shards a grow adds, and pool ${pool} already has that many: give a count above its served shards`);
  }
  const cluster = ctx.redis as Cluster;
  const probe = cluster.nodes('master')[0];
  if (!probe) throw new Error('the Redis Cluster client knows no master yet');
  const nodes = parseClusterNodes(String(await probe.call('CLUSTER', 'NODES')));
  const masters = nodes.filter((n) => n.master && !n.failed);
  const targets = onto.map((address) => {
    const node = masters.find((n) => n.address === address);
    if (!node) throw badOnto(`${address} is not a live master of this cluster; its masters are ${masters.map((n) => n.address).join(', ')}`);
    return node;
  });
  const connections = new Map<string, Redis>(cluster.nodes('all').map((node) => [nodeAddress(node), node] as const));
  const opened: Redis[] = [];
  /** a connection to a master: the cluster client's, or (a master with no slot yet, which it does not know) one of our own */
  const connect = (node: ClusterNodeLine): Redis => {
    const known = connections.get(node.address);
    if (known) return known;
    const cut = node.address.lastIndexOf(':');
    const own = new Redis({ ...cluster.options.redisOptions, host: node.address.slice(0, cut), port: Number(node.address.slice(cut + 1)), lazyConnect: false });
    own.on('error', () => undefined);
    opened.push(own);
    connections.set(node.address, own);
    return own;
  };
  try {
    const slotMap = await readSlotMap(cluster);
    const moves = added.map((shard, i) => {
      const slot = calculateSlot(ctx.keys.anchor(shard));
      const ownerAddress = slotMap.masterOf(slot);
      const owner = masters.find((n) => n.address === ownerAddress);
      if (!owner) throw new Error(`slot ${slot} of shard ${shard} has no live master (${ownerAddress ?? 'unassigned'}); the cluster must be whole first`);
      return { shard, slot, owner, target: targets[i % targets.length]! };
    });
    // every slot checked before any moves, so that a refusal leaves the cluster as it was
    for (const { shard, slot, owner } of moves) {
      const keys = Number(await connect(owner).call('CLUSTER', 'COUNTKEYSINSLOT', slot));
      if (keys > 0) throw slotHoldsKeys(slot, shard, owner, keys);
    }
    for (const target of new Set(moves.map((move) => move.target))) {
      // a master that joined a moment ago answers CLUSTERDOWN until it has learnt who serves every slot: not yet a place for a shard
      const info = String(await connect(target).call('CLUSTER', 'INFO'));
      if (!/cluster_state:ok/.test(info)) {
        throw new EmpError('BAD_STATE', `${target.address} reports ${/cluster_state:\w+/.exec(info)?.[0] ?? 'no cluster_state'}: wait until it has joined the cluster (CLUSTER INFO says cluster_state:ok), then grow onto it`);
      }
      // functions live per server: a master added since the processes connected has none yet
      await ensureFunctionLibraryOn(connect(target));
    }
    const placed: ShardPlacement[] = [];
    for (const { shard, slot, owner, target } of moves) {
      if (owner.id !== target.id) await moveEmptySlot(slot, shard, connect(owner), owner, connect(target), target, masters.map(connect));
      placed.push({ shard, slot, node: target.address });
    }
    // the client's map learns the new owners now, not at the first MOVED
    await new Promise<void>((resolve) => cluster.refreshSlotsCache(() => resolve()));
    return placed;
  } finally {
    for (const connection of opened) connection.disconnect();
  }
}

/** The refusal of a slot that holds keys. */
function slotHoldsKeys(slot: number, shard: string, owner: ClusterNodeLine, keys: number): EmpError {
  return new EmpError(
    'BAD_STATE',
    `slot ${slot} of shard ${shard} holds ${keys} key${keys === 1 ? '' : 's'} on ${owner.address}: only an empty slot is moved ` +
      '(a slot moved while its shard is in use splits the shard over two nodes; see docs/scale-out.md, "Adding masters")',
  );
}

/** Reassigns an empty slot from `owner` to `target`; refuses (and leaves the slot where it was) if the owner holds a key in it. */
async function moveEmptySlot(slot: number, shard: string, owner: Redis, ownerNode: ClusterNodeLine, target: Redis, targetNode: ClusterNodeLine, masters: Redis[]): Promise<void> {
  await target.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', ownerNode.id);
  await owner.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', targetNode.id);
  // a key written between the count and MIGRATING stays on the owner: look again, and put the slot back if one did
  const after = Number(await owner.call('CLUSTER', 'COUNTKEYSINSLOT', slot));
  if (after > 0) {
    await target.call('CLUSTER', 'SETSLOT', slot, 'STABLE');
    await owner.call('CLUSTER', 'SETSLOT', slot, 'STABLE');
    throw slotHoldsKeys(slot, shard, ownerNode, after);
  }
  // the target first (it takes the slot with a new config epoch), then the owner, then the others (gossip would tell them too)
  await target.call('CLUSTER', 'SETSLOT', slot, 'NODE', targetNode.id);
  await owner.call('CLUSTER', 'SETSLOT', slot, 'NODE', targetNode.id);
  for (const master of masters) if (master !== target && master !== owner) await master.call('CLUSTER', 'SETSLOT', slot, 'NODE', targetNode.id).catch(() => undefined);
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
