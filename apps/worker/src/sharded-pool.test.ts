import { Broker, type Job, Scheduler, placeOnShard, poolOfJobId, shardsOf } from '@emp/core';
import { waitFor } from '@emp/testkit';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { simulationConnector } from './connectors/simulation';
import { Worker, type WorkerOptions } from './worker';

// Real workers in a pool spread over shards (docs/scale-out.md, "Shards within a
// pool"): they register in every shard, block on each shard's signals, find jobs
// on any shard, leave the idle sets of the others when full, and follow a reshard.

const POOL = 'standard';
const silent = pino({ level: 'silent' });

const { redis } = usePrivateRedis();
const workers: Worker[] = [];
const schedulers: Scheduler[] = [];

afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.stop({ graceMs: 0 })));
  await Promise.all(schedulers.splice(0).map((s) => s.stop()));
});

async function startWorker(broker: Broker, options: Partial<WorkerOptions> & { durationMs?: number } = {}): Promise<Worker> {
  const { durationMs = 20, ...rest } = options;
  const worker = new Worker({
    broker,
    id: 'w1',
    pool: POOL,
    capabilities: { services: ['simulation'] },
    connectors: [simulationConnector({ durationMs, steps: 1 })],
    logger: silent,
    ...rest,
  });
  workers.push(worker);
  await worker.start();
  return worker;
}

async function submit(broker: Broker, count: number, extra: { idempotency_key?: string } = {}): Promise<string[]> {
  const results = await broker.submitMany(Array.from({ length: count }, (_, i) => ({ service: 'simulation', requirements: { pool: POOL }, payload: { i }, ...extra })));
  return results.map((r) => {
    if (r instanceof Error) throw r;
    return r.id;
  });
}

async function allEnded(broker: Broker, ids: string[]): Promise<Job[]> {
  return waitFor(`${ids.length} jobs to succeed`, async () => {
    const jobs = await Promise.all(ids.map((id) => broker.getJob(id)));
    return jobs.every((job) => job?.state === 'succeeded') ? (jobs as Job[]) : undefined;
  });
}

