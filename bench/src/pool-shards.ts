import { type Broker, type ClaimedJob, type RedisClient, shardsOf } from '@emp/core';
import { startRedis } from '@emp/core/redis-server';
import { startRedisCluster } from '@emp/testkit';
import { type NodeCounters, clusterUrl, connect, nodeCounters } from './cluster';
import { median, summarizeLatencies } from './stats';

/**
 * Shards within a pool (docs/scale-out.md, "Shards within a pool, measured"):
 * what predicts whether one busy pool scales with masters, measured where
 * throughput cannot grow (2 cores shared by the client and every node).
 *
 * - One pool with shardCountFor(masters) shards (16 on 3, 32 on 6) on 3 and 6 masters (no replicas), and on
 *   one node with 1 shard and with each of those shard counts (the cost of
 *   shards alone): jobs submitted at once (submitMany), then drained by
 *   concurrent workers (claimInShards + complete); jobs/s end to end, CPU per
 *   job, and per node its share of the commands and of the Redis CPU.
 * - Claim latency and commands per claim against the shard count, on one node:
 *   when the first shard looked in has a job, and when every shard is empty.
 */
export interface ShardedPoolSizes {
  /** master counts; 1 is a single redis-server, >= 3 a cluster without replicas */
  masters: number[];
  jobs: number;
  /** concurrent drainers, each its own registered worker */
  drainers: number;
  /** jobs each claimInShards takes at most */
  claimCount: number;
  /** every setup drains this often, in alternating order; jobs/s is the median */
  rounds: number;
}

export interface ShardClaimSizes {
  shardCounts: number[];
  samples: number;
}

export interface ShardedPoolRun {
  masters: number;
  shards: number;
  jobsPerSecond: number;
  /** CPU per job (µs): all Redis nodes together, and this client process */
  redisCpuUs: number;
  clientCpuUs: number;
  /** socket reads per job, all nodes together: how many requests each read found waiting */
  reads: number;
  /** FCALLs per job, all nodes together: how well submits, claims and completions were batched */
  fcalls: number;
  /** per node: its pool shards, its share (0..1) of the commands and of the Redis CPU */
  nodes: Array<{ port: number; shards: number; commands: number; cpu: number }>;
  /** INFO errorstats errorstat_CROSSSLOT, summed over the nodes, at the end */
  crossSlotErrors: number;
}

export interface ShardClaimRun {
  shards: number;
  case: 'job in the first shard' | 'all shards empty';
  p50: number;
  p99: number;
  /** FCALLs per claim, and every command Redis ran per claim (those inside the functions included) */
  fcalls: number;
  commands: number;
}

const CAPABILITIES = { services: ['simulation'] };

/** One pool on one deployment: where it runs, its shards, which node serves each. */
interface Setup {
  masters: number;
  shards: number;
  pool: string;
  broker: Broker;
  ports: number[];
  shardsPerNode: Map<number, number>;
  workers: string[];
  rates: number[];
  commands: Map<number, number>;
  cpu: Map<number, number>;
  clientCpuUs: number;
  reads: number;
  fcalls: number;
  /** jobs drained over all rounds */
  drained: number;
  crossSlot: number;
}

/**
 * The shards the bench gives a pool on `masters` masters: the smallest power of two
 * of at least 5 per master (16 on 3, 32 on 6), with which the spread of shard
 * slots (keys.ts, shardHashTag) puts at most 1.125x the mean on the busiest of
 * masters that serve equal slot ranges, wherever shard 0's slot falls
 * (docs/scale-out.md, "Shards within a pool").
 */
export function shardCountFor(masters: number): number {
  return 2 ** Math.ceil(Math.log2(5 * masters));
}

export async function measureShardedPool(sizes: ShardedPoolSizes): Promise<ShardedPoolRun[]> {
  const closers: Array<() => Promise<void>> = [];
  try {
    const setups: Setup[] = [];
    const single = await startRedis();
    closers.push(() => single.stop());
    const onSingle = await connect(single.url);
    closers.push(async () => onSingle.redis.disconnect());
    const singleShardCounts = [...new Set([1, ...sizes.masters.filter((m) => m > 1).map(shardCountFor)])];
    for (const shards of singleShardCounts) {
      setups.push(await prepare(onSingle.broker, `shards-${shards}`, shards, 1, [single.port], sizes.drainers, async () => single.port));
    }
    for (const masters of sizes.masters.filter((m) => m > 1)) {
      const cluster = await startRedisCluster({ masters });
      closers.push(() => cluster.stop());
      const { redis, broker } = await connect(clusterUrl(cluster.startupNodes));
      closers.push(async () => redis.disconnect());
      const ownerOf = async (shard: string) => cluster.ownerOfSlot(await keySlot(redis, broker.keys.anchor(shard)));
      const ports = cluster.nodes.map((n) => n.port);
      setups.push(await prepare(broker, 'sharded', shardCountFor(masters), masters, ports, sizes.drainers, ownerOf));
    }
    // one unmeasured drain each first, so that no setup's first round also pays for JIT compilation and new connections
    for (const setup of setups) await runRound(setup, Math.min(sizes.jobs, 1_000), sizes, false);
    for (let round = 0; round < sizes.rounds; round++) {
      // alternated, so that a machine whose speed drifts does not show up as the cost of one setup
      for (const setup of round % 2 === 0 ? setups : [...setups].reverse()) await runRound(setup, sizes.jobs, sizes, true);
    }
    return setups.map(summarize);
  } finally {
    for (const close of closers.reverse()) await close();
  }
}

