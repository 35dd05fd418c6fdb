/// <reference path="./cluster-key-slot.d.ts" />
import { once } from 'node:events';
import { type RedisClusterProcess, type RedisProcess, startRedis, startRedisCluster } from '@emp/testkit';
import calculateSlot from 'cluster-key-slot';
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardReport } from './api-protocol';
import { Broker } from './broker';
import { shardHashTag } from './keys';
import { WebhookOutbox } from './webhook-outbox';

// Where each pool lives: the shard report on one Redis and on a real 3-master
// cluster, checked against what the servers themselves say (CLUSTER SLOTS,
// CLUSTER KEYSLOT, and a plain connection to the reported node holding the keys).

const capabilities = { services: ['simulation'] };

/** Submits `queued + 1` jobs to `pool` and has one worker claim and start one: `queued` stay queued, 1 runs. */
async function fill(broker: Broker, pool: string, queued: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i <= queued; i++) ids.push((await broker.submit({ service: 'simulation', requirements: { pool } })).id);
  await broker.registerWorker({ id: `w-${pool}`, pool, capabilities });
  const claim = await broker.claim(pool, `w-${pool}`);
  expect(claim.job?.id).toBe(ids[0]);
  await broker.start(claim.job!.lease);
  return ids;
}

/** Queues `count` webhook messages (one chain: one due, the rest behind it, all undelivered). */
async function queueWebhooks(broker: Broker, count: number): Promise<void> {
  const outbox = new WebhookOutbox(broker);
  for (let i = 0; i < count; i++) {
    await outbox.enqueue({ id: `m${i}`, tenant: 't', url: 'https://example.com/h', job: 'standard.abcdefabcdef', type: 'job.queued', body: '{}' });
  }
}

