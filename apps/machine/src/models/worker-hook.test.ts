import { once } from 'node:events';
import { Broker, type JobProgress, type ModelProvider, httpModelProvider, jobOfEvent } from '@emp/core';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { type Worker, startSimulationWorker } from '@emp/testkit/worker';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { inProcessModelProvider } from './in-process-provider';
import type { ModelCache } from './model-cache';
import { modelCapabilities } from './report';
import { registerModelRoutes } from './routes';
import { useModelFixture } from './testing/fixture';
import { modelBytes } from './testing/model-server';

const POOL = 'standard';
const MODEL = 'sdxl.safetensors';
const { redis } = usePrivateRedis();

const fixture = useModelFixture();
let broker: Broker;
let cache: ModelCache;
let agent: FastifyInstance | undefined;
let worker: Worker | undefined;

beforeEach(async () => {
  broker = await Broker.connect({ redis });
  const good = modelBytes(400_000, 7);
  const bad = modelBytes(1_000, 8);
  cache = await fixture.openCache([
    { name: MODEL, url: fixture.server.serve(`/${MODEL}`, good.content), sha256: good.sha256 },
    { name: 'tampered.safetensors', url: fixture.server.serve('/tampered.safetensors', bad.content), sha256: good.sha256 },
  ]);
});
afterEach(async () => {
  await worker?.stop({ graceMs: 0 });
  await agent?.close();
  worker = undefined;
  agent = undefined;
});

async function startWorker(models: ModelProvider): Promise<Worker> {
  worker = await startSimulationWorker({
    broker,
    id: 'gpu0',
    pool: POOL,
    capabilities: { services: ['simulation'], models: modelCapabilities(cache.contents(), ['simulation']) },
    simulation: { durationMs: 10, steps: 1 },
    models,
    progressIntervalMs: 0,
  });
  return worker;
}

async function jobEvents(id: string): Promise<Array<{ type: string; progress?: JobProgress }>> {
  const events = await broker.readEvents(POOL, '0', { count: 10_000 });
  return events
    .filter((event) => jobOfEvent(event) === id)
    .map((event) => (event.type === 'job.progress' ? { type: event.type, progress: event.progress } : { type: event.type }));
}

/** Runs one job that names `model` to its end on a new worker; the model's pins as the job started. */
async function runJobNaming(model: string, provider: ModelProvider): Promise<{ id: string; pinsAtStart: number | undefined }> {
  const running = await startWorker(provider);
  let pinsAtStart: number | undefined;
  running.on('job:started', () => (pinsAtStart = cache.contents().models.find((m) => m.name === model)?.pins));
  const ended = Promise.race([once(running, 'job:completed'), once(running, 'job:failed')]);
  const { id } = await broker.submit({ service: 'simulation', requirements: { models: [model] }, max_attempts: 1 });
  await ended;
  return { id, pinsAtStart };
}

const providers: Array<[string, () => Promise<ModelProvider>]> = [
  ['in process', async () => inProcessModelProvider(cache)],
  [
    'over the agent HTTP routes',
    async () => {
      agent = Fastify({ logger: false });
      registerModelRoutes(agent, cache);
      const address = await agent.listen({ port: 0, host: '127.0.0.1' });
      return httpModelProvider({ baseUrl: address });
    },
  ],
];

describe('model capabilities', () => {
  it('route jobs naming catalog models to the worker, and no others', async () => {
    await startWorker(inProcessModelProvider(cache));
    await worker!.stop({ graceMs: 0 }); // registered but not claiming: only routability is looked at

    expect((await broker.submit({ service: 'simulation', requirements: { models: [MODEL] } })).routable).toBe(true);
    expect((await broker.submit({ service: 'simulation', requirements: { models: ['elsewhere.safetensors'] } })).routable).toBe(false);
  });
});

describe.each(providers)('a worker with a model provider (%s)', (_name, makeProvider) => {
  it('downloads the model a job names before running it, visibly, and unpins it after', async () => {
    const { id, pinsAtStart } = await runJobNaming(MODEL, await makeProvider());

    expect((await broker.getJob(id))?.state).toBe('succeeded');
    const events = await jobEvents(id);
    const download = events.findIndex((e) => e.progress?.stage === 'downloading_model');
    const started = events.findIndex((e) => e.type === 'job.running');
    expect(download).toBeGreaterThanOrEqual(0);
    expect(download).toBeLessThan(started);
    const downloads = events.filter((e) => e.progress?.stage === 'downloading_model').map((e) => e.progress!);
    expect(downloads.at(-1)).toMatchObject({ value: 400_000, max: 400_000 });
    expect(pinsAtStart).toBe(1);
    await expect.poll(() => cache.contents().models.find((m) => m.name === MODEL)?.pins).toBe(0);
  });

  it('runs a job whose model is already on disk without a download stage', async () => {
    await cache.ensure(MODEL);
    const { id, pinsAtStart } = await runJobNaming(MODEL, await makeProvider());

    expect((await jobEvents(id)).some((e) => e.progress?.stage === 'downloading_model')).toBe(false);
    expect(fixture.server.requestsFor(`/${MODEL}`)).toHaveLength(1);
    expect(pinsAtStart).toBe(1);
  });

  it('reports the models the worker holds: on disk from the cache, loaded once a job has used them; forgotten when it stops', async () => {
    await cache.ensure(MODEL);
    const running = await startWorker(await makeProvider());
    const reported = async () => {
      const models = (await broker.workers(POOL)).find((w) => w.id === 'gpu0')?.models;
      return typeof models === 'string' ? JSON.parse(models) : models;
    };
    await expect.poll(reported, { timeout: 5_000 }).toEqual({ loaded: [], on_disk: [MODEL], downloading: [] });

    const done = once(running, 'job:completed');
    await broker.submit({ service: 'simulation', requirements: { models: [MODEL] } });
    await done;
    // each model in the best list it is in: loaded now
    await expect.poll(reported, { timeout: 5_000 }).toEqual({ loaded: [MODEL], on_disk: [], downloading: [] });
    expect(await redis.zscore(broker.keys.modelHolders(POOL, MODEL), 'gpu0')).toBe('3');

    await running.stop({ graceMs: 0 });
    expect(await reported()).toBeUndefined();
    expect(await redis.exists(broker.keys.modelHolders(POOL, MODEL))).toBe(0);
  });

  it('fails the attempt with the model error when the file does not match its checksum', async () => {
    const { id } = await runJobNaming('tampered.safetensors', await makeProvider());

    const job = await broker.getJob(id);
    expect(job?.state).toBe('failed');
    expect(job?.error).toMatchObject({ kind: 'retryable', type: 'Model:checksum_mismatch' });
    expect(job?.error?.message).toContain('sha256');
    expect(cache.has('tampered.safetensors')).toBe(false);
  });
});
