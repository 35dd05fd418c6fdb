import { call } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Broker } from '@emp/core';
import { pino } from 'pino';
import { startApiServer } from '../server';

let stack: ApiStack;
let operator: string;
const http = (method: string, path: string, options: Parameters<typeof call>[3] = {}) =>
  call(stack.url, method, path, { key: operator, ...options });

beforeAll(async () => {
  stack = await startApiStack({ worker: { durationMs: 30, steps: 2 } });
  operator = (await stack.server.app.apiKeys.create({ role: 'operator' })).key;
});
afterAll(async () => {
  await stack?.stop();
});

describe('submitting', () => {
  it('answers 201 with the queued job, and with ?wait the finished job with its result and timings', async () => {
    const queued = await http('POST', '/v1/jobs', { body: { service: 'simulation', payload: { duration_ms: 2_000 } } });
    expect(queued.status).toBe(201);
    expect(queued.headers.get('location')).toBe(`/v1/jobs/${queued.body.id}`);
    expect(queued.body).toMatchObject({ service: 'simulation', tenant: 'default', duplicate: false });
    expect(['queued', 'starting', 'running']).toContain(queued.body.state);

    const waited = await http('POST', '/v1/jobs?wait=30', { body: { service: 'simulation', payload: { result: { answer: 42 } } } });
    expect(waited.status).toBe(201);
    expect(waited.body).toMatchObject({ state: 'succeeded', result: { simulated: true, answer: 42 }, worker: 'api-test-worker', machine: 'api-test-machine' });
    expect(waited.body.timings).toEqual({
      queue_ms: expect.any(Number), start_ms: expect.any(Number), execution_ms: expect.any(Number), total_ms: expect.any(Number),
    });
    await http('POST', `/v1/jobs/${queued.body.id}/cancel`);
  });

  it('long-polls a job with GET ?wait: answers when it finishes, and at once once it has', async () => {
    const queued = await http('POST', '/v1/jobs', { body: { service: 'simulation', payload: { duration_ms: 300, result: { answer: 7 } } } });
    expect(queued.body.state).not.toBe('succeeded');
    const waited = await http('GET', `/v1/jobs/${queued.body.id}?wait=30`);
    expect(waited.status).toBe(200);
    expect(waited.body).toMatchObject({ id: queued.body.id, state: 'succeeded', result: { simulated: true, answer: 7 } });
    const started = Date.now();
    expect((await http('GET', `/v1/jobs/${queued.body.id}?wait=30`)).body.state).toBe('succeeded');
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('honours Prefer: wait=N and returns at once with ?wait=0', async () => {
    const preferred = await http('POST', '/v1/jobs', { body: { service: 'simulation' }, headers: { prefer: 'respond-async, wait=30' } });
    expect(preferred.body.state).toBe('succeeded');
    const slow = await http('POST', '/v1/jobs?wait=0', { body: { service: 'simulation', payload: { duration_ms: 60_000 } } });
    expect(slow.body.state).not.toBe('succeeded');
    await http('POST', `/v1/jobs/${slow.body.id}/cancel`);
  });

  it('answers a waiting repeat of a finished job\'s Idempotency-Key at once, with the original job', async () => {
    const headers = { 'idempotency-key': 'waited-twice' };
    const body = { service: 'simulation', payload: { result: { answer: 5 } } };
    const first = await http('POST', '/v1/jobs?wait=30', { body, headers });
    expect(first.body).toMatchObject({ state: 'succeeded', duplicate: false });
    // the original ended long before this request's mark: its end is not awaited, the repeat reads it
    const started = Date.now();
    const again = await http('POST', '/v1/jobs?wait=30', { body, headers });
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ id: first.body.id, state: 'succeeded', duplicate: true, result: { simulated: true, answer: 5 } });
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('keeps to the Idempotency-Key: same body gives the original job (200), a different body 422', async () => {
    const headers = { 'idempotency-key': 'order-17' };
    const first = await http('POST', '/v1/jobs', { body: { service: 'simulation', payload: { n: 1 } }, headers });
    const again = await http('POST', '/v1/jobs', { body: { service: 'simulation', payload: { n: 1 } }, headers });
    expect(first.status).toBe(201);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ id: first.body.id, duplicate: true, idempotency_key: 'order-17' });
    const conflict = await http('POST', '/v1/jobs', { body: { service: 'simulation', payload: { n: 2 } }, headers });
    expect(conflict.status).toBe(422);
    expect(conflict.body.error.code).toBe('IDEMPOTENCY_CONFLICT');
    const mismatch = await http('POST', '/v1/jobs', { body: { service: 'simulation', idempotency_key: 'other' }, headers });
    expect(mismatch.status).toBe(400);
  });

  it('stores the webhook and its event filter on the job', async () => {
    const job = await http('POST', '/v1/jobs', { body: { service: 'simulation', webhook: { url: 'https://example.com/hook', events: ['completed'] } } });
    expect((await http('GET', `/v1/jobs/${job.body.id}`)).body.webhook).toEqual({ url: 'https://example.com/hook', events: ['completed'] });
  });

  it('submits a batch with one result per job, an unknown service failing alone', async () => {
    const batch = await http('POST', '/v1/jobs/batch', { body: { jobs: [{ service: 'simulation' }, { service: 'nosuch' }, { service: 'simulation', priority: 5 }] } });
    expect(batch.status).toBe(200);
    expect(batch.body.results).toEqual([
      expect.objectContaining({ id: expect.stringMatching(/^standard\./), duplicate: false }),
      { error: { code: 'UNKNOWN_SERVICE', message: expect.stringContaining("unknown service 'nosuch'") } },
      expect.objectContaining({ id: expect.stringMatching(/^standard\./) }),
    ]);
  });
});

