import { Broker, type RedisClient, openRedis } from '@emp/core';
import { startRedis } from '@emp/core/redis-server';
import { startRedisCluster } from '@emp/testkit';
import { Redis } from 'ioredis';
import { summarizeLatencies } from './stats';

/**
 * Redis Cluster (docs/scale-out.md), today's layout: each pool in one slot, so
 * pools spread over the masters and one pool lives on one.
 *
 * - Durable submit cost, on 3 masters + 3 replicas (loopback): one pool,
 *   sequential submits (latency) and `inFlight` at once (rate), plain vs
 *   `durable` (WAIT 1 after the submit, on the pool's master).
 * - Several pools on 1 node vs 3 masters: each pool's jobs go submit, claim,
 *   start, complete through the broker; jobs/s overall, and per master its
 *   share of the commands (INFO commandstats) and of Redis CPU (INFO cpu), and
 *   the cross-slot errors (INFO errorstats) every node counted.
 */
export interface ClusterBenchSizes {
  durableSubmits: number;
  inFlight: number;
  pools: number;
  jobsPerPool: number;
}

export interface ClusterBenchResult {
  durable: Record<'off' | 'replica', { p50: number; p99: number; perSecond: number }>;
  single: { jobsPerSecond: number };
  cluster: {
    jobsPerSecond: number;
    /** per master: its share of the commands and of the Redis CPU used (0..1), its pools */
    nodes: Array<{ port: number; commands: number; cpu: number; pools: number }>;
    crossSlotErrors: number;
  };
}

export function clusterUrl(nodes: ReadonlyArray<{ host: string; port: number }>): string {
  return `redis://${nodes.map((n) => `${n.host}:${n.port}`).join(',')}`;
}

export async function connect(url: string): Promise<{ redis: RedisClient; broker: Broker }> {
  const redis = openRedis(url);
  const broker = await Broker.connect({ redis });
  return { redis, broker };
}

async function durableCost(broker: Broker, pool: string, sizes: ClusterBenchSizes, durable: boolean) {
  const latencies: number[] = [];
  for (let i = 0; i < sizes.durableSubmits; i++) {
    const began = performance.now();
    await broker.submit({ service: 'simulation', requirements: { pool }, payload: { i } }, { durable });
    latencies.push(performance.now() - began);
  }
  latencies.sort((a, b) => a - b);
  const total = sizes.durableSubmits * 2;
  let next = 0;
  const began = performance.now();
  await Promise.all(
    Array.from({ length: sizes.inFlight }, async () => {
      while (next < total) {
        next += 1;
        await broker.submit({ service: 'simulation', requirements: { pool } }, { durable });
      }
    }),
  );
  const summary = summarizeLatencies(latencies);
  return { p50: summary.p50, p99: summary.p99, perSecond: total / ((performance.now() - began) / 1000) };
}

/** Each pool: one worker, its jobs submitted up front, then claimed, started and completed one at a time. */
async function runPools(broker: Broker, pools: string[], jobsPerPool: number): Promise<number> {
  for (const pool of pools) await broker.registerWorker({ id: `bench-${pool}`, pool, capabilities: { services: ['simulation'] } });
  const began = performance.now();
  await Promise.all(
    pools.map(async (pool) => {
      const results = await broker.submitMany(Array.from({ length: jobsPerPool }, (_, i) => ({ service: 'simulation', requirements: { pool }, payload: { i } })));
      const refused = results.filter((r) => r instanceof Error);
      if (refused.length > 0) throw new Error(`pool ${pool}: ${refused.length} submits refused: ${String(refused[0])}`);
      for (let done = 0; done < jobsPerPool; done++) {
        const { job } = await broker.claim(pool, `bench-${pool}`);
        if (!job) throw new Error(`pool ${pool}: nothing to claim after ${done} jobs`);
        await broker.start(job.lease);
        await broker.complete(job.lease, { ok: true });
      }
    }),
  );
  return (pools.length * jobsPerPool) / ((performance.now() - began) / 1000);
}

function infoNumber(text: string, field: string): number {
  return Number(new RegExp(`^${field}:([\\d.]+)`, 'm').exec(text)?.[1] ?? 0);
}

