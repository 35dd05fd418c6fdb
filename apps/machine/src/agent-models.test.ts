import { Broker, type JobProgress, jobOfEvent } from '@emp/core';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from '@emp/testkit';
import { POOL, machineRecord, testMachineConfig, useTestAgents } from '@emp/testkit/machine';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { MachineAgent } from './agent';
import { ModelCache } from './models';
import { useModelFixture } from './models/testing/fixture';
import { modelBytes } from './models/testing/model-server';
import type { MachineStatus } from './status';

const db = usePrivateRedis();
const fixture = useModelFixture();
const silent = pino({ level: 'silent' });
const MODEL = 'sdxl.safetensors';
const agents = useTestAgents(db.url);

/** An agent with one CPU slot whose worker runs the simulation connector, its model cache in the test's models folder. */
async function startAgent(overrides: Record<string, unknown>): Promise<MachineAgent> {
  const config = testMachineConfig(await agents.folder(), { storage: { models_dir: fixture.dir }, ...overrides });
  const agent = await agents.start(config, { modelCache: { progressIntervalMs: 0, retryDelayMs: 10, logger: silent } });
  await waitFor('the machine to be ready', () => agent.isReady(), 30_000);
  return agent;
}

const status = async (agent: MachineAgent): Promise<MachineStatus> => (await fetch(`${agent.url}/status`)).json() as Promise<MachineStatus>;

async function jobEvents(broker: Broker, id: string): Promise<Array<{ type: string; progress?: JobProgress }>> {
  return (await broker.readEvents(POOL, '0', { count: 10_000 }))
    .filter((event) => jobOfEvent(event) === id)
    .map((event) => (event.type === 'job.progress' ? { type: event.type, progress: event.progress } : { type: event.type }));
}

async function workerCapabilities(broker: Broker): Promise<{ models?: Record<string, string[]>; custom_nodes?: string[] }> {
  const [worker] = await broker.workers(POOL);
  return JSON.parse(worker!.capabilities!) as { models?: Record<string, string[]> };
}

describe('a machine agent with a model catalog', () => {
  it('downloads the model a job needs on its worker process, visibly before the job runs, and reports it on disk', async () => {
    const broker = await Broker.connect({ redis: db.redis });
    const { content, sha256 } = modelBytes(300_000, 11);
    const agent = await startAgent({ models: [{ name: MODEL, url: fixture.server.serve(`/${MODEL}`, content), sha256 }] });

    // routing knows the worker can run it: the catalog is part of its capability
    expect(await workerCapabilities(broker)).toMatchObject({ models: { simulation: [MODEL] } });
    expect(JSON.parse((await machineRecord(broker)).models_on_disk!)).toEqual([]);

    const { id, routable } = await broker.submit({ service: 'simulation', requirements: { models: [MODEL] } });
    expect(routable).toBe(true);
    const done = await waitFor('the job to succeed', async () => {
      const job = await broker.getJob(id);
      return job?.state === 'succeeded' ? job : undefined;
    }, 30_000);
    expect(done.worker).toBe('m1.simulation-cpu0');

    const events = await jobEvents(broker, id);
    const downloads = events.filter((e) => e.progress?.stage === 'downloading_model');
    expect(downloads.length).toBeGreaterThan(0);
    expect(events.findIndex((e) => e.progress?.stage === 'downloading_model')).toBeGreaterThan(events.findIndex((e) => e.type === 'job.starting'));
    expect(events.findLastIndex((e) => e.progress?.stage === 'downloading_model')).toBeLessThan(events.findIndex((e) => e.type === 'job.running'));
    expect(downloads.at(-1)!.progress).toMatchObject({ value: 300_000, max: 300_000, message: expect.stringContaining(MODEL) });
    expect(existsSync(join(fixture.dir, 'checkpoints', MODEL))).toBe(true);

    // the machine's registry fields follow the cache within about a second (and the job's pin is gone)
    const record = await waitFor('the model in the machine record, no longer in use', async () => {
      const r = await machineRecord(broker);
      return r.models_on_disk === JSON.stringify([MODEL]) && r.models_in_use === '[]' ? r : undefined;
    });
    expect(record).toMatchObject({ models_downloading: '[]', model_cache_used_bytes: '300000', model_cache_budget_bytes: String(100 * 1024 ** 3) });
    expect(Number(record.disk_free_bytes)).toBeGreaterThan(0);
    expect(JSON.parse(record.models!)).toEqual([{ name: MODEL, folder: 'checkpoints', size_bytes: 300_000, last_used: expect.any(Number), in_use: false }]);

    const shown = await status(agent);
    expect(shown.models).toMatchObject({ models: [{ name: MODEL, size_bytes: 300_000, pins: 0 }], catalog: [MODEL], downloads: [] });
    const metrics = await (await fetch(`${agent.url}/metrics`)).text();
    expect(metrics).toMatch(/^emp_machine_model_cache_used_bytes 300000$/m);
    // one job asked for it once: a miss, its bytes fetched, one download ended with the model in place
    expect(metrics).toMatch(/^emp_machine_model_cache_lookups_total\{result="miss"\} 1$/m);
    expect(metrics).toMatch(/^emp_machine_model_cache_lookups_total\{result="hit"\} 0$/m);
    expect(metrics).toMatch(/^emp_machine_model_download_bytes_total 300000$/m);
    expect(metrics).toMatch(/^emp_machine_model_download_duration_seconds_count\{outcome="downloaded"\} 1$/m);
    expect(metrics).toMatch(/^emp_machine_model_downloads_in_progress 0$/m);
    expect(fixture.server.requestsFor(`/${MODEL}`)).toHaveLength(1);

    // the model routes the worker used answer only this machine
    const remote = await agent.health.inject({ method: 'POST', url: '/models/ensure', payload: { models: [MODEL] }, remoteAddress: '10.9.8.7' });
    expect(remote.statusCode).toBe(403);
  });

  it('has its workers register again when the models on disk change the capability', async () => {
    const broker = await Broker.connect({ redis: db.redis });
    const current = modelBytes(400_000, 12);
    const retired = modelBytes(300_000, 13);
    const currentUrl = fixture.server.serve('/current.safetensors', current.content);
    // a model from an earlier catalog is on disk: the workers offer it as long as it is there
    const earlier = await ModelCache.open({
      dir: fixture.dir,
      budgetBytes: 10_000_000,
      catalog: [{ name: 'retired.safetensors', url: fixture.server.serve('/retired.safetensors', retired.content) }],
      logger: silent,
    });
    await earlier.ensure('retired.safetensors');
    await earlier.close();
    // room for one of the two: downloading the current model evicts the retired one
    const agent = await startAgent({
      models: [{ name: 'current.safetensors', url: currentUrl, sha256: current.sha256 }],
      storage: { models_dir: fixture.dir, budget_gb: 600_000 / 1024 ** 3 },
    });
    expect((await workerCapabilities(broker)).models).toEqual({ simulation: ['current.safetensors', 'retired.safetensors'] });

    const { id } = await broker.submit({ service: 'simulation', requirements: { models: ['current.safetensors'] } });
    await waitFor('the job to succeed', async () => (await broker.getJob(id))?.state === 'succeeded', 30_000);

    await waitFor('the worker to register without the evicted model', async () => {
      const { models } = await workerCapabilities(broker);
      return JSON.stringify(models) === JSON.stringify({ simulation: ['current.safetensors'] });
    });
    expect(existsSync(join(fixture.dir, 'checkpoints', 'retired.safetensors'))).toBe(false);
    expect((await status(agent)).models?.models.map((m) => m.name)).toEqual(['current.safetensors']);
  });
});
