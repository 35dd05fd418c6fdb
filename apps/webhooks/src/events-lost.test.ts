import { Broker } from '@emp/core';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { startWebhookService } from './service';
import { runJob } from './testing/jobs';
import { TestReceiver, until } from './testing/receiver';

const { redis } = usePrivateRedis();

const CONFIG = { port: 0, allowPrivate: true, retryScheduleMs: [0, 50], retryJitter: 0, pollMs: 20, poolScanMs: 50, readerLeaseMs: 500 };

describe('events trimmed from a pool stream before the webhook service read them', () => {
  it('are counted, logged and recorded as webhook.events.lost; what is left is still delivered', async () => {
    // a stream node of 10 entries, so MAXLEN ~ 100 trims within 10 entries of it
    await redis.config('SET', 'stream-node-max-entries', '10');
    const broker = await Broker.connect({ redis, config: { eventsMaxLen: 100 } });
    const receiver = await new TestReceiver().start();
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'info' }, new Writable({ write: (chunk: Buffer, _e, done) => (lines.push(JSON.parse(chunk.toString())), done()) }));
    try {
      const first = await startWebhookService({ broker, config: CONFIG, logger });
      const before = await runJob(broker, { url: receiver.url });
      await until(() => receiver.typesOf(before).includes('job.succeeded'), 'the first job delivered');
      await first.close();
      const group = async () => ((await redis.call('XINFO', 'GROUPS', broker.keys.events('standard'))) as unknown[][])[0]!;
      const readAtStop = Number((await group())[(await group()).indexOf('entries-read') + 1]);

      // the service is down while far more events than the stream keeps happen
      const ids: string[] = [];
      for (let i = 0; i < 60; i += 1) ids.push(await runJob(broker, { url: receiver.url }));
      const info = (await broker.eventStreamInfo('standard'))!;
      const expected = info.entriesAdded - info.length - readAtStop;
      expect(expected).toBeGreaterThan(100);

      const second = await startWebhookService({ broker, config: CONFIG, logger });
      try {
        // what the stream still holds is delivered: the last job's events, in order
        const last = ids.at(-1)!;
        await until(() => receiver.typesOf(last).includes('job.succeeded'), 'the last job delivered', 10_000);
        expect(receiver.typesOf(last)).toEqual(['job.queued', 'job.started', 'job.succeeded']);
        await until(() => lines.some((l) => l.lost !== undefined), 'the loss logged');

        const logged = lines.filter((l) => l.lost !== undefined);
        expect(logged).toHaveLength(1);
        expect(logged[0]).toMatchObject({ level: 50, pool: 'standard', lost: expected });
        expect(String(logged[0]!.msg)).toContain(`${expected} events of pool standard`);

        const metrics = await (await fetch(`${second.url}/metrics`)).text();
        expect(metrics).toContain(`emp_webhook_events_lost_total{pool="standard"} ${expected}`);

        const recorded = (await redis.xrange(broker.keys.webhookEvents(), '-', '+')).map(([, flat]) => Object.fromEntries(
          flat.flatMap((v, i) => (i % 2 ? [] : [[v, flat[i + 1]]])),
        ));
        expect(recorded).toEqual([expect.objectContaining({ type: 'webhook.events.lost', pool: 'standard', group: 'webhooks', count: String(expected), before: info.firstId })]);

        // told once: more events, read in time, add nothing
        const after = await runJob(broker, { url: receiver.url });
        await until(() => receiver.typesOf(after).includes('job.succeeded'), 'a later job delivered');
        expect(lines.filter((l) => l.lost !== undefined)).toHaveLength(1);
        expect(await redis.xlen(broker.keys.webhookEvents())).toBe(1);
        // jobs whose every event was trimmed got nothing; none got a message twice
        const seen = receiver.received.map((r) => r.headers['webhook-id']);
        expect(new Set(seen).size).toBe(seen.length);
        expect(receiver.typesOf(ids[0]!)).toEqual([]);
      } finally {
        await second.close();
      }
    } finally {
      await receiver.stop();
    }
  });

  it('a gap a plain read skipped is found by the next watched read that takes every entry left, once', async () => {
    await redis.config('SET', 'stream-node-max-entries', '10');
    const broker = await Broker.connect({ redis, config: { eventsMaxLen: 100 } });
    await broker.ensureEventGroup('standard', 'g', '0');
    await runJob(broker, { url: 'http://127.0.0.1:1/hook' });
    const first = await broker.readEventGroupWatched('standard', 'g', 'c', { count: 1_000 });
    expect(first.events.length).toBeGreaterThan(0);
    expect(first.loss).toBeUndefined();
    const before = (await broker.eventStreamInfo('standard'))!;
    for (let i = 0; i < 60; i += 1) await runJob(broker, { url: 'http://127.0.0.1:1/hook' });
    const info = (await broker.eventStreamInfo('standard'))!;
    const lost = info.entriesAdded - before.entriesAdded - info.length;
    expect(lost).toBeGreaterThan(100);
    // XREADGROUP alone goes past the gap without a word
    const plain = await broker.readEventGroup('standard', 'g', 'c', { count: 10 });
    expect(plain[0]!.id).toBe(info.firstId);
    const watched = await broker.readEventGroupWatched('standard', 'g', 'c', { count: 1_000 });
    expect(watched.events).toHaveLength(info.length - 10);
    expect(watched.loss).toEqual({ count: lost, after: '', before: '' });
    await runJob(broker, { url: 'http://127.0.0.1:1/hook' });
    const later = await broker.readEventGroupWatched('standard', 'g', 'c', { count: 1_000 });
    expect(later.events.length).toBeGreaterThan(0);
    expect(later.loss).toBeUndefined();
  });
});
