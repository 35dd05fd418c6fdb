import { setTimeout as sleep } from 'node:timers/promises';
import { Queue, Worker, type Job, type JobsOptions } from 'bullmq';
import { Redis } from 'ioredis';
import { memoryByKeyKind, usedMemoryAfterSettle } from './redis-info';
import { benchPayload, drainDeadlineMs, withDeadline, type BenchSystem } from './system';

const QUEUE = 'bench';
const BULK_CHUNK = 1_000;
const CHUNKS_IN_FLIGHT = 4;

/**
 * Finished jobs are deleted at once (`removeOnComplete: true`), as BullMQ's
 * "auto-removal of jobs" guide recommends for production: the default keeps
 * every finished job in Redis forever, which grows memory without bound and is
 * not how a fast deployment runs. The memory scenario never finishes a job, so
 * this choice does not affect it. Everything else is BullMQ's default.
 */
const JOB_OPTIONS: JobsOptions = { removeOnComplete: true, removeOnFail: true };

/** BullMQ 5, used as its docs recommend for speed: addBulk in chunks, one Worker with `concurrency`. */
export const bullmqSystem: BenchSystem = {
  name: 'bullmq',

  async throughput({ redisUrl, jobs, concurrency, onSubmitted }) {
    const connections = new Connections(redisUrl);
    const queue = new Queue(QUEUE, { connection: connections.forQueue(), defaultJobOptions: JOB_OPTIONS });
    let worker: Worker | undefined;
    try {
      const submitStart = performance.now();
      await addInChunks(queue, jobs, () => ({ noop: true }));
      const submitMs = performance.now() - submitStart;

      const drainer = new Worker(QUEUE, async () => undefined, { connection: connections.forWorker(), concurrency, autorun: false });
      worker = drainer;
      let completed = 0;
      const drained = new Promise<void>((resolve, reject) => {
        drainer.on('completed', () => {
          if (++completed === jobs) resolve();
        });
        drainer.on('failed', (job, error) => reject(new Error(`bullmq job ${job?.id} failed: ${error.message}`)));
        drainer.on('error', reject);
      });
      await drainer.waitUntilReady();
      await onSubmitted?.();
      const drainStart = performance.now();
      drainer.run().catch(() => undefined); // run() settles on close; failures arrive as 'error' events
      await withDeadline(drained, drainDeadlineMs(jobs), () => `bullmq drain of ${jobs} jobs at concurrency ${concurrency} (${completed} done)`);
      const drainMs = performance.now() - drainStart;
      return { drainJobsPerSec: jobs / (drainMs / 1000), totalJobsPerSec: jobs / ((submitMs + drainMs) / 1000) };
    } finally {
      await worker?.close();
      await queue.close();
      await connections.close();
    }
  },

  async submitToStart({ redisUrl, jobs, intervalMs, workers: workerCount, warmupJobs }) {
    const connections = new Connections(redisUrl);
    const queue = new Queue(QUEUE, { connection: connections.forQueue(), defaultJobOptions: JOB_OPTIONS });
    const workers: Worker[] = [];
    try {
      // seq numbers the jobs across both rounds; submittedAt/startedAt are indexed by it
      const total = warmupJobs + jobs;
      const submittedAt = new Array<number>(total);
      const startedAt = new Array<number>(total);
      let started = 0;
      const failure = new FailureSignal();
      const waiters: Array<{ count: number; resolve: () => void }> = [];
      const processor = async (job: Job<{ seq: number }>): Promise<void> => {
        startedAt[job.data.seq] = performance.now();
        started++;
        for (const waiter of waiters) if (started >= waiter.count) waiter.resolve();
      };
      const startedCount = (count: number) =>
        new Promise<void>((resolve) => (started >= count ? resolve() : waiters.push({ count, resolve })));

      for (let i = 0; i < workerCount; i++) {
        const worker = new Worker(QUEUE, processor, { connection: connections.forWorker(), concurrency: 1, autorun: false });
        worker.on('error', failure.raise);
        workers.push(worker);
      }
      await Promise.all(workers.map((worker) => worker.waitUntilReady()));
      for (const worker of workers) worker.run().catch(failure.raise);

      // each round submits on an absolute schedule, so a slow add does not shift the ones after it
      const round = async (from: number, count: number, what: string): Promise<void> => {
        await sleep(100); // let every worker go idle and block for the next job
        const begin = performance.now();
        for (let i = 0; i < count; i++) {
          const wait = begin + i * intervalMs - performance.now();
          if (wait > 0) await sleep(wait);
          failure.throwIfRaised();
          const seq = from + i;
          submittedAt[seq] = performance.now();
          queue.add('probe', { seq }).catch(failure.raise);
        }
        const deadline = count * intervalMs + 30_000;
        await withDeadline(
          Promise.race([startedCount(from + count), failure.raised]),
          deadline,
          () => `bullmq ${what}: ${count} jobs starting (${started - from} started)`,
        );
      };
      await round(0, warmupJobs, 'submit-to-start warm-up');
      await round(warmupJobs, jobs, 'submit-to-start');
      failure.throwIfRaised();

      const latencies: number[] = [];
      for (let seq = warmupJobs; seq < total; seq++) latencies.push(startedAt[seq]! - submittedAt[seq]!);
      return latencies.sort((a, b) => a - b);
    } finally {
      await Promise.all(workers.map((worker) => worker.close()));
      await queue.close();
      await connections.close();
    }
  },

  async memoryPerJob({ redisUrl, jobs, payloadBytes }) {
    const connections = new Connections(redisUrl);
    const probe = connections.forQueue();
    const queue = new Queue(QUEUE, { connection: connections.forQueue(), defaultJobOptions: JOB_OPTIONS });
    try {
      const data = benchPayload(payloadBytes);
      await queue.add('memory', data);
      const before = await usedMemoryAfterSettle(probe);
      await addInChunks(queue, jobs, () => data);
      const after = await usedMemoryAfterSettle(probe);
      // a job is the hash bull:<queue>:<n>
      return { bytesPerJob: (after - before) / jobs, byKey: await memoryByKeyKind(probe, jobs, (key) => key.replace(/^(bull:[^:]+:)\d+$/, '$1<n>')) };
    } finally {
      await queue.close();
      await connections.close();
    }
  },
};

