import { shardHashTag } from '@emp/core';
import { call } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let stack: ApiStack;
let operator: string;
const http = (method: string, path: string, options: Parameters<typeof call>[3] = {}) =>
  call(stack.url, method, path, { key: operator, ...options });

beforeAll(async () => {
  stack = await startApiStack({ worker: { durationMs: 20, steps: 1 } });
  operator = (await stack.server.app.apiKeys.create({ role: 'operator' })).key;
});
afterAll(async () => {
  await stack?.stop();
});

describe('pausing a service', () => {
  it('really stops claims of its jobs until it is resumed', async () => {
    const paused = await http('POST', '/v1/services/simulation/pause', { body: { reason: 'bad model rollout' } });
    expect(paused.body).toEqual({ service: 'simulation', paused: true, pools: [{ pool: 'standard', changed: true }] });
    const job = await http('POST', '/v1/jobs', { body: { service: 'simulation' } });
    expect(job.body.state).toBe('queued');

    // a second capable worker asks for work: it gets none, the job is paused
    await stack.broker.registerWorker({ id: 'probe', pool: 'standard', capabilities: { services: ['simulation'] } });
    expect((await stack.broker.claim('standard', 'probe')).job).toBeNull();
    await stack.broker.setWorkerState('standard', 'probe', 'offline');
    const queues = await http('GET', '/v1/queues');
    expect(queues.body.pools[0].paused).toEqual([expect.objectContaining({ service: 'simulation', reason: 'bad model rollout' })]);
    expect(queues.body.pools[0].services).toContainEqual(expect.objectContaining({ service: 'simulation', depth: 1, paused: true, oldest_age_ms: expect.any(Number) }));
    expect((await http('GET', `/v1/jobs/${job.body.id}`)).body.state).toBe('queued');

    const resumed = await http('POST', '/v1/services/simulation/resume');
    expect(resumed.body.pools).toEqual([{ pool: 'standard', changed: true }]);
    const finished = await http('GET', `/v1/jobs/${job.body.id}?wait=30`);
    expect(finished.body.state).toBe('succeeded');
  });
});

describe("setting a pool's shard count", () => {
  it('spreads the pool over the shards asked for, shows them in the shard report, and keeps the left-over ones served while they hold jobs', async () => {
    const grown = await http('PUT', '/v1/pools/renders/shards', { body: { count: 3 } });
    expect(grown).toMatchObject({ status: 200, body: { pool: 'renders', count: 3, serve: 3 } });
    const report = await http('GET', '/v1/shards');
    expect(report.body.pools).toContainEqual({ pool: 'renders', count: 3, serve: 3, shards: ['renders', 'renders_1', 'renders_2'] });
    expect(report.body.shards.filter((s: { pool?: string }) => s.pool === 'renders').map((s: { shard: string }) => s.shard)).toEqual(['renders', 'renders_1', 'renders_2'].map(shardHashTag));

    // a job left on the last shard keeps it served after the pool shrinks to one
    const ids: string[] = [];
    while (!ids.some((id) => id.startsWith('renders_2.'))) ids.push((await http('POST', '/v1/jobs', { body: { service: 'comfyui', requirements: { pool: 'renders' } } })).body.id);
    const shrunk = await http('PUT', '/v1/pools/renders/shards', { body: { count: 1 } });
    expect(shrunk).toMatchObject({ status: 200, body: { pool: 'renders', count: 1, serve: 3 } });
  });

  it('refuses a count out of 1..64, not a whole number, or a bad pool name, with the error body saying which', async () => {
    for (const [path, body, message] of [
      ['/v1/pools/renders/shards', { count: 0 }, /at least one shard/],
      ['/v1/pools/renders/shards', { count: 65 }, /at most 64 shards/],
      ['/v1/pools/renders/shards', { count: 1.5 }, /whole number/],
      ['/v1/pools/renders/shards', { count: '2' }, /count/],
      ['/v1/pools/renders/shards', {}, /count/],
      ['/v1/pools/Renders_2/shards', { count: 2 }, /pool name is lowercase/],
    ] as const) {
      const refused = await http('PUT', path, { body });
      expect({ path, body, status: refused.status, code: refused.body.error?.code }).toEqual({ path, body, status: 400, code: 'VALIDATION' });
      expect(refused.body.error.message).toMatch(message);
    }
  });
});

