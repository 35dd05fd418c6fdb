import type { ServerResponse } from 'node:http';
import { ValidationError } from '@emp/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { JobAbortError, JobFailure, type JobProgressInput } from './connector';
import { ModelError, type ModelProvider, downloadProgress, ensureJobModels, httpModelProvider } from './model-provider';
import { FakeHttpServer, sendJson } from './testing/fakes/http-fake';
import { expectJobFailure, waitFor } from './testing/harness';

/** An agent endpoint whose ensure answer each test scripts: lines to write, then whether to end. */
let script: { lines: unknown[]; end: boolean; status?: number };
let agent: FakeHttpServer;
let ensureResponses: ServerResponse[];

beforeEach(async () => {
  script = { lines: [], end: true };
  ensureResponses = [];
  agent = new FakeHttpServer({}, (request, response) => {
    if (request.path === '/models/release') return sendJson(response, 200, { released: (request.body as { lease: string }).lease });
    if (script.status) return sendJson(response, script.status, { error: { code: 'VALIDATION', message: 'bad' } });
    ensureResponses.push(response);
    response.writeHead(200, { 'content-type': 'application/x-ndjson' });
    for (const line of script.lines) response.write(typeof line === 'string' ? `${line}\n` : `${JSON.stringify(line)}\n`);
    if (script.end) response.end();
  });
  await agent.listen();
});
afterEach(async () => {
  await agent.close();
});

const provider = () => httpModelProvider({ baseUrl: agent.url });
const rejection = (promise: Promise<unknown>) =>
  promise.then(
    () => undefined,
    (e: unknown) => e,
  );

describe('httpModelProvider', () => {
  it('passes progress on, resolves at ready, and releases by posting the lease and closing the stream', async () => {
    script = {
      lines: [
        { type: 'progress', model: 'a.bin', received: 0, total: 10 },
        { type: 'progress', model: 'a.bin', received: 10, total: 10 },
        { type: 'ready', lease: 'L1', models: ['a.bin'] },
      ],
      end: false,
    };
    const seen: unknown[] = [];

    const release = await provider().ensure(['a.bin'], (p) => seen.push(p));

    expect(agent.requestsTo('/models/ensure')[0]!.body).toEqual({ models: ['a.bin'] });
    expect(seen).toEqual([
      { model: 'a.bin', received: 0, total: 10 },
      { model: 'a.bin', received: 10, total: 10 },
    ]);
    expect(ensureResponses[0]!.destroyed).toBe(false);
    await release();
    expect(agent.requestsTo('/models/release').map((r) => r.body)).toEqual([{ lease: 'L1' }]);
    await waitFor('the ensure connection to close', () => ensureResponses[0]!.destroyed);
  });

  it('turns an error line into a ModelError with its code', async () => {
    script = { lines: [{ type: 'error', code: 'cache_full', message: 'no room for a.bin' }], end: true };
    const error = await rejection(provider().ensure(['a.bin'], () => undefined));
    expect(error).toBeInstanceOf(ModelError);
    expect(error).toMatchObject({ code: 'cache_full', message: 'no room for a.bin' });
  });

  it('refuses a line of the wrong shape, naming the field', async () => {
    script = { lines: [{ type: 'progress', model: 'a.bin', received: -1 }], end: true };
    const error = await rejection(provider().ensure(['a.bin'], () => undefined));
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).message).toMatch(/received/);
  });

  it('refuses a stream that ends before ready, or a line that is not JSON', async () => {
    script = { lines: [{ type: 'progress', model: 'a.bin', received: 1 }], end: true };
    expect(await rejection(provider().ensure(['a.bin'], () => undefined))).toMatchObject({ message: expect.stringMatching(/ended before/) });
    script = { lines: ['<html>'], end: true };
    expect(await rejection(provider().ensure(['a.bin'], () => undefined))).toMatchObject({ message: expect.stringMatching(/not JSON/) });
  });

  it('reports an answer other than 200 with its status', async () => {
    script = { lines: [], end: true, status: 400 };
    expect(await rejection(provider().ensure(['a.bin'], () => undefined))).toMatchObject({ message: expect.stringMatching(/answered 400/) });
  });

  it('stops waiting, and hangs up, when the job is aborted', async () => {
    script = { lines: [{ type: 'progress', model: 'a.bin', received: 1 }], end: false };
    const controller = new AbortController();
    const waiting = rejection(provider().ensure(['a.bin'], () => controller.abort(new JobAbortError('canceled')), controller.signal));

    expect(await waiting).toBeInstanceOf(JobAbortError);
    await waitFor('the agent to see the connection close', () => ensureResponses[0]!.destroyed);
  });
});

describe('ensureJobModels', () => {
  const never = new AbortController().signal;
  const providerOf = (ensure: ModelProvider['ensure']): ModelProvider => ({ ensure });

  it('does nothing without a provider or without models', async () => {
    const reports: JobProgressInput[] = [];
    const ensure: ModelProvider['ensure'] = async () => async () => undefined;
    expect(await ensureJobModels(undefined, ['a'], (p) => reports.push(p), never)).toBeUndefined();
    expect(await ensureJobModels(providerOf(ensure), [], (p) => reports.push(p), never)).toBeUndefined();
    expect(reports).toEqual([]);
  });

  it('sums the downloads of all models into one downloading_model progress', () => {
    expect(downloadProgress([{ model: 'a', received: 1_000_000, total: 2_000_000 }, { model: 'b', received: 500_000, total: 1_000_000 }])).toEqual({
      stage: 'downloading_model',
      value: 1_500_000,
      max: 3_000_000,
      message: 'downloading 2 models (1.5 of 3.0 MB)',
    });
    expect(downloadProgress([{ model: 'a', received: 100 }])).toEqual({ stage: 'downloading_model', value: 100, message: 'downloading a (0.0 MB)' });
  });

  it('classifies model errors: a bad file uses an attempt, anything about the machine is infrastructure', async () => {
    const failing = (error: unknown) => providerOf(async () => Promise.reject(error));
    const checksum = await expectJobFailure(ensureJobModels(failing(new ModelError('checksum_mismatch', 'bad sha')), ['a'], () => undefined, never));
    expect(checksum).toMatchObject({ kind: 'retryable', type: 'Model:checksum_mismatch', message: 'bad sha' });
    const full = await expectJobFailure(ensureJobModels(failing(new ModelError('cache_full', 'full')), ['a'], () => undefined, never));
    expect(full).toMatchObject({ kind: 'infrastructure', type: 'Model:cache_full' });
    const down = await expectJobFailure(ensureJobModels(failing(new Error('ECONNREFUSED')), ['a'], () => undefined, never));
    expect(down).toBeInstanceOf(JobFailure);
    expect(down).toMatchObject({ kind: 'infrastructure', type: 'ModelProviderUnavailable' });
  });
});
