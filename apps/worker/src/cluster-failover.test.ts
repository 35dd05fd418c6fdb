import { setTimeout as sleep } from 'node:timers/promises';
import { type Broker, EmpError, NotReplicatedError, type RedisClient, Scheduler, functionLibrary } from '@emp/core';
import { waitFor } from '@emp/testkit';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { simulationConnector } from './connectors/simulation';
import { jobsOnceEnded, terminalEvents, useFailoverCluster } from './failover-cluster';
import { Worker } from './worker';

// A pool's master dies (SIGKILL) on a 3 masters + 3 replicas loopback cluster
// while workers drain the pool and a client submits. The cluster fails over
// (cluster-node-timeout 1 s); the broker, the workers (and their blocking
// signal reads on duplicated connections) ride it out on the connections
// openRedis made, without a restart. Every job ends with exactly one outcome,
// and every job whose durable submit was acknowledged is there after the
// failover. Plain submits acknowledged just before the kill may be lost
// (asynchronous replication): their loss is reported, not asserted.

const POOL = 'failover';
const silent = pino({ level: 'silent' });
/** the workers' longest blocking wait: a job run well before it ends was a wake-up's, not a timeout's */
const SIGNAL_WAIT_MS = 20_000;

const failover = useFailoverCluster();
const connect = (config: Parameters<typeof Broker.connect>[0]['config'] = {}) => failover.connect(config);

function direct(port: number): Redis {
  const redis = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1 });
  redis.on('error', () => undefined); // a node this file kills
  failover.closeAfter(() => redis.disconnect());
  return redis;
}

async function masterOfPool(broker: Broker, redis: RedisClient): Promise<number> {
  const slot = Number(await redis.call('CLUSTER', 'KEYSLOT', broker.keys.anchor(POOL)));
  return failover.cluster.ownerOfSlot(slot);
}

