import type { HttpServiceOptions } from '@emp/core';
import { FakeHttpService, waitFor } from '@emp/testkit';
import { BrokerHarness, claimedJob, expectJobFailure, jobContext } from '@emp/testkit/worker';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { httpConnector, pointer } from './http';

let fake: FakeHttpService;
beforeEach(async () => {
  fake = await FakeHttpService.start();
});
afterEach(async () => fake.close());

/** RunPod's serverless API, as the fake speaks it. */
function connector(options: Partial<HttpServiceOptions> = {}) {
  return httpConnector({
    baseUrl: fake.url,
    wrapPayloadIn: 'input',
    cancelPath: 'cancel/{id}',
    progressPointer: '/progress',
    pollIntervalMs: 20,
    maxPollIntervalMs: 50,
    ...options,
  });
}

const failure = expectJobFailure;

describe('http connector through the broker', () => {
  let harness: BrokerHarness;
  beforeAll(async () => {
    harness = await BrokerHarness.start();
  });
  afterAll(async () => harness.stop());
  afterEach(async () => harness.reset());

  it('submits, polls the status until done and stores the output, with progress in order', async () => {
    fake.stepMs = 100;
    await harness.startWorker(connector());
    const { id } = await harness.broker.submit({ service: 'http', payload: { prompt: 'a cat', steps: 8 } });
    const job = await harness.jobInState(id, ['succeeded', 'failed']);
    expect(job.error).toBeUndefined();
    expect(job.result).toEqual({ echo: { prompt: 'a cat', steps: 8 } });
    expect(fake.http.requestsTo('/run')[0]!.body).toEqual({ input: { prompt: 'a cat', steps: 8 } });
    const progress = await harness.progressOf(id);
    expect(progress.length).toBeGreaterThan(1);
    const values = progress.map((p) => p.value!);
    expect(values).toEqual([...values].sort((a, b) => a - b));
    expect(progress.every((p) => p.max === 1 && p.value! <= 1)).toBe(true);
  });

  it('cancels the remote job when the job is canceled', async () => {
    fake.stepMs = 1_000;
    await harness.startWorker(connector());
    const { id } = await harness.broker.submit({ service: 'http', payload: { steps: 100 } });
    await harness.jobInState(id, ['running']);
    await waitFor('the remote job to exist', () => fake.jobs.size === 1);
    await harness.broker.cancel(id);
    const cancel = await waitFor('the service to get the cancel', () => fake.http.requests.find((r) => r.path.startsWith('/cancel/')));
    const remote = [...fake.jobs.values()][0]!;
    expect(cancel.path).toBe(`/cancel/${remote.id}`);
    expect(remote.canceled).toBe(true);
    expect((await harness.jobInState(id, ['canceled'])).state).toBe('canceled');
  });
});

describe('http connector against the fake', () => {
  it('fails with the configured kind when the remote job fails, carrying its error', async () => {
    const failed = await failure(connector().run(claimedJob('http', { steps: 2, fail: 'CUDA error: device-side assert' }), jobContext()));
    expect(failed).toMatchObject({ kind: 'retryable', type: 'RemoteJobFailed' });
    expect(failed.message).toMatch(/FAILED: CUDA error: device-side assert/);
    expect(await failure(connector({ failureKind: 'non_retryable' }).run(claimedJob('http', { steps: 2, fail: 'bad input' }), jobContext()))).toMatchObject({
      kind: 'non_retryable',
    });
  });

  it('treats a status reply without a status as a protocol error, and a rejected submit as the job’s fault', async () => {
    fake.statusOverride = { id: 'x', state: 'done' };
    expect(await failure(connector().run(claimedJob('http', { steps: 1 }), jobContext()))).toMatchObject({ kind: 'retryable', type: 'ProtocolError' });
    expect(await failure(connector({ wrapPayloadIn: undefined }).run(claimedJob('http', 'not an object'), jobContext()))).toMatchObject({
      kind: 'non_retryable',
      type: 'ServiceRejected',
    });
  });

  it('gives up polling after maxDurationMs and cancels the remote job', async () => {
    fake.stepMs = 10_000;
    expect(await failure(connector({ maxDurationMs: 200 }).run(claimedJob('http', { steps: 10 }), jobContext()))).toMatchObject({
      kind: 'retryable',
      type: 'PollTimeout',
    });
    await waitFor('the cancel', () => fake.http.requests.some((r) => r.path.startsWith('/cancel/')));
  });

  it('returns at once when the submit reply already holds the outcome (a synchronous service)', async () => {
    fake.http.failNext('/run', 200, { id: 'sync-1', status: 'COMPLETED', output: { text: 'done' } });
    expect(await connector().run(claimedJob('http', { steps: 1 }), jobContext())).toEqual({ text: 'done' });
    expect(fake.http.requests.filter((r) => r.path.startsWith('/status/'))).toEqual([]);
  });

  it('resolves JSON pointers as RFC 6901 says', () => {
    const doc = { a: { 'b/c': [10, { 'd~e': 'x' }] }, '': 1 };
    expect(pointer(doc, '')).toBe(doc);
    expect(pointer(doc, '/a/b~1c/0')).toBe(10);
    expect(pointer(doc, '/a/b~1c/1/d~0e')).toBe('x');
    expect(pointer(doc, '/')).toBe(1);
    expect(pointer(doc, '/a/missing')).toBeUndefined();
    expect(pointer(doc, '/a/b~1c/01')).toBeUndefined();
    expect(() => httpConnector({ baseUrl: fake.url, idPointer: 'id' })).toThrow(/JSON pointer/);
  });
});