describe('workers of a sharded pool', () => {
  it('drain jobs submitted on every shard, each run once, and are woken by a submit on any shard', async () => {
    const broker = await Broker.connect({ redis });
    await broker.setShardCount(POOL, 4);
    await startWorker(broker, { id: 'w1', concurrency: 3 });
    await startWorker(broker, { id: 'w2', concurrency: 1 });
    const ids = await submit(broker, 120);
    expect(new Set(ids.map(poolOfJobId)).size).toBe(4);
    const jobs = await allEnded(broker, ids);
    expect(jobs.every((job) => job.attempts === 1)).toBe(true);
    expect(new Set(jobs.map((job) => job.worker))).toEqual(new Set(['w1', 'w2']));

    // idle now in every shard: one job on each shard is picked up by a waiting worker (no polling: the scheduler is not running)
    for (let k = 0; k < 4; k++) {
      const [id] = await submit(broker, 1, { idempotency_key: keyForShard(k, 4) });
      expect(poolOfJobId(id!)).toBe(shardsOf(POOL, 4)[k]);
      await allEnded(broker, [id!]);
    }
  });

  it('a full worker leaves the idle sets of the shards it found empty, so their submits wake a free worker', async () => {
    const broker = await Broker.connect({ redis });
    await broker.setShardCount(POOL, 3);
    // one slow job keeps 'busy' full
    const busy = await startWorker(broker, { id: 'busy', concurrency: 1, durationMs: 60_000 });
    const [slow] = await submit(broker, 1, { idempotency_key: keyForShard(2, 3) });
    await waitFor('busy to run the slow job', async () => ((await broker.getJob(slow!))?.worker === 'busy' ? true : undefined));
    await waitFor('busy to leave every idle set', async () => {
      const idle = await Promise.all(shardsOf(POOL, 3).map((shard) => redis.hexists(broker.keys.idle(shard), 'busy')));
      return idle.every((n) => n === 0) ? true : undefined;
    });
    await startWorker(broker, { id: 'free', concurrency: 1 });
    const ids = await submit(broker, 9);
    const jobs = await allEnded(broker, ids);
    expect(new Set(jobs.map((job) => job.worker))).toEqual(new Set(['free']));
    expect(busy).toBeDefined();
  });

  it('with a backlog on every shard, visits every shard (no shard waits for the others to drain), and high-priority jobs on any shard start soon', async () => {
    const broker = await Broker.connect({ redis });
    await broker.setShardCount(POOL, 4);
    await broker.setServicePaused(POOL, 'simulation', true);
    const backlog = await submit(broker, 400);
    const starts: string[] = [];
    for (const id of ['w1', 'w2']) {
      const worker = await startWorker(broker, { id, concurrency: 1, durationMs: 1 });
      worker.on('job:started', (job) => starts.push(job.id));
    }
    await broker.setServicePaused(POOL, 'simulation', false);
    await waitFor('40 jobs to start', async () => (starts.length >= 40 ? true : undefined));
    // a worker takes at most SHARD_STREAK (4) jobs in a row in one shard with its completions, then the next shard
    const firstStarts = starts.slice(0, 40).map(poolOfJobId);
    expect(new Set(firstStarts)).toEqual(new Set(shardsOf(POOL, 4)));

    // one high-priority job on each shard, behind the low-priority backlog still queued on all of them
    const urgent: string[] = [];
    for (let k = 0; k < 4; k++) {
      const [id] = await broker.submitMany([{ service: 'simulation', priority: 100, requirements: { pool: POOL }, idempotency_key: keyForShard(k, 4) }]).then((r) => r.map((x) => (x instanceof Error ? '' : x.id)));
      urgent.push(id!);
    }
    const startedBefore = starts.length;
    await allEnded(broker, urgent);
    // each started within a few rounds of the workers over the shards, not after its shard's backlog
    const positions = urgent.map((id) => starts.indexOf(id) - startedBefore);
    for (const position of positions) expect(position).toBeLessThan(40);
    expect((await broker.jobCounts(POOL))[0]!.queued).toBeGreaterThan(100);
    expect(backlog).toHaveLength(400);
  });

  it('an idle worker is told of a reshard at once: a job on a new shard runs long before its next heartbeat', async () => {
    const broker = await Broker.connect({ redis, config: { leaseMs: 600_000 } });
    // its heartbeat (the other way it learns) is 200 s away
    await startWorker(broker, { id: 'w1', heartbeatMs: 200_000 });
    await allEnded(broker, await submit(broker, 3));
    await broker.setShardCount(POOL, 4);
    const [id] = await submit(broker, 1, { idempotency_key: keyForShard(3, 4) });
    expect(poolOfJobId(id!)).toBe(`${POOL}_3`);
    await allEnded(broker, [id!]);
    expect(await redis.exists(broker.keys.worker(`${POOL}_3`, 'w1'))).toBe(1);
  });

  it('follows a reshard: registers in the new shards at its heartbeat and runs their jobs; a reshard to fewer loses nothing', async () => {
    const broker = await Broker.connect({ redis });
    await startWorker(broker, { id: 'w1', concurrency: 2, heartbeatMs: 100 });
    const scheduler = new Scheduler(broker, { maxIntervalMs: 200 });
    schedulers.push(scheduler);
    scheduler.start();
    await allEnded(broker, await submit(broker, 10));

    await broker.setShardCount(POOL, 3);
    const spread = await submit(broker, 60);
    expect(new Set(spread.map(poolOfJobId)).size).toBe(3);
    await allEnded(broker, spread);
    for (const shard of shardsOf(POOL, 3)) expect(await redis.exists(broker.keys.worker(shard, 'w1'))).toBe(1);

    // down to one shard while jobs are queued on all three: the left-over shards are drained, then no longer served
    await broker.setServicePaused(POOL, 'simulation', true);
    const queued = await submit(broker, 30);
    expect(await broker.setShardCount(POOL, 1)).toMatchObject({ count: 1, serve: 3 });
    const after = await submit(broker, 10);
    expect(new Set(after.map(poolOfJobId))).toEqual(new Set([POOL]));
    await broker.setServicePaused(POOL, 'simulation', false);
    await allEnded(broker, [...queued, ...after]);
    expect(await broker.settleShards(POOL)).toEqual({ pool: POOL, count: 1, serve: 1 });
  });
});

/** An idempotency key (of the default tenant) that places its job on shard `k` of `count`. */
function keyForShard(k: number, count: number): string {
  for (let i = 0; ; i++) if (placeOnShard(count, `default:key-${i}`, 0) === k) return `key-${i}`;
}