describe('failover on a Redis Cluster with replicas', () => {
  it('openRedis reads several hosts in one URL as a cluster, and the cluster has a replica per master', async () => {
    const { redis } = await connect();
    expect(redis.isCluster).toBe(true);
    const roles = [...(await failover.cluster.roles()).values()];
    expect(roles.filter((r) => r === 'master')).toHaveLength(3);
    expect(roles.filter((r) => r === 'replica')).toHaveLength(3);
  });

  it("the function library reaches a master's replica by replication (FUNCTION LOAD is replicated)", async () => {
    const { broker, redis } = await connect();
    const master = await masterOfPool(broker, redis);
    const [replica] = await failover.cluster.replicasOf(master);
    expect(replica).toBeDefined();
    const onReplica = direct(replica!);
    await waitFor('the library on the replica', async () => ((await onReplica.call('FUNCTION', 'LIST', 'LIBRARYNAME', 'emp')) as unknown[]).length === 1, 5_000);
    expect(await onReplica.call('FCALL_RO', 'emp_version', 0)).toBe(functionLibrary().version);
  });

  it('a durable submit is answered once a replica has the job, and a durable broker starts where every master has a replica', async () => {
    const { broker } = await connect();
    const durable = await broker.submit({ service: 'simulation', requirements: { pool: POOL }, payload: { n: 'durable' } }, { durable: true });
    expect(durable.pool).toBe(POOL);
    const many = await broker.submitMany(
      Array.from({ length: 5 }, (_, i) => ({ service: 'simulation', requirements: { pool: POOL }, payload: { i } })),
      { durable: true },
    );
    expect(many.filter((r) => r instanceof Error)).toEqual([]);
    await expect(connect({ durableSubmit: 'replica' })).resolves.toBeDefined();
  });

  it('a durable submit follows a pool whose slot moved to another master (the client still has the old slot map)', async () => {
    const { broker, redis } = await connect();
    const pool = 'moving-pool';
    const slot = Number(await redis.call('CLUSTER', 'KEYSLOT', broker.keys.anchor(pool)));
    const source = await failover.cluster.ownerOfSlot(slot);
    const roles = await failover.cluster.roles();
    const target = [...roles].find(([port, role]) => role === 'master' && port !== source)![0];
    const targetId = (await direct(target).call('CLUSTER', 'MYID')) as string;
    // an empty slot (a pool never used) changes hands at once: told to the new owner first, then to every master
    for (const [port, role] of [...roles].sort(([a]) => (a === target ? -1 : 0))) {
      if (role === 'master') await direct(port).call('CLUSTER', 'SETSLOT', slot, 'NODE', targetId);
    }
    // the old master answers the submit MOVED and its WAIT with a count: the submit is made again on the new one
    const submitted = await broker.submit({ service: 'simulation', requirements: { pool } }, { durable: true });
    expect(await direct(target).exists(broker.keys.job(pool, submitted.id))).toBe(1);
    const again = await broker.submitMany([{ service: 'simulation', requirements: { pool } }], { durable: true });
    expect(again.filter((r) => r instanceof Error)).toEqual([]);
  });

  it('a master is killed mid-run: the cluster fails over, workers and broker carry on, one outcome per job, no durable job lost', { timeout: 60_000 }, async () => {
    const { broker, redis } = await connect();
    const scheduler = new Scheduler(broker, { maxIntervalMs: 200, logger: silent });
    scheduler.start();
    failover.closeAfter(() => scheduler.stop());

    const runs = new Map<string, number>();
    const workers: Worker[] = [];
    for (const id of ['fw-1', 'fw-2']) {
      const connector = simulationConnector({ durationMs: 40, steps: 2 });
      const counting = { ...connector, run: (job: Parameters<typeof connector.run>[0], ctx: Parameters<typeof connector.run>[1]) => {
        runs.set(job.id, (runs.get(job.id) ?? 0) + 1);
        return connector.run(job, ctx);
      } };
      const worker = new Worker({ broker, id, pool: POOL, capabilities: { services: ['simulation'] }, connectors: [counting], concurrency: 2, logger: silent, heartbeatMs: 500, signalWaitMs: SIGNAL_WAIT_MS });
      await worker.start();
      workers.push(worker);
      failover.closeAfter(() => worker.stop());
    }

    const master = await masterOfPool(broker, redis);
    const acknowledged: Array<{ id: string; durable: boolean; beforeKill: boolean }> = [];
    const refused: string[] = [];
    let killedAt = 0;
    let failedOver = false;
    let stop = false;
    // one submitter, alternating durable and plain submits, through the kill and the failover; once the
    // replica has taken over it has no replica of its own (its master is dead), so only plain submits go on
    const submitting = (async () => {
      for (let n = 0; !stop && n < 400; n++) {
        const durable = n % 2 === 0 && !failedOver;
        try {
          const result = await broker.submit({ service: 'simulation', requirements: { pool: POOL }, payload: { n } }, { durable });
          acknowledged.push({ id: result.id, durable, beforeKill: killedAt === 0 });
        } catch (error) {
          refused.push(error instanceof EmpError ? error.code : String(error));
        }
        await sleep(15);
      }
    })();

    await waitFor('jobs flowing', async () => acknowledged.length >= 40, 10_000);
    await failover.cluster.kill(master);
    killedAt = Date.now();
    const promoted = await failover.cluster.waitForFailover(master, 20_000);
    const failoverMs = Date.now() - killedAt;
    failedOver = true;
    expect(promoted).not.toBe(master);
    expect(await masterOfPool(broker, redis)).toBe(promoted);
    // the library is there on the new master, at this code's version: nothing to reload, and a process
    // that starts now (its version check on every master) connects as usual
    expect(await direct(promoted).call('FCALL_RO', 'emp_version', 0)).toBe(functionLibrary().version);
    await expect(connect()).resolves.toBeDefined();

    // submits go on against the new master
    const afterFailover = acknowledged.length;
    await waitFor('submits after the failover', async () => acknowledged.length >= afterFailover + 20, 15_000);
    stop = true;
    await submitting;
    // the new master has no replica: a durable submit says so, and its job is queued all the same
    const unreplicated = await broker.submit({ service: 'simulation', requirements: { pool: POOL } }, { durable: true }).catch((error: unknown) => error);
    expect(unreplicated).toBeInstanceOf(NotReplicatedError);
    expect((unreplicated as Error).message).toMatch(/^job failover\.\w+ is queued on the Redis master, but no replica acknowledged it within 1000 ms/);
    const queuedAnyway = /^job (\S+) /.exec((unreplicated as Error).message)![1]!;
    acknowledged.push({ id: queuedAnyway, durable: false, beforeKill: false });

    // every durable submit acknowledged is on the new master, and everything there ends
    const jobs = await jobsOnceEnded(broker, acknowledged.map((a) => a.id), ['succeeded', 'failed']);
    // the idle workers' blocking reads (on duplicates of the cluster connection) were on the dead master:
    // a job submitted now must wake one of them, long before their wait would time out
    const probe = await broker.submit({ service: 'simulation', requirements: { pool: POOL } });
    const probedAt = Date.now();
    await waitFor('the probe job to be run', async () => (await broker.getJob(probe.id))?.state === 'succeeded', SIGNAL_WAIT_MS / 2);
    const probeMs = Date.now() - probedAt;
    const lost = acknowledged.filter(({ id }) => jobs.get(id) === null);
    expect(lost.filter((j) => j.durable)).toEqual([]);
    // the jobs submitted after the failover were all run, which the workers' blocking reads woke them for
    expect(acknowledged.filter((j) => !j.beforeKill).every((j) => jobs.get(j.id)?.state === 'succeeded')).toBe(true);

    // one outcome per job: the record's, and exactly one terminal event for it
    const terminal = await terminalEvents(broker, [POOL]);
    for (const { id } of acknowledged) {
      const job = jobs.get(id);
      if (!job) continue;
      expect(job.state).toBe('succeeded');
      expect(terminal.get(id)).toEqual(['job.succeeded']);
    }
    // a submit is refused only for what the failover explains: no replica to acknowledge a durable one, or a
    // submit the client sent again after its first landed (docs/scale-out.md); never a connection error
    expect(refused.filter((code) => code !== 'NOT_REPLICATED' && code !== 'DUPLICATE_ID')).toEqual([]);
    const ranTwice = [...runs.values()].filter((count) => count > 1).length;
    console.info(
      `failover: master ${master} -> ${promoted} in ${failoverMs} ms; ${acknowledged.length} submits acknowledged ` +
        `(${acknowledged.filter((j) => j.durable).length} durable), ${refused.length} refused (${[...new Set(refused)].join('; ')}), ` +
        `plain submits lost: ${lost.length}, jobs run twice (at-least-once): ${ranTwice}, ` +
        `a job submitted to the idle workers after the failover ran in ${probeMs} ms`,
    );
  });
});
