import { setTimeout as sleep } from 'node:timers/promises';
import { type Broker, EmpError, type RedisClient, Scheduler, placeOnShard, poolOfJobId, shardsOf } from '@emp/core';
import { waitFor } from '@emp/testkit';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { simulationConnector } from './connectors/simulation';
import { jobsOnceEnded, terminalEvents, useFailoverCluster } from './failover-cluster';
import { Worker } from './worker';

// One pool spread over every master of a 3 masters + 3 replicas loopback cluster
// (one shard per master); the master of one shard dies (SIGKILL) while workers
// drain the pool and a client submits. That shard fails over on its own; the
// other shards never stop (jobs placed on them keep finishing while it is
// down); every job ends with exactly one outcome; every durable submit
// acknowledged is there after the failover.

const POOL_PREFIX = 'spread';
const silent = pino({ level: 'silent' });
const failover = useFailoverCluster();
const connect = () => failover.connect();

async function ownerOf(redis: RedisClient, broker: Broker, shard: string): Promise<number> {
  return failover.cluster.ownerOfSlot(Number(await redis.call('CLUSTER', 'KEYSLOT', broker.keys.anchor(shard))));
}

describe('failover of one shard of a pool spread over every master', () => {
  it('the other shards keep running through it; one outcome per job; no durable job lost', { timeout: 90_000 }, async () => {
    const { redis, broker } = await connect();
    let pool = '';
    for (let i = 0; i < 500 && !pool; i++) {
      const owners = await Promise.all(shardsOf(`${POOL_PREFIX}-${i}`, 3).map((shard) => ownerOf(redis, broker, shard)));
      if (new Set(owners).size === 3) pool = `${POOL_PREFIX}-${i}`;
    }
    expect(pool).not.toBe('');
    await broker.setShardCount(pool, 3);
    const scheduler = new Scheduler(broker, { maxIntervalMs: 200, logger: silent });
    scheduler.start();
    failover.closeAfter(() => scheduler.stop());

    const runs = new Map<string, number>();
    for (const id of ['sw-1', 'sw-2']) {
      const connector = simulationConnector({ durationMs: 30, steps: 1 });
      const counting = {
        ...connector,
        run: (job: Parameters<typeof connector.run>[0], ctx: Parameters<typeof connector.run>[1]) => {
          runs.set(job.id, (runs.get(job.id) ?? 0) + 1);
          return connector.run(job, ctx);
        },
      };
      const worker = new Worker({ broker, id, pool, capabilities: { services: ['simulation'] }, connectors: [counting], concurrency: 3, logger: silent, heartbeatMs: 500 });
      await worker.start();
      failover.closeAfter(() => worker.stop());
    }

    const victim = `${pool}_1`;
    const master = await ownerOf(redis, broker, victim);
    const acknowledged: Array<{ id: string; durable: boolean; at: number }> = [];
    const refused: string[] = [];
    let killedAt = 0;
    let failedOver = 0;
    let stop = false;
    const submitting = (async () => {
      for (let n = 0; !stop && n < 600; n++) {
        // the promoted master of the victim has no replica: durable submits only before the kill
        const durable = n % 2 === 0 && killedAt === 0;
        try {
          const result = await broker.submit({ service: 'simulation', requirements: { pool }, payload: { n } }, { durable });
          acknowledged.push({ id: result.id, durable, at: Date.now() });
        } catch (error) {
          refused.push(error instanceof EmpError ? error.code : String(error));
        }
        await sleep(10);
      }
    })();

    await waitFor('jobs flowing on every shard', async () => new Set(acknowledged.map((j) => poolOfJobId(j.id))).size === 3 && acknowledged.length >= 60, 15_000);
    await failover.cluster.kill(master);
    killedAt = Date.now();
    // while the victim's master is down, jobs placed on the other shards (by their keys) still run
    const healthy: string[] = [];
    for (let i = 0; healthy.length < 10; i++) {
      const key = `healthy-${i}`;
      if (placeOnShard(3, `default:${key}`, 0) === 1) continue;
      healthy.push((await broker.submit({ service: 'simulation', requirements: { pool }, idempotency_key: key })).id);
    }
    const ranWhileDown = await waitFor(
      'a job of another shard, submitted after the kill, to finish',
      async () => {
        for (const id of healthy) {
          if ((await broker.getJob(id))?.state !== 'succeeded') continue;
          // where the victim's slot is served at that moment: still the dead master, or already its replica
          return { id, victimServedBy: await ownerOf(redis, broker, victim) };
        }
        return undefined;
      },
      20_000,
    );
    expect(ranWhileDown.victimServedBy).toBe(master);
    for (const id of healthy) acknowledged.push({ id, durable: false, at: killedAt });
    const otherShardsRanAt = Date.now();
    const promoted = await failover.cluster.waitForFailover(master, 20_000);
    failedOver = Date.now();
    expect(promoted).not.toBe(master);
    expect(await ownerOf(redis, broker, victim)).toBe(promoted);

    const count = acknowledged.length;
    await waitFor('submits after the failover', async () => acknowledged.length >= count + 30, 15_000);
    stop = true;
    await submitting;

    const jobs = await jobsOnceEnded(broker, acknowledged.map((a) => a.id));
    const lost = acknowledged.filter(({ id }) => jobs.get(id) === null);
    expect(lost.filter((j) => j.durable)).toEqual([]);
    // only the victim's shard can have lost anything
    expect(lost.filter((j) => poolOfJobId(j.id) !== victim)).toEqual([]);

    const terminal = await terminalEvents(broker, shardsOf(pool, 3));
    for (const { id } of acknowledged) if (jobs.get(id)) expect(terminal.get(id), id).toEqual(['job.succeeded']);
    expect(refused.filter((code) => code !== 'NOT_REPLICATED' && code !== 'DUPLICATE_ID')).toEqual([]);
    console.info(
      `sharded failover: ${victim} master ${master} -> ${promoted} in ${failedOver - killedAt} ms; another shard's job finished ` +
        `${otherShardsRanAt - killedAt} ms after the kill; ${acknowledged.length} submits acknowledged, ${refused.length} refused, ` +
        `plain submits lost: ${lost.length}, jobs run twice: ${[...runs.values()].filter((n) => n > 1).length}`,
    );
  });
});
