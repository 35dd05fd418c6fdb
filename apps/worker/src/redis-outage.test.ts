import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Broker, type BrokerConfigInput, Scheduler, type StreamEvent, type StreamEventOf, jobOfEvent } from '@emp/core';
import { type RedisProcess, freePort, startRedis, waitFor } from '@emp/testkit';
import { Redis, type RedisOptions } from 'ioredis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { Connector } from './connector';
import { Worker, type WorkerOptions } from './worker';

// Leases keep running while Redis is down. After an outage longer than the
// lease, the scheduler must not reap the jobs of workers that are alive and
// about to renew (they would run twice), yet a worker that really died must
// still lose its job once the grace is over.

const POOL = 'standard';
const silent = pino({ level: 'silent' });
const LEASE_MS = 2_000;
/** a tick more than 1 s after the previous one finds the clock unwatched (the scheduler ticks every 200 ms at most) */
const CONFIG: BrokerConfigInput = { leaseMs: LEASE_MS, clockGapMs: 1_000 };

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function connect(url: string, config: BrokerConfigInput, options: RedisOptions = {}): Promise<Broker> {
  const redis = new Redis(url, options);
  redis.on('error', () => undefined); // refused connections while the server is down
  cleanups.push(() => redis.disconnect());
  return Broker.connect({ redis, config });
}

/** Starts a scheduler on `broker`; the function it returns resolves once the scheduler has ticked again. */
function startScheduler(broker: Broker): () => Promise<void> {
  let ticks = 0;
  const tick = broker.tick.bind(broker);
  broker.tick = async (pool) => {
    const result = await tick(pool);
    ticks++;
    return result;
  };
  const scheduler = new Scheduler(broker, { maxIntervalMs: 200, logger: silent });
  scheduler.start();
  cleanups.push(() => scheduler.stop());
  return async () => {
    const after = ticks + 1; // a tick that began before this call may have read the shard earlier
    await waitFor('a tick', () => ticks > after, 5_000);
  };
}

/** A connector whose jobs run until `release()`, recording any abort. */
function heldConnector() {
  const held = { aborted: [] as string[], releases: new Map<string, () => void>() };
  const connector: Connector = {
    service: 'simulation',
    run: (job, ctx) =>
      new Promise((resolve, reject) => {
        held.releases.set(job.id, () => resolve({ ran: job.id }));
        ctx.signal.addEventListener('abort', () => {
          held.aborted.push(job.id);
          reject(ctx.signal.reason as Error);
        });
      }),
  };
  return { held, connector };
}

async function startWorker(broker: Broker, connector: Connector, options: Partial<WorkerOptions> = {}): Promise<Worker> {
  const worker = new Worker({
    broker,
    id: 'alive',
    pool: POOL,
    capabilities: { services: ['simulation'] },
    connectors: [connector],
    logger: silent,
    ...options,
  });
  await worker.start();
  cleanups.push(() => worker.stop({ graceMs: 0 }));
  return worker;
}

/** A job held by worker 'dead', which claims it and then never says anything again. */
async function jobOfDeadWorker(broker: Broker): Promise<string> {
  await broker.registerWorker({ id: 'dead', pool: POOL, capabilities: { services: ['simulation'] } });
  const { id } = await broker.submit({ service: 'simulation' });
  const claim = await broker.claim(POOL, 'dead');
  expect(claim.job?.id).toBe(id);
  return id;
}

async function heartbeatAt(broker: Broker): Promise<string | undefined> {
  return (await broker.worker(POOL, 'alive'))?.heartbeat_at;
}

async function eventsOf(broker: Broker, jobId?: string): Promise<StreamEvent[]> {
  const events = await broker.readEvents(POOL, '0', { count: 100_000 });
  return jobId === undefined ? events : events.filter((e) => jobOfEvent(e) === jobId);
}

/** Waits until the dead worker's job has gone back to the queue (worker_lost). */
async function reaped(observer: Broker, id: string): Promise<StreamEvent> {
  return waitFor(`the dead worker's job ${id} to be reaped`, async () =>
    (await eventsOf(observer, id)).find((e) => e.type === 'job.queued' && e.reason === 'worker_lost') ?? false,
  );
}

