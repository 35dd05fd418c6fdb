import { usePrivateRedis } from '@emp/testkit/private-redis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Broker, type ClaimResult } from './broker';
import type { WorkerCapabilities } from './capabilities';
import type { BrokerConfigInput } from './config';
import { UnknownWorkerError, ValidationError } from './errors';
import { KeyLayout } from './keys';
import { decodeWorker, isInvalidRecord } from './registry';
import { undeclaredStreamEntries } from './testing/stream-contract';

// Model affinity (docs/broker.md, "Model affinity"), on the broker's virtual clock.
const { redis } = usePrivateRedis();
const POOL = 'standard';
const WAIT_MS = 30_000;
const keys = new KeyLayout();
const ANY_MODEL: WorkerCapabilities = { services: ['simulation'], models: { simulation: '*' } };
let now = 1_000_000;

beforeEach(() => {
  now = 1_000_000;
});

afterEach(async () => {
  expect(await undeclaredStreamEntries(redis), 'stream entries outside the event union').toEqual([]);
});

async function broker(config: BrokerConfigInput = {}): Promise<Broker> {
  return Broker.connect({ redis, clock: () => now, config: { avoidMs: 0, affinityWaitMs: WAIT_MS, ...config } });
}

/** A registered worker, recorded idle (its claim found nothing), holding `loaded` warm. */
async function worker(b: Broker, id: string, models: { loaded?: string[]; on_disk?: string[]; downloading?: string[] } = {}): Promise<string> {
  await b.registerWorker({ id, pool: POOL, capabilities: ANY_MODEL });
  await b.reportModels(POOL, id, models);
  expect((await b.claim(POOL, id)).job).toBeNull();
  return id;
}

function submit(b: Broker, models: string[], priority = 0) {
  return b.submit({ service: 'simulation', priority, requirements: { models } });
}

async function startingAffinity(b: Broker, jobId: string): Promise<string | undefined> {
  const events = await b.readEvents(POOL, '0', { count: 10_000 });
  const starting = events.filter((e) => e.type === 'job.starting' && e.job === jobId);
  expect(starting).toHaveLength(1);
  const [event] = starting;
  return event?.type === 'job.starting' ? event.affinity : undefined;
}

function retryAt(result: ClaimResult): number | undefined {
  return result.job ? undefined : result.retryAt;
}

async function signals(id: string): Promise<string[]> {
  return redis.lrange(keys.signal(POOL, id), 0, -1);
}

