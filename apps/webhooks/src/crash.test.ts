import { Broker } from '@emp/core';
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { startWebhookService } from './service';
import { runJob } from './testing/jobs';
import { TestReceiver, until } from './testing/receiver';

const { redis, url } = usePrivateRedis();
const MAIN = fileURLToPath(new URL('./main.ts', import.meta.url));

const settings = {
  EMP_WEBHOOKS_PORT: '0',
  EMP_WEBHOOK_ALLOW_PRIVATE: '1',
  EMP_WEBHOOKS_LEASE_MS: '1500',
  EMP_WEBHOOKS_READER_LEASE_MS: '500',
  EMP_WEBHOOKS_RETRY_SCHEDULE_MS: '0,50,100,100,100,100',
  EMP_WEBHOOKS_RETRY_JITTER: '0',
  EMP_WEBHOOKS_POLL_MS: '20',
  EMP_WEBHOOKS_POOL_SCAN_MS: '50',
};

const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

/** The service as its own process (main.ts), resolved once it listens. */
async function spawnService(): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN], { env: { ...process.env, ...settings, EMP_REDIS_URL: url() }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let output = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('webhooks listening')) resolve();
    });
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('exit', (code) => reject(new Error(`the webhook service exited (${code}) before listening:\n${output}`)));
  });
  return child;
}

describe('a webhook service killed mid-delivery', () => {
  it('loses nothing: a new instance delivers every message, repeating only those in flight, with the same webhook-id', async () => {
    const broker = await Broker.connect({ redis });
    const receiver = await new TestReceiver().start();
    try {
      // the first instance's attempts hang: they are in flight when it dies
      let hanging = true;
      receiver.answer = () => (hanging ? 'hang' : { status: 200 });
      const first = await spawnService();
      const ids: string[] = [];
      for (let i = 0; i < 5; i += 1) ids.push(await runJob(broker, { url: receiver.url }, { progress: 2 }));
      await until(() => receiver.arrived.length === 5, 'one attempt per job in flight');
      const inFlight = receiver.arrived.map((r) => r.headers['webhook-id']);

      first.kill('SIGKILL');
      await new Promise((resolve) => first.once('exit', resolve));
      hanging = false;
      const second = await startWebhookService({
        broker,
        logger: pino({ level: 'silent' }),
        config: { port: 0, allowPrivate: true, leaseMs: 1_500, readerLeaseMs: 500, retryScheduleMs: [0, 50, 100], retryJitter: 0, pollMs: 20, poolScanMs: 50 },
      });
      try {
        await until(() => ids.every((id) => receiver.typesOf(id).includes('job.succeeded')), 'every job delivered by the new instance', 15_000);
        for (const id of ids) {
          const types = receiver.typesOf(id);
          expect(types.filter((t) => t !== 'job.progress')).toEqual(['job.queued', 'job.started', 'job.succeeded']);
          expect(types.indexOf('job.progress')).toBeGreaterThan(types.indexOf('job.started'));
        }
        // each message reached the receiver once, but for the ones in flight at the kill: those twice, same id
        const counts = new Map<string, number>();
        for (const request of receiver.arrived) counts.set(request.headers['webhook-id']!, (counts.get(request.headers['webhook-id']!) ?? 0) + 1);
        const repeated = [...counts].filter(([, n]) => n > 1).map(([id]) => id);
        expect(repeated.sort()).toEqual([...inFlight].sort());
        expect(Math.max(...counts.values())).toBe(2);
      } finally {
        await second.close();
      }
    } finally {
      await receiver.stop();
    }
  });
});