describe('machines and workers', () => {
  it('lists workers and machines, and records drain and restart commands for the machine agent', async () => {
    const workers = await http('GET', '/v1/workers');
    expect(workers.body.workers).toContainEqual(expect.objectContaining({ id: 'api-test-worker', pool: 'standard', capabilities: expect.objectContaining({ services: ['simulation'] }) }));
    const drain = await http('POST', '/v1/machines/api-test-machine/drain', { body: { service: 'simulation', reason: 'maintenance' } });
    expect(drain.status).toBe(202);
    expect(drain.body).toMatchObject({ machine: 'api-test-machine', pool: 'standard', action: 'drain', service: 'simulation', command_id: expect.stringMatching(/^\d+-\d+$/) });
    const restart = await http('POST', '/v1/machines/api-test-machine/restart');
    expect(restart.status).toBe(202);
    const commands = await stack.connection.xrange(stack.broker.keys.machineCommands('standard', 'api-test-machine'), '-', '+');
    expect(commands.map(([id]) => id)).toEqual([drain.body.command_id, restart.body.command_id]);
    const machines = await http('GET', '/v1/machines');
    expect(machines.body.machines).toContainEqual(expect.objectContaining({ id: 'api-test-machine', last_command: 'restart', last_command_id: restart.body.command_id }));
    const unknown = await http('POST', '/v1/machines/nowhere/drain');
    expect(unknown.status).toBe(404);
  });

  it('records prefetch and evict commands with their model, and refuses a model command without one or a model for another action', async () => {
    const prefetch = await http('POST', '/v1/machines/api-test-machine/prefetch', { body: { model: 'sdxl.safetensors', reason: 'demand rising' } });
    expect(prefetch.status).toBe(202);
    expect(prefetch.body).toEqual({ machine: 'api-test-machine', pool: 'standard', action: 'prefetch', model: 'sdxl.safetensors', command_id: expect.stringMatching(/^\d+-\d+$/) });
    const evict = await http('POST', '/v1/machines/api-test-machine/evict', { body: { model: 'flux.safetensors', pool: 'standard' } });
    expect(evict.status).toBe(202);
    const commands = await stack.broker.readMachineCommands('standard', 'api-test-machine', '0');
    expect(commands.slice(-2)).toEqual([
      expect.objectContaining({ id: prefetch.body.command_id, action: 'prefetch', model: 'sdxl.safetensors', reason: 'demand rising', by: expect.any(String) }),
      expect.objectContaining({ id: evict.body.command_id, action: 'evict', model: 'flux.safetensors' }),
    ]);
    const machines = await http('GET', '/v1/machines');
    expect(machines.body.machines).toContainEqual(expect.objectContaining({ id: 'api-test-machine', last_command: 'evict', last_command_model: 'flux.safetensors' }));

    const missing = await http('POST', '/v1/machines/api-test-machine/prefetch', { body: { reason: 'no model' } });
    expect(missing.status).toBe(400);
    expect(missing.body.error).toMatchObject({ code: 'VALIDATION', message: expect.stringContaining('model: prefetch names the model to prefetch') });
    const noBody = await http('POST', '/v1/machines/api-test-machine/evict');
    expect(noBody.status).toBe(400);
    const stray = await http('POST', '/v1/machines/api-test-machine/restart', { body: { model: 'sdxl.safetensors' } });
    expect(stray.status).toBe(400);
    expect(stray.body.error.message).toContain('restart takes no model');
    const withService = await http('POST', '/v1/machines/api-test-machine/prefetch', { body: { model: 'sdxl.safetensors', service: 'simulation' } });
    expect(withService.status).toBe(400);
    const badModel = await http('POST', '/v1/machines/api-test-machine/prefetch', { body: { model: '' } });
    expect(badModel.status).toBe(400);
    const unknownAction = await http('POST', '/v1/machines/api-test-machine/reboot', { body: {} });
    expect(unknownAction.status).toBe(400);
    const loadWithout = await http('POST', '/v1/machines/api-test-machine/load', { body: {} });
    expect(loadWithout.status).toBe(400);
    expect(loadWithout.body.error.message).toContain('model: load names the model to load');
    const loadWithService = await http('POST', '/v1/machines/api-test-machine/load', { body: { model: 'llama3.2', service: 'ollama' } });
    expect(loadWithService.status).toBe(400);
    expect(loadWithService.body.error.message).toContain("load acts on the machine's models, not on a service");
    // nothing was recorded for the refused ones
    expect(await stack.broker.readMachineCommands('standard', 'api-test-machine', evict.body.command_id)).toEqual([]);
    const load = await http('POST', '/v1/machines/api-test-machine/load', { body: { model: 'llama3.2', reason: 'warm it' } });
    expect(load.status).toBe(202);
    expect(load.body).toEqual({ machine: 'api-test-machine', pool: 'standard', action: 'load', model: 'llama3.2', command_id: expect.stringMatching(/^\d+-\d+$/) });
    expect((await stack.broker.readMachineCommands('standard', 'api-test-machine', evict.body.command_id)).map((c) => [c.action, c.model])).toEqual([['load', 'llama3.2']]);
  });

  it('lists a record with a corrupt field, naming the field and why, instead of failing the listing', async () => {
    await stack.broker.registerMachine('standard', 'corrupt-box', 'ready');
    await stack.connection.hset(stack.broker.keys.prefix('standard') + 'machine:corrupt-box', 'processes', '{"not":"a list"}', 'state_since', '-5');
    const machines = await http('GET', '/v1/machines');
    expect(machines.status).toBe(200);
    expect(machines.body.machines).toContainEqual(expect.objectContaining({
      id: 'corrupt-box',
      problems: ['state_since: "-5" is not a time in ms', expect.stringMatching(/^processes: Invalid input: expected array/)],
    }));
    expect(machines.body.machines.find((m: { id: string }) => m.id === 'api-test-machine')).not.toHaveProperty('problems');
  });
});

