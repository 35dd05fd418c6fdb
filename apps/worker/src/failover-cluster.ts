import { Broker, type BrokerConfigInput, type Job, type RedisClient, isTerminalEvent, jobOfEvent, openRedis } from '@emp/core';
import { type RedisClusterProcess, startRedisCluster, waitFor } from '@emp/testkit';
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

/** Each job as it ends (null: gone), once every job present has reached one of `ends`. */
export async function jobsOnceEnded(broker: Broker, ids: readonly string[], ends: readonly string[] = ['succeeded']): Promise<Map<string, Job | null>> {
  const jobs = new Map<string, Job | null>();
  await waitFor(
    'every job present to end',
    async () => {
      for (const id of ids) {
        const job = await broker.getJob(id);
        jobs.set(id, job);
        if (job && !ends.includes(job.state)) return false;
      }
      return true;
    },
    30_000,
  );
  return jobs;
}

/** The terminal events of each job in the streams of `shards`, in order: one outcome per job is exactly one of them. */
export async function terminalEvents(broker: Broker, shards: readonly string[]): Promise<Map<string, string[]>> {
  const terminal = new Map<string, string[]>();
  for (const shard of shards) {
    for (const event of await broker.readEvents(shard, '0', { count: 100_000 })) {
      const id = jobOfEvent(event);
      if (id && isTerminalEvent(event)) terminal.set(id, [...(terminal.get(id) ?? []), event.type]);
    }
  }
  return terminal;
}
