import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { Broker, WebhookOutbox } from '@emp/core';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSince } from './commands/webhooks';
import { runEmp } from './testing/emp-process';

const { redis, url } = usePrivateRedis();

describe('emp webhooks', () => {
  it("deliveries --job lists a job's attempts; secret prints and rotates a tenant's secret", async () => {
    const outbox = new WebhookOutbox(await Broker.connect({ redis }));
    const job = 'standard.abcdefabcdef01';
    await outbox.enqueue({ id: 'msg_1', tenant: 'acme', url: 'https://example.com/h', job, type: 'job.succeeded', body: '{}' });
    const [claimed] = await outbox.claimDue(1, 60_000);
    await outbox.settle(claimed!, 'retry', { at: Date.now(), message: 'msg_1', type: 'job.succeeded', url: claimed!.url, attempt: 1, status: 503, latency_ms: 12.3, outcome: 'retry', error: 'busy', next_at: Date.now() + 5_000 }, 5_000);
    const env = { REDIS_URL: url() };

    const table = await runEmp(['webhooks', 'deliveries', '--job', job], env);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/TIME\s+EVENT\s+ATTEMPT\s+STATUS\s+LATENCY\s+OUTCOME\s+ERROR/);
    expect(table.stdout).toMatch(/job\.succeeded\s+1\s+503\s+12 ms\s+retry \(next [\d:.]+\)\s+busy\s+msg_1/);
    // a message still waiting for its retry is not resent
    const resend = await runEmp(['webhooks', 'resend', 'msg_1'], env);
    expect(resend.code).not.toBe(0);
    expect(resend.stderr).toMatch(/msg_1 not resent: it is still waiting or in flight/);
    const backlog = await runEmp(['webhooks', 'deliveries', '--json'], env);
    expect(JSON.parse(backlog.stdout)).toMatchObject({ messages: 1 });

    const secret = await runEmp(['webhooks', 'secret', '--tenant', 'acme', '--json'], env);
    expect(JSON.parse(secret.stdout)).toEqual({ tenant: 'acme', secret: (await outbox.secrets('acme')).current });
    const rotated = await runEmp(['webhooks', 'secret', '--tenant', 'acme', '--rotate', '--grace-seconds', '60'], env);
    expect(rotated.stdout).toMatch(/^whsec_\S+\n\(the previous secret is signed with too until /);
    expect((await runEmp(['webhooks', 'secret', '--rotate', '--grace-seconds', 'soon'], env)).code).not.toBe(0);
  });
});

