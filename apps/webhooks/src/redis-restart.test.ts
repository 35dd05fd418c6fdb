import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Broker } from '@emp/core';
import { type RedisProcess, startRedis } from '@emp/testkit';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { startWebhookService } from './service';
import { runJob } from './testing/jobs';
import { TestReceiver, until } from './testing/receiver';

describe('a Redis restart (AOF)', () => {
  it('loses no message waiting for a retry: the service reconnects and delivers them, in order', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'emp-webhooks-aof-'));
    let server: RedisProcess = await startRedis({ dir, appendonly: true });
    const redis = new Redis(server.url, { maxRetriesPerRequest: null });
    const receiver = await new TestReceiver().start();
    const port = receiver.port;
    await receiver.stop();
    const broker = await Broker.connect({ redis });
    const service = await startWebhookService({
      broker,
      logger: pino({ level: 'silent' }),
      config: { port: 0, allowPrivate: true, retryScheduleMs: Array(50).fill(400), retryJitter: 0, pollMs: 20, poolScanMs: 50, readerLeaseMs: 500 },
    });
    // retries every 400 ms for 20 s (50, the most a schedule holds): the retry budget is wall time, and a loaded machine may take seconds
    // to stop and restart Redis; a message that ran out of retries before the restart would fail, as configured
    try {
      const url = `http://127.0.0.1:${port}/hook`;
      const ids = [await runJob(broker, { url }), await runJob(broker, { url })];
      // every message is queued (three a job; each chain's head has failed at least once) before Redis goes down
      await until(async () => (await service.outbox.backlog()).messages === 6 && (await service.outbox.deliveryLog(ids[1]!)).length > 0, 'the messages queued and tried');
      await server.stop();
      server = await startRedis({ dir, appendonly: true, port: server.port });
      await receiver.start(port);
      await until(() => ids.every((id) => receiver.typesOf(id).includes('job.succeeded')), 'every message delivered after the restart', 15_000);
      for (const id of ids) expect(receiver.typesOf(id)).toEqual(['job.queued', 'job.started', 'job.succeeded']);
    } finally {
      await service.close();
      redis.disconnect();
      await receiver.stop();
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
