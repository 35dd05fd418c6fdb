import type { LiveServerMessage } from '@emp/core';
import { call } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';

let stack: ApiStack;
let operator: string;
const http = (method: string, path: string, options: Parameters<typeof call>[3] = {}) => call(stack.url, method, path, { key: operator, ...options });

beforeAll(async () => {
  stack = await startApiStack({ worker: { durationMs: 20, steps: 1 } });
  operator = (await stack.server.app.apiKeys.create({ role: 'operator' })).key;
});
afterAll(async () => {
  await stack?.stop();
});

/** Claim-to-finish time of a finished job, from its events (the clock the estimate uses). */
async function runTime(id: string): Promise<number> {
  const { events } = await stack.broker.jobEvents(id);
  const started = events.find((e) => e.type === 'job.starting')!;
  const finished = events.find((e) => e.type === 'job.succeeded')!;
  return finished.ts - started.ts;
}

async function until<T>(what: string, check: () => Promise<T | undefined>): Promise<T> {
  for (let tries = 0; tries < 500; tries++) {
    const value = await check();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`gave up waiting for ${what}`);
}

describe('the queue-time estimate of a queued job', () => {
  it('is absent without run history, then (position + 1) x mean run time / capable workers, in the job view and in WebSocket position updates', async () => {
    const { broker } = stack;
    // capacity for simulation jobs: the real worker (1) and an idle one with 3 slots; a draining one and an ollama one do not count
    await broker.registerWorker({ id: 'helper', pool: 'standard', capabilities: { services: ['simulation'] }, concurrency: 3 });
    await broker.registerWorker({ id: 'leaving', pool: 'standard', capabilities: { services: ['simulation'] }, concurrency: 20 });
    await broker.setWorkerState('standard', 'leaving', 'draining');
    await broker.registerWorker({ id: 'llm', pool: 'standard', capabilities: { services: ['ollama'] } });

    // the worker is busy with a long job, so the jobs behind it wait
    const blocker = (await http('POST', '/v1/jobs', { body: { service: 'simulation', payload: { duration_ms: 60_000 } } })).body.id;
    await until('the blocker to be taken', async () => ((await broker.getJob(blocker))!.state === 'queued' ? undefined : true));
    const early = await http('POST', '/v1/jobs', { body: { service: 'simulation', payload: { duration_ms: 60_000 } } });
    expect(early.body).toMatchObject({ state: 'queued', position: 0 });
    expect(early.body, 'no run of the service has finished since the API started').not.toHaveProperty('eta_ms');
    await http('POST', `/v1/jobs/${early.body.id}/cancel`);
    await http('POST', `/v1/jobs/${blocker}/cancel`);

    // run history: three jobs of known run times
    const runs: string[] = [];
    for (const duration of [30, 60, 90]) {
      const done = await http('POST', '/v1/jobs?wait=30', { body: { service: 'simulation', payload: { duration_ms: duration } } });
      expect(done.body.state).toBe('succeeded');
      runs.push(done.body.id);
    }
    const mean = (await Promise.all(runs.map(runTime))).reduce((a, b) => a + b, 0) / runs.length;
    const capacity = 4;

    const busy = (await http('POST', '/v1/jobs', { body: { service: 'simulation', payload: { duration_ms: 60_000 } } })).body.id;
    await until('the long job to be taken', async () => ((await broker.getJob(busy))!.state === 'queued' ? undefined : true));
    const first = (await http('POST', '/v1/jobs', { body: { service: 'simulation', payload: { duration_ms: 60_000 } } })).body;
    const second = (await http('POST', '/v1/jobs', { body: { service: 'simulation' } })).body;
    expect(first).toMatchObject({ position: 0, eta_ms: Math.round(mean / capacity) });
    expect((await http('GET', `/v1/jobs/${second.id}`)).body).toMatchObject({ state: 'queued', position: 1, eta_ms: Math.round((2 * mean) / capacity) });
    const listed = await http('GET', '/v1/jobs?state=queued');
    expect(listed.body.jobs.find((j: { id: string }) => j.id === second.id)).toMatchObject({ eta_ms: Math.round((2 * mean) / capacity) });

    // no estimate where no history or no capable worker is
    const llm = await http('POST', '/v1/jobs', { body: { service: 'ollama' } });
    expect(llm.body).toMatchObject({ state: 'queued', position: 0 });
    expect(llm.body).not.toHaveProperty('eta_ms');

    // over the WebSocket: the snapshot, then each position update, carry the estimate
    const socket = new WebSocket(`${stack.url.replace('http', 'ws')}/v1/live?api_key=${operator}`);
    const messages: LiveServerMessage[] = [];
    socket.on('message', (data) => messages.push(JSON.parse(data.toString()) as LiveServerMessage));
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
    socket.send(JSON.stringify({ type: 'subscribe', job: second.id }));
    const snapshot = await until('the snapshot', async () => messages.find((m) => m.type === 'snapshot'));
    expect(snapshot.type === 'snapshot' && snapshot.job).toMatchObject({ position: 1, eta_ms: Math.round((2 * mean) / capacity) });
    await http('POST', `/v1/jobs/${busy}/cancel`);
    const moved = await until('a position update', async () => messages.find((m) => m.type === 'position'));
    expect(moved).toEqual({ type: 'position', job: second.id, position: 0, eta_ms: Math.round(mean / capacity) });
    socket.close();

    // a paused service's jobs are taken by nobody: no estimate
    await http('POST', '/v1/services/simulation/pause', { body: { pool: 'standard' } });
    // capacities are read again every 2 s
    const paused = await until('the estimate to go', async () => {
      const job = (await http('GET', `/v1/jobs/${second.id}`)).body;
      return job.eta_ms === undefined ? job : undefined;
    });
    expect(paused).toMatchObject({ state: 'queued', position: 0 });
    await http('POST', '/v1/services/simulation/resume', { body: { pool: 'standard' } });
    for (const id of [first.id, second.id, llm.body.id]) await http('POST', `/v1/jobs/${id}/cancel`);
  });
});
