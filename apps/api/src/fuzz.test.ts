import { call } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import fc from 'fast-check';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let stack: ApiStack;
let operator: string;
let client: string;
let jobId: string;

beforeAll(async () => {
  stack = await startApiStack({ worker: false });
  operator = (await stack.server.app.apiKeys.create({ role: 'operator' })).key;
  client = (await stack.server.app.apiKeys.create({ role: 'client', tenant: 'fuzz' })).key;
  jobId = (await stack.broker.submit({ service: 'http', tenant: 'fuzz' })).id;
});
afterAll(async () => {
  await stack?.stop();
});

/** Every answer to bad input is a 4xx with a stable code and a message; never a 5xx. */
function expectHandled(answer: { status: number; body: any }): void {
  expect(answer.status, JSON.stringify(answer.body)).toBeLessThan(500);
  if (answer.status >= 400) {
    expect(answer.body.error.code).toMatch(/^[A-Z_]+$/);
    expect(typeof answer.body.error.message).toBe('string');
  }
}

/** Bodies near the submit schema: known fields with values of any JSON type, plus stray ones. */
const submitLike = fc.record(
  {
    service: fc.oneof(fc.constantFrom('simulation', 'http', 'nosuch', ''), fc.jsonValue()),
    tenant: fc.oneof(fc.constantFrom('acme', 'fuzz'), fc.jsonValue()),
    payload: fc.jsonValue({ maxDepth: 6 }),
    requirements: fc.oneof(
      fc.record({ pool: fc.oneof(fc.constantFrom('standard', 'heavy', 'BAD'), fc.jsonValue()), models: fc.jsonValue(), constraints: fc.jsonValue({ maxDepth: 10 }), hardware: fc.jsonValue() }, { requiredKeys: [] }),
      fc.jsonValue(),
    ),
    priority: fc.oneof(fc.integer({ min: -5_000, max: 5_000 }), fc.double(), fc.jsonValue()),
    max_attempts: fc.jsonValue(),
    deadlines: fc.oneof(fc.record({ queue_ttl_ms: fc.jsonValue(), execution_timeout_ms: fc.integer() }, { requiredKeys: [] }), fc.jsonValue()),
    webhook: fc.oneof(fc.record({ url: fc.oneof(fc.webUrl(), fc.string()), events: fc.jsonValue() }, { requiredKeys: [] }), fc.jsonValue()),
    idempotency_key: fc.oneof(fc.string({ maxLength: 300 }), fc.jsonValue()),
    delay_ms: fc.jsonValue(),
  },
  { requiredKeys: [] },
);

const anyBody = fc.oneof(submitLike, fc.jsonValue({ maxDepth: 8 }), fc.dictionary(fc.string(), fc.jsonValue()));

