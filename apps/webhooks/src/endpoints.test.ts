import { call } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { pino } from 'pino';
import { Webhook } from 'standardwebhooks';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { WebhookServiceConfigInput } from './config';
import { type WebhookService, startWebhookService } from './service';
import { runJob } from './testing/jobs';
import { TestReceiver, until } from './testing/receiver';

/**
 * Per-tenant webhook endpoints end to end: the real API (keys, roles) makes
 * them, the real webhook service delivers to receivers on loopback, and
 * `standardwebhooks` verifies what arrives.
 */

const logger = pino({ level: 'silent' });
const FAST: WebhookServiceConfigInput = {
  port: 0,
  allowPrivate: true,
  retryScheduleMs: [0, 50, 100],
  retryJitter: 0,
  pollMs: 20,
  poolScanMs: 50,
  progressThrottleMs: 200,
  leaseMs: 5_000,
  timeoutMs: 2_000,
};

let stack: ApiStack;
let operator: string;
const keys: Record<string, string> = {};
const cleanup: Array<() => Promise<void>> = [];

beforeAll(async () => {
  stack = await startApiStack({ worker: false, server: { webhookAllowPrivate: true } });
  operator = (await stack.server.app.apiKeys.create({ role: 'operator' })).key;
  for (const tenant of ['acme', 'globex']) keys[tenant] = (await stack.server.app.apiKeys.create({ role: 'client', tenant })).key;
});
afterAll(async () => {
  await stack?.stop();
});
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
  // endpoints of one test must not receive the next one's events
  const all = await api('GET', '/v1/webhooks', operator);
  for (const endpoint of all.body.endpoints) await api('DELETE', `/v1/webhooks/${endpoint.id}`, operator);
});

const api = (method: string, path: string, key: string, body?: unknown) => call(stack.url, method, path, { key, ...(body === undefined ? {} : { body }) });

async function receiver(): Promise<TestReceiver> {
  const r = await new TestReceiver().start();
  cleanup.push(() => r.stop());
  return r;
}

async function service(config: WebhookServiceConfigInput = {}): Promise<WebhookService> {
  const s = await startWebhookService({ broker: stack.broker, config: { ...FAST, ...config }, logger });
  cleanup.push(() => s.close());
  return s;
}

