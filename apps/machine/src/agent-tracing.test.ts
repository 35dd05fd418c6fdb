import { Broker, startTracing, tracingSdkLoaded } from '@emp/core';
import { startOtlpReceiver, waitFor } from '@emp/testkit';
import { POOL, machineEvents, testMachineConfig, useTestAgents } from '@emp/testkit/machine';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { MachineAgent } from './agent';
import { useModelFixture } from './models/testing/fixture';
import { modelBytes } from './models/testing/model-server';

const db = usePrivateRedis();
const fixture = useModelFixture();
const silent = pino({ level: 'silent' });
const agents = useTestAgents(db.url);
const MODEL = 'sdxl.safetensors';
const OTHER = 'flux.safetensors';
const ENV = ['OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'] as const;
const saved = Object.fromEntries(ENV.map((name) => [name, process.env[name]]));

afterEach(() => {
  for (const name of ENV) {
    if (saved[name] === undefined) delete process.env[name];
    else process.env[name] = saved[name];
  }
});

/** An agent (tracing from the environment, as `emp machine` starts it) with one CPU worker process running the simulation connector. */
async function startAgent(models: Array<{ name: string; url: string; sha256: string }>): Promise<MachineAgent> {
  const config = testMachineConfig(await agents.folder(), { storage: { models_dir: fixture.dir }, models });
  const agent = await agents.start(config, { modelCache: { progressIntervalMs: 0, retryDelayMs: 10, logger: silent } });
  await waitFor('the machine to be ready', () => agent.isReady(), 30_000);
  return agent;
}

async function outcome(broker: Broker, command: string): Promise<{ outcome: string; message?: string }> {
  return waitFor(`command ${command} to be done`, async () => (await machineEvents(broker, 'machine.command.done')).find((e) => e.command === command), 30_000);
}

// first: the SDK is loaded once per process, and this checks that nothing loaded it
describe('the machine agent with tracing off (no endpoint in the environment)', () => {
  it('downloads for a prefetch without loading the SDK or creating an exporter', async () => {
    for (const name of ENV) delete process.env[name];
    const broker = await Broker.connect({ redis: db.redis });
    const { content, sha256 } = modelBytes(50_000, 7);
    await startAgent([{ name: MODEL, url: fixture.server.serve(`/${MODEL}`, content), sha256 }]);
    const command = await broker.machineCommand(POOL, 'm1', { action: 'prefetch', model: MODEL });
    expect((await outcome(broker, command)).outcome).toBe('ok');
    expect(tracingSdkLoaded()).toBe(false);
  });
});

