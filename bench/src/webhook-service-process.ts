import { Broker } from '@emp/core';
import { startWebhookService } from '@emp/webhooks';
import { Redis } from 'ioredis';
import { pino } from 'pino';

/**
 * The webhook service in a process of its own, for the `webhooks` bench
 * section (webhooks.ts forks it): so that its memory (RSS, heap) and CPU are
 * the service's alone, not the receivers' or the load generator's. Settings
 * come as JSON in EMP_BENCH_WEBHOOKS_CONFIG; it reports over IPC:
 * `{type: 'ready'}`, then `{type: 'sample', ...}` every second (and when sent
 * `'sample'`), and
 * `{type: 'closed'}` after a `'stop'` message closed the service.
 */

export interface ServiceSample {
  type: 'sample';
  /** ms since the epoch */
  at: number;
  rss: number;
  heapUsed: number;
  /** user + system CPU time of the process so far (µs) */
  cpuMicros: number;
}

export type ServiceMessage = { type: 'ready'; pid: number } | ServiceSample | { type: 'closed' } | { type: 'error'; message: string };

const send = (message: ServiceMessage) => process.send?.(message);

const redis = new Redis(process.env.EMP_REDIS_URL!, { maxRetriesPerRequest: null });
let timer: NodeJS.Timeout | undefined;
try {
  const broker = await Broker.connect({ redis });
  const config = JSON.parse(process.env.EMP_BENCH_WEBHOOKS_CONFIG ?? '{}') as Record<string, unknown>;
  const service = await startWebhookService({ broker, config, logger: pino({ level: 'warn' }) });
  const sample = () => {
    const memory = process.memoryUsage();
    const cpu = process.cpuUsage();
    send({ type: 'sample', at: Date.now(), rss: memory.rss, heapUsed: memory.heapUsed, cpuMicros: cpu.user + cpu.system });
  };
  timer = setInterval(sample, 1_000);
  process.on('message', (message) => {
    if (message === 'sample') sample();
    if (message !== 'stop') return;
    clearInterval(timer);
    sample();
    void service
      .close()
      .finally(async () => {
        await redis.quit().catch(() => redis.disconnect());
        send({ type: 'closed' });
        process.disconnect?.();
      });
  });
  sample();
  send({ type: 'ready', pid: process.pid });
} catch (error) {
  clearInterval(timer);
  send({ type: 'error', message: String((error as Error).stack ?? error) });
  redis.disconnect();
  process.exitCode = 1;
  process.disconnect?.();
}
