import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Broker } from '@emp/core';
import { FakeOllama, waitFor } from '@emp/testkit';
import { POOL, machineEvents, machineRecord, testMachineConfig, useTestAgents } from '@emp/testkit/machine';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { MachineAgent } from './agent';
import type { ModelCacheOptions } from './models';
import { useModelFixture } from './models/testing/fixture';
import { modelBytes } from './models/testing/model-server';
import type { MachineStatus } from './status';

const db = usePrivateRedis();
const fixture = useModelFixture();
const silent = pino({ level: 'silent' });
const agents = useTestAgents(db.url);
const SDXL = 'sdxl.safetensors';
const FLUX = 'flux.safetensors';

async function startAgent(overrides: Record<string, unknown>, cache: Partial<ModelCacheOptions> = {}): Promise<MachineAgent> {
  const config = testMachineConfig(await agents.folder(), { storage: { models_dir: fixture.dir }, ...overrides });
  const agent = await agents.start(config, { modelCache: { progressIntervalMs: 0, retryDelayMs: 10, logger: silent, ...cache } });
  await waitFor('the machine to be ready', () => agent.isReady(), 30_000);
  return agent;
}

/** The outcome the agent reported for a command (its machine.command.done event). */
async function outcome(broker: Broker, command: string): Promise<{ outcome: string; message?: string; model?: string }> {
  return waitFor(`command ${command} to be done`, async () => (await machineEvents(broker, 'machine.command.done')).find((e) => e.command === command), 30_000);
}

const onDisk = async (broker: Broker): Promise<string[]> => JSON.parse((await machineRecord(broker)).models_on_disk ?? '[]') as string[];
const status = async (agent: MachineAgent): Promise<MachineStatus> => (await fetch(`${agent.url}/status`)).json() as Promise<MachineStatus>;