describe('shard report on one Redis', () => {
  let redis: RedisProcess;
  let connection: Redis;
  beforeAll(async () => {
    redis = await startRedis();
    connection = new Redis(redis.url);
  });
  afterAll(async () => {
    connection?.disconnect();
    await redis?.stop();
  });

  it('puts every shard on the one server, with each pool\'s queued and running jobs and workers', async () => {
    const broker = await Broker.connect({ redis: connection });
    await fill(broker, 'standard', 2);
    await broker.submit({ service: 'simulation', requirements: { pool: 'scratch' } });
    await queueWebhooks(broker, 2);

    const report = ShardReport.parse(await broker.shardReport());
    const address = `${redis.host}:${redis.port}`;
    expect(report.mode).toBe('single');
    // the configured pools (fast, standard, heavy), the one that only has a job, then webhooks
    expect(report.shards.map((s) => s.shard)).toEqual(['{fast}', '{heavy}', '{scratch}', '{standard}', '{_webhooks}']);
    expect(report.shards.every((s) => s.node === address && s.keys === undefined)).toBe(true);
    // a pool that was never resharded: one shard, named as the pool
    expect(report.pools).toEqual(['fast', 'heavy', 'scratch', 'standard'].map((pool) => ({ pool, count: 1, serve: 1, shards: [pool] })));
    const byPool = new Map(report.shards.map((s) => [s.pool ?? s.kind, s]));
    expect(byPool.get('standard')).toMatchObject({ kind: 'pool', queued: 2, running: 1, workers: 1 });
    expect(byPool.get('scratch')).toMatchObject({ queued: 1, running: 0, workers: 0 });
    expect(byPool.get('heavy')).toMatchObject({ queued: 0, running: 0, workers: 0 });
    expect(byPool.get('webhooks')).toMatchObject({ kind: 'webhooks', queued: 2 });
    expect(byPool.get('webhooks')!.running).toBeUndefined();

    expect(report.nodes).toHaveLength(1);
    expect(report.nodes[0]).toMatchObject({ node: address, role: 'single node', slots: 16384, shards: 5, queued: 5 });
    expect(report.nodes[0]!.used_memory_bytes).toBeGreaterThan(0);
    expect(report.nodes[0]!.ops_per_sec).toBeGreaterThanOrEqual(0);
  });

  it("lists a pool set to 3 shards with its count and its 3 shards, each a row of its own; shrunk, the left-over shards stay while they hold jobs", async () => {
    const broker = await Broker.connect({ redis: connection });
    await broker.setShardCount('wide', 3);
    const ids = await Promise.all(['a', 'b', 'c', 'd', 'e', 'f'].map(async (key) => (await broker.submit({ service: 'simulation', requirements: { pool: 'wide' }, idempotency_key: key })).id));

    const report = ShardReport.parse(await broker.shardReport());
    expect(report.pools.find((p) => p.pool === 'wide')).toEqual({ pool: 'wide', count: 3, serve: 3, shards: ['wide', 'wide_1', 'wide_2'] });
    const rows = report.shards.filter((s) => s.pool === 'wide');
    expect(rows.map((s) => s.shard)).toEqual(['wide', 'wide_1', 'wide_2'].map(shardHashTag));
    // each row counts the jobs its own shard holds (a job id starts with its shard)
    for (const row of rows) {
      const shard = row.name;
      expect(row.queued).toBe(ids.filter((id) => id.startsWith(`${shard}.`)).length);
      expect(row.slot).toBe(calculateSlot(broker.keys.anchor(shard)));
    }
    expect(rows.reduce((sum, s) => sum + s.queued, 0)).toBe(ids.length);

    // back to one shard: placement goes to `wide` alone, the others are served until their jobs are done
    await broker.setShardCount('wide', 1);
    const shrunk = ShardReport.parse(await broker.shardReport());
    const held = ids.some((id) => id.startsWith('wide_2.')) ? 3 : ids.some((id) => id.startsWith('wide_1.')) ? 2 : 1;
    expect(shrunk.pools.find((p) => p.pool === 'wide')).toEqual({ pool: 'wide', count: 1, serve: held, shards: ['wide', 'wide_1', 'wide_2'].slice(0, held) });
    expect(shrunk.shards.filter((s) => s.pool === 'wide').map((s) => s.shard)).toEqual(['wide', 'wide_1', 'wide_2'].map(shardHashTag));
  });
});

