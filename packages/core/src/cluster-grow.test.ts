import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { type RedisClusterProcess, startRedisCluster } from '@emp/testkit';
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Broker } from './broker';
import { shardsOf } from './pool-shards';
import { startRedis } from './redis-server';

// Adding masters to a Redis Cluster and growing a pool onto them
// (docs/scale-out.md, "Adding masters"): the added shards' slots, still empty,
// move to the new master before any job goes there, so no key of a shard in use
// ever moves, while jobs are submitted and run throughout.

let cluster: RedisClusterProcess;
let client: Cluster;
const clients: Array<Cluster | Redis> = [];

beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3 });
  client = new Cluster([...cluster.startupNodes], { redisOptions: { maxRetriesPerRequest: 3 } });
  clients.push(client);
  if (client.status !== 'ready') await once(client, 'ready');
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.disconnect();
  await cluster?.stop();
});

const slotOf = async (broker: Broker, shard: string) => Number(await client.call('CLUSTER', 'KEYSLOT', broker.keys.anchor(shard)));

describe('growing a pool onto a master added to the cluster', () => {
  it('moves only the new shards, still empty, to the new master while jobs run; every job runs once and none is lost', async () => {
    const broker = await Broker.connect({ redis: client });
    const pool = 'grow';
    await broker.setShardCount(pool, 4);
    const workers = ['grow-a', 'grow-b'];
    const register = () => Promise.all(workers.map((id) => broker.registerWorker({ id, pool, capabilities: { services: ['simulation'] } })));
    await register();
    const before = new Map<string, number>();
    for (const shard of shardsOf(pool, 4)) before.set(shard, await cluster.ownerOfSlot(await slotOf(broker, shard)));

    const submitted: string[] = [];
    const ran = new Map<string, number>();
    const errors: string[] = [];
    let submitting = true;
    const submitter = (async () => {
      for (let i = 0; submitting && i < 2_000; i++) {
        try {
          submitted.push((await broker.submit({ service: 'simulation', requirements: { pool }, payload: { i } })).id);
        } catch (error) {
          errors.push(`submit: ${(error as Error).message}`);
        }
        await sleep(2);
      }
    })();
    let draining = true;
    /** the shards the workers registered in, where they claim (a worker registers in new shards before it claims there) */
    let registeredIn = shardsOf(pool, 4);
    const drainers = workers.map(async (worker, w) => {
      for (let turn = w; draining; turn++) {
        try {
          const served = registeredIn;
          const found = await broker.claimInShards(pool, worker, { first: served[turn % served.length], count: 4 });
          const jobs = found.results.flatMap((r) => (r.job ? [r.job] : []));
          for (const job of jobs) {
            await broker.start(job.lease);
            await broker.complete(job.lease, { ok: true });
            ran.set(job.id, (ran.get(job.id) ?? 0) + 1);
          }
          if (jobs.length === 0) await sleep(5);
        } catch (error) {
          errors.push(`${worker}: ${(error as Error).message}`);
        }
      }
    });

    let added = 0;
    let grown: Awaited<ReturnType<Broker['setShardCount']>> | undefined;
    try {
      await sleep(300);
      added = await cluster.addMaster();
      grown = await broker.setShardCount(pool, 8, { onto: [`127.0.0.1:${added}`] });
      // what a worker does on the shards: signal (or at its heartbeat): registers in the new shards
      await register();
      registeredIn = shardsOf(pool, 8);
      await sleep(500);
    } finally {
      submitting = false;
      await submitter;
      const deadline = Date.now() + 20_000;
      while (submitted.some((id) => !ran.has(id)) && Date.now() < deadline) await sleep(20);
      draining = false;
      await Promise.all(drainers);
    }

    expect(grown).toMatchObject({ pool, count: 8, serve: 8 });
    expect(grown.moved?.map((m) => m.shard)).toEqual(shardsOf(pool, 8).slice(4));
    for (const placed of grown.moved!) {
      expect(placed.node).toBe(`127.0.0.1:${added}`);
      expect(await cluster.ownerOfSlot(placed.slot)).toBe(added);
    }
    // the shards in use stayed where they were
    for (const [shard, owner] of before) expect(await cluster.ownerOfSlot(await slotOf(broker, shard))).toBe(owner);
    expect(errors).toEqual([]);
    expect(submitted.filter((id) => !ran.has(id))).toEqual([]);
    expect([...ran.values()].every((n) => n === 1)).toBe(true);
    // jobs went to the new shards, whose keys are on the new master
    expect(submitted.filter((id) => shardsOf(pool, 8).slice(4).some((shard) => id.startsWith(`${shard}.`))).length).toBeGreaterThan(0);
    const direct = new Redis({ host: '127.0.0.1', port: added, maxRetriesPerRequest: 1 });
    clients.push(direct);
    for (const placed of grown.moved!) expect(Number(await direct.call('CLUSTER', 'COUNTKEYSINSLOT', placed.slot))).toBeGreaterThan(0);
    for (const n of cluster.nodes) {
      const each = new Redis({ host: '127.0.0.1', port: n.port, maxRetriesPerRequest: 1 });
      clients.push(each);
      expect(await each.info('errorstats'), `node ${n.port}`).not.toMatch(/CROSSSLOT|TRYAGAIN/);
    }
  }, 90_000);

  it('refuses a slot that holds keys, a node that is not a master of the cluster, and onto without a grow, moving nothing', async () => {
    const broker = await Broker.connect({ redis: client });
    const pool = 'crowded';
    await broker.setShardCount(pool, 2);
    // a key in the slot shard 2 would take (another tenant of the cluster, or a shard used before)
    await client.set(`${broker.keys.anchor('crowded_2')}:squatter`, '1');
    const masters = [...(await cluster.roles()).entries()].filter(([, role]) => role === 'master').map(([port]) => port);
    const slot2 = await slotOf(broker, 'crowded_2');
    const slot3 = await slotOf(broker, 'crowded_3');
    const owners = [await cluster.ownerOfSlot(slot2), await cluster.ownerOfSlot(slot3)];
    const elsewhere = masters.find((port) => port !== owners[0])!;
    await expect(broker.setShardCount(pool, 4, { onto: [`127.0.0.1:${elsewhere}`] })).rejects.toThrow(
      new RegExp(`slot ${slot2} of shard crowded_2 holds 1 key on 127\\.0\\.0\\.1:${owners[0]}: only an empty slot is moved`),
    );
    // nothing moved, not even crowded_3's free slot, and the count is as it was
    expect([await cluster.ownerOfSlot(slot2), await cluster.ownerOfSlot(slot3)]).toEqual(owners);
    expect(await broker.poolShards(pool, { fresh: true })).toMatchObject({ count: 2, serve: 2 });
    await expect(broker.setShardCount(pool, 4, { onto: ['127.0.0.1:1'] })).rejects.toThrow(/127\.0\.0\.1:1 is not a live master of this cluster; its masters are /);
    await expect(broker.setShardCount(pool, 4, { onto: ['nonsense'] })).rejects.toThrow(/a node is host:port/);
    await expect(broker.setShardCount(pool, 2, { onto: [`127.0.0.1:${elsewhere}`] })).rejects.toThrow(/onto places the shards a grow adds, and pool crowded already has that many/);
  }, 60_000);
});

describe('onto on one Redis server', () => {
  it('is refused with the reason', async () => {
    const server = await startRedis();
    const redis = new Redis(server.url);
    try {
      const broker = await Broker.connect({ redis });
      await expect(broker.setShardCount('solo', 2, { onto: ['127.0.0.1:7000'] })).rejects.toThrow(/masters of a Redis Cluster; this is one Redis server/);
      expect(await broker.poolShards('solo', { fresh: true })).toMatchObject({ count: 1 });
    } finally {
      redis.disconnect();
      await server.stop();
    }
  });
});
