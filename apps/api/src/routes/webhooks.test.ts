import { call } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

describe('the webhook signing secret of a tenant', () => {
  let stack: ApiStack;
  beforeAll(async () => {
    stack = await startApiStack({ worker: false });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('is made on first read, the same on every read, and the client of another tenant never sees it', async () => {
    const acme = (await stack.server.app.apiKeys.create({ role: 'client', tenant: 'acme' })).key;
    const globex = (await stack.server.app.apiKeys.create({ role: 'client', tenant: 'globex' })).key;
    const first = await call(stack.url, 'GET', '/v1/webhooks/secret', { key: acme });
    expect(first.status).toBe(200);
    expect(first.body).toEqual({ tenant: 'acme', secret: expect.stringMatching(/^whsec_[A-Za-z0-9+/]{43}=$/) });
    expect((await call(stack.url, 'GET', '/v1/webhooks/secret', { key: acme })).body).toEqual(first.body);
    const other = await call(stack.url, 'GET', '/v1/webhooks/secret', { key: globex });
    expect(other.body.secret).not.toBe(first.body.secret);
    expect((await call(stack.url, 'GET', '/v1/webhooks/secret?tenant=acme', { key: globex })).status).toBe(403);
    expect((await call(stack.url, 'GET', '/v1/webhooks/secret')).status).toBe(401);
  });

  it('is rotated by its client, the old one valid for the grace period, and an operator names the tenant', async () => {
    const client = (await stack.server.app.apiKeys.create({ role: 'client', tenant: 'initech' })).key;
    const operator = (await stack.server.app.apiKeys.create({ role: 'operator' })).key;
    const before = (await call(stack.url, 'GET', '/v1/webhooks/secret', { key: client })).body;
    const rotated = await call(stack.url, 'POST', '/v1/webhooks/secret/rotate', { key: client, body: { grace_seconds: 3600 } });
    expect(rotated.status).toBe(200);
    expect(rotated.body.secret).not.toBe(before.secret);
    expect(rotated.body.previous_valid_until).toBeGreaterThan(Date.now() + 3_500_000);
    const seen = await call(stack.url, 'GET', '/v1/webhooks/secret?tenant=initech', { key: operator });
    expect(seen.body).toEqual({ tenant: 'initech', secret: rotated.body.secret, previous_valid_until: rotated.body.previous_valid_until });
    expect((await call(stack.url, 'POST', '/v1/webhooks/secret/rotate', { key: client, body: { grace_seconds: -1 } })).status).toBe(400);
  });
});