/** The job of the live worker survived the outage: one attempt, never aborted, and it finishes once. */
async function expectSurvivedOnce(observer: Broker, id: string, held: ReturnType<typeof heldConnector>['held']) {
  expect(await observer.getJob(id)).toMatchObject({ state: 'running', worker: 'alive', attempts: 1, infra_failures: 0 });
  expect(held.aborted).toEqual([]);
  held.releases.get(id)!();
  const done = await waitFor(`job ${id} to finish`, async () => {
    const job = await observer.getJob(id);
    return job && ['succeeded', 'failed'].includes(job.state) ? job : false;
  });
  expect(done).toMatchObject({ state: 'succeeded', attempts: 1, result: { ran: id } });
  expect((await eventsOf(observer, id)).flatMap((e) => (e.type === 'job.queued' ? [e.reason] : []))).toEqual([undefined]);
}

/** The tick after the outage found the clock unwatched, and reaped the dead worker's job only after the grace. */
async function expectReapedAfterGrace(observer: Broker, reaping: StreamEvent, outageMs: number): Promise<StreamEventOf<'clock.unwatched'>> {
  const gap = (await eventsOf(observer)).find((e) => e.type === 'clock.unwatched');
  expect(gap?.ts).toBeGreaterThanOrEqual(gap!.from + outageMs - 100);
  expect(gap?.gap_ms).toBeGreaterThanOrEqual(outageMs - 100);
  expect(reaping.ts).toBeGreaterThanOrEqual(gap!.grace_until);
  return gap!;
}

describe('a Redis outage longer than the lease', () => {
  it('frozen Redis: the live worker keeps its job, the dead one loses it after the grace', async () => {
    const server = await startRedis();
    cleanups.push(() => server.stop());
    const observer = await connect(server.url, CONFIG);
    const schedulerBroker = await connect(server.url, CONFIG);
    const workerBroker = await connect(server.url, CONFIG);
    const ticked = startScheduler(schedulerBroker);
    const { held, connector } = heldConnector();
    await startWorker(workerBroker, connector);
    const { id: kept } = await observer.submit({ service: 'simulation' });
    await waitFor('the live worker to run its job', async () => (await observer.getJob(kept))?.state === 'running');
    const lost = await jobOfDeadWorker(observer);
    await ticked();

    // freeze Redis right after a heartbeat, and send a tick at once: Redis serves it first when it thaws,
    // before the worker's next heartbeat (which is on its way meanwhile)
    const beatAt = await heartbeatAt(observer);
    await waitFor('a heartbeat', async () => (await heartbeatAt(observer)) !== beatAt, 5_000);
    const outageMs = LEASE_MS + 1_000;
    server.pause();
    let firstTick: Promise<unknown> = Promise.resolve();
    try {
      firstTick = schedulerBroker.tick(POOL);
      await sleep(outageMs);
    } finally {
      server.resume();
    }
    await firstTick;

    const reaping = await reaped(observer, lost);
    await expectSurvivedOnce(observer, kept, held);
    await expectReapedAfterGrace(observer, reaping, outageMs);
  }, 30_000);

  it('Redis restarted from its AOF: the worker renews as soon as it reconnects, the dead one loses its job after the grace', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'emp-outage-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const port = await freePort();
    let server: RedisProcess = await startRedis({ dir, port, appendonly: true });
    cleanups.push(() => server.stop());
    const config = { ...CONFIG, leaseGraceMs: 1_000 };
    const observer = await connect(server.url, config);
    // the scheduler sits next to Redis and reconnects at once; the worker is farther away (ioredis's default backoff)
    const schedulerBroker = await connect(server.url, config, { retryStrategy: () => 10 });
    const workerBroker = await connect(server.url, config);
    const ticked = startScheduler(schedulerBroker);
    const { held, connector } = heldConnector();
    // no heartbeat on its timer during this test: only the renewal on reconnecting can save its job
    await startWorker(workerBroker, connector, { heartbeatMs: 60_000 });
    const { id: kept } = await observer.submit({ service: 'simulation' });
    await waitFor('the live worker to run its job', async () => (await observer.getJob(kept))?.state === 'running');
    const lost = await jobOfDeadWorker(observer);
    await ticked();

    const outageMs = LEASE_MS + 500;
    await server.stop(); // SIGTERM: Redis writes its AOF and exits
    await sleep(outageMs);
    server = await startRedis({ dir, port, appendonly: true });

    const reaping = await reaped(observer, lost);
    const beatAt = Number(await heartbeatAt(observer));
    await expectSurvivedOnce(observer, kept, held);
    const gap = await expectReapedAfterGrace(observer, reaping, outageMs);
    expect(beatAt, 'renewed after Redis came back').toBeGreaterThan(gap.from + outageMs - 100);
    expect(beatAt, 'renewed within the grace').toBeLessThan(gap.grace_until);
  }, 30_000);
});
