import { once } from 'node:events';
import { Broker, ShardReport, shardHashTag } from '@emp/core';
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
    // each pool first: its shard counts, its queued jobs over its shards and the nodes they are on
    expect(lines[1]).toMatch(/^POOL\s+SHARDS\s+SERVED\s+QUEUED\s+NODES$/);
    expect(listed.stdout).toMatch(new RegExp(`^standard\\s+1\\s+1\\s+2\\s+${address}$`, 'm'));
    expect(listed.stdout).toMatch(new RegExp(`^fast\\s+1\\s+1\\s+0\\s+${address}$`, 'm'));
    expect(listed.stdout).toMatch(/^SHARD\s+POOL\s+NODE\s+SLOT\s+QUEUED\s+RUNNING\s+WORKERS\s+KEYS$/m);
    expect(listed.stdout).toMatch(new RegExp(`^\\{standard\\}\\s+standard\\s+${address}\\s+\\d+\\s+2\\s+0\\s+1\\s+-$`, 'm'));
    expect(listed.stdout).toMatch(new RegExp(`^\\{_webhooks\\}\\s+\\(webhooks\\)\\s+${address}\\s+\\d+\\s+0\\s+-\\s+-\\s+-$`, 'm'));
    expect(listed.stdout).toMatch(/^NODE\s+ROLE\s+SLOTS\s+SHARDS\s+QUEUED\s+MEMORY\s+OPS\/S$/m);
    // fast, standard, heavy and webhooks, all on the one server
    expect(listed.stdout).toMatch(new RegExp(`^${address}\\s+single node\\s+16384\\s+4\\s+2\\s+[\\d.]+ MB\\s+\\d+$`, 'm'));

    const asJson = await runEmp(['shards', '--json'], { REDIS_URL: redis.url });
    const report = ShardReport.parse(JSON.parse(asJson.stdout));
    expect(report.shards.find((s) => s.pool === 'standard')).toMatchObject({ node: address, queued: 2, running: 0, workers: 1 });
    expect(report.pools.find((p) => p.pool === 'standard')).toEqual({ pool: 'standard', count: 1, serve: 1, shards: ['standard'] });
  });

  it('sets a pool\'s shard count and says what changed: grown at once, shrunk with the left-over shards served until their jobs are done', async () => {
    const env = { REDIS_URL: redis.url };
    const grown = await runEmp(['shards', 'set', 'wide', '4'], env);
    expect(grown).toMatchObject({ code: 0, stdout: 'pool wide: 4 shards (was 1); workers serve 4\n' });
    const listed = await runEmp(['shards'], env);
    expect(listed.stdout).toMatch(/^wide\s+4\s+4\s+0\s+\S+$/m);
    for (const shard of ['wide', 'wide_1', 'wide_2', 'wide_3'].map(shardHashTag)) expect(listed.stdout).toMatch(new RegExp(`^${shard.replace(/[{}]/g, '\\$&')}\\s+wide\\s`, 'm'));

    // a job on the last shard: shrinking to one leaves wide_1..wide_3 served while they hold jobs
    const broker = await Broker.connect({ redis: connection });
    const ids: string[] = [];
    while (!ids.some((id) => id.startsWith('wide_3.'))) ids.push((await broker.submit({ service: 'simulation', requirements: { pool: 'wide' } })).id);
    const shrunk = await runEmp(['shards', 'set', 'wide', '1'], env);
    expect(shrunk).toMatchObject({ code: 0, stdout: 'pool wide: 1 shard (was 4); workers serve 4: wide_1, wide_2, wide_3 take no new jobs and stay served until their jobs are done\n' });
    expect((await runEmp(['shards'], env)).stdout).toMatch(new RegExp(`^wide\\s+1\\s+4\\s+${ids.length}\\s+\\S+$`, 'm'));

    // grown again while the left-over shards still hold jobs: those past the count are named
    expect((await runEmp(['shards', 'set', 'wide', '2'], env)).stdout).toBe('pool wide: 2 shards (was 1); workers serve 4: wide_2, wide_3 take no new jobs and stay served until their jobs are done\n');
    // --json, before or after the arguments: the stored counts, as the API answers them
    const asJson = await runEmp(['shards', 'set', 'wide', '2', '--json'], env);
    expect(JSON.parse(asJson.stdout)).toEqual({ pool: 'wide', count: 2, serve: 4 });
    expect(JSON.parse((await runEmp(['shards', 'set', '--json', 'wide', '2'], env)).stdout)).toEqual({ pool: 'wide', count: 2, serve: 4 });
  });

  it('refuses a bad pool name or count with exit code 2, naming the argument, and changes nothing', async () => {
    const env = { REDIS_URL: redis.url };
    for (const [args, message] of [
      [['Wide_2', '2'], /^error: invalid <pool>: a pool name is lowercase letters, digits and dashes/],
      [['narrow', '0'], /^error: invalid <count>: a pool has at least one shard$/],
      [['narrow', '65'], /^error: invalid <count>: a pool has at most 64 shards$/],
      [['narrow', 'two'], /^error: invalid <count>: expected a whole number, got 'two'$/],
      [['narrow', '1.5'], /^error: invalid <count>: expected a whole number, got '1.5'$/],
      [['narrow'], /^error: missing required argument 'count'/],
      [['narrow', '2', '--onto', 'nowhere'], /^error: invalid <onto>: 0: a node is host:port, as CLUSTER NODES names it/],
    ] as const) {
      const refused = await runEmp(['shards', 'set', ...args], env);
      expect({ args, code: refused.code, stdout: refused.stdout }).toEqual({ args, code: 2, stdout: '' });
      expect(refused.stderr.trim()).toMatch(message);
    }
    // a well-formed --onto on one Redis server: the broker's reason, as bad input (exit code 2)
    const single = await runEmp(['shards', 'set', 'narrow', '2', '--onto', '127.0.0.1:7000'], env);
    expect(single.code).toBe(2);
    expect(single.stderr).toMatch(/onto places new shards on masters of a Redis Cluster; this is one Redis server/);
    expect(await (await Broker.connect({ redis: connection })).poolShards('narrow', { fresh: true })).toEqual({ pool: 'narrow', count: 1, serve: 1 });
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

  it("sums a pool's shards over the masters that own them: the NODES of its row are the distinct owners of its shards' slots", async () => {
    const seeds = cluster.nodes.map((n) => `${n.host}:${n.port}`).join(',');
    const env = { REDIS_URL: `redis://${seeds}` };
    expect((await runEmp(['shards', 'set', 'spread', '3'], env)).stdout).toBe('pool spread: 3 shards (was 1); workers serve 3\n');
    const owners = new Set<string>();
    for (const shard of ['spread', 'spread_1', 'spread_2']) owners.add(`127.0.0.1:${await cluster.ownerOfSlot(Number(await client.call('CLUSTER', 'KEYSLOT', shardHashTag(shard))))}`);
    const nodes = [...owners].sort((a, b) => a.localeCompare(b, undefined, { numeric: true })).join(',');
    const listed = await runEmp(['shards'], env);
    expect(listed.stdout).toMatch(new RegExp(`^spread\\s+3\\s+3\\s+0\\s+${nodes}$`, 'm'));
  });
});
