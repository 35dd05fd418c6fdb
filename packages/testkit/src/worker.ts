/**
 * What worker and connector tests share: a private redis-server with a real
 * Broker and Worker around a connector, a job context for driving a connector
 * directly against a fake service, and a simulation worker for the tests of
 * the apps around the worker (API, machine agent).
 */
import { Broker, type ClaimedJob, type Job, type JobProgress, type SimulationOptions, type StreamEvent, jobOfEvent } from '@emp/core';
import { type Connector, type JobContext, JobFailure, type JobProgressInput, Worker, type WorkerOptions, simulationConnector } from '@emp/worker';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { expect } from 'vitest';
import { type RedisProcess, startRedis } from './redis';
import { waitFor } from './wait-for';

export { type Worker, assetKey, localDirectoryStore } from '@emp/worker';

export const POOL = 'standard';
export const silent = pino({ level: 'silent' });

/**
 * A started Worker with the simulation connector (50 ms jobs in 3 steps unless
 * `simulation` says otherwise), offering the `simulation` service in `POOL`.
 */
export async function startSimulationWorker(
  options: Pick<WorkerOptions, 'broker'> & Partial<WorkerOptions> & { simulation?: SimulationOptions },
): Promise<Worker> {
  const { simulation, ...rest } = options;
  const worker = new Worker({
    id: 'test-worker',
    pool: POOL,
    capabilities: { services: ['simulation'] },
    connectors: [simulationConnector({ durationMs: 50, steps: 3, ...simulation })],
    logger: silent,
    ...rest,
  });
  await worker.start();
  return worker;
}

/** A private redis-server, a Broker on it and the Workers a test starts; `reset()` between tests, `stop()` at the end. */
export class BrokerHarness {
  private constructor(
    readonly server: RedisProcess,
    readonly redis: Redis,
    readonly broker: Broker,
  ) {}

  private readonly workers: Worker[] = [];

  static async start(): Promise<BrokerHarness> {
    const server = await startRedis();
    const redis = new Redis(server.url);
    const broker = await Broker.connect({ redis });
    return new BrokerHarness(server, redis, broker);
  }

  async startWorker(connector: Connector, id = 'w1'): Promise<Worker> {
    const worker = new Worker({
      broker: this.broker,
      id,
      pool: POOL,
      capabilities: { services: [connector.service] },
      connectors: [connector],
      logger: silent,
    });
    this.workers.push(worker);
    await worker.start();
    return worker;
  }

  async jobInState(id: string, states: Job['state'][], timeoutMs = 15_000): Promise<Job> {
    return waitFor(
      `job ${id} to be ${states.join(' or ')}`,
      async () => {
        const job = await this.broker.getJob(id);
        return job && states.includes(job.state) ? job : undefined;
      },
      timeoutMs,
    );
  }

  async eventsOf(jobId: string): Promise<StreamEvent[]> {
    const events = await this.broker.readEvents(POOL, '0', { count: 100_000 });
    return events.filter((e) => jobOfEvent(e) === jobId);
  }

  async progressOf(jobId: string): Promise<JobProgress[]> {
    return (await this.eventsOf(jobId)).flatMap((e) => (e.type === 'job.progress' ? [e.progress] : []));
  }

  async reset(): Promise<void> {
    await Promise.all(this.workers.splice(0).map((w) => w.stop({ graceMs: 0 })));
    await this.redis.flushall();
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.splice(0).map((w) => w.stop({ graceMs: 0 })));
    this.redis.disconnect();
    await this.server.stop();
  }
}

/** A job as the broker hands it to a connector, for driving a connector directly. */
export function claimedJob(service: string, payload: unknown, id = 'standard.000000000001', attempt = 1): ClaimedJob {
  return {
    lease: { pool: POOL, jobId: id, token: '1', workerId: 'w' },
    id,
    attempt,
    service,
    tenant: 'default',
    payload,
    requirements: {} as ClaimedJob['requirements'],
    priority: 0,
    submittedAt: Date.now(),
  };
}

/** A job context that records progress and `start()` calls, with a controller to abort it. */
export function jobContext(controller = new AbortController()): JobContext & {
  reports: JobProgressInput[];
  startedAt: number | undefined;
  controller: AbortController;
} {
  const ctx = {
    signal: controller.signal,
    logger: silent,
    controller,
    reports: [] as JobProgressInput[],
    startedAt: undefined as number | undefined,
    start: async () => {
      ctx.startedAt ??= ctx.reports.length;
    },
    progress: (progress: JobProgressInput) => {
      ctx.reports.push(progress);
    },
  };
  return ctx;
}

/** The JobFailure `promise` rejects with (anything else fails the test). */
export async function expectJobFailure(promise: Promise<unknown>): Promise<JobFailure> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(JobFailure);
  return error as JobFailure;
}
