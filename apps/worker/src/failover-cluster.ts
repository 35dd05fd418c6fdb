import { Broker, type BrokerConfigInput, type RedisClient, openRedis } from '@emp/core';
import { type RedisClusterProcess, startRedisCluster } from '@emp/testkit';
import { afterAll, beforeAll } from 'vitest';

/**
 * What the failover tests share: a 3 masters + 3 replicas loopback cluster for
 * the file, brokers on it through openRedis (as every part connects), and what
 * to close after the file (workers, schedulers, connections), newest first.
 */
export interface FailoverCluster {
  readonly cluster: RedisClusterProcess;
  /** the seeds as one URL (what REDIS_URL would say) */
  url(): string;
  connect(config?: BrokerConfigInput): Promise<{ redis: RedisClient; broker: Broker }>;
  closeAfter(close: () => Promise<void> | void): void;
}

export function useFailoverCluster(): FailoverCluster {
  let cluster: RedisClusterProcess | undefined;
  const closers: Array<() => Promise<void> | void> = [];
  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
  }, 60_000);
  afterAll(async () => {
    for (const close of closers.splice(0).reverse()) await close();
    await cluster?.stop();
  });
  const harness: FailoverCluster = {
    get cluster() {
      if (!cluster) throw new Error('the failover cluster starts in beforeAll');
      return cluster;
    },
    url: () => `redis://${harness.cluster.startupNodes.map((n) => `${n.host}:${n.port}`).join(',')}`,
    async connect(config = {}) {
      const redis = openRedis(harness.url());
      redis.on('error', () => undefined); // a dead node's refused connections, while the cluster fails over
      closers.push(() => redis.disconnect());
      const broker = await Broker.connect({ redis, config: { leaseMs: 3_000, clockGapMs: 1_500, ...config } });
      return { redis, broker };
    },
    closeAfter: (close) => closers.push(close),
  };
  return harness;
}
