import type { OpenAIOptions } from '@emp/core';
import { FakeOpenAI, waitFor } from '@emp/testkit';
import { BrokerHarness, claimedJob, expectJobFailure, jobContext } from '@emp/testkit/worker';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openaiConnector } from './openai';

let fake: FakeOpenAI;
beforeEach(async () => {
  fake = await FakeOpenAI.start();
});
afterEach(async () => fake.close());

function connector(options: Partial<OpenAIOptions> = {}) {
  return openaiConnector({ baseUrl: `${fake.url}/v1`, apiKey: 'sk-test', ...options });
}

const chat = (text: string, model = 'gpt-test') => ({ model, messages: [{ role: 'user', content: text }] });

const failure = expectJobFailure;

describe('openai connector through the broker', () => {
  let harness: BrokerHarness;
  beforeAll(async () => {
    harness = await BrokerHarness.start();
  });
  afterAll(async () => harness.stop());
  afterEach(async () => harness.reset());

  it('streams a completion end to end: content as progress in order, usage in the result', async () => {
    fake.chunkDelayMs = 30;
    await harness.startWorker(connector());
    const { id } = await harness.broker.submit({ service: 'openai', payload: chat('tell me about the queue of jobs') });
    const job = await harness.jobInState(id, ['succeeded', 'failed']);
    expect(job.error).toBeUndefined();
    expect(job.result).toMatchObject({
      model: 'gpt-test',
      content: 'You said: tell me about the queue of jobs',
      finish_reason: 'stop',
      usage: { prompt_tokens: 10, completion_tokens: 9, total_tokens: 19 },
    });
    const sent = fake.http.requestsTo('/v1/chat/completions')[0]!;
    expect(sent.headers.authorization).toBe('Bearer sk-test');
    expect(sent.body).toMatchObject({ stream: true, stream_options: { include_usage: true } });

    const progress = (await harness.progressOf(id)).filter((p) => p.stage === 'running');
    expect(progress.length).toBeGreaterThan(1);
    const values = progress.map((p) => p.value!);
    expect(values).toEqual([...values].sort((a, b) => a - b));
    // each message is the text so far: every one extends the one before
    for (let i = 1; i < progress.length; i++) expect(progress[i]!.message!.startsWith(progress[i - 1]!.message!)).toBe(true);
    expect(progress.at(-1)!.message).toBe('You said: tell me about the queue of jobs');
  });

  it('aborts the HTTP request when the job is canceled', async () => {
    fake.chunkDelayMs = 50;
    const worker = await harness.startWorker(connector());
    const { id } = await harness.broker.submit({ service: 'openai', payload: chat('word '.repeat(2_000)) });
    await waitFor('some content', async () => ((await harness.broker.getJob(id))?.progress?.value ?? 0) > 2);
    await harness.broker.cancel(id);
    await waitFor('the server to see the client go away', () => fake.abandoned.length === 1);
    expect((await harness.jobInState(id, ['canceled'])).state).toBe('canceled');
    await waitFor('the worker to let go of the job', () => worker.running === 0);
  });
});

describe('openai connector against the fake', () => {
  it.each(['empty', 'null', 'absent'] as const)('reads the usage chunk whether its choices are %s', async (variant) => {
    fake.usageChoices = variant;
    const result = await connector().run(claimedJob('openai', chat('hi')), jobContext());
    expect(result).toMatchObject({ content: 'You said: hi', usage: { total_tokens: 7 } });
  });

  it('accepts a stream that ends without [DONE] once the completion finished, but not one cut short', async () => {
    fake.sendDone = false;
    expect(await connector().run(claimedJob('openai', chat('hi')), jobContext())).toMatchObject({ content: 'You said: hi', finish_reason: 'stop' });
    fake.sendDone = true;
    fake.failAfter = { chunks: 2, mode: 'drop' };
    const dropped = await failure(connector().run(claimedJob('openai', chat('a longer question')), jobContext()));
    expect(dropped.kind).toBe('retryable');
    expect(['ServiceUnreachable', 'StreamTruncated']).toContain(dropped.type);
  });

  it('classifies an error event mid-stream and a malformed chunk as retryable', async () => {
    fake.failAfter = { chunks: 1, mode: 'error' };
    expect(await failure(connector().run(claimedJob('openai', chat('a b c')), jobContext()))).toMatchObject({ kind: 'retryable', type: 'ServiceError' });
    fake.failAfter = { chunks: 1, mode: 'malformed' };
    expect(await failure(connector().run(claimedJob('openai', chat('a b c')), jobContext()))).toMatchObject({ kind: 'retryable', type: 'ProtocolError' });
  });

  it('gives up on a stalled stream after its idle timeout (retryable)', async () => {
    fake.failAfter = { chunks: 1, mode: 'stall' };
    const stalled = await failure(connector({ idleTimeoutMs: 200 }).run(claimedJob('openai', chat('a b c')), jobContext()));
    expect(stalled).toMatchObject({ kind: 'retryable', type: 'ServiceTimeout' });
  });

  it('classifies HTTP errors: unknown model and bad request are the job’s, auth is the worker’s, 5xx is retryable', async () => {
    expect(await failure(connector().run(claimedJob('openai', chat('hi', 'gpt-nope')), jobContext()))).toMatchObject({ kind: 'non_retryable' });
    fake.http.failNext('/v1/chat/completions', 401, { error: { message: 'Incorrect API key provided', type: 'invalid_request_error' } });
    expect(await failure(connector().run(claimedJob('openai', chat('hi')), jobContext()))).toMatchObject({ kind: 'infrastructure', type: 'ServiceAuthFailed' });
    fake.http.failNext('/v1/chat/completions', 503, 'upstream overloaded');
    expect(await failure(connector().run(claimedJob('openai', chat('hi')), jobContext()))).toMatchObject({ kind: 'retryable', type: 'ServiceError' });
    expect(await failure(connector().run(claimedJob('openai', { model: 'gpt-test' }), jobContext()))).toMatchObject({ kind: 'non_retryable', type: 'InvalidPayload' });
  });

  it('uses the default model when the payload names none', async () => {
    const result = await connector({ model: 'gpt-test' }).run(claimedJob('openai', { messages: [{ role: 'user', content: 'x' }] }), jobContext());
    expect(result).toMatchObject({ model: 'gpt-test', content: 'You said: x' });
  });
});