describe('the machine agent with OTEL_EXPORTER_OTLP_ENDPOINT set', () => {
  it("puts a job's model download in the job's trace (model.download under the worker's job.models), and a prefetch in a trace of its own", async () => {
    const receiver = await startOtlpReceiver();
    try {
      // the agent and its worker processes (which inherit the environment) export to the receiver
      process.env.OTEL_EXPORTER_OTLP_ENDPOINT = receiver.url.replace(/\/v1\/traces$/, '');
      delete process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
      const broker = await Broker.connect({ redis: db.redis });
      const model = modelBytes(300_000, 11);
      const other = modelBytes(100_000, 12);
      const agent = await startAgent([
        { name: MODEL, url: fixture.server.serve(`/${MODEL}`, model.content), sha256: model.sha256 },
        { name: OTHER, url: fixture.server.serve(`/${OTHER}`, other.content), sha256: other.sha256 },
      ]);

      const traceId = '0af7651916cd43dd8448eb211c80319c';
      // as the API submits: the request's traceparent stored on the job
      const [submitted] = await broker.submitMany([{ service: 'simulation', requirements: { models: [MODEL] } }], { traceparent: `00-${traceId}-b7ad6b7169203331-01` });
      const { id } = submitted as { id: string };
      await waitFor('the job to succeed', async () => (await broker.getJob(id))?.state === 'succeeded', 30_000);
      // a second job finds the model on disk
      const { id: second } = await broker.submit({ service: 'simulation', requirements: { models: [MODEL] } });
      await waitFor('the second job to succeed', async () => (await broker.getJob(second))?.state === 'succeeded', 30_000);
      const command = await broker.machineCommand(POOL, 'm1', { action: 'prefetch', model: OTHER, by: 'planner' });
      expect((await outcome(broker, command)).outcome).toBe('ok');
      // stopping flushes the agent's and the workers' last spans
      await agent.stop();

      const spans = await waitFor('the spans of both jobs and the prefetch', () => {
        const downloads = receiver.spans.filter((s) => s.name === 'model.download');
        const models = receiver.spans.filter((s) => s.name === 'job.models');
        return downloads.length >= 3 && models.length >= 2 && receiver.spans.some((s) => s.name === 'model.prefetch') ? receiver.spans : undefined;
      }, 30_000);

      const jobModels = spans.find((s) => s.name === 'job.models' && s.traceId === traceId);
      expect(jobModels).toMatchObject({ service: 'emp-worker' });
      const download = spans.find((s) => s.name === 'model.download' && s.traceId === traceId);
      expect(download).toMatchObject({
        service: 'emp-machine',
        parentSpanId: jobModels!.spanId,
        attributes: { 'emp.model': MODEL, 'emp.model.bytes': 300_000, 'emp.outcome': 'downloaded', 'emp.machine.id': 'm1' },
      });

      // the second job's download span is in its own trace, under its own job.models: cached
      const secondRun = spans.find((s) => s.name === 'job.run' && s.attributes['emp.job.id'] === second);
      expect(secondRun).toBeDefined();
      const secondModels = spans.find((s) => s.name === 'job.models' && s.parentSpanId === secondRun!.spanId);
      expect(spans.find((s) => s.name === 'model.download' && s.parentSpanId === secondModels?.spanId)).toMatchObject({
        traceId: secondRun!.traceId,
        attributes: { 'emp.model': MODEL, 'emp.outcome': 'cached', 'emp.model.bytes': 300_000 },
      });

      // a prefetch serves no job: a root span of its own trace, its download a child
      const prefetch = spans.find((s) => s.name === 'model.prefetch')!;
      expect(prefetch).toMatchObject({ service: 'emp-machine', parentSpanId: undefined, attributes: { 'emp.model': OTHER, 'emp.outcome': 'ok', 'emp.command.by': 'planner' } });
      expect(spans.find((s) => s.name === 'model.download' && s.parentSpanId === prefetch.spanId)).toMatchObject({
        traceId: prefetch.traceId,
        attributes: { 'emp.model': OTHER, 'emp.outcome': 'downloaded', 'emp.model.bytes': 100_000 },
      });
    } finally {
      await receiver.close();
    }
  });

  it('marks a download that fails as failed, with the error', async () => {
    const receiver = await startOtlpReceiver();
    const tracing = await startTracing({ serviceName: 'emp-machine', endpoint: receiver.url, exportDelayMs: 50 });
    try {
      const { content } = modelBytes(20_000, 13);
      const cache = await fixture.openCache([{ name: MODEL, url: fixture.server.serve(`/${MODEL}`, content), sha256: 'a'.repeat(64) }], { tracing, machineId: 'm9' });
      await expect(cache.acquire([MODEL], { parent: '' })).rejects.toMatchObject({ code: 'checksum_mismatch' });
      await tracing.flush();
      const span = receiver.spans.find((s) => s.name === 'model.download');
      expect(span).toMatchObject({ service: 'emp-machine', parentSpanId: undefined, attributes: { 'emp.model': MODEL, 'emp.outcome': 'failed', 'emp.machine.id': 'm9', 'emp.model.bytes': 20_000 } });
    } finally {
      await tracing.shutdown();
      await receiver.close();
    }
  });
});