async function addInChunks(queue: Queue, jobs: number, data: (index: number) => object): Promise<void> {
  const inFlight: Array<Promise<unknown>> = [];
  for (let start = 0; start < jobs; start += BULK_CHUNK) {
    const size = Math.min(BULK_CHUNK, jobs - start);
    inFlight.push(queue.addBulk(Array.from({ length: size }, (_, k) => ({ name: 'noop', data: data(start + k) }))));
    if (inFlight.length >= CHUNKS_IN_FLIGHT) await inFlight.shift();
  }
  await Promise.all(inFlight);
}

/** The first error reported by an event handler, as a value to check and a promise to race against. */
class FailureSignal {
  private error: Error | undefined;
  private reject!: (error: Error) => void;
  readonly raised = new Promise<never>((_, reject) => (this.reject = reject));

  constructor() {
    this.raised.catch(() => undefined); // observed through throwIfRaised when nobody races it
  }

  readonly raise = (error: Error): void => {
    this.error ??= error;
    this.reject(error);
  };

  throwIfRaised(): void {
    if (this.error) throw this.error;
  }
}

/**
 * One ioredis connection per Queue/Worker, as BullMQ requires; BullMQ does not
 * close connections it was handed, so they are closed here after it is done.
 */
class Connections {
  private readonly opened: Redis[] = [];

  constructor(private readonly url: string) {}

  forQueue(): Redis {
    return this.open({});
  }

  /** Workers block on Redis, so a command must wait for a reconnect rather than fail. */
  forWorker(): Redis {
    return this.open({ maxRetriesPerRequest: null });
  }

  async close(): Promise<void> {
    await Promise.all(this.opened.map((redis) => redis.quit().catch(() => redis.disconnect())));
  }

  private open(options: { maxRetriesPerRequest?: null }): Redis {
    const redis = new Redis(this.url, options);
    this.opened.push(redis);
    return redis;
  }
}