describe('model affinity in the claim', () => {
  it('gives the job to the warm worker when a cold one claims first', async () => {
    const b = await broker();
    await worker(b, 'cold');
    await worker(b, 'warm', { loaded: ['sdxl'] });
    const { id } = await submit(b, ['sdxl']);
    // the submit woke the worker that holds the model, not just any idle one
    expect(await signals('warm')).toEqual([expect.stringMatching(/^wake:/)]);
    expect(await signals('cold')).toEqual([]);
    const cold = await b.claim(POOL, 'cold');
    expect(cold.job).toBeNull();
    expect(retryAt(cold)).toBe(now + WAIT_MS);
    const warm = await b.claim(POOL, 'warm');
    expect(warm.job?.id).toBe(id);
    expect(await startingAffinity(b, id)).toBe('warm');
  });

  it('wakes a waiting worker that holds the models when a cold one leaves it the job', async () => {
    const b = await broker();
    await worker(b, 'cold');
    await worker(b, 'later');
    const { id } = await submit(b, ['sdxl']);
    // nobody held the models: the submit woke one idle worker (the first to wait), and the other waits on
    expect(await signals('cold')).toEqual([expect.stringMatching(/^wake:/)]);
    expect(await signals('later')).toEqual([]);
    // then the models arrive on the other's disk
    await b.reportModels(POOL, 'later', { on_disk: ['sdxl'] });
    expect((await b.claim(POOL, 'cold')).job).toBeNull();
    expect(await signals('later')).toEqual([expect.stringMatching(/^wake:/)]);
    expect((await b.claim(POOL, 'later')).job?.id).toBe(id);
    expect(await startingAffinity(b, id)).toBe('disk');
  });

  it('prefers, among jobs of one priority, the one whose models the worker holds, over an older one', async () => {
    const b = await broker();
    await worker(b, 'w', { loaded: ['sdxl'], on_disk: ['flux'] });
    const cold = await submit(b, ['wan']);
    now += 1;
    const disk = await submit(b, ['flux']);
    now += 1;
    const warm = await submit(b, ['sdxl']);
    expect((await b.claim(POOL, 'w')).job?.id).toBe(warm.id);
    expect((await b.claim(POOL, 'w')).job?.id).toBe(disk.id);
    expect((await b.claim(POOL, 'w')).job?.id).toBe(cold.id);
    expect(await startingAffinity(b, warm.id)).toBe('warm');
    expect(await startingAffinity(b, disk.id)).toBe('disk');
    expect(await startingAffinity(b, cold.id)).toBe('cold');
  });

  it('defers a job a busy warm worker holds, then lets the cold worker take it once the bound passes', async () => {
    const b = await broker();
    await worker(b, 'warm', { loaded: ['sdxl'] });
    const other = await b.submit({ service: 'simulation' });
    expect((await b.claim(POOL, 'warm')).job?.id).toBe(other.id);
    await worker(b, 'cold');
    const submittedAt = now;
    const { id } = await submit(b, ['sdxl']);
    now += WAIT_MS - 1;
    const early = await b.claim(POOL, 'cold');
    expect(early.job).toBeNull();
    expect(retryAt(early)).toBe(submittedAt + WAIT_MS);
    now = submittedAt + WAIT_MS;
    const late = await b.claim(POOL, 'cold');
    expect(late.job?.id).toBe(id);
    expect(await startingAffinity(b, id)).toBe('cold');
  });

  it('lets a cold worker take a job at once when no other worker holds its models', async () => {
    const b = await broker();
    await worker(b, 'cold', { downloading: ['sdxl'] });
    await worker(b, 'elsewhere', { loaded: ['flux'] });
    const { id } = await submit(b, ['sdxl']);
    expect((await b.claim(POOL, 'cold')).job?.id).toBe(id);
    expect(await startingAffinity(b, id)).toBe('cold');
  });

  it('needs every model of the class held for the class to count warm', async () => {
    const b = await broker();
    await worker(b, 'half', { loaded: ['sdxl'] });
    await worker(b, 'cold');
    const { id } = await submit(b, ['sdxl', 'lora-a']);
    // nobody holds both: nobody is waited for
    expect((await b.claim(POOL, 'cold')).job?.id).toBe(id);
  });

  it('keeps priority above affinity', async () => {
    const b = await broker();
    await worker(b, 'w', { loaded: ['sdxl'] });
    const warm = await submit(b, ['sdxl'], 0);
    const urgent = await submit(b, ['flux'], 10);
    expect((await b.claim(POOL, 'w')).job?.id).toBe(urgent.id);
    expect((await b.claim(POOL, 'w')).job?.id).toBe(warm.id);
  });

  it('serves a job that waited past the bound before warm ones, so none starves', async () => {
    const b = await broker();
    await worker(b, 'w', { loaded: ['sdxl'] });
    const old = await submit(b, ['wan']);
    now += WAIT_MS;
    const warm = await submit(b, ['sdxl']);
    expect((await b.claim(POOL, 'w')).job?.id).toBe(old.id);
    expect((await b.claim(POOL, 'w')).job?.id).toBe(warm.id);
  });

  it('with a bound of 0 leaves no job waiting but still prefers warm jobs', async () => {
    const b = await broker({ affinityWaitMs: 0 });
    await worker(b, 'warm', { loaded: ['sdxl'] });
    await worker(b, 'cold');
    const cold = await submit(b, ['flux']);
    now += 1;
    const warm = await submit(b, ['sdxl']);
    expect((await b.claim(POOL, 'cold')).job?.id).toBe(cold.id);
    expect((await b.claim(POOL, 'cold')).job?.id).toBe(warm.id);
    const again = await submit(b, ['flux']);
    now += 1;
    const warmAgain = await submit(b, ['sdxl']);
    expect((await b.claim(POOL, 'warm')).job?.id).toBe(warmAgain.id);
    expect((await b.claim(POOL, 'warm')).job?.id).toBe(again.id);
  });

  it('waits for no draining worker', async () => {
    const b = await broker();
    await worker(b, 'warm', { loaded: ['sdxl'] });
    await worker(b, 'cold');
    await b.setWorkerState(POOL, 'warm', 'draining');
    const { id } = await submit(b, ['sdxl']);
    expect((await b.claim(POOL, 'cold')).job?.id).toBe(id);
  });
});

