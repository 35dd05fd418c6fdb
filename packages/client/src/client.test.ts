import { WebhookOutbox } from '@emp/core';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WebSocket } from 'ws';
import { EmpClient } from './client';
import { EmpApiError } from './errors';
import type { JobEvent } from './watch';

let stack: ApiStack;
let client: EmpClient;

beforeAll(async () => {
  stack = await startApiStack({ worker: { durationMs: 400, steps: 8 } });
  const { key } = await stack.server.app.apiKeys.create({ role: 'client', tenant: 'sdk' });
  client = new EmpClient({ baseUrl: stack.url, apiKey: key });
});
afterAll(async () => {
  await stack?.stop();
});

/** The job's history as the server keeps it: what `watch` must have yielded, in this order. */
async function history(id: string): Promise<string[]> {
  return (await client.events(id)).events.map((e) => `${e.id} ${e.type}`);
}

describe('the SDK end to end', () => {
  it('submits a workflow, watches it to its end and reads every step', async () => {
    const submitted = await client.submitWorkflow({
      steps: {
        generate: { service: 'simulation', payload: { duration_ms: 50, result: { images: ['x.png'] } } },
        caption: { service: 'simulation', needs: ['generate'], payload: { duration_ms: 50, result: { of: { $from: 'generate.images[0]' } } } },
      },
    });
    expect(submitted).toMatchObject({ tenant: 'sdk', state: 'running' });
    const types: string[] = [];
    for await (const event of client.watchWorkflow(submitted.id)) types.push(event.type);
    expect(types[0]).toBe('workflow.submitted');
    expect(types.at(-1)).toBe('workflow.succeeded');
    expect(types.filter((t) => t === 'job.succeeded')).toHaveLength(2);
    const workflow = await client.getWorkflow(submitted.id);
    expect(workflow.steps[1]!.output).toMatchObject({ of: 'x.png' });
    expect((await client.listWorkflows()).workflows.map((w) => w.id)).toContain(submitted.id);
    expect(await client.cancelWorkflow(submitted.id)).toEqual({ id: submitted.id, state: 'succeeded', changed: false });
    const keyed = { steps: { one: { service: 'simulation', payload: { duration_ms: 10 } } } };
    const first = await client.submitWorkflow(keyed, { idempotencyKey: 'sdk-1' });
    expect(await client.submitWorkflow(keyed, { idempotencyKey: 'sdk-1' })).toMatchObject({ id: first.id, duplicate: true });
    await expect(client.getWorkflow(`${submitted.id.slice(0, -4)}zzzz`)).rejects.toMatchObject({ status: 404 });
  });

  it('submits a job that a real worker completes, and watch yields every event once, in order, ending with the result', async () => {
    const job = await client.submit({ service: 'simulation', payload: { result: { image: 'a.png' } } });
    expect(job).toMatchObject({ tenant: 'sdk', duplicate: false });
    const events: JobEvent[] = [];
    for await (const event of client.watch(job.id)) events.push(event);
    expect(events.map((e) => `${e.id} ${e.type}`)).toEqual(await history(job.id));
    expect(events[0]!.type).toBe('job.queued');
    expect(events.map((e) => e.type)).toEqual(expect.arrayContaining(['job.starting', 'job.running', 'job.progress']));
    const last = events.at(-1)!;
    expect(last).toMatchObject({ type: 'job.succeeded', job: job.id, state: 'succeeded', result: { simulated: true, image: 'a.png' } });
    expect(events.filter((e) => e.type === 'job.progress').map((e) => (e.progress as { value: number }).value)).toEqual(
      [...events.filter((e) => e.type === 'job.progress').map((e) => (e.progress as { value: number }).value)].sort((a, b) => a - b),
    );
    expect((await client.get(job.id)).state).toBe('succeeded');
  });

  it('durable: true asks for a replica, and a Redis without one answers 503 NOT_REPLICATED (the job queued all the same)', async () => {
    const error = await client.submit({ service: 'simulation' }, { durable: true }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EmpApiError);
    expect(error).toMatchObject({ status: 503, code: 'NOT_REPLICATED' });
    const id = /^job (\S+) is queued on the Redis master/.exec((error as Error).message)?.[1];
    expect((await client.get(id!)).id).toBe(id);
    const [result] = await client.submitBatch([{ service: 'simulation' }], { durable: true });
    expect(result).toMatchObject({ error: { code: 'NOT_REPLICATED' } });
    expect(await client.submit({ service: 'simulation' }, { durable: false })).toMatchObject({ duplicate: false });
  });

  it('resumes after a forced disconnect without a gap or a repeat', async () => {
    const job = await client.submit({ service: 'simulation', payload: { duration_ms: 1_500, steps: 12 } });
    const sockets = stack.server.app.websocketServer;
    let connections = 0;
    const count = () => (connections += 1);
    sockets.on('connection', count);
    const events: JobEvent[] = [];
    try {
      for await (const event of client.watch(job.id, { minReconnectMs: 20 })) {
        events.push(event);
        // cut every socket twice while the job runs: as it starts, and at its second progress report
        if (event.type === 'job.running' || (event.type === 'job.progress' && events.filter((e) => e.type === 'job.progress').length === 2)) {
          for (const socket of sockets.clients as Set<WebSocket>) socket.terminate();
        }
      }
    } finally {
      sockets.off('connection', count);
    }
    expect(connections).toBeGreaterThanOrEqual(3);
    expect(events.map((e) => `${e.id} ${e.type}`)).toEqual(await history(job.id));
    expect(events.at(-1)!.type).toBe('job.succeeded');
  });

  it('watches from a cursor: only what came after it', async () => {
    const job = await client.submit({ service: 'simulation', payload: { duration_ms: 50 } }, { waitSeconds: 30 });
    const all = (await client.events(job.id)).events;
    const rest: string[] = [];
    for await (const event of client.watch(job.id, { after: all[1]!.id })) rest.push(event.id);
    expect(rest).toEqual(all.slice(2).map((e) => e.id));
  });

  it('yields an events.missed notice when the cursor is older than the trimmed stream, then what is kept', async () => {
    const job = await client.submit({ service: 'simulation', payload: { duration_ms: 50 } }, { waitSeconds: 30 });
    const all = (await client.events(job.id)).events;
    await stack.connection.xtrim(stack.broker.keys.events('standard'), 'MINID', all[2]!.id);
    const seen: JobEvent[] = [];
    for await (const event of client.watch(job.id, { after: all[0]!.id })) seen.push(event);
    expect(seen[0]).toMatchObject({ type: 'events.missed', id: all[0]!.id, job: job.id, after: all[0]!.id, first_id: all[2]!.id });
    expect(seen.slice(1).map((e) => e.id)).toEqual(all.slice(2).map((e) => e.id));
  });

  it('lists, cancels and retries through the SDK, with typed errors', async () => {
    const slow = await client.submit({ service: 'simulation', payload: { duration_ms: 60_000 } }, { idempotencyKey: 'sdk-slow' });
    expect((await client.submit({ service: 'simulation', payload: { duration_ms: 60_000 } }, { idempotencyKey: 'sdk-slow' })).id).toBe(slow.id);
    expect(await client.cancel(slow.id, 'test')).toEqual({ id: slow.id, state: 'canceled', changed: true });
    expect(await client.retry(slow.id)).toEqual({ id: slow.id, state: 'queued' });
    await client.cancel(slow.id);
    const listed = [];
    for await (const job of client.listAll({ states: ['canceled'], limit: 1 })) listed.push(job.id);
    expect(listed).toContain(slow.id);
    const refused = await client.submit({ service: 'simulation', priority: 9_999 }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(EmpApiError);
    expect(refused).toMatchObject({ status: 400, code: 'VALIDATION', issues: [{ path: 'priority', message: expect.any(String) }] });
    const missing = client.watch('standard.doesnotexist00').next();
    await expect(missing).rejects.toMatchObject({ code: 'NOT_FOUND' });
    const stranger = new EmpClient({ baseUrl: stack.url, apiKey: (await stack.server.app.apiKeys.create({ role: 'client', tenant: 'other' })).key });
    await expect(stranger.get(slow.id)).rejects.toMatchObject({ status: 404, code: 'NOT_FOUND' });
    await expect(stranger.watch(slow.id).next()).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('operator calls through the SDK', () => {
  it("says who a key is, pauses and resumes a service, and sends a machine command; a client key is refused them", async () => {
    const operator = new EmpClient({ baseUrl: stack.url, apiKey: (await stack.server.app.apiKeys.create({ role: 'operator' })).key });
    expect(await client.whoami()).toMatchObject({ role: 'client', tenant: 'sdk', auth: true });
    expect(await operator.whoami()).toMatchObject({ role: 'operator', auth: true });
    expect(await operator.setServicePaused('simulation', true, { pool: 'standard' })).toEqual({ service: 'simulation', paused: true, pools: [{ pool: 'standard', changed: true }] });
    expect(await operator.setServicePaused('simulation', false, { pool: 'standard' })).toMatchObject({ paused: false, pools: [{ pool: 'standard', changed: true }] });
    expect(await operator.machineCommand('api-test-machine', 'restart', { service: 'simulation' })).toEqual({
      command_id: expect.stringMatching(/^\d+-\d+$/),
      machine: 'api-test-machine',
      pool: 'standard',
      action: 'restart',
      service: 'simulation',
    });
    await expect(client.machineCommand('api-test-machine', 'drain')).rejects.toMatchObject({ status: 403, code: 'FORBIDDEN' });
    expect(await operator.modelCommand('api-test-machine', 'prefetch', 'sdxl.safetensors', { reason: 'peak' })).toEqual({
      command_id: expect.stringMatching(/^\d+-\d+$/),
      machine: 'api-test-machine',
      pool: 'standard',
      action: 'prefetch',
      model: 'sdxl.safetensors',
    });
    await expect(operator.modelCommand('api-test-machine', 'evict', '')).rejects.toMatchObject({ status: 400, code: 'VALIDATION' });
  });

  it('reads the queue history of the hour and of the day; a client key is refused it', async () => {
    const operator = new EmpClient({ baseUrl: stack.url, apiKey: (await stack.server.app.apiKeys.create({ role: 'operator' })).key });
    const hour = await operator.queueHistory({ pool: 'standard' });
    expect(hour).toMatchObject({ range: 'hour', interval_ms: 30_000, summary: { all: { covered_ms: expect.any(Number) } } });
    expect(hour.samples.length).toBeGreaterThan(0);
    expect(hour.samples.every((s) => s.pool === 'standard')).toBe(true);
    const day = await operator.queueHistory({ pool: 'standard', range: 'day', since: Date.now() - 60_000 });
    expect(day).toMatchObject({ range: 'day', interval_ms: 300_000 });
    await expect(client.queueHistory()).rejects.toMatchObject({ status: 403 });
  });

  it('submits with expected_duration_s, reads how the job was routed, and reads the pools; a client key is refused them', async () => {
    const job = await client.submit({ service: 'simulation', expected_duration_s: 90 });
    expect(job.routing).toEqual({ pool: 'standard', source: 'hint', estimate_s: 90, reason: 'routed to standard: expected_duration_s = 90 s' });
    const operator = new EmpClient({ baseUrl: stack.url, apiKey: (await stack.server.app.apiKeys.create({ role: 'operator' })).key });
    const report = await operator.pools();
    expect(report.pools.map((p) => p.name)).toEqual(['fast', 'standard', 'heavy']);
    await expect(client.pools()).rejects.toMatchObject({ status: 403 });
    const shards = await operator.shards();
    expect(shards.shards.find((s) => s.pool === 'standard')).toMatchObject({ shard: '{standard}', queued: expect.any(Number) });
    await expect(client.shards()).rejects.toMatchObject({ status: 403 });
  });
});

describe('webhook endpoints through the SDK', () => {
  it('makes, lists and reads an endpoint, lists its deliveries, resends one, sends a test, and disables and enables it', async () => {
    const operator = new EmpClient({ baseUrl: stack.url, apiKey: (await stack.server.app.apiKeys.create({ role: 'operator' })).key });
    const created = await operator.createWebhookEndpoint({ url: 'https://example.com/hook', events: ['job.succeeded'], tenant: 'sdk' });
    expect(created).toMatchObject({ id: expect.stringMatching(/^ep_/), tenant: 'sdk', scope: 'tenant', enabled: true, secret: expect.stringMatching(/^whsec_/) });
    const { id } = created;
    expect((await operator.webhookEndpoints()).endpoints.map((e) => e.id)).toContain(id);
    expect((await client.webhookEndpoints()).endpoints.map((e) => e.id)).toEqual([id]);
    expect(await operator.webhookEndpoint(id)).not.toHaveProperty('secret');

    const test = await operator.testWebhookEndpoint(id);
    expect(test).toEqual({ endpoint: id, message_id: expect.stringMatching(/^msg_test_/) });
    // the webhook service's part, played here: the attempt is made and logged
    const outbox = new WebhookOutbox(stack.broker);
    const [claimed] = await outbox.claimDue(10, 60_000);
    expect(claimed?.id).toBe(test.message_id);
    await outbox.settle(claimed!, 'delivered', { at: Date.now(), message: claimed!.id, type: claimed!.type, url: claimed!.url, endpoint: id, attempt: 1, status: 200, latency_ms: 12, outcome: 'delivered' });
    expect(await operator.webhookDeliveries(id, { limit: 10 })).toEqual({ endpoint: id, deliveries: [expect.objectContaining({ message: test.message_id, type: 'webhook.test', status: 200, outcome: 'delivered' })] });

    expect(await operator.resendWebhookMessage(id, test.message_id)).toEqual({ endpoint: id, message_id: test.message_id });
    await expect(operator.resendWebhookMessage(id, test.message_id)).rejects.toMatchObject({ status: 409, code: 'BAD_STATE' });
    await expect(operator.resendWebhookMessage(id, 'msg_nope')).rejects.toMatchObject({ status: 404 });

    expect(await operator.setWebhookEndpointEnabled(id, false)).toMatchObject({ enabled: false, disabled_reason: 'disabled by hand' });
    await expect(operator.testWebhookEndpoint(id)).rejects.toMatchObject({ status: 409 });
    const enabled = await operator.setWebhookEndpointEnabled(id, true);
    expect(enabled.enabled).toBe(true);
    expect(enabled).not.toHaveProperty('disabled_reason');
    const stranger = new EmpClient({ baseUrl: stack.url, apiKey: (await stack.server.app.apiKeys.create({ role: 'client', tenant: 'other' })).key });
    await expect(stranger.webhookDeliveries(id)).rejects.toMatchObject({ status: 404 });
  });
});
