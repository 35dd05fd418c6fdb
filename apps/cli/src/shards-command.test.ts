import { once } from 'node:events';
import { Broker, ShardReport } from '@emp/core';
import { type RedisClusterProcess, type RedisProcess, startRedis, startRedisCluster } from '@emp/testkit';
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runEmp } from './testing/emp-process';

/** Two queued jobs in `pool` and a worker registered there. */
async function twoQueued(broker: Broker, pool: string): Promise<void> {
  await broker.submit({ service: 'simulation', requirements: { pool } });
  await broker.submit({ service: 'simulation', requirements: { pool } });
  await broker.registerWorker({ id: `w-${pool}`, pool, capabilities: { services: ['comfyui'] } });
}

describe('emp shards on one Redis', () => {
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

  it('lists each pool\'s shard on the one server, then the server, as a table or JSON', async () => {
    await twoQueued(await Broker.connect({ redis: connection }), 'standard');
    const address = `${redis.host}:${redis.port}`;

    const listed = await runEmp(['shards'], { REDIS_URL: redis.url });
    expect(listed.code).toBe(0);
    const lines = listed.stdout.split('\n');
    expect(lines[0]).toBe('one Redis (the slot is where the shard would go on a cluster):');
    expect(lines[1]).toMatch(/^SHARD\s+POOL\s+NODE\s+SLOT\s+QUEUED\s+RUNNING\s+WORKERS\s+KEYS$/);
    expect(listed.stdout).toMatch(new RegExp(`^\\{standard\\}\\s+standard\\s+${address}\\s+\\d+\\s+2\\s+0\\s+1\\s+-$`, 'm'));
    expect(listed.stdout).toMatch(new RegExp(`^\\{_webhooks\\}\\s+\\(webhooks\\)\\s+${address}\\s+\\d+\\s+0\\s+-\\s+-\\s+-$`, 'm'));
    expect(listed.stdout).toMatch(/^NODE\s+ROLE\s+SLOTS\s+SHARDS\s+QUEUED\s+MEMORY\s+OPS\/S$/m);
    // fast, standard, heavy and webhooks, all on the one server
    expect(listed.stdout).toMatch(new RegExp(`^${address}\\s+single node\\s+16384\\s+4\\s+2\\s+[\\d.]+ MB\\s+\\d+$`, 'm'));

    const asJson = await runEmp(['shards', '--json'], { REDIS_URL: redis.url });
    const report = ShardReport.parse(JSON.parse(asJson.stdout));
    expect(report.shards.find((s) => s.pool === 'standard')).toMatchObject({ node: address, queued: 2, running: 0, workers: 1 });
  });
});

describe('emp shards on a Redis Cluster', () => {
  let cluster: RedisClusterProcess;
  let client: Cluster;
  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3 });
    client = new Cluster([...cluster.startupNodes]);
    if (client.status !== 'ready') await once(client, 'ready');
  }, 60_000);
  afterAll(async () => {
    client?.disconnect();
    await cluster?.stop();
  });

  it("names the master serving each pool's slot, as the cluster says, and the three masters", async () => {
    await twoQueued(await Broker.connect({ redis: client }), 'renders');
    const seeds = cluster.nodes.map((n) => `${n.host}:${n.port}`).join(',');
    const listed = await runEmp(['shards'], { REDIS_URL: `redis://${seeds}` });
    expect(listed.code).toBe(0);
    expect(listed.stdout.split('\n')[0]).toBe('Redis Cluster, 3 masters:');
    const slot = Number(await client.call('CLUSTER', 'KEYSLOT', '{renders}'));
    const owner = `127.0.0.1:${await cluster.ownerOfSlot(slot)}`;
    expect(listed.stdout).toMatch(new RegExp(`^\\{renders\\}\\s+renders\\s+${owner}\\s+${slot}\\s+2\\s+0\\s+1\\s+\\d+$`, 'm'));
    expect(listed.stdout.match(/^127\.0\.0\.1:\d+\s+master\s+\d+\s+\d+\s+\d+\s+[\d.]+ MB\s+\d+$/gm)).toHaveLength(3);
  });
});
