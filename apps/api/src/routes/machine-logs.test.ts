import { call } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let stack: ApiStack;
let operator: string;
const logKey = () => stack.broker.keys.machineLogs('standard', 'gpu-box');
const line = (process: string, text: string, stream = 'stdout') =>
  stack.connection.xadd(logKey(), '*', 'process', process, 'stream', stream, 'line', text, 'ts', String(Date.now()));

beforeAll(async () => {
  stack = await startApiStack({ worker: false });
  operator = (await stack.server.app.apiKeys.create({ role: 'operator' })).key;
  await stack.broker.registerMachine('standard', 'gpu-box', 'ready');
  await line('comfyui-gpu0', 'Starting server');
  await line('worker-comfyui-gpu0', '{"level":30,"msg":"worker started"}');
  await line('comfyui-gpu0', 'Traceback (most recent call last):', 'stderr');
});
afterAll(async () => {
  await stack?.stop();
});

describe('machine logs', () => {
  it('answers the newest lines, of one process when asked, with a cursor for the next page', async () => {
    const all = await call(stack.url, 'GET', '/v1/machines/gpu-box/logs', { key: operator });
    expect(all.status).toBe(200);
    expect(all.body).toMatchObject({ machine: 'gpu-box', pool: 'standard' });
    expect(all.body.entries.map((e: { line: string }) => e.line)).toEqual([
      'Starting server',
      '{"level":30,"msg":"worker started"}',
      'Traceback (most recent call last):',
    ]);
    expect(all.body.entries[2]).toEqual({ id: expect.stringMatching(/^\d+-\d+$/), process: 'comfyui-gpu0', stream: 'stderr', line: 'Traceback (most recent call last):', ts: expect.any(Number) });

    const last = await call(stack.url, 'GET', '/v1/machines/gpu-box/logs?process=comfyui-gpu0&limit=1', { key: operator });
    expect(last.body.entries.map((e: { line: string }) => e.line)).toEqual(['Traceback (most recent call last):']);

    await line('comfyui-gpu0', 'Prompt executed in 2.1 seconds');
    const next = await call(stack.url, 'GET', `/v1/machines/gpu-box/logs?after=${all.body.cursor}&pool=standard`, { key: operator });
    expect(next.body.entries.map((e: { line: string }) => e.line)).toEqual(['Prompt executed in 2.1 seconds']);
  });

  it('follows new lines as Server-Sent Events', async () => {
    const controller = new AbortController();
    const response = await fetch(`${stack.url}/v1/machines/gpu-box/logs?follow=1&process=worker-comfyui-gpu0&limit=1`, {
      headers: { authorization: `Bearer ${operator}` },
      signal: controller.signal,
    });
    expect(response.headers.get('content-type')).toBe('text/event-stream');
    const reader = response.body!.getReader();
    let text = '';
    const until = async (pattern: RegExp) => {
      while (!pattern.test(text)) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`stream ended before ${pattern}: ${text}`);
        text += Buffer.from(value).toString();
      }
    };
    await until(/worker started/);
    await line('comfyui-gpu0', 'not this process');
    await line('worker-comfyui-gpu0', '{"level":30,"msg":"job completed"}');
    await until(/job completed/);
    expect(text).toMatch(/^id: \d+-\d+\nevent: log\ndata: \{"id":"\d+-\d+","process":"worker-comfyui-gpu0","stream":"stdout","line":"\{\\"level\\":30,\\"msg\\":\\"job completed\\"\}"/m);
    expect(text).not.toContain('not this process');
    controller.abort();
  });

  it('is for operators only, and names a machine that is not there', async () => {
    const worker = (await stack.server.app.apiKeys.create({ role: 'worker', tenant: 'acme' })).key;
    expect((await call(stack.url, 'GET', '/v1/machines/gpu-box/logs', { key: worker })).status).toBe(403);
    expect((await call(stack.url, 'GET', '/v1/machines/gpu-box/logs')).status).toBe(401);
    const missing = await call(stack.url, 'GET', '/v1/machines/nowhere/logs', { key: operator });
    expect(missing.status).toBe(404);
    expect(missing.body.error.message).toBe('machine nowhere is not registered in any pool');
    const bad = await call(stack.url, 'GET', '/v1/machines/gpu-box/logs?after=yesterday', { key: operator });
    expect(bad.status).toBe(400);
    expect(bad.body.error.issues).toEqual([{ path: 'query.after', message: 'an event id looks like 1700000000000-0' }]);
  });
});