/** What one node has counted so far: commands (INFO commandstats, each command's calls), Redis CPU seconds, cross-slot errors. */
export interface NodeCounters {
  commands: number;
  /** calls per command name (`fcall`, `hget`, ...): a command a function runs counts here as well as the FCALL */
  calls: Map<string, number>;
  cpu: number;
  /** INFO stats total_reads_processed: socket reads, each taking whatever a client had sent by then */
  reads: number;
  crossSlot: number;
}

export async function nodeCounters(port: number): Promise<NodeCounters> {
  const node = new Redis({ host: '127.0.0.1', port });
  try {
    const [commandstats, cpu, errorstats, stats] = await Promise.all([node.info('commandstats'), node.info('cpu'), node.info('errorstats'), node.info('stats')]);
    const calls = new Map([...commandstats.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)].map((m) => [m[1]!, Number(m[2])] as const));
    const commands = [...calls.values()].reduce((sum, n) => sum + n, 0);
    return {
      commands,
      calls,
      cpu: infoNumber(cpu, 'used_cpu_sys') + infoNumber(cpu, 'used_cpu_user'),
      reads: infoNumber(stats, 'total_reads_processed'),
      crossSlot: infoNumber(errorstats, 'errorstat_CROSSSLOT'),
    };
  } finally {
    node.disconnect();
  }
}

export async function measureCluster(sizes: ClusterBenchSizes): Promise<ClusterBenchResult> {
  const pools = Array.from({ length: sizes.pools }, (_, i) => `bench-pool-${i}`);

  // durable submit cost on 3 masters + 3 replicas
  const replicated = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
  let durable: ClusterBenchResult['durable'];
  try {
    const { redis, broker } = await connect(clusterUrl(replicated.startupNodes));
    try {
      // alternated, so that a machine whose speed drifts does not show up as the cost of one
      const off1 = await durableCost(broker, 'durable-bench', sizes, false);
      const on1 = await durableCost(broker, 'durable-bench', sizes, true);
      const off2 = await durableCost(broker, 'durable-bench', sizes, false);
      const on2 = await durableCost(broker, 'durable-bench', sizes, true);
      const mean = (a: typeof off1, b: typeof off1) => ({ p50: (a.p50 + b.p50) / 2, p99: (a.p99 + b.p99) / 2, perSecond: (a.perSecond + b.perSecond) / 2 });
      durable = { off: mean(off1, off2), replica: mean(on1, on2) };
    } finally {
      redis.disconnect();
    }
  } finally {
    await replicated.stop();
  }

  // the same pools on one node, then on 3 masters
  const single = await startRedis();
  let singleRate: number;
  try {
    const { redis, broker } = await connect(single.url);
    try {
      singleRate = await runPools(broker, pools, sizes.jobsPerPool);
    } finally {
      redis.disconnect();
    }
  } finally {
    await single.stop();
  }

  const masters = await startRedisCluster({ masters: 3 });
  try {
    const { redis, broker } = await connect(clusterUrl(masters.startupNodes));
    try {
      const ports = masters.nodes.map((n) => n.port);
      const poolsPerNode = new Map<number, number>();
      for (const pool of pools) {
        const owner = await masters.ownerOfSlot(Number(await redis.call('CLUSTER', 'KEYSLOT', broker.keys.anchor(pool))));
        poolsPerNode.set(owner, (poolsPerNode.get(owner) ?? 0) + 1);
      }
      const before = await Promise.all(ports.map(nodeCounters));
      const rate = await runPools(broker, pools, sizes.jobsPerPool);
      const after = await Promise.all(ports.map(nodeCounters));
      const deltas = ports.map((port, i) => ({
        port,
        commands: after[i]!.commands - before[i]!.commands,
        cpu: after[i]!.cpu - before[i]!.cpu,
        crossSlot: after[i]!.crossSlot,
      }));
      const commands = deltas.reduce((s, d) => s + d.commands, 0);
      const cpu = deltas.reduce((s, d) => s + d.cpu, 0);
      return {
        durable,
        single: { jobsPerSecond: singleRate },
        cluster: {
          jobsPerSecond: rate,
          nodes: deltas.map((d) => ({ port: d.port, commands: d.commands / commands, cpu: cpu > 0 ? d.cpu / cpu : 0, pools: poolsPerNode.get(d.port) ?? 0 })),
          crossSlotErrors: deltas.reduce((s, d) => s + d.crossSlot, 0),
        },
      };
    } finally {
      redis.disconnect();
    }
  } finally {
    await masters.stop();
  }
}