describe('prefetch and evict commands', () => {
  it('prefetch downloads a catalog model (once, however often asked), unpinned, shown on disk when the outcome is; evict removes it', async () => {
    const broker = await Broker.connect({ redis: db.redis });
    const sdxl = modelBytes(300_000, 3);
    const flux = modelBytes(200_000, 4);
    const agent = await startAgent({
      models: [
        { name: SDXL, url: fixture.server.serve(`/${SDXL}`, sdxl.content), sha256: sdxl.sha256 },
        { name: FLUX, url: fixture.server.serve(`/${FLUX}`, flux.content), sha256: flux.sha256, folder: 'unet' },
      ],
    });
    expect(await onDisk(broker)).toEqual([]);

    // two prefetches of one model and one of another, sent together
    const first = await broker.machineCommand(POOL, 'm1', { action: 'prefetch', model: SDXL, by: 'planner', reason: 'demand rising' });
    const again = await broker.machineCommand(POOL, 'm1', { action: 'prefetch', model: SDXL });
    const other = await broker.machineCommand(POOL, 'm1', { action: 'prefetch', model: FLUX });
    const done = await outcome(broker, first);
    expect(done).toMatchObject({ outcome: 'ok', model: SDXL, message: expect.stringMatching(/^prefetch sdxl\.safetensors: (downloaded|joined the download in progress), 300000 bytes on disk after [\d.]+ s, not pinned/) });
    // by the time the outcome is read, the machine hash shows the model on disk
    expect(await onDisk(broker)).toContain(SDXL);
    expect((await outcome(broker, again)).outcome).toBe('ok');
    expect(await outcome(broker, other)).toMatchObject({ outcome: 'ok', message: expect.stringContaining('200000 bytes on disk') });
    expect(fixture.server.requestsFor(`/${SDXL}`)).toHaveLength(1);
    expect(fixture.server.requestsFor(`/${FLUX}`)).toHaveLength(1);
    expect(await onDisk(broker)).toEqual([FLUX, SDXL]);
    const record = await machineRecord(broker);
    expect(JSON.parse(record.models_in_use!)).toEqual([]);
    expect(record.model_cache_used_bytes).toBe('500000');
    expect(existsSync(join(fixture.dir, 'checkpoints', SDXL))).toBe(true);

    // a prefetch of a model on disk changes nothing but its last use
    const onceMore = await broker.machineCommand(POOL, 'm1', { action: 'prefetch', model: SDXL });
    expect((await outcome(broker, onceMore)).message).toMatch(/^prefetch sdxl\.safetensors: already on disk \(300000 bytes\), marked as just used/);
    expect(fixture.server.requestsFor(`/${SDXL}`)).toHaveLength(1);

    const evict = await broker.machineCommand(POOL, 'm1', { action: 'evict', model: SDXL, reason: 'cold' });
    expect(await outcome(broker, evict)).toMatchObject({ outcome: 'ok', message: 'evict sdxl.safetensors: removed, 300000 bytes freed; cache 200000 of 107374182400 bytes used' });
    expect(existsSync(join(fixture.dir, 'checkpoints', SDXL))).toBe(false);
    expect(await onDisk(broker)).toEqual([FLUX]);
    expect((await machineRecord(broker)).model_cache_used_bytes).toBe('200000');
    expect((await status(agent)).last_command).toMatchObject({ id: evict, action: 'evict', model: SDXL, outcome: 'ok' });

    const gone = await broker.machineCommand(POOL, 'm1', { action: 'evict', model: SDXL });
    expect(await outcome(broker, gone)).toMatchObject({ outcome: 'failed', message: "evict sdxl.safetensors: not on this machine's disk" });
    const unknown = await broker.machineCommand(POOL, 'm1', { action: 'prefetch', model: 'nope.safetensors' });
    expect(await outcome(broker, unknown)).toMatchObject({
      outcome: 'failed',
      message: "prefetch nope.safetensors: not in this machine's catalog (it lists flux.safetensors, sdxl.safetensors)",
    });
    expect(fixture.server.requestsFor('/nope.safetensors')).toHaveLength(0);
  });

  it('refuses to evict a model a running job holds, and a prefetch that would need it evicted to fit the budget', async () => {
    const broker = await Broker.connect({ redis: db.redis });
    const sdxl = modelBytes(400_000, 5);
    const flux = modelBytes(300_000, 6);
    await startAgent({
      connectors: [{ type: 'simulation', options: { durationMs: 600_000, steps: 1 } }],
      storage: { models_dir: fixture.dir, budget_gb: 600_000 / 1024 ** 3 },
      models: [
        { name: SDXL, url: fixture.server.serve(`/${SDXL}`, sdxl.content), sha256: sdxl.sha256 },
        { name: FLUX, url: fixture.server.serve(`/${FLUX}`, flux.content), sha256: flux.sha256 },
      ],
    });
    const { id } = await broker.submit({ service: 'simulation', requirements: { models: [SDXL] } });
    await waitFor('the job to run', async () => (await broker.getJob(id))?.state === 'running', 30_000);

    const evict = await broker.machineCommand(POOL, 'm1', { action: 'evict', model: SDXL });
    expect(await outcome(broker, evict)).toMatchObject({ outcome: 'failed', message: 'evict sdxl.safetensors: in use by a job (1 holding it); not evicted' });
    expect(existsSync(join(fixture.dir, 'checkpoints', SDXL))).toBe(true);

    const prefetch = await broker.machineCommand(POOL, 'm1', { action: 'prefetch', model: FLUX });
    const refused = await outcome(broker, prefetch);
    expect(refused.outcome).toBe('failed');
    expect(refused.message).toMatch(/^prefetch flux\.safetensors: it does not fit without evicting models in use: model flux\.safetensors needs \d+ bytes more than the budget of 600000 bytes has free, and evicting every model not in use frees only 0; in use: sdxl\.safetensors$/);
    expect(existsSync(join(fixture.dir, 'checkpoints', SDXL))).toBe(true);
    expect(existsSync(join(fixture.dir, 'checkpoints', `${FLUX}.part`))).toBe(false);
    expect(await onDisk(broker)).toEqual([SDXL]);
    expect((await broker.getJob(id))?.state).toBe('running');
  });

  it('refuses to evict a model while it downloads; a prefetch cut off by the agent stopping reports so', async () => {
    const broker = await Broker.connect({ redis: db.redis });
    // the host answers 503: the download waits a minute before its next attempt, and stays in progress meanwhile
    fixture.server.answer(`/${SDXL}`, 503);
    const agent = await startAgent({ models: [{ name: SDXL, url: fixture.server.url(`/${SDXL}`) }] }, { retryDelayMs: 60_000 });
    const prefetch = await broker.machineCommand(POOL, 'm1', { action: 'prefetch', model: SDXL });
    await waitFor('the download to be in progress', async () => (await status(agent)).models?.downloads.some((d) => d.model === SDXL) && fixture.server.requestsFor(`/${SDXL}`).length > 0);

    const evict = await broker.machineCommand(POOL, 'm1', { action: 'evict', model: SDXL });
    expect(await outcome(broker, evict)).toMatchObject({ outcome: 'failed', message: 'evict sdxl.safetensors: it is downloading; not evicted (evict it once the download ended)' });

    await agent.stop();
    expect(await outcome(broker, prefetch)).toMatchObject({ outcome: 'failed', message: 'prefetch sdxl.safetensors: the model cache is closing' });
    expect((await machineRecord(broker)).state).toBe('offline');
  });

  it('a machine without a model catalog fails model commands, saying why', async () => {
    const broker = await Broker.connect({ redis: db.redis });
    await startAgent({});
    const prefetch = await broker.machineCommand(POOL, 'm1', { action: 'prefetch', model: SDXL });
    expect(await outcome(broker, prefetch)).toMatchObject({ outcome: 'failed', message: 'prefetch sdxl.safetensors: this machine has no model cache (its config lists no models)' });
    const evict = await broker.machineCommand(POOL, 'm1', { action: 'evict', model: SDXL });
    expect((await outcome(broker, evict)).message).toBe('evict sdxl.safetensors: this machine has no model cache (its config lists no models)');
  });
});

