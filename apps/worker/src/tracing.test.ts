import { startTracing, type Tracing, tracingSdkLoaded } from '@emp/core';
import { FakeComfyUI, startOtlpReceiver, temporaryFolder, waitFor } from '@emp/testkit';
import { type ApiStack, call, startApiStack } from '@emp/testkit/api';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localDirectoryStore } from './assets/local-directory-store';
import { comfyuiConnector } from './connectors/comfyui';
import { Worker } from './worker';

describe('tracing', () => {
  it('is off without an endpoint: no SDK is loaded and no exporter is created', async () => {
    const saved = { a: process.env.OTEL_EXPORTER_OTLP_ENDPOINT, b: process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT };
    delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
    delete process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
    try {
      const tracing = await startTracing({ serviceName: 'emp-test' });
      expect(tracing.enabled).toBe(false);
      expect(tracingSdkLoaded()).toBe(false);
      expect(tracing.startSpan('x').isRecording()).toBe(false);
    } finally {
      if (saved.a !== undefined) process.env.OTEL_EXPORTER_OTLP_ENDPOINT = saved.a;
      if (saved.b !== undefined) process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = saved.b;
    }
  });

  describe('a job submitted through the API and run against the fake ComfyUI', () => {
    let receiver: Awaited<ReturnType<typeof startOtlpReceiver>>;
    let apiTracing: Tracing;
    let workerTracing: Tracing;
    let stack: ApiStack;
    let fake: FakeComfyUI;
    let assets: Awaited<ReturnType<typeof temporaryFolder>>;
    let worker: Worker;

    beforeAll(async () => {
      receiver = await startOtlpReceiver();
      apiTracing = await startTracing({ serviceName: 'emp-api', endpoint: receiver.url, exportDelayMs: 50 });
      workerTracing = await startTracing({ serviceName: 'emp-worker', endpoint: receiver.url, exportDelayMs: 50 });
      stack = await startApiStack({ auth: false, worker: false, server: { tracing: apiTracing } });
      fake = await FakeComfyUI.start();
      assets = await temporaryFolder();
      worker = new Worker({
        broker: stack.broker,
        id: 'trace-worker',
        pool: 'standard',
        machineId: 'trace-machine',
        capabilities: { services: ['comfyui'] },
        connectors: [comfyuiConnector({ baseUrl: fake.url, assets: localDirectoryStore({ directory: assets.path }), watchdogMs: 60_000 })],
        logger: pino({ level: 'silent' }),
        tracing: workerTracing,
      });
      await worker.start();
    });

    afterAll(async () => {
      await worker?.stop({ graceMs: 0 });
      await stack?.stop();
      await fake?.close();
      await assets?.remove();
      await apiTracing?.shutdown();
      await workerTracing?.shutdown();
      await receiver?.close();
    });

    /**
     * The job's job.run span once the worker has ended it and it reached the receiver: the job reads as
     * succeeded in Redis a moment before the worker ends the span (after its completion call returns).
     */
    const runSpanOf = (id: string) =>
      waitFor(`the job.run span of ${id}`, async () => {
        await workerTracing.flush();
        return receiver.spans.find((s) => s.name === 'job.run' && s.attributes['emp.job.id'] === id);
      });

    it('makes one trace: the client\'s, through the API request, queue.wait, job.run and the call to ComfyUI', async () => {
      const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
      const clientSpan = '00f067aa0ba902b7';
      const workflow = {
        '4': { class_type: 'CheckpointLoaderSimple', inputs: { ckpt_name: 'sd_xl_base_1.0.safetensors' } },
        '5': { class_type: 'EmptyLatentImage', inputs: { width: 64, height: 64, batch_size: 1 } },
        '6': { class_type: 'CLIPTextEncode', inputs: { text: 'a cat', clip: ['4', 1] } },
        '3': { class_type: 'KSampler', inputs: { seed: 1, steps: 2, cfg: 7, sampler_name: 'euler', scheduler: 'normal', denoise: 1, model: ['4', 0], positive: ['6', 0], negative: ['6', 0], latent_image: ['5', 0] } },
        '8': { class_type: 'VAEDecode', inputs: { samples: ['3', 0], vae: ['4', 2] } },
        '9': { class_type: 'SaveImage', inputs: { filename_prefix: 'emp', images: ['8', 0] } },
      };
      const submitted = await call(stack.url, 'POST', '/v1/jobs', { body: { service: 'comfyui', payload: { workflow } }, headers: { traceparent: `00-${traceId}-${clientSpan}-01` } });
      expect(submitted.status).toBe(201);
      const id = (submitted.body as { id: string }).id;
      await waitFor('the job to succeed', async () => (await stack.broker.getJob(id))?.state === 'succeeded', 20_000);
      await apiTracing.flush();
      await runSpanOf(id);

      const spans = receiver.spans.filter((s) => s.traceId === traceId);
      const byName = (name: string) => spans.find((s) => s.name === name);
      const request = byName('POST /v1/jobs');
      expect(request).toMatchObject({ service: 'emp-api', parentSpanId: clientSpan });
      const wait = byName('queue.wait');
      const run = byName('job.run');
      expect(wait).toMatchObject({ service: 'emp-worker', parentSpanId: request!.spanId, attributes: { 'emp.job.id': id, 'emp.service': 'comfyui', 'emp.worker.id': 'trace-worker', 'emp.machine.id': 'trace-machine' } });
      expect(run).toMatchObject({ parentSpanId: request!.spanId, attributes: { 'emp.job.id': id, 'emp.outcome': 'succeeded', 'emp.pool': 'standard' } });
      const calls = spans.filter((s) => s.parentSpanId === run!.spanId && s.attributes['emp.service'] === 'comfyui');
      expect(calls.map((s) => s.name)).toContain('POST prompt');
      // the fake service saw the outgoing call's own span as the parent
      const prompt = fake.requests.find((r) => r.path === '/prompt' && r.method === 'POST');
      const promptSpan = calls.find((s) => s.name === 'POST prompt')!;
      expect(prompt?.headers.traceparent).toBe(`00-${traceId}-${promptSpan.spanId}-01`);
      // the wait on the WebSocket: comfyui.execute under job.run, its progress as span events
      const execute = byName('comfyui.execute');
      const promptId = (await stack.broker.getJob(id))?.result as { prompt_id?: string } | undefined;
      expect(execute).toMatchObject({ service: 'emp-worker', parentSpanId: run!.spanId, attributes: { 'emp.comfyui.nodes': 6, 'emp.outcome': 'done', 'emp.service': 'comfyui' } });
      expect(execute!.attributes['emp.comfyui.prompt_id']).toBe(promptId?.prompt_id);
      expect(execute!.events.length).toBeGreaterThan(0);
      expect(execute!.events.every((e) => e.name === 'progress')).toBe(true);
      expect(execute!.events.some((e) => e.attributes['emp.comfyui.node'] === '3')).toBe(true);
    });

    it('bounds the progress events of comfyui.execute (a long sampler makes at most 100)', async () => {
      const workflow = {
        '5': { class_type: 'EmptyLatentImage', inputs: { width: 64, height: 64, batch_size: 1 } },
        '4': { class_type: 'CheckpointLoaderSimple', inputs: { ckpt_name: 'sd_xl_base_1.0.safetensors' } },
        '6': { class_type: 'CLIPTextEncode', inputs: { text: 'a cat', clip: ['4', 1] } },
        '3': { class_type: 'KSampler', inputs: { seed: 1, steps: 400, cfg: 7, sampler_name: 'euler', scheduler: 'normal', denoise: 1, model: ['4', 0], positive: ['6', 0], negative: ['6', 0], latent_image: ['5', 0] } },
        '9': { class_type: 'SaveImage', inputs: { filename_prefix: 'emp', images: ['3', 0] } },
      };
      const submitted = await call(stack.url, 'POST', '/v1/jobs', { body: { service: 'comfyui', payload: { workflow } } });
      expect(submitted.status).toBe(201);
      const id = (submitted.body as { id: string }).id;
      await waitFor('the job to succeed', async () => (await stack.broker.getJob(id))?.state === 'succeeded', 20_000);
      const run = await runSpanOf(id);
      const execute = receiver.spans.find((s) => s.name === 'comfyui.execute' && s.parentSpanId === run.spanId)!;
      expect(execute.events).toHaveLength(100);
      expect(execute.attributes['emp.comfyui.progress_events_dropped']).toBeGreaterThan(0);
    });

    it("continues the client's trace for every job of a batch submit", async () => {
      const traceId = '5cf92f3577b34da6a3ce929d0e0e4737';
      const clientSpan = '10f067aa0ba902b8';
      const workflow = {
        '5': { class_type: 'EmptyLatentImage', inputs: { width: 64, height: 64, batch_size: 1 } },
        '9': { class_type: 'SaveImage', inputs: { filename_prefix: 'emp', images: ['5', 0] } },
      };
      const batch = await call(stack.url, 'POST', '/v1/jobs/batch', {
        body: { jobs: [{ service: 'comfyui', payload: { workflow } }, { service: 'comfyui', payload: { workflow } }] },
        headers: { traceparent: `00-${traceId}-${clientSpan}-01` },
      });
      expect(batch.status).toBe(200);
      const ids = (batch.body as { results: Array<{ id: string }> }).results.map((r) => r.id);
      expect(ids).toHaveLength(2);
      for (const id of ids) await waitFor(`job ${id} to succeed`, async () => (await stack.broker.getJob(id))?.state === 'succeeded', 20_000);
      await apiTracing.flush();
      for (const id of ids) await runSpanOf(id);

      const request = receiver.spans.find((s) => s.name === 'POST /v1/jobs/batch' && s.traceId === traceId);
      expect(request).toMatchObject({ service: 'emp-api', parentSpanId: clientSpan });
      for (const id of ids) {
        const run = receiver.spans.find((s) => s.name === 'job.run' && s.attributes['emp.job.id'] === id);
        expect(run).toMatchObject({ traceId, parentSpanId: request!.spanId, attributes: { 'emp.outcome': 'succeeded' } });
        expect(receiver.spans.find((s) => s.name === 'queue.wait' && s.attributes['emp.job.id'] === id)).toMatchObject({ traceId, parentSpanId: request!.spanId });
      }
    });
  });
});
