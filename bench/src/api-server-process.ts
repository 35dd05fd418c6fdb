import { startApiServer } from '@emp/api';
import { Broker } from '@emp/core';
import { Redis } from 'ioredis';
import { pino } from 'pino';

/**
 * The HTTP API in a process of its own, for the `api` bench section
 * (api-load.ts forks it), as it runs in production: so that the load
 * generator and the workers do not share its event loop, and its CPU time is
 * its own. Auth on, rate limit off. Reports over IPC `{type: 'ready', url, key}`
 * (a client key of tenant `bench`), `{type: 'cpu', micros}` when sent `'cpu'`,
 * and exits after `'stop'`.
 */
export type ApiServerMessage =
  | { type: 'ready'; url: string; key: string }
  | { type: 'cpu'; micros: number }
  | { type: 'error'; message: string };

const send = (message: ApiServerMessage) => process.send?.(message);

const redis = new Redis(process.env.EMP_REDIS_URL!, { maxRetriesPerRequest: null });
try {
  const broker = await Broker.connect({ redis });
  const server = await startApiServer({ broker, logger: pino({ level: 'warn' }), auth: true, rateLimit: false, port: 0 });
  const { key } = await server.app.apiKeys.create({ role: 'client', tenant: 'bench' });
  process.on('message', (message) => {
    if (message === 'cpu') {
      const cpu = process.cpuUsage();
      send({ type: 'cpu', micros: cpu.user + cpu.system });
    }
    if (message !== 'stop') return;
    void server
      .close()
      .finally(async () => {
        await redis.quit().catch(() => redis.disconnect());
        process.exit(0);
      });
  });
  send({ type: 'ready', url: server.url, key });
} catch (error) {
  send({ type: 'error', message: (error as Error).message });
  process.exit(1);
}
