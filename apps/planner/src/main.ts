import { Broker, openRedis } from '@emp/core';
import { pino } from 'pino';
import { configFromEnv } from './config';
import { Planner } from './planner';

/**
 * The planner on its own: EMP_REDIS_URL (or REDIS_URL), EMP_NAMESPACE, and
 * EMP_PLANNER_* settings (config.ts). `emp start` runs the same Planner inside
 * the local stack. Run one planner per namespace: two would plan the same
 * machines twice (their commands stay safe, but double).
 */
const logger = pino({ name: 'planner' });
// several hosts in the URL (or EMP_REDIS_CLUSTER=1): a Redis Cluster (docs/scale-out.md)
const redis = openRedis(process.env.EMP_REDIS_URL ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: null });
const broker = await Broker.connect({ redis, config: process.env.EMP_NAMESPACE ? { namespace: process.env.EMP_NAMESPACE } : undefined });
const planner = new Planner({ broker, logger, config: configFromEnv(process.env) });
planner.start();
logger.info({ intervalMs: planner.config.intervalMs }, 'planner running');

const stop = () => {
  void planner.close().finally(() => {
    redis.disconnect();
    process.exit(0);
  });
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