async function endpoint(key: string, body: Record<string, unknown>): Promise<{ id: string; secret: string; url: string }> {
  const answer = await api('POST', '/v1/webhooks', key, body);
  expect(answer.status, JSON.stringify(answer.body)).toBe(201);
  return answer.body;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('webhook endpoints through the API', () => {
  it('are made, read, changed and deleted by their tenant; another tenant sees and touches none of them', async () => {
    const made = await api('POST', '/v1/webhooks', keys.acme!, {
      url: 'https://hooks.example.com/acme',
      events: ['job.succeeded', 'job.failed'],
      description: 'billing',
      headers: { 'x-team': 'billing' },
      rate_limit: 5,
    });
    expect(made.status).toBe(201);
    expect(made.body).toMatchObject({ id: expect.stringMatching(/^ep_[0-9a-v]{20}$/), tenant: 'acme', scope: 'tenant', enabled: true, rate_limit: 5, headers: { 'x-team': 'billing' } });
    // whsec_ + base64 of at least 24 random bytes
    expect(made.body.secret).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
    expect(Buffer.from(made.body.secret.slice(6), 'base64').length).toBeGreaterThanOrEqual(24);
    const id = made.body.id as string;

    const read = await api('GET', `/v1/webhooks/${id}`, keys.acme!);
    expect(read.status).toBe(200);
    expect(read.body.secret).toBeUndefined();
    expect((await api('GET', '/v1/webhooks', keys.acme!)).body.endpoints.map((e: { id: string }) => e.id)).toEqual([id]);

    const changed = await api('PATCH', `/v1/webhooks/${id}`, keys.acme!, { events: ['job.*'], description: null, services: ['simulation'] });
    expect(changed.status).toBe(200);
    expect(changed.body).toMatchObject({ events: ['job.*'], services: ['simulation'] });
    expect(changed.body.description).toBeUndefined();

    // globex: as if it did not exist
    expect((await api('GET', '/v1/webhooks', keys.globex!)).body.endpoints).toEqual([]);
    for (const [method, path, body] of [
      ['GET', `/v1/webhooks/${id}`],
      ['PATCH', `/v1/webhooks/${id}`, { url: 'https://evil.example.com/' }],
      ['DELETE', `/v1/webhooks/${id}`],
      ['POST', `/v1/webhooks/${id}/test`],
      ['POST', `/v1/webhooks/${id}/disable`],
      ['POST', `/v1/webhooks/${id}/rotate-secret`, {}],
      ['GET', `/v1/webhooks/${id}/deliveries`],
      ['POST', `/v1/webhooks/${id}/recover`, { since: 0 }],
    ] as const) {
      const answer = await api(method, path, keys.globex!, body);
      expect(answer.status, `${method} ${path}`).toBe(404);
      expect(answer.body.error.code).toBe('NOT_FOUND');
    }
    expect((await api('GET', '/v1/webhooks?tenant=acme', keys.globex!)).status).toBe(403);
    expect((await api('POST', '/v1/webhooks', keys.globex!, { url: 'https://x.example.com/', events: ['job.queued'], tenant: 'acme' })).status).toBe(403);

    // the operator sees every tenant's, and makes operator-scoped ones
    const ops = await endpoint(operator, { url: 'https://ops.example.com/', events: ['worker.*', 'machine.*'] });
    expect((await api('GET', `/v1/webhooks/${ops.id}`, operator)).body).toMatchObject({ scope: 'operator' });
    expect((await api('GET', `/v1/webhooks/${ops.id}`, keys.acme!)).status).toBe(404);
    expect((await api('GET', '/v1/webhooks', operator)).body.endpoints.map((e: { id: string }) => e.id).sort()).toEqual([id, ops.id].sort());
    expect((await api('GET', '/v1/webhooks?tenant=acme', operator)).body.endpoints.map((e: { id: string }) => e.id)).toEqual([id]);

    const disabled = await api('POST', `/v1/webhooks/${id}/disable`, keys.acme!);
    expect(disabled.body).toMatchObject({ enabled: false, disabled_reason: 'disabled by hand' });
    expect((await api('POST', `/v1/webhooks/${id}/enable`, keys.acme!)).body).toMatchObject({ enabled: true });
    expect((await api('DELETE', `/v1/webhooks/${id}`, keys.acme!)).status).toBe(204);
    expect((await api('GET', `/v1/webhooks/${id}`, keys.acme!)).status).toBe(404);
  });

  it('refuses bad endpoints with the field and the reason', async () => {
    const bad = async (body: Record<string, unknown>, key = keys.acme!) => {
      const answer = await api('POST', '/v1/webhooks', key, body);
      expect(answer.status, JSON.stringify(answer.body)).toBe(400);
      return answer.body.error.issues.map((i: { path: string; message: string }) => `${i.path}: ${i.message}`).join('\n');
    };
    expect(await bad({ url: 'https://x.example.com/' })).toMatch(/^events: /);
    expect(await bad({ url: 'https://x.example.com/', events: [] })).toMatch(/events: name at least one event type/);
    expect(await bad({ url: 'https://x.example.com/', events: ['job.done'] })).toMatch(/events\.0: unknown event type 'job\.done'/);
    expect(await bad({ url: 'https://x.example.com/', events: ['completed'] })).toMatch(/events\.0: 'completed' is an alias .*job\.succeeded, job\.failed/);
    expect(await bad({ url: 'https://x.example.com/', events: ['job.queued', 'worker.*'] })).toMatch(/events\.1: 'worker\.\*' is an operator event/);
    expect(await bad({ url: 'ftp://x.example.com/', events: ['job.queued'] })).toMatch(/url: scheme ftp is not allowed/);
    expect(await bad({ url: 'https://x.example.com/', events: ['job.queued'], headers: { 'webhook-id': 'x', Connection: 'close', ok: 'a\r\nb' } })).toMatch(
      /headers\.webhook-id: webhook-\* headers .*\nheaders\.Connection: connection is set by the delivery \(or is hop-by-hop\).*\nheaders\.ok: a header value may not hold CR, LF or NUL/,
    );
    expect(await bad({ url: 'https://x.example.com/', events: ['job.queued'], rate_limit: 0 })).toMatch(/^rate_limit: /);
    expect(await bad({ url: 'https://x.example.com/', events: ['job.queued'], color: 'red' })).toMatch(/color/);
    // a service key bound to no tenant names one; only an operator makes operator-scoped endpoints
    const service = (await stack.server.app.apiKeys.create({ role: 'service' })).key;
    expect(await bad({ url: 'https://x.example.com/', events: ['job.queued'] }, service)).toMatch(/^tenant: name the tenant/);
  });
});

describe('webhook endpoint delivery', () => {
  it("fans a job's events out to its tenant's matching endpoints only, in order, signed with each endpoint's secret, with its headers", async () => {
    await service();
    const [acme, acmeFiltered, globex] = [await receiver(), await receiver(), await receiver()];
    const a = await endpoint(keys.acme!, { url: acme.url, events: ['job.*'], headers: { 'x-team': 'billing' } });
    await endpoint(keys.acme!, { url: acmeFiltered.url, events: ['job.succeeded'], services: ['comfyui'] });
    await endpoint(keys.globex!, { url: globex.url, events: ['job.*'] });
    const id = await runJob(stack.broker, undefined, { progress: 1 });
    await until(() => acme.typesOf(id).includes('job.succeeded'), "acme's endpoint got the job");
    expect(acme.typesOf(id)).toEqual(['job.queued', 'job.started', 'job.progress', 'job.succeeded']);
    const verifier = new Webhook(a.secret);
    for (const request of acme.received) {
      expect(verifier.verify(request.body, request.headers)).toEqual(JSON.parse(request.body));
      expect(request.headers['x-team']).toBe('billing');
      expect(request.headers['webhook-id']).toMatch(new RegExp(`^msg_standard_\\d+-\\d+_${a.id}$`));
    }
    expect(acme.received.at(-1)!.event.data).toMatchObject({ id, tenant: 'acme', state: 'succeeded' });
    await sleep(300);
    // another tenant's endpoint, and an endpoint filtering on another service, got nothing
    expect(globex.arrived).toEqual([]);
    expect(acmeFiltered.arrived).toEqual([]);

    // a globex job reaches globex's endpoint only
    const other = await runJob(stack.broker, undefined, { tenant: 'globex' });
    await until(() => globex.typesOf(other).includes('job.succeeded'), "globex's endpoint got its job");
    expect(acme.typesOf(other)).toEqual([]);
  });

  it("throttles a job's progress per endpoint, the last value always delivered", async () => {
    await service({ progressThrottleMs: 300 });
    const r = await receiver();
    await endpoint(keys.acme!, { url: r.url, events: ['job.progress'], headers: { 'User-Agent': 'acme-hooks' } });
    const worker = 'w-endpoint-progress';
    await stack.broker.registerWorker({ id: worker, pool: 'standard', capabilities: { services: ['simulation'] } });
    await stack.broker.submit({ service: 'simulation', tenant: 'acme' });
    const claimed = await stack.broker.claim('standard', worker);
    await stack.broker.start(claimed.job!.lease);
    for (let i = 1; i <= 20; i += 1) {
      await stack.broker.progress(claimed.job!.lease, { stage: 'running', value: i, max: 20 });
      await sleep(30);
    }
    await until(() => r.received.at(-1)?.event.data.progress?.value === 20, 'the last progress value', 5_000);
    const times = r.received.map((q) => q.at);
    expect(times.length).toBeLessThanOrEqual(4);
    for (let i = 1; i < times.length; i += 1) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(250);
    expect(r.received[0]!.headers['user-agent']).toBe('acme-hooks');
    await stack.broker.complete(claimed.job!.lease, { ok: true });
  });

  it('filters on workflow id', async () => {
    await service();
    const r = await receiver();
    await endpoint(keys.acme!, { url: r.url, events: ['job.queued'], workflows: ['wf-1'] });
    const { id: inside } = await stack.broker.submit({ service: 'simulation', tenant: 'acme', workflow_id: 'wf-1' });
    const { id: outside } = await stack.broker.submit({ service: 'simulation', tenant: 'acme', workflow_id: 'wf-2' });
    const { id: none } = await stack.broker.submit({ service: 'simulation', tenant: 'acme' });
    await until(() => r.typesOf(inside).length === 1, 'the wf-1 job');
    await sleep(300);
    expect(r.typesOf(outside)).toEqual([]);
    expect(r.typesOf(none)).toEqual([]);
    for (const job of [inside, outside, none]) await stack.broker.cancel(job);
  });

  it("delivers a workflow's events to its tenant's endpoints that ask for them, in order", async () => {
    await service();
    const acme = await receiver();
    const globex = await receiver();
    const made = await endpoint(keys.acme!, { url: acme.url, events: ['workflow.*'] });
    await endpoint(keys.globex!, { url: globex.url, events: ['workflow.*'] });
    await stack.broker.registerWorker({ id: 'wf-worker', pool: 'standard', capabilities: { services: ['simulation'] } });
    const { id } = await stack.broker.submitWorkflow({ tenant: 'acme', pool: 'standard', steps: { a: { service: 'simulation' }, b: { service: 'simulation', needs: ['a'] } } });
    for (let step = 0; step < 2; step++) {
      const claimed = await stack.broker.claim('standard', 'wf-worker');
      await stack.broker.complete(claimed.job!.lease, { step });
    }
    const ofWorkflow = () => acme.received.filter((r) => r.event.data.workflow === id);
    await until(() => ofWorkflow().some((r) => r.event.type === 'workflow.succeeded'), "acme's endpoint got the workflow's end");
    expect(ofWorkflow().map((r) => `${r.event.type} ${r.event.data.step ?? ''}`.trim())).toEqual([
      'workflow.submitted', 'workflow.step_succeeded a', 'workflow.step_succeeded b', 'workflow.succeeded',
    ]);
    expect(ofWorkflow()[0]!.event.data).toMatchObject({ workflow: id, tenant: 'acme', state: 'running' });
    expect(new Webhook(made.secret).verify(ofWorkflow()[0]!.body, ofWorkflow()[0]!.headers)).toBeTruthy();
    expect(globex.received).toEqual([]);
    expect((await api('POST', '/v1/webhooks', keys.acme!, { url: acme.url, events: ['workflow.finished'] })).body.error.message).toContain("unknown event type 'workflow.finished'");
  });

  it('signs with both secrets while a rotated secret is in its grace period', async () => {
    await service();
    const r = await receiver();
    const made = await endpoint(keys.acme!, { url: r.url, events: ['job.succeeded'] });
    const rotated = await api('POST', `/v1/webhooks/${made.id}/rotate-secret`, keys.acme!, { grace_seconds: 60 });
    expect(rotated.status).toBe(200);
    expect(rotated.body.secret).not.toBe(made.secret);
    expect(rotated.body.previous_secret_valid_until).toBeGreaterThan(Date.now() + 55_000);
    expect((await api('GET', `/v1/webhooks/${made.id}`, keys.acme!)).body.previous_secret_valid_until).toBe(rotated.body.previous_secret_valid_until);
    const id = await runJob(stack.broker, undefined);
    await until(() => r.typesOf(id).length === 1, 'the succeeded event');
    const request = r.received[0]!;
    expect(request.headers['webhook-signature']).toMatch(/^v1,\S+ v1,\S+$/);
    expect(new Webhook(rotated.body.secret).verify(request.body, request.headers)).toBeTruthy();
    expect(new Webhook(made.secret).verify(request.body, request.headers)).toBeTruthy();
    // the tenant-wide secret of jobs' own webhooks does not sign endpoint messages
    const tenantSecret = (await api('GET', '/v1/webhooks/secret', keys.acme!)).body.secret;
    expect(() => new Webhook(tenantSecret).verify(request.body, request.headers)).toThrow();
  });

  it('sends a test event on request, logs it, and refuses one to a disabled endpoint', async () => {
    await service();
    const r = await receiver();
    const made = await endpoint(keys.acme!, { url: r.url, events: ['job.failed'] });
    const test = await api('POST', `/v1/webhooks/${made.id}/test`, keys.acme!);
    expect(test.status).toBe(202);
    await until(() => r.received.length === 1, 'the test event');
    const request = r.received[0]!;
    expect(request.headers['webhook-id']).toBe(test.body.message_id);
    expect(new Webhook(made.secret).verify(request.body, request.headers)).toMatchObject({ type: 'webhook.test', data: { endpoint: made.id } });
    await until(async () => (await api('GET', `/v1/webhooks/${made.id}/deliveries`, keys.acme!)).body.deliveries.length === 1, 'the logged attempt');
    const log = (await api('GET', `/v1/webhooks/${made.id}/deliveries`, keys.acme!)).body;
    expect(log.deliveries[0]).toMatchObject({ message: test.body.message_id, type: 'webhook.test', status: 200, outcome: 'delivered', endpoint: made.id, response: 'ok' });
    await api('POST', `/v1/webhooks/${made.id}/disable`, keys.acme!);
    const refused = await api('POST', `/v1/webhooks/${made.id}/test`, keys.acme!);
    expect(refused.status).toBe(409);
    expect(refused.body.error.message).toMatch(/disabled \(disabled by hand\); enable it first/);
  });

  it('disables an endpoint that answers 410 Gone, with the reason, and tells operator endpoints that ask', async () => {
    await service();
    const gone = await receiver();
    gone.answer = () => ({ status: 410 });
    const ops = await receiver();
    const watcher = await endpoint(operator, { url: ops.url, events: ['webhook.endpoint.disabled'] });
    const made = await endpoint(keys.acme!, { url: gone.url, events: ['job.*'] });
    await runJob(stack.broker, undefined);
    await until(async () => (await api('GET', `/v1/webhooks/${made.id}`, keys.acme!)).body.enabled === false, 'the endpoint disabled');
    expect((await api('GET', `/v1/webhooks/${made.id}`, keys.acme!)).body).toMatchObject({ disabled_reason: 'the receiver answered 410 Gone' });
    await runJob(stack.broker, undefined);
    await sleep(300);
    expect(gone.arrived).toHaveLength(1);
    await until(() => ops.received.length === 1, "the operator's event");
    expect(new Webhook(watcher.secret).verify(ops.received[0]!.body, ops.received[0]!.headers)).toMatchObject({
      type: 'webhook.endpoint.disabled',
      data: { id: made.id, tenant: 'acme', enabled: false },
    });
  });

  it('disables an endpoint whose every attempt failed for failureDisableMs', async () => {
    await service({ failureDisableMs: 300, retryScheduleMs: [0, 100, 100, 100, 100, 100, 100, 100] });
    const r = await receiver();
    r.answer = () => ({ status: 500 });
    const made = await endpoint(keys.acme!, { url: r.url, events: ['job.queued'] });
    await runJob(stack.broker, undefined);
    await until(async () => (await api('GET', `/v1/webhooks/${made.id}`, keys.acme!)).body.enabled === false, 'the endpoint disabled', 5_000);
    expect((await api('GET', `/v1/webhooks/${made.id}`, keys.acme!)).body.disabled_reason).toMatch(/^every attempt failed for [\d.]+ days$/);
    const attempts = r.arrived.length;
    await sleep(300);
    expect(r.arrived.length).toBe(attempts);
  });

  it('recovers the failed messages of an endpoint since a time, same webhook-id and body', async () => {
    await service({ retryScheduleMs: [0] });
    const r = await receiver();
    r.answer = () => ({ status: 500 });
    const made = await endpoint(keys.acme!, { url: r.url, events: ['job.queued', 'job.succeeded'] });
    const before = Date.now();
    const id = await runJob(stack.broker, undefined);
    await until(async () => (await api('GET', `/v1/webhooks/${made.id}/deliveries`, keys.acme!)).body.deliveries.filter((d: { outcome: string }) => d.outcome === 'failed').length === 2, 'both messages failed');
    r.answer = () => ({ status: 200 });
    expect((await api('POST', `/v1/webhooks/${made.id}/recover`, keys.acme!, { since: Date.now() + 60_000 })).status).toBe(400);
    const recovered = await api('POST', `/v1/webhooks/${made.id}/recover`, keys.acme!, { since: new Date(before - 1_000).toISOString() });
    expect(recovered.body).toEqual({ endpoint: made.id, queued: 2, left: 0 });
    await until(() => r.typesOf(id).length === 2, 'the recovered messages');
    expect(r.typesOf(id)).toEqual(['job.queued', 'job.succeeded']);
    expect(r.received.map((q) => q.headers['webhook-id'])).toEqual(r.arrived.slice(0, 2).map((q) => q.headers['webhook-id']));
    expect(r.received.map((q) => q.body)).toEqual(r.arrived.slice(0, 2).map((q) => q.body));
    // nothing failed is left
    expect((await api('POST', `/v1/webhooks/${made.id}/recover`, keys.acme!, { since: before - 1_000 })).body).toMatchObject({ queued: 0 });

    // one message sent again by hand: the same webhook-id and body once more
    const first = r.received[0]!;
    const resent = await api('POST', `/v1/webhooks/${made.id}/messages/${first.headers['webhook-id']}/resend`, keys.acme!);
    expect(resent.status).toBe(202);
    await until(() => r.received.length === 3, 'the resent message');
    expect(r.received[2]!.headers['webhook-id']).toBe(first.headers['webhook-id']);
    expect(r.received[2]!.body).toBe(first.body);
    expect((await api('POST', `/v1/webhooks/${made.id}/messages/msg_standard_0-0_${made.id}/resend`, keys.acme!)).status).toBe(404);
  });

  it('honours Retry-After of a 429 from an endpoint', async () => {
    await service();
    const r = await receiver();
    r.answer = (_request, index) => (index === 0 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200 });
    await endpoint(keys.acme!, { url: r.url, events: ['job.queued'] });
    const id = await runJob(stack.broker, undefined);
    await until(() => r.typesOf(id).length === 1, 'the delivery after Retry-After', 5_000);
    expect(r.arrived[1]!.at - r.arrived[0]!.at).toBeGreaterThanOrEqual(950);
  });

  it("keeps an endpoint within its rate limit, and sends fleet events to operator-scoped endpoints only", async () => {
    await service();
    const limited = await receiver();
    const ops = await receiver();
    const tenantAll = await receiver();
    await endpoint(keys.acme!, { url: limited.url, events: ['job.queued'], rate_limit: 2 });
    await endpoint(operator, { url: ops.url, events: ['worker.registered'] });
    await endpoint(keys.acme!, { url: tenantAll.url, events: ['job.started'] });
    const ids: string[] = [];
    for (let i = 0; i < 5; i += 1) ids.push(await runJob(stack.broker, undefined, { worker: `rate-worker-${i}` }));
    await until(() => ids.every((id) => limited.typesOf(id).length === 1), 'every job.queued', 6_000);
    const times = limited.received.map((q) => q.at).sort((x, y) => x - y);
    // 5 messages at 2 a second take three seconds of Redis's clock: more than one second from first to last
    expect(times.at(-1)! - times[0]!).toBeGreaterThan(1_000);
    await until(() => ops.received.length === 5, 'the operator endpoint got each worker.registered');
    expect(ops.received.map((q) => q.event.type)).toEqual(Array(5).fill('worker.registered'));
    expect(ops.received.map((q) => (q.event.data as unknown as { worker: string }).worker).sort()).toEqual(ids.map((_, i) => `rate-worker-${i}`));
    expect(tenantAll.received.every((q) => q.event.type === 'job.started')).toBe(true);
  });

  it('names the pool of an event in a shard other than the first, the shard beside it, and keeps message ids apart per shard', async () => {
    await service();
    const jobs = await receiver();
    const ops = await receiver();
    const a = await endpoint(keys.acme!, { url: jobs.url, events: ['job.succeeded'] });
    await endpoint(operator, { url: ops.url, events: ['worker.registered'] });
    await stack.broker.setShardCount('wide', 2);
    // registered in both shards: one worker.registered in each shard's stream
    await stack.broker.registerWorker({ id: 'wide-worker', pool: 'wide', capabilities: { services: ['simulation'] } });
    let id = '';
    for (let i = 0; !id.startsWith('wide_1.'); i += 1) {
      if (i === 64) throw new Error('64 submits and none placed on wide_1');
      ({ id } = await stack.broker.submit({ service: 'simulation', tenant: 'acme', requirements: { pool: 'wide' } }));
    }
    for (let found = await stack.broker.claimInShards('wide', 'wide-worker', { first: 'wide_1' }); ; found = await stack.broker.claimInShards('wide', 'wide-worker')) {
      const job = found.results[0]?.job;
      if (!job) break;
      await stack.broker.start(job.lease);
      await stack.broker.complete(job.lease, { ok: true });
    }
    await until(() => jobs.typesOf(id).includes('job.succeeded'), 'the job on wide_1 succeeded at the endpoint');
    const done = jobs.received.find((q) => (q.event.data as { id?: string }).id === id)!;
    expect(done.event.data).toMatchObject({ id, pool: 'wide' });
    expect(done.headers['webhook-id']).toMatch(new RegExp(`^msg_wide_1_\\d+-\\d+_${a.id}$`));
    await until(() => ops.received.filter((q) => (q.event.data as { worker?: string }).worker === 'wide-worker').length === 2, 'worker.registered from both shards');
    const registered = ops.received.filter((q) => (q.event.data as { worker?: string }).worker === 'wide-worker');
    const fields = registered.map((q) => q.event.data as unknown as Record<string, unknown>);
    expect(fields.sort((x, y) => String(x.shard ?? '').localeCompare(String(y.shard ?? '')))).toEqual([
      expect.not.objectContaining({ shard: expect.anything() }),
      expect.objectContaining({ pool: 'wide', shard: 'wide_1' }),
    ]);
    expect(registered.every((q) => (q.event.data as { pool?: string }).pool === 'wide')).toBe(true);
    // the same stream id in two shards' streams is two messages
    expect(new Set(registered.map((q) => q.headers['webhook-id'])).size).toBe(2);
  });
});
