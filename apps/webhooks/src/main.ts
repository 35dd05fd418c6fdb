import { Broker, openRedis } from '@emp/core';
import { pino } from 'pino';
import { configFromEnv } from './config';
import { startWebhookService } from './service';

/**
 * The webhook service on its own (one of several instances, say):
 * EMP_REDIS_URL (or REDIS_URL), EMP_NAMESPACE, and EMP_WEBHOOKS_* settings (config.ts). `emp start` runs the
 * same startWebhookService inside the local stack.
 */
const logger = pino({ name: 'webhooks' });
// several hosts in the URL (or EMP_REDIS_CLUSTER=1): a Redis Cluster (docs/scale-out.md)
const redis = openRedis(process.env.EMP_REDIS_URL ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: null });
const broker = await Broker.connect({ redis, config: process.env.EMP_NAMESPACE ? { namespace: process.env.EMP_NAMESPACE } : undefined });
const service = await startWebhookService({ broker, config: configFromEnv(process.env), logger });
process.stdout.write(`webhooks listening ${service.url}\n`);

const stop = () => {
  void service.close().finally(() => {
    redis.disconnect();
    process.exit(0);
  });
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