describe('reading', () => {
  it('shows a queued job with its position', async () => {
    await http('POST', '/v1/services/ollama/pause', { body: { pool: 'standard' } });
    const first = await http('POST', '/v1/jobs', { body: { service: 'ollama' } });
    const second = await http('POST', '/v1/jobs', { body: { service: 'ollama' } });
    const got = await http('GET', `/v1/jobs/${second.body.id}`);
    expect(got.status).toBe(200);
    expect(got.body).toMatchObject({ state: 'queued', position: 1, routable: false });
    expect((await http('GET', `/v1/jobs/${first.body.id}`)).body.position).toBe(0);
    await http('POST', `/v1/jobs/${first.body.id}/cancel`);
    await http('POST', `/v1/jobs/${second.body.id}/cancel`);
  });

  it('lists jobs newest first with filters and cursor pages, without payloads', async () => {
    const mine = [];
    for (let i = 0; i < 5; i++) mine.push((await http('POST', '/v1/jobs?wait=30', { body: { service: 'simulation', tenant: 'lister', payload: { i } } })).body.id);
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await http('GET', `/v1/jobs?tenant=lister&state=succeeded&limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.status).toBe(200);
      expect(page.body.jobs.length).toBeLessThanOrEqual(2);
      for (const job of page.body.jobs) {
        expect(job).not.toHaveProperty('payload');
        expect(job).toMatchObject({ tenant: 'lister', state: 'succeeded' });
        seen.push(job.id);
      }
      cursor = page.body.next_cursor;
    } while (cursor);
    expect(seen).toEqual([...mine].reverse());
    expect((await http('GET', '/v1/jobs?tenant=lister&state=failed')).body.jobs).toEqual([]);
    const since = (await http('GET', `/v1/jobs/${mine[2]}`)).body.timestamps.submitted_at;
    const recent = await http('GET', `/v1/jobs?tenant=lister&since=${new Date(since).toISOString()}`);
    expect(recent.body.jobs.map((j: { id: string }) => j.id)).toEqual(expect.arrayContaining([mine[3], mine[4]]));
  });

  it("gives a job's event history, resumable after any event", async () => {
    const job = await http('POST', '/v1/jobs?wait=30', { body: { service: 'simulation' } });
    const history = await http('GET', `/v1/jobs/${job.body.id}/events`);
    const types = history.body.events.map((e: { type: string }) => e.type);
    expect(types[0]).toBe('job.queued');
    expect(types).toContain('job.starting');
    expect(types.at(-1)).toBe('job.succeeded');
    expect(history.body.events.find((e: { type: string }) => e.type === 'job.progress').progress).toMatchObject({ stage: 'running' });
    const rest = await http('GET', `/v1/jobs/${job.body.id}/events?after=${history.body.events[0].id}`);
    expect(rest.body.events.map((e: { type: string }) => e.type)).toEqual(types.slice(1));
  });
});

describe('routing', () => {
  it('takes expected_duration_s, routes by it and shows how the pool was chosen (the stack has workers in standard only)', async () => {
    const quick = await http('POST', '/v1/jobs?wait=0', { body: { service: 'ollama', requirements: { models: ['nowhere'] }, expected_duration_s: 4 } });
    expect(quick.status).toBe(201);
    const read = await http('GET', `/v1/jobs/${quick.body.id}`);
    expect(read.body.expected_duration_s).toBe(4);
    expect(read.body.routing).toEqual({ pool: 'standard', source: 'hint', estimate_s: 4, reason: 'routed to standard: expected_duration_s = 4 s; fast has no online worker' });
    const named = await http('POST', '/v1/jobs?wait=0', { body: { service: 'ollama', requirements: { pool: 'heavy', models: ['nowhere'] }, expected_duration_s: 4 } });
    expect(named.body.routing).toEqual({ pool: 'heavy', source: 'named', reason: 'routed to heavy: named in its requirements' });
    for (const id of [quick.body.id, named.body.id]) await http('POST', `/v1/jobs/${id}/cancel`);

    for (const [value, message] of [
      [0, 'expected_duration_s must be more than 0 seconds'],
      [90_000, 'expected_duration_s is at most 86400 (one day)'],
      ['soon', 'expected_duration_s is a number of seconds'],
    ] as const) {
      const bad = await http('POST', '/v1/jobs', { body: { service: 'simulation', expected_duration_s: value } });
      expect(bad.status, String(value)).toBe(400);
      expect(bad.body.error.issues).toEqual([{ path: 'expected_duration_s', message }]);
    }
  });

  it('lists the configured pools with their cutoffs, queues and workers (GET /v1/pools)', async () => {
    const answer = await http('GET', '/v1/pools');
    expect(answer.status).toBe(200);
    expect(answer.body.pools.map((p: { name: string; min_duration_s: number; max_duration_s?: number }) => [p.name, p.min_duration_s, p.max_duration_s ?? null])).toEqual([
      ['fast', 0, 30],
      ['standard', 30, 180],
      ['heavy', 180, null],
    ]);
    const standard = answer.body.pools[1];
    expect(standard).toMatchObject({ default: true, target_wait_s: 10, workers: { online: 1 } });
    expect(answer.body.pools[2].profile).toEqual({ min_gpu_memory_gb: 48 });
    // the stack's simulation jobs have run: their class is learned, under the pool their p90 routes them to
    const learned = answer.body.pools.flatMap((p: { durations: Array<{ service: string }> }) => p.durations);
    expect(learned).toContainEqual(expect.objectContaining({ service: 'simulation', models: [], samples: expect.any(Number), p90_s: expect.any(Number) }));
    expect((await call(stack.url, 'GET', '/v1/pools')).status).toBe(401);
  });
});

describe('progress', () => {
  it("of a finished job is its terminal state, never a stage it has left; the last report's figures stay", async () => {
    const done = await http('POST', '/v1/jobs?wait=30', { body: { service: 'simulation', tenant: 'progress' } });
    expect(done.body.state).toBe('succeeded');
    const read = await http('GET', `/v1/jobs/${done.body.id}`);
    expect(read.body.progress).toEqual({ stage: 'succeeded', value: 2, max: 2, message: 'step 2/2' });
    const listed = await http('GET', '/v1/jobs?tenant=progress');
    expect(listed.body.jobs.map((j: { progress: unknown }) => j.progress)).toEqual([read.body.progress]);

    // ended before any report: the stage still says how it ended
    const queued = await http('POST', '/v1/jobs', { body: { service: 'simulation', delay_ms: 3_600_000 } });
    await http('POST', `/v1/jobs/${queued.body.id}/cancel`);
    expect((await http('GET', `/v1/jobs/${queued.body.id}`)).body.progress).toEqual({ stage: 'canceled' });
  });
});

describe('changing', () => {
  it('cancels idempotently and retries under the same id', async () => {
    const job = await http('POST', '/v1/jobs', { body: { service: 'simulation', payload: { duration_ms: 60_000 } } });
    const canceled = await http('POST', `/v1/jobs/${job.body.id}/cancel`, { body: { reason: 'changed my mind' } });
    expect(canceled.body).toEqual({ id: job.body.id, state: 'canceled', changed: true });
    const again = await http('POST', `/v1/jobs/${job.body.id}/cancel`);
    expect(again.status).toBe(200);
    expect(again.body).toEqual({ id: job.body.id, state: 'canceled', changed: false });
    const retried = await http('POST', `/v1/jobs/${job.body.id}/retry`);
    expect(retried.body).toEqual({ id: job.body.id, state: 'queued' });
    expect((await http('GET', `/v1/jobs/${job.body.id}`)).body.manual_retries).toBe(1);
    await http('POST', `/v1/jobs/${job.body.id}/cancel`);

    const done = await http('POST', '/v1/jobs?wait=30', { body: { service: 'simulation' } });
    const refused = await http('POST', `/v1/jobs/${done.body.id}/retry`);
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('NOT_RETRYABLE');
  });

  it('lets a service key complete or fail a job through the fenced transition', async () => {
    const service = (await stack.server.app.apiKeys.create({ role: 'service', name: 'external-runner' })).key;
    // a job only an external system runs: nobody claims it, so take it as a registered worker would
    await stack.broker.registerWorker({ id: 'external', pool: 'standard', capabilities: { services: ['http'] } });
    const job = await http('POST', '/v1/jobs', { body: { service: 'http' } });
    const claim = await stack.broker.claim('standard', 'external');
    expect(claim.job?.id).toBe(job.body.id);
    const stale = await call(stack.url, 'POST', `/v1/jobs/${job.body.id}/complete`, { key: service, body: { token: '999999', result: {} } });
    expect(stale.status).toBe(409);
    expect(stale.body.error.code).toBe('LEASE_LOST');
    const done = await call(stack.url, 'POST', `/v1/jobs/${job.body.id}/complete`, { key: service, body: { token: claim.job!.lease.token, result: { url: 'https://x/y.png' } } });
    expect(done.body).toEqual({ id: job.body.id, state: 'succeeded' });
    expect((await http('GET', `/v1/jobs/${job.body.id}`)).body.result).toEqual({ url: 'https://x/y.png' });
    const late = await call(stack.url, 'POST', `/v1/jobs/${job.body.id}/complete`, { key: service, body: { result: {} } });
    expect(late.status).toBe(409);

    const other = await http('POST', '/v1/jobs', { body: { service: 'http', max_attempts: 1 } });
    await stack.broker.claim('standard', 'external');
    const failed = await call(stack.url, 'POST', `/v1/jobs/${other.body.id}/fail`, { key: service, body: { error: { kind: 'non_retryable', message: 'bad prompt' } } });
    expect(failed.body).toEqual({ id: other.body.id, outcome: 'failed' });
    expect((await http('GET', `/v1/jobs/${other.body.id}`)).body.error).toEqual({ kind: 'non_retryable', message: 'bad prompt' });
  });
});

describe('bad input', () => {
  const cases: Array<[string, string, string, unknown, number, string, Array<{ path: string; message: RegExp }>?]> = [
    ['missing service', 'POST', '/v1/jobs', {}, 400, 'VALIDATION', [{ path: 'service', message: /expected string/ }]],
    ['bad pool', 'POST', '/v1/jobs', { service: 'simulation', requirements: { pool: 'No Pool' } }, 400, 'VALIDATION', [{ path: 'requirements.pool', message: /pool name/ }]],
    ['unknown field', 'POST', '/v1/jobs', { service: 'simulation', colour: 'red' }, 400, 'VALIDATION', [{ path: '', message: /colour/ }]],
    ['priority out of range', 'POST', '/v1/jobs', { service: 'simulation', priority: 5000 }, 400, 'VALIDATION', [{ path: 'priority', message: /1000/ }]],
    ['webhook not a URL', 'POST', '/v1/jobs', { service: 'simulation', webhook: { url: 'nope' } }, 400, 'VALIDATION', [{ path: 'webhook.url', message: /URL/i }]],
    ['webhook to a file', 'POST', '/v1/jobs', { service: 'simulation', webhook: { url: 'file:///etc/passwd' } }, 400, 'VALIDATION', [{ path: 'webhook.url', message: /^scheme file is not allowed; a webhook URL is http:\/\/ or https:\/\/$/ }]],
    ['webhook to the metadata service', 'POST', '/v1/jobs', { service: 'simulation', webhook: { url: 'http://169.254.169.254/latest/meta-data/' } }, 400, 'VALIDATION', [{ path: 'webhook.url', message: /^host 169\.254\.169\.254 is a link-local address/ }]],
    ['webhook to loopback in a batch', 'POST', '/v1/jobs/batch', { jobs: [{ service: 'simulation' }, { service: 'simulation', webhook: { url: 'http://[::ffff:127.0.0.1]:8080/h' } }] }, 400, 'VALIDATION', [{ path: 'jobs.1.webhook.url', message: /^host \[::ffff:7f00:1\] is a loopback address/ }]],
    ['unknown service', 'POST', '/v1/jobs', { service: 'nosuch' }, 400, 'UNKNOWN_SERVICE'],
    ['wait over the cap', 'POST', '/v1/jobs?wait=91', { service: 'simulation' }, 400, 'VALIDATION', [{ path: 'query.wait', message: /90/ }]],
    ['empty batch', 'POST', '/v1/jobs/batch', { jobs: [] }, 400, 'VALIDATION', [{ path: 'jobs', message: /1/ }]],
    ['bad job in a batch', 'POST', '/v1/jobs/batch', { jobs: [{ service: 'simulation' }, { service: 7 }] }, 400, 'VALIDATION', [{ path: 'jobs.1.service', message: /string/ }]],
    ['malformed job id', 'GET', '/v1/jobs/not-an-id', undefined, 400, 'VALIDATION', [{ path: 'params.id', message: /job id looks like/ }]],
    ['job that does not exist', 'GET', '/v1/jobs/standard.doesnotexist00', undefined, 404, 'NOT_FOUND'],
    ['bad state filter', 'GET', '/v1/jobs?state=queued,done', undefined, 400, 'VALIDATION', [{ path: 'query.state.1', message: /queued/ }]],
    ['bad time filter', 'GET', '/v1/jobs?since=yesterday', undefined, 400, 'VALIDATION', [{ path: 'query.since', message: /ISO 8601/ }]],
    ['forged cursor', 'GET', '/v1/jobs?cursor=Zm9yZ2Vk', undefined, 400, 'VALIDATION', [{ path: 'cursor', message: /cursor/ }]],
    ['bad event cursor', 'GET', '/v1/jobs/standard.doesnotexist00/events?after=x', undefined, 400, 'VALIDATION', [{ path: 'query.after', message: /event id/ }]],
    ['fail without a kind', 'POST', '/v1/jobs/standard.doesnotexist00/fail', { error: { message: 'x' } }, 400, 'VALIDATION', [{ path: 'error.kind', message: /retryable/ }]],
    ['no such route', 'GET', '/v1/nothing', undefined, 404, 'NO_ROUTE'],
    ['bad machine action', 'POST', '/v1/machines/m1/reboot', {}, 400, 'VALIDATION', [{ path: 'params.action', message: /drain/ }]],
  ];

  it.each(cases)('%s: %s %s', async (_name, method, path, body, status, code, issues) => {
    const answer = await http(method, path, body === undefined ? {} : { body });
    expect(answer.status).toBe(status);
    expect(answer.body.error.code).toBe(code);
    expect(typeof answer.body.error.message).toBe('string');
    for (const issue of issues ?? []) {
      expect(answer.body.error.issues).toContainEqual({ path: issue.path, message: expect.stringMatching(issue.message) });
    }
  });

  it('refuses a webhook to a private host with a 400 naming the field and the reason, and queues nothing', async () => {
    const newest = async () => (await stack.broker.listJobs({ limit: 1 })).jobs[0]?.id;
    const before = await newest();
    const answer = await http('POST', '/v1/jobs', { body: { service: 'simulation', webhook: { url: 'http://10.0.0.7:9000/hook' } } });
    expect(answer.status).toBe(400);
    expect(answer.body.error).toEqual({
      code: 'VALIDATION',
      message: 'invalid body: webhook.url: host 10.0.0.7 is a private address; webhooks go to public hosts only',
      issues: [{ path: 'webhook.url', message: 'host 10.0.0.7 is a private address; webhooks go to public hosts only' }],
    });
    expect(await newest()).toBe(before);
  });

  it('takes a webhook to localhost where private targets are allowed (the local stack), by option or EMP_WEBHOOK_ALLOW_PRIVATE', async () => {
    const local = await startApiServer({ broker: stack.broker, logger: pino({ level: 'silent' }), auth: false, rateLimit: false, queueSampleMs: false, port: 0, webhookAllowPrivate: true });
    process.env.EMP_WEBHOOK_ALLOW_PRIVATE = '1';
    const fromEnv = await startApiServer({ broker: stack.broker, logger: pino({ level: 'silent' }), auth: false, rateLimit: false, queueSampleMs: false, port: 0 }).finally(() => {
      delete process.env.EMP_WEBHOOK_ALLOW_PRIVATE;
    });
    try {
      for (const server of [local, fromEnv]) {
        const taken = await call(server.url, 'POST', '/v1/jobs', { body: { service: 'simulation', webhook: { url: 'http://localhost:4000/hook' } } });
        expect(taken.status).toBe(201);
        expect(taken.body.webhook).toEqual({ url: 'http://localhost:4000/hook' });
        // the scheme is checked all the same
        const file = await call(server.url, 'POST', '/v1/jobs', { body: { service: 'simulation', webhook: { url: 'file:///etc/passwd' } } });
        expect(file.status).toBe(400);
      }
    } finally {
      await local.close();
      await fromEnv.close();
    }
  });

  it('answers 429 TOO_MANY_CLASSES for a job that would open a requirement class past the limit; joining a class is fine', async () => {
    // a keyspace of its own, so that no other test's queued classes count
    const limited = await Broker.connect({ redis: stack.connection, config: { namespace: 'limited', maxQueuedClasses: 1 } });
    const server = await startApiServer({ broker: limited, logger: pino({ level: 'silent' }), auth: false, rateLimit: false, queueSampleMs: false, port: 0 });
    const inRack = (rack: string) => ({ service: 'simulation', payload: { duration_ms: 60_000 }, requirements: { constraints: { rack } } });
    const taken: string[] = [];
    try {
      const first = await call(server.url, 'POST', '/v1/jobs', { body: inRack('r-limit-1') });
      expect(first.status).toBe(201);
      taken.push(first.body.id);
      const joins = await call(server.url, 'POST', '/v1/jobs', { body: { ...inRack('r-limit-1'), workflow_id: 'wf-x', tenant: 'other' } });
      expect(joins.status).toBe(201);
      taken.push(joins.body.id);
      const refused = await call(server.url, 'POST', '/v1/jobs', { body: inRack('r-limit-2') });
      expect(refused.status).toBe(429);
      expect(refused.body.error.code).toBe('TOO_MANY_CLASSES');
      expect(refused.body.error.message).toMatch(/already has 1 requirement classes queued \(the limit, maxQueuedClasses\)/);
    } finally {
      for (const id of taken) await limited.cancel(id);
      await server.close();
    }
  });

  it('refuses bodies that are not JSON, too large, or of another media type with a 4xx and a code', async () => {
    const broken = await http('POST', '/v1/jobs', { rawBody: '{"service": ' });
    expect(broken.status).toBe(400);
    expect(broken.body.error.code).toBe('BAD_REQUEST');
    const huge = await http('POST', '/v1/jobs', { rawBody: JSON.stringify({ service: 'simulation', payload: 'x'.repeat(3 * 1024 * 1024) }) });
    expect(huge.status).toBe(413);
    expect(huge.body.error.code).toBe('BODY_TOO_LARGE');
    const text = await http('POST', '/v1/jobs', { rawBody: '<job/>', headers: { 'content-type': 'application/xml' } });
    expect(text.status).toBe(415);
    const poisoned = await http('POST', '/v1/jobs', { rawBody: '{"service":"simulation","__proto__":{"x":1}}' });
    expect(poisoned.status).toBe(400);
    const payload = await http('POST', '/v1/jobs', { body: { service: 'simulation', payload: 'x'.repeat(1024 * 1024 + 10) } });
    expect(payload.status).toBe(413);
    expect(payload.body.error.code).toBe('PAYLOAD_TOO_LARGE');
  });
});
