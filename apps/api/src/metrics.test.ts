import type { SubmitJobInput } from '@emp/core';
import { call, waitFor } from '@emp/testkit';
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

/** The histogram's count of one series. */
const histogramCount = (text: string, name: string, labels: Record<string, string>) => sample(text, `${name}_count`, labels);

describe('queue wait, failures by kind, fleet and Redis memory in /metrics', () => {
  it('observes a job\'s wait from submit to claim per pool and service, once per first attempt', async () => {
    const before = histogramCount((await call(stack.url, 'GET', '/metrics')).body as string, 'emp_queue_wait_seconds', { pool: 'standard', service: 'simulation' }) ?? 0;
    expect((await call(stack.url, 'POST', '/v1/jobs?wait=30', { key: operator, body: { service: 'simulation' } })).body.state).toBe('succeeded');
    const text = (await call(stack.url, 'GET', '/metrics')).body as string;
    expect(histogramCount(text, 'emp_queue_wait_seconds', { pool: 'standard', service: 'simulation' })).toBe(before + 1);
    expect(sample(text, 'emp_queue_wait_seconds_bucket', { pool: 'standard', service: 'simulation', le: '+Inf' })).toBe(before + 1);
  });

  it('counts failed attempts by failure kind and by what followed', async () => {
    const { broker } = stack;
    await broker.registerWorker({ id: 'failing-hand', pool: 'standard', capabilities: { services: ['openai'] } });
    const failOnce = async (kind: 'retryable' | 'non_retryable' | 'infrastructure') => {
      await broker.submit({ service: 'openai', max_attempts: 3, backoff: { type: 'fixed', delay_ms: 600_000 } });
      const claim = await broker.claim('standard', 'failing-hand');
      await broker.fail(claim.job!.lease, { kind, message: 'as the test says' });
    };
    await failOnce('retryable');
    await failOnce('non_retryable');
    await failOnce('infrastructure');
    // the hub reads events in order: once a later job's answer came, these were counted
    expect((await call(stack.url, 'POST', '/v1/jobs?wait=30', { key: operator, body: { service: 'simulation' } })).body.state).toBe('succeeded');
    const text = (await call(stack.url, 'GET', '/metrics')).body as string;
    const failures = (kind: string, outcome: string) => sample(text, 'emp_job_attempt_failures_total', { pool: 'standard', service: 'openai', kind, outcome });
    expect([failures('retryable', 'retrying'), failures('non_retryable', 'failed'), failures('infrastructure', 'requeued')]).toEqual([1, 1, 1]);
  });

  it('gauges workers per service and state, machines per state, and the memory of Redis with its limit', async () => {
    await stack.broker.registerWorker({ id: 'gauged', pool: 'standard', capabilities: { services: ['http', 'ollama'] } });
    await stack.broker.registerMachine('standard', 'gauged-machine', 'draining', {});
    // a scrape's readings are shared for a second, so the next one may still show the fleet before these
    const text = await waitFor('the new worker and the draining machine in /metrics', async () => {
      const body = (await call(stack.url, 'GET', '/metrics')).body as string;
      const drained = sample(body, 'emp_machine_state_changes_total', { pool: 'standard', state: 'draining' });
      return sample(body, 'emp_service_workers', { pool: 'standard', service: 'ollama', state: 'idle' }) === 1 && drained === 1 && body;
    });
    expect(sample(text, 'emp_service_workers', { pool: 'standard', service: 'http', state: 'idle' }), 'a worker counts for each of its services').toBe(1);
    expect(sample(text, 'emp_service_workers', { pool: 'standard', service: 'simulation', state: 'idle' })).toBe(1);
    expect(sample(text, 'emp_machines', { pool: 'standard', state: 'draining' })).toBe(1);
    const [server] = await stack.broker.redisMemory();
    expect(sample(text, 'emp_redis_memory_used_bytes', { node: server!.node })).toBeGreaterThan(0);
    expect(sample(text, 'emp_redis_memory_max_bytes', { node: server!.node })).toBe(server!.maxBytes);
  });
});

describe('planner decisions and fallback claims in /metrics', () => {
  it("counts the planner's decisions per pool and action, and jobs claimed by another pool's worker, from the events", async () => {
    const { broker } = stack;
    const before = (await call(stack.url, 'GET', '/metrics')).body as string;
    const decisions = (text: string, action: string) => sample(text, 'emp_planner_decisions_total', { pool: 'standard', action }) ?? 0;
    const fallbacks = (text: string) => sample(text, 'emp_fallback_claims_total', { pool: 'standard' }) ?? 0;

    // a planner round with two prefetches and an evict, as the planner records it
    const decision = (action: 'prefetch' | 'evict', model: string) => ({ machine: 'm-planned', action, model, reason: 'as the test says', forecast: 1.5 });
    await broker.recordPlannerRound('standard', {
      forecast: [],
      capacity: { machines: 3, servers: 3, offeredLoad: 1, waitExceedsTarget: 0.01, explanation: 'test' },
      waitTargetMs: 10_000,
      decisions: [decision('prefetch', 'a.safetensors'), decision('prefetch', 'b.safetensors'), decision('evict', 'c.safetensors')],
    });
    // a job of pool standard taken by a fast worker borrowing there
    await broker.registerWorker({ id: 'borrower-test', pool: 'fast', capabilities: { services: ['openai'] } });
    await broker.registerWorker({ id: 'borrower-test', pool: 'standard', home_pool: 'fast', capabilities: { services: ['openai'] } });
    await broker.submit({ service: 'openai', requirements: { pool: 'standard' } });
    const taken = await broker.claimFallback('standard', 'borrower-test', { homePool: 'fast', afterMs: 0 });
    expect(taken.job).not.toBeNull();
    // an ordinary claim in the job's own pool is no fallback
    await broker.submit({ service: 'openai', requirements: { pool: 'standard' } });
    await broker.registerWorker({ id: 'standard-own', pool: 'standard', capabilities: { services: ['openai'] } });
    expect((await broker.claim('standard', 'standard-own')).job).not.toBeNull();
    // a marker after both claims: once the hub counted it, it read them (one stream, in order)
    await broker.recordPlannerRound('standard', { forecast: [], capacity: { machines: 3, servers: 3, offeredLoad: 1, waitExceedsTarget: 0.01, explanation: 'test' }, waitTargetMs: 10_000, decisions: [decision('evict', 'marker.safetensors')] });

    const after = await waitFor('the decisions and the claims counted', async () => {
      const body = (await call(stack.url, 'GET', '/metrics')).body as string;
      return decisions(body, 'evict') - decisions(before, 'evict') === 2 && body;
    });
    expect(decisions(after, 'prefetch') - decisions(before, 'prefetch')).toBe(2);
    expect(fallbacks(after) - fallbacks(before)).toBe(1);
    expect(sample(after, 'emp_pool_capacity_hint_machines', { pool: 'standard' })).toBe(3);
  });
});