describe('fuzzed HTTP bodies', () => {
  it('POST /v1/jobs never answers 5xx', async () => {
    await fc.assert(
      fc.asyncProperty(anyBody, fc.boolean(), async (body, asClient) => {
        expectHandled(await call(stack.url, 'POST', '/v1/jobs', { key: asClient ? client : operator, body }));
      }),
      { numRuns: 300 },
    );
  });

  it('POST /v1/jobs/batch never answers 5xx', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.record({ jobs: fc.array(submitLike, { maxLength: 5 }) }), anyBody), async (body) => {
        expectHandled(await call(stack.url, 'POST', '/v1/jobs/batch', { key: operator, body }));
      }),
      { numRuns: 150 },
    );
  });

  it('job actions, delegated completion and operator actions never answer 5xx', async () => {
    const paths = [
      () => `/v1/jobs/${jobId}/cancel`,
      () => `/v1/jobs/${jobId}/complete`,
      () => `/v1/jobs/${jobId}/fail`,
      () => '/v1/services/simulation/pause',
      () => '/v1/machines/m1/drain',
    ];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...paths), anyBody, async (path, body) => {
        expectHandled(await call(stack.url, 'POST', path(), { key: operator, body }));
      }),
      { numRuns: 200 },
    );
    await stack.broker.setServicePaused('standard', 'simulation', false);
  });

  it('query strings, ids and raw bytes never answer 5xx', async () => {
    const query = fc.dictionary(fc.constantFrom('state', 'service', 'tenant', 'pool', 'since', 'until', 'cursor', 'limit', 'wait', 'after', 'x'), fc.string({ maxLength: 60 }));
    await fc.assert(
      fc.asyncProperty(query, fc.constantFrom('/v1/jobs', `/v1/jobs/${jobId}/events`, '/v1/queues', '/v1/workers'), async (params, path) => {
        expectHandled(await call(stack.url, 'GET', `${path}?${new URLSearchParams(params)}`, { key: operator }));
      }),
      { numRuns: 200 },
    );
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 80 }), async (id) => {
        expectHandled(await call(stack.url, 'GET', `/v1/jobs/${encodeURIComponent(id)}`, { key: operator }));
      }),
      { numRuns: 100 },
    );
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), async (bytes) => {
        expectHandled(await call(stack.url, 'POST', '/v1/jobs', { key: operator, rawBody: Buffer.from(bytes).toString('latin1') }));
      }),
      { numRuns: 100 },
    );
  });

  it('refuses hostile nesting with a 4xx', async () => {
    for (const depth of [1_000, 100_000]) {
      const nested = `${'['.repeat(depth)}${']'.repeat(depth)}`;
      expectHandled(await call(stack.url, 'POST', '/v1/jobs', { key: operator, rawBody: `{"service":"simulation","payload":${nested}}` }));
      expectHandled(await call(stack.url, 'POST', '/v1/jobs', { key: operator, rawBody: `{"service":"simulation","idempotency_key":"deep","payload":${nested}}` }));
      expectHandled(await call(stack.url, 'POST', '/v1/jobs', { key: operator, rawBody: `{"service":"simulation","requirements":{"constraints":{"a":${nested}}}}` }));
    }
  });

  it('WebSocket messages of any shape get a coded error or an answer, and never close the socket', async () => {
    const socket = new WebSocket(`${stack.url.replace('http', 'ws')}/v1/live`, { headers: { authorization: `Bearer ${client}` } });
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
    let closed = false;
    socket.on('close', () => (closed = true));
    const answers: Array<{ type: string; code?: string }> = [];
    socket.on('message', (data) => answers.push(JSON.parse(data.toString()) as { type: string; code?: string }));
    const message = fc.oneof(
      fc.record({ type: fc.constantFrom('subscribe', 'unsubscribe', 'monitor', 'x'), job: fc.oneof(fc.constant(jobId), fc.string()), after: fc.jsonValue() }, { requiredKeys: [] }),
      fc.jsonValue({ maxDepth: 5 }).map((value) => JSON.stringify(value)),
      fc.string({ maxLength: 100 }),
    );
    await fc.assert(
      fc.asyncProperty(message, async (m) => {
        socket.send(typeof m === 'string' ? m : JSON.stringify(m));
      }),
      { numRuns: 300 },
    );
    // a final well-formed subscribe is still answered: the socket survived everything before it
    socket.send(JSON.stringify({ type: 'unsubscribe', job: jobId }));
    socket.send(JSON.stringify({ type: 'subscribe', job: jobId, after: 'not-a-cursor' }));
    socket.send(JSON.stringify({ type: 'subscribe', job: jobId }));
    const snapshotAfterErrors = () => {
      const refused = answers.findIndex((a) => a.type === 'error' && a.code === 'VALIDATION' && JSON.stringify(a).includes('after'));
      return refused >= 0 && answers.slice(refused).some((a) => a.type === 'snapshot');
    };
    while (!snapshotAfterErrors() && !closed) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(closed).toBe(false);
    expect(answers.filter((a) => a.type === 'error').every((a) => /^[A-Z_]+$/.test(a.code ?? ''))).toBe(true);
    socket.close();
  });
});