describe('health, metrics and docs', () => {
  it('answers health and readiness without a key', async () => {
    expect(await call(stack.url, 'GET', '/health')).toMatchObject({ status: 200, body: { status: 'ok' } });
    expect(await call(stack.url, 'GET', '/ready')).toMatchObject({ status: 200, body: { status: 'ready' } });
  });

  it('exports request, queue and claim metrics for Prometheus', async () => {
    await http('POST', '/v1/jobs?wait=30', { body: { service: 'simulation' } });
    const text = (await call(stack.url, 'GET', '/metrics')).body as string;
    expect(text).toMatch(/emp_api_http_request_duration_seconds_count\{method="POST",route="\/v1\/jobs",status="201"\} \d+/);
    expect(text).toMatch(/emp_queue_depth\{pool="standard",service="simulation"\} 0/);
    expect(text).toMatch(/emp_events_total\{pool="standard",type="job.succeeded"\} \d+/);
    expect(text).toMatch(/emp_queue_wait_seconds_count\{pool="standard",service="simulation"\} [1-9]/);
    expect(text).toMatch(/emp_workers\{pool="standard",state="online"\} 1/);
  });

  it('serves an OpenAPI document generated from the zod schemas, and Swagger UI', async () => {
    const doc = (await call(stack.url, 'GET', '/docs/json')).body;
    const submit = doc.paths['/v1/jobs'].post;
    expect(submit.requestBody.content['application/json'].schema.properties.service.pattern).toBe('^[a-z][a-z0-9-]{0,31}$');
    expect(submit.requestBody.content['application/json'].schema.required).toEqual(['service']);
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/v1/jobs/{id}', '/v1/jobs/{id}/stream', '/v1/queues', '/v1/machines/{id}/{action}']));
    const ui = await call(stack.url, 'GET', '/docs/');
    expect(ui.status).toBe(200);
    expect(String(ui.body)).toContain('swagger');
  });
});

describe('readiness', () => {
  it('says not ready (503) when Redis does not answer', async () => {
    const lonely = await startApiStack({ worker: false });
    lonely.connection.on('error', () => undefined); // refused reconnects are expected here
    await lonely.redis.stop();
    const answer = await call(lonely.url, 'GET', '/ready');
    expect(answer.status).toBe(503);
    expect(answer.body.error.code).toBe('UNAVAILABLE');
    await lonely.server.close();
    lonely.connection.disconnect();
  });
});

describe('rate limits', () => {
  it('limits each key on its own, counted in Redis', async () => {
    const limited = await startApiStack({ worker: false, server: { rateLimit: { max: 3, windowMs: 60_000 } } });
    try {
      const [a, b] = await Promise.all([limited.server.app.apiKeys.create({ role: 'operator' }), limited.server.app.apiKeys.create({ role: 'operator' })]);
      const statuses = [];
      for (let i = 0; i < 4; i++) statuses.push((await call(limited.url, 'GET', '/v1/queues', { key: a.key })).status);
      expect(statuses).toEqual([200, 200, 200, 429]);
      const refused = await call(limited.url, 'GET', '/v1/queues', { key: a.key });
      expect(refused.body.error.code).toBe('RATE_LIMITED');
      expect((await call(limited.url, 'GET', '/v1/queues', { key: b.key })).status).toBe(200);
      expect((await call(limited.url, 'GET', '/health')).status).toBe(200);
      expect(await limited.connection.keys('emp:ratelimit:*')).not.toEqual([]);
    } finally {
      await limited.stop();
    }
  });
});

