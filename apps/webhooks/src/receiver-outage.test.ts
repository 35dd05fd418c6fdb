import { call } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { pino } from 'pino';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type WebhookService, startWebhookService } from './service';
import { runJob } from './testing/jobs';
import { type ReceivedWebhook, TestReceiver, until } from './testing/receiver';

/**
 * Issue 12: a receiver that is down while 1,000 events happen and comes back
 * gets every one of them, each job's in order, none lost. The real API makes a
 * per-tenant endpoint, every job also names its own webhook, the real webhook
 * service delivers to two receivers on loopback that refuse connections, then
 * answer 503 for a while, then 200; `standardwebhooks` verifies what arrives.
 */

const JOBS = 340;
/** job.queued, job.started, job.succeeded (no progress: those are merged, by design) */
const TYPES = ['job.queued', 'job.started', 'job.succeeded'];
const EVENTS = JOBS * TYPES.length;
/** 503 for this long after the receivers come back */
const UNAVAILABLE_MS = 1_500;

let stack: ApiStack;
let hooks: WebhookService;
let endpointReceiver: TestReceiver;
let ownReceiver: TestReceiver;

beforeAll(async () => {
  stack = await startApiStack({ worker: false, server: { webhookAllowPrivate: true } });
  hooks = await startWebhookService({
    broker: stack.broker,
    logger: pino({ level: 'silent' }),
    config: {
      port: 0,
      allowPrivate: true,
      // short delays, long enough in all (~14 s) to outlast the outage
      retryScheduleMs: [0, 100, 200, 400, ...Array.from<number>({ length: 16 }).fill(800)],
      retryJitter: 0.1,
      pollMs: 20,
      poolScanMs: 50,
      leaseMs: 5_000,
      timeoutMs: 2_000,
    },
  });
  endpointReceiver = await new TestReceiver().start();
  ownReceiver = await new TestReceiver().start();
});
afterAll(async () => {
  await hooks?.close();
  await endpointReceiver?.stop();
  await ownReceiver?.stop();
  await stack?.stop();
});

describe('a receiver that is down while 1,000 events happen', () => {
  it('gets every event when it comes back, each once at least under one webhook-id, each job\'s in order, signed', async () => {
    const key = (await stack.server.app.apiKeys.create({ role: 'client', tenant: 'acme' })).key;
    const made = await call(stack.url, 'POST', '/v1/webhooks', { key, body: { url: endpointReceiver.url, events: ['job.*'] } });
    expect(made.status, JSON.stringify(made.body)).toBe(201);
    const endpointSecret = made.body.secret as string;

    // down: connections refused while every job runs
    await endpointReceiver.stop();
    await ownReceiver.stop();
    const ids: string[] = [];
    for (let i = 0; i < JOBS; i += 1) ids.push(await runJob(stack.broker, { url: ownReceiver.url }, { tenant: 'acme' }));
    await until(async () => (await hooks.outbox.deliveryLog(ids.at(-1)!)).length > 0, 'attempts at the last job while down');
    expect(endpointReceiver.arrived).toEqual([]);
    expect(ownReceiver.arrived).toEqual([]);

    // back, busy for a while (503, no Retry-After: the schedule applies), then well
    const back = Date.now();
    for (const r of [endpointReceiver, ownReceiver]) {
      r.answer = () => (Date.now() - back < UNAVAILABLE_MS ? { status: 503 } : { status: 200 });
      await r.start();
    }
    const all = (r: TestReceiver) => new Set(r.received.map((q) => q.headers['webhook-id'])).size >= EVENTS;
    await until(() => all(endpointReceiver) && all(ownReceiver), `${EVENTS} events at each receiver`, 25_000);
    // anything still in flight (a repeat) arrives; nothing new is due
    await until(async () => (await hooks.outbox.backlog()).messages === 0, 'the outbox empty');

    const { current } = await hooks.outbox.secrets('acme');
    for (const [r, secret] of [[endpointReceiver, endpointSecret], [ownReceiver, current]] as const) {
      expect(r.arrived.some((q) => r.received.indexOf(q) < 0), 'some attempts were answered 503').toBe(true);
      // every attempt of a message is the same message: one webhook-id, the same bytes
      const bodies = new Map<string, string>();
      for (const q of r.arrived) {
        const id = q.headers['webhook-id']!;
        expect(bodies.get(id) ?? q.body).toBe(q.body);
        bodies.set(id, q.body);
      }
      // none lost, none made up: exactly the events of these jobs, each delivered
      const delivered = firstArrivals(r.received);
      expect(delivered.size).toBe(EVENTS);
      expect(bodies.size).toBe(EVENTS);
      const verifier = new Webhook(secret);
      for (const q of delivered.values()) expect(verifier.verify(q.body, q.headers)).toEqual(q.event);
      // each job's events in the order they happened
      const byJob = new Map<string, string[]>();
      for (const q of delivered.values()) {
        const types = byJob.get(q.event.data.id) ?? [];
        types.push(q.event.type);
        byJob.set(q.event.data.id, types);
      }
      expect([...byJob.keys()].sort()).toEqual([...ids].sort());
      for (const id of ids) expect(byJob.get(id), id).toEqual(TYPES);
    }
  }, 45_000);
});

/** Delivered requests by webhook-id, the first of each, in arrival order. */
function firstArrivals(received: ReceivedWebhook[]): Map<string, ReceivedWebhook> {
  const first = new Map<string, ReceivedWebhook>();
  for (const q of received) if (!first.has(q.headers['webhook-id']!)) first.set(q.headers['webhook-id']!, q);
  return first;
}
