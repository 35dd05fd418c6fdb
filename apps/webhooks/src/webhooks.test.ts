import { Broker, webhookHeaders } from '@emp/core';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { pino } from 'pino';
import { Webhook } from 'standardwebhooks';
import { afterEach, describe, expect, it } from 'vitest';
import type { WebhookServiceConfigInput } from './config';
import { type WebhookService, startWebhookService } from './service';
import { runJob } from './testing/jobs';
import { TestReceiver, until } from './testing/receiver';

const { redis } = usePrivateRedis();
const logger = pino({ level: 'silent' });

/** Short delays so the whole schedule runs in a second or two. */
const FAST: WebhookServiceConfigInput = {
  port: 0,
  allowPrivate: true,
  retryScheduleMs: [0, 50, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100],
  retryJitter: 0,
  pollMs: 20,
  poolScanMs: 50,
  progressThrottleMs: 200,
  leaseMs: 5_000,
  timeoutMs: 2_000,
};

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

async function receiver(): Promise<TestReceiver> {
  const r = await new TestReceiver().start();
  cleanup.push(() => r.stop());
  return r;
}

async function service(broker: Broker, config: WebhookServiceConfigInput = {}): Promise<WebhookService> {
  const s = await startWebhookService({ broker, config: { ...FAST, ...config }, logger });
  cleanup.push(() => s.close());
  return s;
}

