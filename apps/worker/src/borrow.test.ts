import { Broker, type Job, type StreamEvent } from '@emp/core';
import { waitFor } from '@emp/testkit';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { simulationConnector } from './connectors/simulation';
import { Worker } from './worker';

// warnings kept, so that a job that never finishes says why (a failed claim, a lost registration)
const warnings: string[] = [];
const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line.trim()) });
const { redis } = usePrivateRedis();
const workers: Worker[] = [];

afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.stop({ graceMs: 0 })));
  warnings.length = 0;
});

async function fastWorker(broker: Broker, durationMs: number): Promise<Worker> {
  const worker = new Worker({
    broker,
    id: 'fast-w',
    pool: 'fast',
    capabilities: { services: ['simulation'] },
    connectors: [simulationConnector({ durationMs, steps: 1 })],
    logger,
    borrow: [{ pool: 'standard', afterMs: 300, maxExpectedS: 60, unknownExpectedS: 30 }],
  });
  workers.push(worker);
  await worker.start();
  return worker;
}

async function finished(broker: Broker, id: string): Promise<Job> {
  let last: Job | null = null;
  try {
    return await waitFor(`job ${id} to succeed`, async () => {
      last = await broker.getJob(id);
      return last?.state === 'succeeded' ? last : undefined;
    });
  } catch (error) {
    const seen = last as Job | null;
    throw new Error(`${(error as Error).message}; last seen ${seen ? `${seen.state} on ${seen.worker ?? 'no worker'}` : 'nowhere'}; worker warnings: ${JSON.stringify(warnings)}`);
  }
}

function starting(events: StreamEvent[], id: string) {
  return events.find((e) => e.type === 'job.starting' && e.job === id) as (StreamEvent & { fallback?: string; home_pool?: string }) | undefined;
}

describe('a worker with a cross-pool fallback policy', () => {
  it('registers as a borrower, takes a job its own pool lacks once it has waited, and runs it to the end', async () => {
    const broker = await Broker.connect({ redis });
    await fastWorker(broker, 20);
    const borrower = (await broker.workers('standard', { borrowers: true })).find((w) => w.id === 'fast-w');
    expect(borrower?.home_pool).toBe('fast');
    // listed once, with its own pool
    expect((await broker.workers('standard')).map((w) => w.id)).not.toContain('fast-w');

    const { id } = await broker.submit({ service: 'simulation', requirements: { pool: 'standard' } });
    const job = await finished(broker, id);
    expect(job.worker).toBe('fast-w');
    const event = starting(await broker.readEvents('standard', '0', { count: 1_000 }), id);
    expect(event?.home_pool).toBe('fast');
    expect(event?.fallback).toMatch(/^waited [\d.]+ s in standard \(fallback after 0.3 s\); fast had nothing for fast-w; expected 30 s \(at most 60 s\)$/);
    // its own pool's jobs still reach it as before
    const own = await broker.submit({ service: 'simulation', requirements: { pool: 'fast' } });
    expect((await finished(broker, own.id)).worker).toBe('fast-w');
  });

  it("hears its own pool after a short borrowed job even when leaving its idle set is slower than the job (a loaded machine)", async () => {
    const broker = await Broker.connect({ redis });
    // the real call, 60 ms late: longer than the 20 ms job, as a busy machine made it in CI
    const setWorkerState = broker.setWorkerState.bind(broker);
    broker.setWorkerState = async (...args: Parameters<Broker['setWorkerState']>) => {
      await new Promise((resolve) => setTimeout(resolve, 60));
      return setWorkerState(...args);
    };
    await fastWorker(broker, 20);
    const borrowed = await broker.submit({ service: 'simulation', requirements: { pool: 'standard' } });
    expect((await finished(broker, borrowed.id)).worker).toBe('fast-w');
    const own = await broker.submit({ service: 'simulation', requirements: { pool: 'fast' } });
    expect((await finished(broker, own.id)).worker).toBe('fast-w');
  });

  it('claims for a wake-up of its own pool that came while a fallback claim held its only slot', async () => {
    const broker = await Broker.connect({ redis });
    // the real fallback claim, 200 ms late, so that a submit in its own pool lands while it is in flight
    const claimFallback = broker.claimFallback.bind(broker);
    let inFlight!: () => void;
    const started = new Promise<void>((resolve) => (inFlight = resolve));
    broker.claimFallback = async (...args: Parameters<Broker['claimFallback']>) => {
      inFlight();
      await new Promise((resolve) => setTimeout(resolve, 200));
      return claimFallback(...args);
    };
    await fastWorker(broker, 20);
    await started;
    const own = await broker.submit({ service: 'simulation', requirements: { pool: 'fast' } });
    expect((await finished(broker, own.id)).worker).toBe('fast-w');
  });

  it('leaves its own idle set while a borrowed job holds its only slot, and takes its own pool\'s job right after', async () => {
    const broker = await Broker.connect({ redis });
    await fastWorker(broker, 1_000);
    const borrowed = await broker.submit({ service: 'simulation', requirements: { pool: 'standard' } });
    await waitFor('the borrowed job to start', async () => ((await broker.getJob(borrowed.id))?.state === 'running' ? true : undefined));
    expect(await redis.hexists(broker.keys.idle('fast'), 'fast-w')).toBe(0);

    const own = await broker.submit({ service: 'simulation', requirements: { pool: 'fast' } });
    expect(await redis.lrange(broker.keys.signal('fast', 'fast-w'), 0, -1)).toEqual([]); // nobody woken in vain
    const ownDone = await finished(broker, own.id);
    const borrowedDone = await finished(broker, borrowed.id);
    expect(ownDone.timestamps.started_at!).toBeGreaterThanOrEqual(borrowedDone.timestamps.finished_at!);
  });
});
