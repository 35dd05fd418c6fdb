import { call } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const MONITOR = 'http://127.0.0.1:3333';

describe('whoami and CORS, with keys required', () => {
  let stack: ApiStack;
  beforeAll(async () => {
    stack = await startApiStack({ worker: false, server: { corsOrigins: [MONITOR] } });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it("answers the key's role and tenant, so a page can hide what the role may not do", async () => {
    const client = (await stack.server.app.apiKeys.create({ role: 'client', tenant: 'acme' })).key;
    const operator = await stack.server.app.apiKeys.create({ role: 'operator', name: 'ops' });
    expect((await call(stack.url, 'GET', '/v1/whoami', { key: client })).body).toEqual({ key_id: expect.any(String), role: 'client', tenant: 'acme', auth: true });
    expect((await call(stack.url, 'GET', `/v1/whoami?api_key=${operator.key}`)).body).toEqual({ key_id: operator.record.id, role: 'operator', auth: true });
    const anonymous = await call(stack.url, 'GET', '/v1/whoami');
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.error.code).toBe('UNAUTHENTICATED');
  });

  it("lets the monitor's origin call from a browser (preflight included) and no other origin", async () => {
    const preflight = await fetch(`${stack.url}/v1/jobs`, {
      method: 'OPTIONS',
      headers: { origin: MONITOR, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe(MONITOR);
    expect(preflight.headers.get('access-control-allow-headers')).toMatch(/authorization/);
    const allowed = await call(stack.url, 'GET', '/health', { headers: { origin: MONITOR } });
    expect(allowed.headers.get('access-control-allow-origin')).toBe(MONITOR);
    const other = await call(stack.url, 'GET', '/health', { headers: { origin: 'http://evil.example' } });
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('a Server-Sent Events stream (a hijacked reply) carries the CORS headers too', async () => {
    const operator = (await stack.server.app.apiKeys.create({ role: 'operator', name: 'sse' })).key;
    const job = await call(stack.url, 'POST', '/v1/jobs', { key: operator, body: { service: 'simulation' } });
    const controller = new AbortController();
    const stream = await fetch(`${stack.url}/v1/jobs/${job.body.id}/stream`, {
      headers: { origin: MONITOR, authorization: `Bearer ${operator}` },
      signal: controller.signal,
    });
    expect(stream.headers.get('content-type')).toMatch(/text\/event-stream/);
    expect(stream.headers.get('access-control-allow-origin')).toBe(MONITOR);
    controller.abort();
  });
});

describe('whoami with auth off', () => {
  let stack: ApiStack;
  beforeAll(async () => {
    stack = await startApiStack({ worker: false, auth: false });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('says every caller is an anonymous operator, and sends no CORS headers unless origins were given', async () => {
    const answer = await call(stack.url, 'GET', '/v1/whoami', { headers: { origin: MONITOR } });
    expect(answer.body).toEqual({ key_id: 'anonymous', role: 'operator', auth: false });
    expect(answer.headers.get('access-control-allow-origin')).toBeNull();
  });
});