async function keySlot(redis: RedisClient, key: string): Promise<number> {
  return Number(await redis.call('CLUSTER', 'KEYSLOT', key));
}

async function prepare(
  broker: Broker,
  pool: string,
  shards: number,
  masters: number,
  ports: number[],
  drainers: number,
  ownerOf: (shard: string) => Promise<number>,
): Promise<Setup> {
  if (shards > 1) await broker.setShardCount(pool, shards);
  const workers = Array.from({ length: drainers }, (_, i) => `drainer-${i}`);
  // registered after the count is set: a worker is recorded in every shard served when it registers
  for (const id of workers) await broker.registerWorker({ id, pool, capabilities: CAPABILITIES });
  const shardsPerNode = new Map<number, number>();
  for (const shard of shardsOf(pool, shards)) {
    const port = await ownerOf(shard);
    shardsPerNode.set(port, (shardsPerNode.get(port) ?? 0) + 1);
  }
  return { masters, shards, pool, broker, ports, shardsPerNode, workers, rates: [], commands: new Map(), cpu: new Map(), clientCpuUs: 0, reads: 0, fcalls: 0, drained: 0, crossSlot: 0 };
}

/** Submits `jobs` at once, drains them with the setup's workers, and (`record`) adds what each node counted meanwhile. */
async function runRound(setup: Setup, jobs: number, sizes: ShardedPoolSizes, record: boolean): Promise<void> {
  const { broker, pool } = setup;
  const before = await Promise.all(setup.ports.map(nodeCounters));
  const clientBefore = process.cpuUsage();
  const began = performance.now();
  const results = await broker.submitMany(Array.from({ length: jobs }, (_, i) => ({ service: 'simulation', requirements: { pool }, payload: { i } })));
  const refused = results.filter((r) => r instanceof Error);
  if (refused.length > 0) throw new Error(`pool ${pool}: ${refused.length} submits refused: ${String(refused[0])}`);
  const drained = await drain(broker, pool, shardsOf(pool, setup.shards), setup.workers, sizes.claimCount);
  const seconds = (performance.now() - began) / 1000;
  const client = process.cpuUsage(clientBefore);
  const after = await Promise.all(setup.ports.map(nodeCounters));
  if (drained !== jobs) throw new Error(`pool ${pool} on ${setup.masters} node(s): drained ${drained} of ${jobs} jobs`);
  if (!record) return;
  setup.rates.push(jobs / seconds);
  setup.drained += drained;
  setup.clientCpuUs += client.user + client.system;
  setup.ports.forEach((port, i) => {
    setup.commands.set(port, (setup.commands.get(port) ?? 0) + servedCommands(after[i]!) - servedCommands(before[i]!));
    setup.cpu.set(port, (setup.cpu.get(port) ?? 0) + after[i]!.cpu - before[i]!.cpu);
    setup.reads += after[i]!.reads - before[i]!.reads;
    setup.fcalls += fcalls(after[i]!) - fcalls(before[i]!);
  });
  setup.crossSlot = after.reduce((sum, node) => sum + node.crossSlot, 0);
}

/**
 * Each worker claims up to `count` jobs at a time and completes them, looking
 * first in a shard of its own (then the next one each turn, as wake-ups from
 * different shards would lead it), until it has found every shard empty. The
 * jobs were all queued before, so a shard found empty stays empty.
 */
