import type { ServerResponse } from 'node:http';
import { FakeHttpServer, sendJson, waitFor } from '@emp/testkit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ValidationError } from '../errors';
import { ModelError, httpModelProvider } from './model-provider';

/** What a worker aborts a job's wait with (the worker's JobAbortError, say). */
class Canceled extends Error {}

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
    const waiting = rejection(provider().ensure(['a.bin'], () => controller.abort(new Canceled('canceled')), controller.signal));

    expect(await waiting).toBeInstanceOf(Canceled);
    await waitFor('the agent to see the connection close', () => ensureResponses[0]!.destroyed);
  });
});