describe('shard report on a 3-master Redis Cluster', () => {
  let cluster: RedisClusterProcess;
  let client: Cluster;
  const nodeClients: Redis[] = [];
  const nodeClient = (address: string) => {
    const [host, port] = address.split(':');
    const r = new Redis({ host, port: Number(port), maxRetriesPerRequest: 1 });
    nodeClients.push(r);
    return r;
  };

  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3 });
    client = new Cluster([...cluster.startupNodes], { redisOptions: { maxRetriesPerRequest: 3 } });
    if (client.status !== 'ready') await once(client, 'ready');
  }, 60_000);
  afterAll(async () => {
    for (const r of nodeClients) r.disconnect();
    client?.disconnect();
    await cluster?.stop();
  });

  it("names for each pool the master that CLUSTER SLOTS says owns its slot, and counts each pool's jobs there", async () => {
    const broker = await Broker.connect({ redis: client });
    // pools until every master holds one (by the server's own CLUSTER KEYSLOT), each with its own depth
    const owners = new Map<string, number>();
    const depths = new Map<string, number>();
    for (let i = 0; i < 200 && new Set(owners.values()).size < 3; i++) {
      const pool = `pool-${i}`;
      const slot = Number(await client.call('CLUSTER', 'KEYSLOT', broker.keys.anchor(pool)));
      const owner = await cluster.ownerOfSlot(slot);
      if ([...owners.values()].includes(owner)) continue;
      owners.set(pool, owner);
      depths.set(pool, owners.size);
      await fill(broker, pool, owners.size);
    }
    expect(new Set(owners.values()).size).toBe(3);
    await queueWebhooks(broker, 3);

    const report = ShardReport.parse(await broker.shardReport());
    expect(report.mode).toBe('cluster');
    for (const [pool, owner] of owners) {
      const shard = report.shards.find((s) => s.pool === pool)!;
      expect(shard.shard).toBe(`{${pool}}`);
      expect(shard.slot).toBe(Number(await client.call('CLUSTER', 'KEYSLOT', broker.keys.anchor(pool))));
      expect(shard.node).toBe(`127.0.0.1:${owner}`);
      expect(shard).toMatchObject({ queued: depths.get(pool), running: 1, workers: 1 });
      // the reported node holds the pool's keys itself: a plain connection reads them without a MOVED
      const direct = nodeClient(shard.node);
      expect(await direct.exists(broker.keys.anchor(pool), broker.keys.events(pool))).toBeGreaterThan(0);
      expect(shard.keys).toBe(Number(await direct.call('CLUSTER', 'COUNTKEYSINSLOT', shard.slot)));
      expect(shard.keys).toBeGreaterThan(3);
    }
    const webhooks = report.shards.find((s) => s.kind === 'webhooks')!;
    expect(webhooks).toMatchObject({ shard: '{_webhooks}', queued: 3 });
    expect(webhooks.slot).toBe(Number(await client.call('CLUSTER', 'KEYSLOT', broker.keys.webhookAnchor())));
    expect(webhooks.node).toBe(`127.0.0.1:${await cluster.ownerOfSlot(webhooks.slot)}`);

    // three masters splitting the slots, each with the shards it serves and their depth
    expect(report.nodes.map((n) => n.role)).toEqual(['master', 'master', 'master']);
    expect(report.nodes.map((n) => n.node).sort()).toEqual(cluster.nodes.map((n) => `127.0.0.1:${n.port}`).sort());
    expect(report.nodes.reduce((sum, n) => sum + n.slots, 0)).toBe(16384);
    for (const node of report.nodes) {
      const own = report.shards.filter((s) => s.node === node.node);
      expect(node).toMatchObject({ shards: own.length, queued: own.reduce((sum, s) => sum + s.queued, 0) });
      expect(node.shards).toBeGreaterThan(0);
      expect(node.used_memory_bytes).toBeGreaterThan(0);
      expect(node.error).toBeUndefined();
    }
  });
  it("lists a 3-shard pool's shards as 3 rows, each with its own slot and the master that owns it", async () => {
    const broker = await Broker.connect({ redis: client });
    await broker.setShardCount('spread', 3);
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push((await broker.submit({ service: 'simulation', requirements: { pool: 'spread' } })).id);

    const report = ShardReport.parse(await broker.shardReport());
    expect(report.pools.find((p) => p.pool === 'spread')).toEqual({ pool: 'spread', count: 3, serve: 3, shards: ['spread', 'spread_1', 'spread_2'] });
    const rows = report.shards.filter((s) => s.pool === 'spread');
    expect(rows.map((s) => s.shard)).toEqual(['spread', 'spread_1', 'spread_2'].map(shardHashTag));
    expect(new Set(rows.map((s) => s.slot)).size).toBe(3);
    for (const row of rows) {
      const shard = row.name;
      expect(row.slot).toBe(Number(await client.call('CLUSTER', 'KEYSLOT', broker.keys.anchor(shard))));
      expect(row.node).toBe(`127.0.0.1:${await cluster.ownerOfSlot(row.slot)}`);
      expect(row.queued).toBe(ids.filter((id) => id.startsWith(`${shard}.`)).length);
      // the shard's keys are on the node named: a plain connection reads its count of keys in the slot
      expect(row.keys).toBe(Number(await nodeClient(row.node).call('CLUSTER', 'COUNTKEYSINSLOT', row.slot)));
    }
    expect(rows.reduce((sum, s) => sum + s.queued, 0)).toBe(ids.length);
  });
});