describe('model reports', () => {
  it('are listed with the worker and replace what it said before', async () => {
    const b = await broker();
    await b.registerWorker({ id: 'w', pool: POOL, capabilities: ANY_MODEL });
    expect(await b.reportModels(POOL, 'w', { loaded: ['sdxl'], on_disk: ['sdxl', 'flux'], downloading: ['wan'] })).toBe(3);
    expect(await redis.hgetall(keys.workerModels(POOL, 'w'))).toEqual({ sdxl: '3', flux: '2', wan: '1' });
    expect(await b.reportModels(POOL, 'w', { on_disk: ['flux'] })).toBe(1);
    expect(await redis.hgetall(keys.workerModels(POOL, 'w'))).toEqual({ flux: '2' });
    expect(await redis.zrange(keys.modelHolders(POOL, 'sdxl'), 0, -1)).toEqual([]);
    expect(await redis.zscore(keys.modelHolders(POOL, 'flux'), 'w')).toBe('2');
    const [entry] = await b.workers(POOL);
    const record = decodeWorker(POOL, entry!);
    if (isInvalidRecord(record)) throw new Error('invalid worker record');
    expect(record.models).toEqual({ loaded: [], on_disk: ['flux'], downloading: [] });
    expect(record.models_at).toBe(now);
    expect(record.problems).toEqual([]);
  });

  it('are refused for an unknown worker or beyond their bound', async () => {
    const b = await broker();
    await expect(b.reportModels(POOL, 'nobody', { loaded: ['sdxl'] })).rejects.toBeInstanceOf(UnknownWorkerError);
    await b.registerWorker({ id: 'w', pool: POOL, capabilities: ANY_MODEL });
    const many = Array.from({ length: 257 }, (_, i) => `m${i}`);
    await expect(b.reportModels(POOL, 'w', { on_disk: many })).rejects.toBeInstanceOf(ValidationError);
    await expect(b.reportModels(POOL, 'w', { on_disk: many.slice(0, 200), loaded: many.slice(200) })).rejects.toThrow(/at most 256 models/);
    await expect(b.reportModels(POOL, 'w', { loaded: [''] })).rejects.toBeInstanceOf(ValidationError);
  });

  it('are dropped when the worker goes offline, so nobody waits for it', async () => {
    const b = await broker();
    await worker(b, 'warm', { loaded: ['sdxl'] });
    await worker(b, 'cold');
    await b.setWorkerState(POOL, 'warm', 'offline');
    expect(await redis.exists(keys.workerModels(POOL, 'warm'), keys.modelHolders(POOL, 'sdxl'))).toBe(0);
    expect(await redis.hget(keys.worker(POOL, 'warm'), 'models')).toBeNull();
    const { id } = await submit(b, ['sdxl']);
    expect((await b.claim(POOL, 'cold')).job?.id).toBe(id);
  });

  it('are dropped when the tick finds the worker silent, and when it removes it', async () => {
    const b = await broker({ offlineAfterMs: 10_000, registryRetentionMs: 20_000 });
    await b.registerWorker({ id: 'silent', pool: POOL, capabilities: ANY_MODEL });
    await b.reportModels(POOL, 'silent', { loaded: ['sdxl'] });
    await b.registerWorker({ id: 'gone', pool: POOL, capabilities: ANY_MODEL });
    now += 10_001;
    await b.tick(POOL);
    // back online, it reports again; then it goes silent for good and is removed
    await b.heartbeat(POOL, 'gone', []);
    await b.reportModels(POOL, 'gone', { on_disk: ['flux'] });
    expect((await b.workers(POOL)).find((w) => w.id === 'silent')?.state).toBe('offline');
    expect(await redis.exists(keys.workerModels(POOL, 'silent'), keys.modelHolders(POOL, 'sdxl'))).toBe(0);
    expect(await redis.zscore(keys.modelHolders(POOL, 'flux'), 'gone')).toBe('2');
    now += 10_001;
    await b.tick(POOL);
    now += 20_001;
    await b.tick(POOL);
    expect((await b.workers(POOL)).map((w) => w.id)).toEqual([]);
    expect(await redis.exists(keys.workerModels(POOL, 'gone'), keys.modelHolders(POOL, 'flux'))).toBe(0);
  });
});
