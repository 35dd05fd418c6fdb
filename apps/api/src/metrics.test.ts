import type { SubmitJobInput } from '@emp/core';
import { call } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let stack: ApiStack;
let operator: string;

beforeAll(async () => {
  stack = await startApiStack({ worker: { durationMs: 20, steps: 1 } });
  operator = (await stack.server.app.apiKeys.create({ role: 'operator' })).key;
});
afterAll(async () => {
  await stack?.stop();
});

/** The value of one sample of the exposition text, or undefined when there is none. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)\{([^}]*)\} (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const present = match[2]!.split(',');
    if (present.length === wanted.length && wanted.every((label) => present.includes(label))) return Number(match[3]);
  }
  return undefined;
}

describe('jobs by state in /metrics', () => {
  it('counts live jobs per pool, service and state exactly, and finished jobs as counters', async () => {
    const { broker } = stack;
    // a worker driven by hand, for services the simulation worker does not run
    await broker.registerWorker({ id: 'hand', pool: 'standard', capabilities: { services: ['http', 'ollama'] } });
    const submit = async (body: Partial<SubmitJobInput>) => (await broker.submit({ service: 'http', ...body })).id;
    const held = [];
    const backingOff: Partial<SubmitJobInput> = { max_attempts: 3, backoff: { type: 'fixed', delay_ms: 600_000 } };
    for (const options of [{}, {}, backingOff, {}, {}]) {
      await submit(options);
      const claim = await broker.claim('standard', 'hand');
      held.push(claim.job!.lease);
    }
    const [running, , retrying, failing, succeeding] = held;
    await broker.start(running!);
    await broker.fail(retrying!, { kind: 'retryable', message: 'try again later' });
    await broker.fail(failing!, { kind: 'non_retryable', message: 'bad input' });
    await broker.complete(succeeding!, { ok: true });
    await submit({});
    await submit({});
    await submit({ delay_ms: 600_000 });
    await broker.cancel(await submit({ service: 'ollama', requirements: { models: ['nowhere'] } }));
    const expiring = await submit({ service: 'ollama', requirements: { models: ['nowhere'] }, deadlines: { queue_ttl_ms: 1 } });
    await new Promise((resolve) => setTimeout(resolve, 10));
    await broker.tick('standard');
    expect((await broker.getJob(expiring))?.state).toBe('expired');
    // the hub reads events in stream order: once this job's answer came, every event above was counted
    expect((await call(stack.url, 'POST', '/v1/jobs?wait=30', { key: operator, body: { service: 'simulation' } })).body.state).toBe('succeeded');

    const text = (await call(stack.url, 'GET', '/metrics')).body as string;
    const jobs = (service: string, state: string) => sample(text, 'emp_jobs', { pool: 'standard', service, state });
    expect({ queued: jobs('http', 'queued'), starting: jobs('http', 'starting'), running: jobs('http', 'running'), retrying: jobs('http', 'retrying') })
      .toEqual({ queued: 3, starting: 1, running: 1, retrying: 1 });
    expect(sample(text, 'emp_jobs_delayed', { pool: 'standard', service: 'http' })).toBe(1);
    expect(jobs('simulation', 'queued'), 'a service without live jobs has no series').toBeUndefined();

    const finished = (service: string, state: string) => sample(text, 'emp_jobs_finished_total', { pool: 'standard', service, state });
    expect([finished('http', 'succeeded'), finished('http', 'failed'), finished('ollama', 'canceled'), finished('ollama', 'expired')]).toEqual([1, 1, 1, 1]);
    expect(finished('simulation', 'succeeded')).toBe(1);
    expect(finished('comfyui', 'failed'), 'known services start at 0').toBe(0);
  });
});