describe('webhook delivery', () => {
  it('sends a job\'s events in order, signed so that standardwebhooks verifies them, and serves /health and /metrics', async () => {
    const broker = await Broker.connect({ redis });
    const hooks = await service(broker);
    const r = await receiver();
    const id = await runJob(broker, { url: r.url });
    await until(() => r.typesOf(id).includes('job.succeeded'), 'job.succeeded');
    expect(r.typesOf(id)).toEqual(['job.queued', 'job.started', 'job.succeeded']);

    const { current } = await hooks.outbox.secrets('acme');
    const verifier = new Webhook(current);
    for (const request of r.received) expect(verifier.verify(request.body, request.headers)).toEqual(JSON.parse(request.body));
    const last = r.received.at(-1)!;
    expect(last.event.data).toMatchObject({ id, state: 'succeeded', result: { ok: true }, tenant: 'acme' });
    expect(last.headers['webhook-id']).toMatch(/^msg_standard_\d+-\d+$/);
    expect(last.headers['content-type']).toBe('application/json');
    // a tampered body, a timestamp ten minutes old, or another secret: refused
    expect(() => verifier.verify(last.body.replace('succeeded', 'failed'), last.headers)).toThrow();
    const stale = webhookHeaders([current], last.headers['webhook-id']!, last.body, Date.now() - 10 * 60_000);
    expect(() => verifier.verify(last.body, stale)).toThrow(/timestamp/i);
    expect(() => new Webhook(`whsec_${Buffer.alloc(32, 7).toString('base64')}`).verify(last.body, last.headers)).toThrow();

    const health = await (await fetch(`${hooks.url}/health`)).json();
    expect(health).toEqual({ status: 'ok', backlog: 0 });
    const metrics = await (await fetch(`${hooks.url}/metrics`)).text();
    expect(metrics).toMatch(/emp_webhook_deliveries_total\{outcome="delivered",type="job.succeeded"\} 1/);
    expect(metrics).toContain('emp_webhook_oldest_due_age_seconds');
    expect(metrics).toMatch(/^emp_webhook_oldest_undelivered_age_seconds 0$/m);
    expect(metrics).toMatch(/^emp_webhook_backlog_messages 0$/m);
    expect(metrics).toMatch(/^emp_webhook_delivery_duration_seconds_count\{outcome="delivered"\} [1-9]\d*$/m);
    // a delivered message's age: from its job event to its answer
    expect(metrics).toMatch(/^emp_webhook_message_age_seconds_count\{outcome="delivered"\} [1-9]\d*$/m);

    const log = await hooks.outbox.deliveryLog(id);
    expect(log.map((e) => [e.type, e.status, e.outcome])).toEqual([
      ['job.queued', 200, 'delivered'],
      ['job.started', 200, 'delivered'],
      ['job.succeeded', 200, 'delivered'],
    ]);
  });

  it('signs with both secrets while a rotated one is in its grace period, each verifying alone', async () => {
    const broker = await Broker.connect({ redis });
    const hooks = await service(broker);
    const r = await receiver();
    const before = await hooks.outbox.secrets('acme');
    const after = await hooks.outbox.rotateSecret('acme', 60_000);
    const id = await runJob(broker, { url: r.url, events: ['completed'] });
    await until(() => r.typesOf(id).length === 1, 'the completed event');
    const request = r.received[0]!;
    expect(request.event.type).toBe('job.succeeded');
    expect(request.headers['webhook-signature']).toMatch(/^v1,\S+ v1,\S+$/);
    expect(new Webhook(after.current).verify(request.body, request.headers)).toBeTruthy();
    expect(new Webhook(before.current).verify(request.body, request.headers)).toBeTruthy();
  });

  it('delivers every event of jobs that ran while the receiver was down, each job\'s in order, progress throttled to its latest value', async () => {
    const broker = await Broker.connect({ redis });
    await service(broker);
    const r = await receiver();
    const port = r.port;
    await r.stop();
    const ids: string[] = [];
    for (let i = 0; i < 20; i += 1) ids.push(await runJob(broker, { url: `http://127.0.0.1:${port}/hook` }, { progress: 5 }));
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(r.received).toEqual([]);
    await r.start(port);
    await until(() => ids.every((id) => r.typesOf(id).includes('job.succeeded')), 'every job\'s last event', 15_000);
    for (const id of ids) {
      const types = r.typesOf(id);
      // progress reports made while one was waiting are merged into it: at least one, the last value (5 of 5) always
      expect(types.filter((t) => t !== 'job.progress')).toEqual(['job.queued', 'job.started', 'job.succeeded']);
      expect(types.indexOf('job.started')).toBeLessThan(types.indexOf('job.progress'));
      expect(types.lastIndexOf('job.progress')).toBeLessThan(types.indexOf('job.succeeded'));
      const progress = r.received.filter((q) => q.event.data.id === id && q.event.type === 'job.progress');
      expect(progress.at(-1)!.event.data.progress?.value).toBe(5);
      const ids = r.received.filter((q) => q.event.data.id === id).map((q) => q.headers['webhook-id']);
      expect(new Set(ids).size).toBe(ids.length);
    }
  });

  it('throttles a job\'s progress to one delivery per interval, the last value always delivered', async () => {
    const broker = await Broker.connect({ redis });
    await service(broker, { progressThrottleMs: 300 });
    const r = await receiver();
    const worker = 'w-progress';
    await broker.registerWorker({ id: worker, pool: 'standard', capabilities: { services: ['simulation'] } });
    const { id } = await broker.submit({ service: 'simulation', tenant: 'acme', webhook: { url: r.url, events: ['job.progress'] } });
    const claimed = await broker.claim('standard', worker);
    await broker.start(claimed.job!.lease);
    for (let i = 1; i <= 20; i += 1) {
      await broker.progress(claimed.job!.lease, { stage: 'running', value: i, max: 20 });
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
    await until(() => r.received.at(-1)?.event.data.progress?.value === 20, 'the last progress value', 5_000);
    const times = r.received.map((q) => q.at);
    expect(times.length).toBeLessThanOrEqual(4);
    for (let i = 1; i < times.length; i += 1) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(250);
  });

  it('runs as several instances at once without sending a message twice', async () => {
    const broker = await Broker.connect({ redis });
    const instances = [await service(broker), await service(broker), await service(broker)];
    expect(new Set(instances.map((i) => i.consumer)).size).toBe(3);
    const r = await receiver();
    const ids: string[] = [];
    for (let i = 0; i < 15; i += 1) ids.push(await runJob(broker, { url: r.url }));
    await until(() => ids.every((id) => r.typesOf(id).includes('job.succeeded')), 'every job delivered');
    await new Promise((resolve) => setTimeout(resolve, 200));
    const webhookIds = r.arrived.map((q) => q.headers['webhook-id']);
    expect(webhookIds).toHaveLength(45);
    expect(new Set(webhookIds).size).toBe(45);
    for (const id of ids) expect(r.typesOf(id)).toEqual(['job.queued', 'job.started', 'job.succeeded']);

    // whichever instance was reading the pool, the one left takes over when the others stop
    await instances[0]!.close();
    await instances[1]!.close();
    const later = await runJob(broker, { url: r.url });
    await until(() => r.typesOf(later).includes('job.succeeded'), 'a job delivered by the instance left');
    expect(r.typesOf(later)).toEqual(['job.queued', 'job.started', 'job.succeeded']);
  });

  it('keeps at most concurrencyPerUrl attempts in flight to one slow receiver, so others are not held up', async () => {
    const broker = await Broker.connect({ redis });
    await service(broker, { concurrencyPerUrl: 2, concurrency: 4 });
    const slow = await receiver();
    slow.answer = () => ({ status: 200, delayMs: 1_500 }); // under the attempt timeout (2 s)
    const fast = await receiver();
    const slowJobs: string[] = [];
    for (let i = 0; i < 6; i += 1) slowJobs.push(await runJob(broker, { url: slow.url, events: ['job.queued'] }));
    const quick = await runJob(broker, { url: fast.url, events: ['job.queued'] });
    await until(() => fast.typesOf(quick).length === 1, "the fast receiver's message");
    // delivered while the slow receiver still held its first requests: it had answered none yet
    // (an order, not a time: a loaded machine stretches both alike)
    expect(slow.received).toHaveLength(0);
    await until(() => slowJobs.every((id) => slow.typesOf(id).length === 1), "the slow receiver's messages", 20_000);
    expect(slow.maxConcurrent).toBe(2);
  });

  it('stops delivering to a URL that answers 410 Gone, for that tenant', async () => {
    const broker = await Broker.connect({ redis });
    const hooks = await service(broker);
    const r = await receiver();
    r.answer = () => ({ status: 410 });
    await runJob(broker, { url: r.url });
    await until(async () => Object.keys(await hooks.outbox.disabledUrls('acme')).includes(r.url), 'the URL disabled');
    await runJob(broker, { url: r.url });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(r.arrived).toHaveLength(1);
    // another tenant's webhook to the same URL still goes out
    r.answer = () => ({ status: 200 });
    const other = await runJob(broker, { url: r.url }, { tenant: 'globex' });
    await until(() => r.typesOf(other).includes('job.succeeded'), "the other tenant's events");
  });

  it('waits as long as a 503 or 429 answer\'s Retry-After says before trying again, with the same webhook-id', async () => {
    const broker = await Broker.connect({ redis });
    await service(broker);
    const r = await receiver();
    r.answer = (_request, index) => (index === 0 ? { status: 503, headers: { 'retry-after': '1' } } : index === 1 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200 });
    const id = await runJob(broker, { url: r.url, events: ['job.queued'] });
    await until(() => r.typesOf(id).length === 1, 'the delivery after two Retry-Afters', 6_000);
    expect(r.arrived).toHaveLength(3);
    expect(r.arrived[1]!.at - r.arrived[0]!.at).toBeGreaterThanOrEqual(950);
    expect(r.arrived[2]!.at - r.arrived[1]!.at).toBeGreaterThanOrEqual(950);
    expect(new Set(r.arrived.map((q) => q.headers['webhook-id'])).size).toBe(1);
  });

  it('gives up after the last attempt of the schedule and logs each attempt', async () => {
    const broker = await Broker.connect({ redis });
    const hooks = await service(broker, { retryScheduleMs: [0, 30, 30] });
    const r = await receiver();
    r.answer = () => ({ status: 500 });
    const id = await runJob(broker, { url: r.url, events: ['job.queued'] });
    await until(async () => (await hooks.outbox.deliveryLog(id)).some((e) => e.outcome === 'failed'), 'the message failed');
    const log = await hooks.outbox.deliveryLog(id);
    expect(log.map((e) => [e.attempt, e.status, e.outcome])).toEqual([
      [1, 500, 'retry'],
      [2, 500, 'retry'],
      [3, 500, 'failed'],
    ]);
    expect(log[0]!.response).toBe('ok');

    // resent once the receiver works: the same webhook-id and body, a new first attempt
    r.answer = () => ({ status: 200 });
    expect(await hooks.outbox.resend(log[0]!.message)).toBe('queued');
    await until(() => r.received.length === 1, 'the resent message');
    expect(r.received[0]!.headers['webhook-id']).toBe(log[0]!.message);
    expect(r.received[0]!.body).toBe(r.arrived[0]!.body);
    expect((await hooks.outbox.deliveryLog(id)).at(-1)).toMatchObject({ attempt: 1, status: 200, outcome: 'delivered' });
    expect(await hooks.outbox.resend('msg_standard_0-0')).toBe('unknown');
  });

  it('refuses a loopback target when private addresses are not allowed, and records why', async () => {
    const broker = await Broker.connect({ redis });
    const hooks = await service(broker, { allowPrivate: false });
    const r = await receiver();
    const id = await runJob(broker, { url: r.url, events: ['job.queued'] });
    await until(async () => (await hooks.outbox.deliveryLog(id)).length === 1, 'the refused attempt');
    const [entry] = await hooks.outbox.deliveryLog(id);
    expect(entry).toMatchObject({ outcome: 'failed', error: expect.stringMatching(/^refused: host 127\.0\.0\.1 is a loopback address/) });
    expect(r.arrived).toEqual([]);
  });
});
