import type { OllamaOptions } from '@emp/core';
import { FakeOllama, waitFor } from '@emp/testkit';
import { BrokerHarness, claimedJob, expectJobFailure, jobContext } from '@emp/testkit/worker';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ollamaConnector } from './ollama';

let fake: FakeOllama;
beforeEach(async () => {
  fake = await FakeOllama.start();
});
afterEach(async () => fake.close());

function connector(options: Partial<OllamaOptions> = {}) {
  return ollamaConnector({ baseUrl: fake.url, ...options });
}

const failure = expectJobFailure;

describe('ollama connector through the broker', () => {
  let harness: BrokerHarness;
  beforeAll(async () => {
    harness = await BrokerHarness.start();
  });
  afterAll(async () => harness.stop());
  afterEach(async () => harness.reset());

  it('pulls a missing model while the job is starting, then runs it: download progress, then content, load_duration in the result', async () => {
    fake.chunkDelayMs = 40;
    fake.pullChunkBytes = 50_000_000;
    await harness.startWorker(connector());
    const { id } = await harness.broker.submit({ service: 'ollama', payload: { model: 'qwen3:0.6b', messages: [{ role: 'user', content: 'why is the sky blue' }] } });
    const job = await harness.jobInState(id, ['succeeded', 'failed']);
    expect(job.error).toBeUndefined();
    expect(job.result).toMatchObject({
      model: 'qwen3:0.6b',
      content: 'Echo: why is the sky blue',
      done_reason: 'stop',
      pulled: true,
      load_duration: 2_500_000_000,
      eval_count: 6,
    });
    expect(fake.http.requestsTo('/api/pull')).toHaveLength(1);

    const events = await harness.eventsOf(id);
    const running = events.findIndex((e) => e.type === 'job.running');
    const progress = events.flatMap((e, index) => (e.type === 'job.progress' ? [{ index, p: e.progress }] : []));
    const downloads = progress.filter((x) => x.p.stage === 'downloading_model');
    expect(downloads.length).toBeGreaterThan(1);
    // all download progress comes while the job is starting
    expect(downloads.every((x) => x.index < running)).toBe(true);
    const sized = downloads.map((x) => x.p).filter((p) => p.max !== undefined).map((p) => ({ value: p.value!, max: p.max! }));
    // sums over the layers seen so far (a layer counts once its first line arrives), never past both layers' size
    expect(sized.every((p) => p.value <= p.max && p.max <= 500_001_000)).toBe(true);
    expect(sized.at(-1)!.value).toBeGreaterThanOrEqual(100_000_000);
    const maxes = sized.map((p) => p.max);
    expect(maxes).toEqual([...maxes].sort((a, b) => a - b));
    const values = sized.map((p) => p.value);
    expect(values).toEqual([...values].sort((a, b) => a - b));
    const content = progress.filter((x) => x.p.stage === 'running');
    expect(content.every((x) => x.index > running)).toBe(true);
    expect(content.at(-1)!.p.message).toBe('Echo: why is the sky blue');
  });

  it('aborts the stream when the job is canceled', async () => {
    fake.chunkDelayMs = 50;
    const worker = await harness.startWorker(connector());
    const { id } = await harness.broker.submit({ service: 'ollama', payload: { model: 'llama3.2', prompt: 'go '.repeat(1_000) } });
    await waitFor('some content', async () => ((await harness.broker.getJob(id))?.progress?.value ?? 0) > 2);
    await harness.broker.cancel(id);
    await waitFor('ollama to see the client go away', () => fake.abandoned.length === 1);
    expect((await harness.jobInState(id, ['canceled'])).state).toBe('canceled');
    await waitFor('the worker to let go', () => worker.running === 0);
  });
});

describe('ollama connector against the fake', () => {
  it('generates with a model on disk without pulling, and reports a warm load', async () => {
    const ctx = jobContext();
    await connector().run(claimedJob('ollama', { model: 'llama3.2', prompt: 'warm up' }), ctx);
    const result = await connector().run(claimedJob('ollama', { model: 'llama3.2:latest', prompt: 'hello there' }), jobContext());
    expect(result).toMatchObject({ content: 'Echo: hello there', pulled: false, load_duration: 20_000_000 });
    expect(fake.http.requestsTo('/api/pull')).toEqual([]);
    expect(ctx.reports.some((p) => p.stage === 'downloading_model')).toBe(false);
    expect(fake.http.requestsTo('/api/generate')[0]!.body).toMatchObject({ model: 'llama3.2', prompt: 'warm up', stream: true });
  });

  it('pulls when the model vanished between /api/tags and the request (404)', async () => {
    fake.http.failNext('/api/tags', 200, { models: [{ name: 'qwen3:0.6b', model: 'qwen3:0.6b' }] });
    const result = await connector().run(claimedJob('ollama', { model: 'qwen3:0.6b', prompt: 'x' }), jobContext());
    expect(result).toMatchObject({ pulled: true, content: 'Echo: x' });
    expect(fake.http.requestsTo('/api/generate')).toHaveLength(2);
  });

  it('classifies pull failures: an unknown model is the job’s fault, a broken download is retryable', async () => {
    expect(await failure(connector().run(claimedJob('ollama', { model: 'no-such-model', prompt: 'x' }), jobContext()))).toMatchObject({
      kind: 'non_retryable',
      type: 'ModelNotFound',
    });
    fake.pullFailsAfter = 3;
    expect(await failure(connector().run(claimedJob('ollama', { model: 'qwen3:0.6b', prompt: 'x' }), jobContext()))).toMatchObject({
      kind: 'retryable',
      type: 'ModelPullFailed',
    });
    expect(await failure(connector({ pull: false }).run(claimedJob('ollama', { model: 'qwen3:0.6b', prompt: 'x' }), jobContext()))).toMatchObject({
      kind: 'infrastructure',
      type: 'ModelMissing',
    });
  });

  it('classifies an error line mid-generation, a malformed line and a bad payload', async () => {
    fake.generationFailsAfter = 2;
    expect(await failure(connector().run(claimedJob('ollama', { model: 'llama3.2', prompt: 'a b c d' }), jobContext()))).toMatchObject({
      kind: 'retryable',
      type: 'ServiceError',
    });
    fake.generationFailsAfter = undefined;
    fake.http.failNext('/api/generate', 200, 'this is not json\n');
    expect(await failure(connector().run(claimedJob('ollama', { model: 'llama3.2', prompt: 'a' }), jobContext()))).toMatchObject({
      kind: 'retryable',
      type: 'ProtocolError',
    });
    expect(await failure(connector().run(claimedJob('ollama', { prompt: 'no model' }), jobContext()))).toMatchObject({ kind: 'non_retryable', type: 'InvalidPayload' });
  });

  it('calls start() only after the model answered', async () => {
    const ctx = jobContext();
    await connector().run(claimedJob('ollama', { model: 'qwen3:0.6b', prompt: 'x' }), ctx);
    const firstContent = ctx.reports.findIndex((p) => p.stage === 'running');
    const lastDownload = ctx.reports.map((p) => p.stage).lastIndexOf('downloading_model');
    expect(ctx.startedAt).toBeGreaterThan(lastDownload);
    expect(ctx.startedAt).toBeLessThanOrEqual(firstContent);
  });
});
