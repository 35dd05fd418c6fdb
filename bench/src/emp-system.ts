import { setTimeout as sleep } from 'node:timers/promises';
import { Broker, type BrokerConfigInput, type ClaimedJob, type SubmitJobInput } from '@emp/core';
import { type Connector, Worker } from '@emp/worker';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { memoryByKeyKind, usedMemoryAfterSettle } from './redis-info';
import { benchPayload, drainDeadlineMs, withDeadline, type BenchSystem } from './system';

const POOL = 'standard';
const BULK_CHUNK = 1_000;
const CHUNKS_IN_FLIGHT = 4;

/**
 * The event stream is trimmed to 10,000 entries, BullMQ's default for its own
 * events stream, so both keep the same history. Everything else is default:
 * finished jobs are kept for their retention (a day), as in production.
 */
const CONFIG: BrokerConfigInput = { eventsMaxLen: 10_000 };
const logger = pino({ level: 'warn' });

/**
 * A no-op job has nothing to load, so the connector never calls start(): the
 * job completes straight from `starting`, as a BullMQ job completes from
 * `active` (one claim call and one completion call per job on both sides).
 */
function noopConnector(onRun: (job: ClaimedJob) => void = () => undefined): Connector {
  return {
    service: 'simulation',
    startsItself: true,
    async run(job) {
      onRun(job);
      return null;
    },
  };
}

/** EMP through its own worker runtime: capability matching on every claim, one round trip per job. */
export const empSystem: BenchSystem = {
  name: 'emp',

  async throughput({ redisUrl, jobs, concurrency, onSubmitted }) {
    const redis = new Redis(redisUrl);
    let worker: Worker | undefined;
    try {
      const broker = await Broker.connect({ redis, config: CONFIG });
      const submitStart = performance.now();
      await submitInChunks(broker, jobs, () => ({ noop: true }));
      const submitMs = performance.now() - submitStart;

      let completed = 0;
      const drainer = new Worker({
        broker,
        id: 'bench-drainer',
        pool: POOL,
        capabilities: { services: ['simulation'] },
        connectors: [noopConnector()],
        concurrency,
        logger,
      });
      worker = drainer;
      const drained = new Promise<void>((resolve, reject) => {
        drainer.on('job:completed', () => {
          if (++completed === jobs) resolve();
        });
        drainer.on('job:failed', (job, error) => reject(new Error(`emp job ${job.id} failed: ${error.message}`)));
      });
      await onSubmitted?.();
      const drainStart = performance.now();
      await drainer.start();
      await withDeadline(drained, drainDeadlineMs(jobs), () => `emp drain of ${jobs} jobs at concurrency ${concurrency} (${completed} done)`);
      const drainMs = performance.now() - drainStart;
      return { drainJobsPerSec: jobs / (drainMs / 1000), totalJobsPerSec: jobs / ((submitMs + drainMs) / 1000) };
    } finally {
      await worker?.stop({ graceMs: 1_000 });
      await redis.quit();
    }
  },

  async submitToStart({ redisUrl, jobs, intervalMs, workers: workerCount, warmupJobs }) {
    const redis = new Redis(redisUrl);
    const workers: Worker[] = [];
    try {
      const broker = await Broker.connect({ redis, config: CONFIG });
      const total = warmupJobs + jobs;
      const submittedAt = new Array<number>(total);
      const startedAt = new Array<number>(total);
      let started = 0;
      let failure: Error | undefined;
      const waiters: Array<{ count: number; resolve: () => void }> = [];
      const connector = noopConnector((job) => {
        startedAt[(job.payload as { seq: number }).seq] = performance.now();
        started++;
        for (const waiter of waiters) if (started >= waiter.count) waiter.resolve();
      });
      const startedCount = (count: number) =>
        new Promise<void>((resolve) => (started >= count ? resolve() : waiters.push({ count, resolve })));

      for (let i = 0; i < workerCount; i++) {
        workers.push(
          new Worker({ broker, id: `bench-idle-${i}`, pool: POOL, capabilities: { services: ['simulation'] }, connectors: [connector], logger }),
        );
      }
      await Promise.all(workers.map((worker) => worker.start()));

      const round = async (from: number, count: number, what: string): Promise<void> => {
        await sleep(100); // let every worker go idle and block on its signal list
        const begin = performance.now();
        for (let i = 0; i < count; i++) {
          const wait = begin + i * intervalMs - performance.now();
          if (wait > 0) await sleep(wait);
          if (failure) throw failure;
          const seq = from + i;
          submittedAt[seq] = performance.now();
          broker.submit({ service: 'simulation', payload: { seq } }).catch((error: Error) => (failure ??= error));
        }
        await withDeadline(startedCount(from + count), count * intervalMs + 30_000, () => `emp ${what}: ${count} jobs starting (${started - from} started)`);
      };
      await round(0, warmupJobs, 'submit-to-start warm-up');
      await round(warmupJobs, jobs, 'submit-to-start');
      if (failure) throw failure;

      const latencies: number[] = [];
      for (let seq = warmupJobs; seq < total; seq++) latencies.push(startedAt[seq]! - submittedAt[seq]!);
      return latencies.sort((a, b) => a - b);
    } finally {
      await Promise.all(workers.map((worker) => worker.stop({ graceMs: 1_000 })));
      await redis.quit();
    }
  },

  async memoryPerJob({ redisUrl, jobs, payloadBytes }) {
    const redis = new Redis(redisUrl);
    try {
      const broker = await Broker.connect({ redis, config: CONFIG });
      const data = benchPayload(payloadBytes);
      await broker.submit({ service: 'simulation', payload: data });
      const before = await usedMemoryAfterSettle(redis);
      await submitInChunks(broker, jobs, () => data);
      const after = await usedMemoryAfterSettle(redis);
      return { bytesPerJob: (after - before) / jobs, byKey: await memoryByKeyKind(redis, jobs, empKeyKind) };
    } finally {
      await redis.quit();
    }
  },
};

/** emp's keys by kind (core's keys.ts): a job's own keys, a class's, a tenant's stream. */
function empKeyKind(key: string): string {
  return key
    .replace(/:(job|payload):[^:]+$/, ':$1:<id>')
    .replace(/:(q|class):[^:]+$/, ':$1:<class>')
    .replace(/:joblog:tenant:.+$/, ':joblog:tenant:<tenant>');
}

async function submitInChunks(broker: Broker, jobs: number, payload: (index: number) => unknown): Promise<void> {
  const inFlight: Array<Promise<unknown>> = [];
  for (let start = 0; start < jobs; start += BULK_CHUNK) {
    const size = Math.min(BULK_CHUNK, jobs - start);
    const batch: SubmitJobInput[] = Array.from({ length: size }, (_, k) => ({ service: 'simulation', payload: payload(start + k) }));
    inFlight.push(
      broker.submitMany(batch).then((results) => {
        const error = results.find((r) => r instanceof Error);
        if (error) throw error;
      }),
    );
    if (inFlight.length >= CHUNKS_IN_FLIGHT) await inFlight.shift();
  }
  await Promise.all(inFlight);
}