async function drain(broker: Broker, pool: string, shards: string[], workers: string[], count: number): Promise<number> {
  let drained = 0;
  await Promise.all(
    workers.map(async (worker, w) => {
      const empty = new Set<string>();
      for (let turn = w; empty.size < shards.length; turn++) {
        const open = shards.filter((shard) => !empty.has(shard));
        const found = await broker.claimInShards(pool, worker, { first: open[turn % open.length], count, skip: empty });
        for (const shard of found.idleIn) empty.add(shard);
        const jobs = found.results.flatMap((r) => (r.job ? [r.job] : []));
        if (jobs.length === 0 && found.idleIn.length === 0) throw new Error(`${worker} found neither a job nor an empty shard in ${pool}`);
        await Promise.all(jobs.map((job) => broker.complete(job.lease, { ok: true })));
        drained += jobs.length;
      }
    }),
  );
  return drained;
}

function summarize(setup: Setup): ShardedPoolRun {
  const commands = [...setup.commands.values()].reduce((s, n) => s + n, 0);
  const cpu = [...setup.cpu.values()].reduce((s, n) => s + n, 0);
  const perJob = (total: number) => total / setup.drained;
  return {
    masters: setup.masters,
    shards: setup.shards,
    jobsPerSecond: median(setup.rates),
    redisCpuUs: perJob(cpu * 1e6),
    clientCpuUs: perJob(setup.clientCpuUs),
    reads: perJob(setup.reads),
    fcalls: perJob(setup.fcalls),
    nodes: setup.ports.map((port) => ({
      port,
      shards: setup.shardsPerNode.get(port) ?? 0,
      commands: commands > 0 ? (setup.commands.get(port) ?? 0) / commands : 0,
      cpu: cpu > 0 ? (setup.cpu.get(port) ?? 0) / cpu : 0,
    })),
    crossSlotErrors: setup.crossSlot,
  };
}

/** The commands a node ran for its clients, less the bench's own reads of it (INFO, and the CLIENT calls of a fresh connection). */
function servedCommands(node: NodeCounters): number {
  let total = 0;
  for (const [name, calls] of node.calls) if (name !== 'info' && !name.startsWith('client|')) total += calls;
  return total;
}

function fcalls(node: NodeCounters): number {
  return (node.calls.get('fcall') ?? 0) + (node.calls.get('fcall_ro') ?? 0);
}

/**
 * On one node, for each shard count: `samples` claims (claimInShards, one job)
 * when the first shard looked in holds a job, then as many when every shard is
 * empty (each claim looks in every shard and records the worker idle there).
 */
export async function measureShardClaims(sizes: ShardClaimSizes): Promise<ShardClaimRun[]> {
  const server = await startRedis();
  try {
    const { redis, broker } = await connect(server.url);
    try {
      const runs: ShardClaimRun[] = [];
      for (const shards of sizes.shardCounts) {
        const pool = `claims-${shards}`;
        const worker = `claimer-${shards}`;
        // queued while the pool has one shard, then the pool grows: every job is in shard 0, where a claim looks first
        const results = await broker.submitMany(Array.from({ length: sizes.samples }, (_, i) => ({ service: 'simulation', requirements: { pool }, payload: { i } })));
        if (results.some((r) => r instanceof Error)) throw new Error(`pool ${pool}: a submit was refused`);
        if (shards > 1) await broker.setShardCount(pool, shards);
        await broker.registerWorker({ id: worker, pool, capabilities: CAPABILITIES });
        const full = await timedClaims(broker, server.port, pool, worker, sizes.samples, true);
        runs.push({ shards, case: 'job in the first shard', ...full.figures });
        await Promise.all(full.jobs.map((job) => broker.complete(job.lease, { ok: true })));
        const empty = await timedClaims(broker, server.port, pool, worker, sizes.samples, false);
        runs.push({ shards, case: 'all shards empty', ...empty.figures });
      }
      return runs;
    } finally {
      redis.disconnect();
    }
  } finally {
    await server.stop();
  }
}

async function timedClaims(broker: Broker, port: number, pool: string, worker: string, samples: number, expectJob: boolean) {
  const latencies: number[] = [];
  const jobs: ClaimedJob[] = [];
  const before = await nodeCounters(port);
  for (let i = 0; i < samples; i++) {
    const began = performance.now();
    const found = await broker.claimInShards(pool, worker);
    latencies.push(performance.now() - began);
    const job = found.results[0]?.job;
    if (Boolean(job) !== expectJob) throw new Error(`claim ${i + 1} in ${pool}: expected ${expectJob ? 'a job' : 'none'}, got ${job ? job.id : 'none'}`);
    if (job) jobs.push(job);
  }
  const after = await nodeCounters(port);
  const summary = summarizeLatencies(latencies.sort((a, b) => a - b));
  return {
    jobs,
    figures: {
      p50: summary.p50,
      p99: summary.p99,
      fcalls: (fcalls(after) - fcalls(before)) / samples,
      commands: (servedCommands(after) - servedCommands(before)) / samples,
    },
  };
}
