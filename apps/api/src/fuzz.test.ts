import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ApiStack, startApiStack } from './testing/api-stack';
import { call } from './testing/http';

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
});
