import { Broker, type ClaimedWebhookMessage, WebhookOutbox } from '@emp/core';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { describe, expect, it } from 'vitest';

const { redis } = usePrivateRedis();

const delivered = (m: ClaimedWebhookMessage) =>
  ({ at: Date.now(), message: m.id, type: m.type, url: m.url, attempt: m.attempt, status: 200, latency_ms: 3, outcome: 'delivered' }) as const;

describe('the outbox backlog', () => {
  it('counts every message not yet ended, behind its chain head too, and dates the oldest from when it was queued or resent', async () => {
    const outbox = new WebhookOutbox(await Broker.connect({ redis }));
    expect(await outbox.backlog()).toEqual({ messages: 0, oldestQueuedAt: undefined, nextDueAt: undefined });

    const base = { tenant: 'acme', url: 'https://hooks.example.com/in', job: 'standard-j1', body: '{}' };
    const before = Date.now();
    await outbox.enqueue({ ...base, id: 'msg_1', type: 'job.queued' });
    await outbox.enqueue({ ...base, id: 'msg_2', type: 'job.started' });
    await outbox.enqueue({ ...base, id: 'msg_3', type: 'job.succeeded' });
    const queued = await outbox.backlog();
    // one chain: only its head is due, all three wait
    expect(queued.messages).toBe(3);
    expect(queued.oldestQueuedAt).toBeGreaterThanOrEqual(before - 5);
    expect(queued.nextDueAt).toBeDefined();

    const [first] = await outbox.claimDue(10, 60_000);
    expect(first!.id).toBe('msg_1');
    expect((await outbox.backlog()).messages).toBe(3); // in flight still counts
    await outbox.settle(first!, 'delivered', delivered(first!));
    expect((await outbox.backlog()).messages).toBe(2);

    for (const id of ['msg_2', 'msg_3']) {
      const [next] = await outbox.claimDue(10, 60_000);
      expect(next!.id).toBe(id);
      await outbox.settle(next!, 'delivered', delivered(next!));
    }
    expect(await outbox.backlog()).toEqual({ messages: 0, oldestQueuedAt: undefined, nextDueAt: undefined });

    const resentAt = Date.now();
    expect(await outbox.resend('msg_1')).toBe('queued');
    const resent = await outbox.backlog();
    expect(resent.messages).toBe(1);
    expect(resent.oldestQueuedAt).toBeGreaterThanOrEqual(resentAt - 5);
  });
});