describe('emp webhooks endpoints (through the API)', () => {
  let stack: ApiStack;
  let acme: Record<string, string>;
  let globex: Record<string, string>;
  beforeAll(async () => {
    stack = await startApiStack({ worker: false });
    acme = { EMP_API_URL: stack.url, EMP_API_KEY: (await stack.server.app.apiKeys.create({ role: 'client', tenant: 'acme' })).key };
    globex = { EMP_API_URL: stack.url, EMP_API_KEY: (await stack.server.app.apiKeys.create({ role: 'client', tenant: 'globex' })).key };
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('create, list, test, rotate-secret, recover, deliveries, disable, enable and delete, each only for the key\'s tenant', async () => {
    const created = await runEmp(
      ['webhooks', 'create', '--url', 'https://hooks.example.com/a', '--events', 'job.succeeded,job.failed', '--header', 'x-team=billing', '--rate-limit', '3', '--description', 'billing', '--json'],
      acme,
    );
    expect(created.code, created.stderr).toBe(0);
    const endpoint = JSON.parse(created.stdout) as { id: string; secret: string; tenant: string; headers: Record<string, string>; rate_limit: number };
    expect(endpoint).toMatchObject({ tenant: 'acme', headers: { 'x-team': 'billing' }, rate_limit: 3, secret: expect.stringMatching(/^whsec_/) });

    const plain = await runEmp(['webhooks', 'create', '--url', 'https://hooks.example.com/b', '--events', 'job.*'], acme);
    expect(plain.stdout).toMatch(/^ep_\w+\nsecret: whsec_\S+\n$/);
    expect(plain.stderr).toMatch(/not shown again/);

    const listed = await runEmp(['webhooks', 'list'], acme);
    expect(listed.stdout).toMatch(/ID\s+TENANT\s+URL\s+EVENTS\s+ENABLED\s+DESCRIPTION/);
    expect(listed.stdout).toContain(endpoint.id);
    expect((await runEmp(['webhooks', 'list'], globex)).stdout).toBe('no webhook endpoints\n');
    const foreign = await runEmp(['webhooks', 'rotate-secret', endpoint.id], globex);
    expect(foreign.code).toBe(1);
    expect(foreign.stderr).toMatch(/the API answered 404 NOT_FOUND: webhook endpoint ep_\w+ does not exist/);

    expect((await runEmp(['webhooks', 'test', endpoint.id], acme)).stdout).toMatch(/^test message msg_test_\S+ queued/);
    const rotated = await runEmp(['webhooks', 'rotate-secret', endpoint.id, '--grace-seconds', '60'], acme);
    expect(rotated.stdout).toMatch(/^whsec_\S+\n$/);
    expect(rotated.stdout.trim()).not.toBe(endpoint.secret);
    expect(rotated.stderr).toMatch(/the previous secret signs too until /);
    expect((await runEmp(['webhooks', 'recover', endpoint.id, '--since', '1h'], acme)).stdout).toMatch(/^0 failed message\(s\) since \S+ queued again\n$/);
    expect(JSON.parse((await runEmp(['webhooks', 'deliveries', '--endpoint', endpoint.id, '--json'], acme)).stdout)).toEqual({ endpoint: endpoint.id, deliveries: [] });
    const resend = await runEmp(['webhooks', 'resend', 'msg_standard_0-0', '--endpoint', endpoint.id], acme);
    expect(resend.code).toBe(1);
    expect(resend.stderr).toMatch(/404 NOT_FOUND: message msg_standard_0-0 of webhook endpoint ep_\w+ does not exist/);
    expect((await runEmp(['webhooks', 'disable', endpoint.id], acme)).stdout).toBe(`${endpoint.id} disabled\n`);
    expect((await runEmp(['webhooks', 'enable', endpoint.id], acme)).stdout).toBe(`${endpoint.id} enabled\n`);
    expect((await runEmp(['webhooks', 'delete', endpoint.id], acme)).stdout).toBe(`${endpoint.id} deleted\n`);
    expect((await runEmp(['webhooks', 'delete', endpoint.id], acme)).code).toBe(1);
  });

  it('says what is wrong: bad events (exit 2), a bad --since, no key, no API', async () => {
    const bad = await runEmp(['webhooks', 'create', '--url', 'https://hooks.example.com/', '--events', 'job.done'], acme);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/the API answered 400 VALIDATION: invalid body: events\.0: unknown event type 'job\.done'/);
    const since = await runEmp(['webhooks', 'recover', 'ep_x', '--since', 'yesterday-ish'], acme);
    expect(since.code).toBe(2);
    expect(since.stderr).toMatch(/--since: expected an ISO 8601 time/);
    const keyless = await runEmp(['webhooks', 'list'], { EMP_API_URL: stack.url, EMP_API_KEY: '' });
    expect(keyless.stderr).toMatch(/401 .*pass --api-key or set EMP_API_KEY/);
    const down = await runEmp(['webhooks', 'list', '--api', 'http://127.0.0.1:1'], acme);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/cannot reach the API at http:\/\/127\.0\.0\.1:1/);
    expect(parseSince('2h', 10_000_000)).toBe(10_000_000 - 7_200_000);
    expect(parseSince('2026-01-01T00:00:00Z')).toBe(Date.parse('2026-01-01T00:00:00Z'));
  });
});