describe('load command (the planner\'s warm load)', () => {
  const loaded = async (broker: Broker): Promise<string[]> => {
    const models = (await broker.workers(POOL))[0]?.models;
    return models ? (JSON.parse(models) as { loaded: string[] }).loaded : [];
  };

  it('loads a model on disk into the idle worker\'s service (the simulation connector: its configured load time); refuses one not on disk, and while a job runs', async () => {
    // a name of its own: the fixture server keeps what earlier tests made it answer for theirs (a 503 for sdxl)
    const SDXL = 'warm-sdxl.safetensors';
    const broker = await Broker.connect({ redis: db.redis });
    const sdxl = modelBytes(100_000, 7);
    await startAgent({
      connectors: [{ type: 'simulation', options: { durationMs: 600_000, steps: 1, loadMs: 100 } }],
      models: [{ name: SDXL, url: fixture.server.serve(`/${SDXL}`, sdxl.content), sha256: sdxl.sha256 }],
    });
    const early = await broker.machineCommand(POOL, 'm1', { action: 'load', model: SDXL, by: 'planner' });
    expect(await outcome(broker, early)).toMatchObject({ outcome: 'failed', message: "load warm-sdxl.safetensors: not on this machine's disk (prefetch it first)" });

    expect((await outcome(broker, await broker.machineCommand(POOL, 'm1', { action: 'prefetch', model: SDXL }))).outcome).toBe('ok');
    const load = await broker.machineCommand(POOL, 'm1', { action: 'load', model: SDXL, by: 'planner', reason: 'forecast 4/bucket' });
    expect(await outcome(broker, load)).toMatchObject({ outcome: 'ok', model: SDXL, message: 'load warm-sdxl.safetensors: simulation: warm-sdxl.safetensors loaded in 0.1 s (simulated) (worker-simulation-cpu0)' });
    await waitFor('the worker to report it loaded', async () => (await loaded(broker)).includes(SDXL), 10_000);
    expect((await machineRecord(broker)).last_command).toBe('load');

    const { id } = await broker.submit({ service: 'simulation', requirements: { models: [SDXL] } });
    await waitFor('the job to run', async () => (await broker.getJob(id))?.state === 'running', 30_000);
    const busy = await broker.machineCommand(POOL, 'm1', { action: 'load', model: SDXL });
    // refused by the agent once the worker told it of its job, else by the worker itself
    const refused = await outcome(broker, busy);
    expect(refused.outcome).toBe('failed');
    expect(refused.message).toMatch(
      /^load warm-sdxl\.safetensors: (no idle worker on this machine \(worker-simulation-cpu0 runs 1\): a load is for an idle GPU|worker-simulation-cpu0: worker \S+ is busy \(1 job running\): a load is for an idle GPU, it would take memory from a running job)$/,
    );
  });

  it('loads a model through the worker\'s Ollama connector (a generate request with no prompt) against a loopback Ollama', async () => {
    const ollama = await FakeOllama.start({ models: ['llama3.2:latest'] });
    try {
      const broker = await Broker.connect({ redis: db.redis });
      await startAgent({ connectors: [{ type: 'ollama', options: { baseUrl: ollama.url } }] });
      const load = await broker.machineCommand(POOL, 'm1', { action: 'load', model: 'llama3.2', by: 'planner' });
      const done = await outcome(broker, load);
      expect(done.outcome).toBe('ok');
      expect(done.message).toMatch(/^load llama3\.2: ollama: llama3\.2 loaded in [\d.]+ s \(worker-ollama-cpu0\)$/);
      expect(ollama.loads).toEqual(['llama3.2:latest']);
      await waitFor('the worker to report it loaded', async () => (await loaded(broker)).includes('llama3.2'), 10_000);

      const missing = await broker.machineCommand(POOL, 'm1', { action: 'load', model: 'qwen3:0.6b' });
      const refused = await outcome(broker, missing);
      expect(refused.outcome).toBe('failed');
      expect(refused.message).toMatch(/^load qwen3:0\.6b: worker-ollama-cpu0: no connector of worker .* could load qwen3:0\.6b: ollama: qwen3:0\.6b is not on its disk/);
    } finally {
      await ollama.close();
    }
  });
});
