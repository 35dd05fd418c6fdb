import { call } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// Limits run before authentication and validation: unknown keys are limited by address,
// and a key's every request counts, whatever its answer.

const UNKNOWN_KEY = `emp_000000000000_${'a'.repeat(32)}`;

describe('per address, before authentication', () => {
  let stack: ApiStack;
  beforeAll(async () => {
    stack = await startApiStack({ worker: false, server: { rateLimit: { addressMax: 5, max: 1_000, windowMs: 60_000 } } });
  });
  afterAll(async () => stack?.stop());

  it('unknown keys and requests without a key from one address get 429 once past its limit; a valid key and public routes still pass', async () => {
    const { key } = await stack.server.app.apiKeys.create({ role: 'operator' });
    // a key's first request, before this server knows it as valid, counts against its address too
    expect((await call(stack.url, 'GET', '/v1/queues', { key })).status).toBe(200);
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await call(stack.url, 'GET', '/v1/queues', { key: UNKNOWN_KEY })).status);
    expect(statuses).toEqual([401, 401, 401, 401, 429, 429, 429, 429]);
    const keyless = await call(stack.url, 'POST', '/v1/jobs', { body: { service: 'simulation' } });
    expect(keyless.status).toBe(429);
    expect(keyless.body.error.code).toBe('RATE_LIMITED');
    expect(keyless.body.error.message).toMatch(/rate limit of 5 requests per 60 s for requests from this address without a valid API key reached; retry in \d+ s/);
    expect(Number(keyless.headers.get('retry-after'))).toBeGreaterThan(0);
    expect((await call(stack.url, 'GET', '/v1/queues', { key })).status).toBe(200);
    expect((await call(stack.url, 'GET', '/health')).status).toBe(200);
    expect((await call(stack.url, 'GET', '/metrics')).status).toBe(200);
  });
});

describe('per key, every request', () => {
  let stack: ApiStack;
  beforeAll(async () => {
    stack = await startApiStack({ worker: false, server: { rateLimit: { max: 4, addressMax: 1_000, windowMs: 60_000 } } });
  });
  afterAll(async () => stack?.stop());

  it('invalid and refused requests count against the key: past its limit it gets 429, not 400', async () => {
    const { key } = await stack.server.app.apiKeys.create({ role: 'client', tenant: 'acme' });
    const invalid = await call(stack.url, 'POST', '/v1/jobs', { key, body: { service: 'simulation', priority: 'high' } });
    expect(invalid.status).toBe(400);
    expect((await call(stack.url, 'POST', '/v1/jobs', { key, rawBody: '{"service":' })).status).toBe(400);
    expect((await call(stack.url, 'GET', '/v1/queues', { key })).status).toBe(403);
    expect((await call(stack.url, 'GET', '/v1/jobs/standard.mwxyz0000000000a', { key })).status).toBe(404);
    const over = await call(stack.url, 'POST', '/v1/jobs', { key, body: { service: 'simulation', priority: 'high' } });
    expect(over.status).toBe(429);
    expect(over.body.error.message).toMatch(/rate limit of 4 requests per 60 s for this API key reached/);
    expect((await call(stack.url, 'GET', '/v1/whoami', { key })).status).toBe(429);
    // another key has its own count
    const other = await stack.server.app.apiKeys.create({ role: 'client', tenant: 'acme' });
    expect((await call(stack.url, 'GET', '/v1/whoami', { key: other.key })).status).toBe(200);
  });
});

describe('auth off (the local development stack)', () => {
  let stack: ApiStack;
  beforeAll(async () => {
    stack = await startApiStack({ auth: false, worker: false, server: { rateLimit: { max: 6, addressMax: 2, windowMs: 60_000 } } });
  });
  afterAll(async () => stack?.stop());

  it('callers are the anonymous operator, limited per address by the key limit, not refused as keyless', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 7; i++) statuses.push((await call(stack.url, 'GET', '/v1/queues')).status);
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 429]);
  });
});
