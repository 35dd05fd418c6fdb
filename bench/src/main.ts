import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, platform, release, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { startRedis } from '@emp/core/redis-server';
import { Redis } from 'ioredis';
import { type ApiLoadResult, measureApiLoad } from './api-load';
import { bullmqSystem } from './bullmq-system';
import { measureClaimLatency, measureManyClassClaims } from './claim-latency';
import { measureCluster } from './cluster';
import { measureShardClaims, measureShardedPool, shardCountFor } from './pool-shards';
import { empSystem } from './emp-system';
import { measureFunctionCosts } from './function-costs';
import { infoField, redisCpuMicros } from './redis-info';
import { formatNumber, formatTable, median, ratio, summarizeLatencies } from './stats';
import type { BenchSystem } from './system';
import { measureWebhooks } from './webhooks';

/** Every system measured in this run; each appears as a column. Append emp's here. */
const systems: BenchSystem[] = [empSystem, bullmqSystem];

/** The column our figures go in, and the one they are divided by. */
const OURS = 'emp';
const REFERENCE = 'bullmq';

const FULL = {
  /** every timed scenario runs this often per system, in alternating order; a throughput figure is the median run */
  runs: 5,
  throughput: { jobs: 20_000, concurrencies: [1, 10, 50] },
  submitToStart: { jobs: 2_000, intervalMs: 2, workers: 4, warmupJobs: 200 },
  memory: { jobs: 10_000, payloadBytes: 200 },
  claimLatency: { depths: [1_000, 100_000, 1_000_000], samples: 2_000 },
  manyClasses: { workflows: [1_000, 100_000], classes: [1_000, 10_000], samples: 1_000 },
  functionCosts: { classes: [1_000, 10_000], rounds: 10 },
  api: { durationSeconds: 10, connections: 50, workers: 4, warmupSeconds: 2, runs: 3 },
  /** webhook service: a backlog fanned out to every endpoint, then paced events (3 per job), one endpoint per tenant */
  webhooks: { endpoints: 50, backlogJobs: 100, eventsPerSec: 1_000, seconds: 20, warmupSeconds: 2 },
  /** Redis Cluster: durable submit cost on 3 masters + 3 replicas; several pools on 1 node vs 3 masters */
  cluster: { durableSubmits: 1_000, inFlight: 20, pools: 12, jobsPerPool: 1_000 },
  /** one pool with shardCountFor(masters) shards on 3 and 6 masters, and as many on 1 node (also 1 shard): submitted at once, drained by concurrent workers */
  shardedPool: { masters: [1, 3, 6], jobs: 6_000, drainers: 8, claimCount: 4, rounds: 5 },
  /** claim latency against the shard count on one node, a job in the first shard vs all empty */
  shardClaims: { shardCounts: [1, 2, 4, 8, 16], samples: 500 },
};
type Sizes = typeof FULL;
/** Small enough for a CI smoke run, big enough to exercise every path. */
const QUICK: Sizes = {
  runs: 1,
  throughput: { jobs: 1_000, concurrencies: [1, 10, 50] },
  submitToStart: { jobs: 200, intervalMs: 2, workers: 4, warmupJobs: 20 },
  memory: { jobs: 1_000, payloadBytes: 200 },
  claimLatency: { depths: [1_000, 10_000], samples: 200 },
  manyClasses: { workflows: [1_000, 10_000], classes: [1_000, 2_000], samples: 100 },
  functionCosts: { classes: [1_000, 2_000], rounds: 2 },
  api: { durationSeconds: 2, connections: 10, workers: 2, warmupSeconds: 1, runs: 1 },
  webhooks: { endpoints: 50, backlogJobs: 20, eventsPerSec: 1_000, seconds: 5, warmupSeconds: 1 },
  cluster: { durableSubmits: 100, inFlight: 20, pools: 12, jobsPerPool: 100 },
  shardedPool: { masters: [1, 3, 6], jobs: 600, drainers: 8, claimCount: 4, rounds: 1 },
  shardClaims: { shardCounts: [1, 2, 4, 8, 16], samples: 50 },
};
/** `--long` (or EMP_BENCH_WEBHOOKS_SECONDS): the paced webhook run for 10 minutes, to see whether the service's memory stays flat. */
const LONG_WEBHOOK_SECONDS = 600;

interface Row {
  scenario: string;
  /** figure per system name */
  values: Record<string, number>;
}

interface Section {
  title: string;
  rows: Row[];
}

interface RunContext {
  redisUrl: string;
  /** Runs one measurement on a freshly flushed Redis and checks it left no connection behind. */
  isolated<T>(what: string, measure: () => Promise<T>): Promise<T>;
  /** CPU time used so far, in microseconds: this process's (user + system) and the Redis server's */
  cpuMicros(): Promise<{ client: number; redis: number }>;
  quick: boolean;
}

/**
 * Sections for emp alone, printed after the side-by-side tables: things BullMQ
 * has no counterpart for. Planned here: claim latency at 1k/100k/1M queued
 * jobs (the measurement lives in claim-latency.ts). Each entry returns one
 * section whose rows carry only an `emp` value.
 */
const empOnlySections: Array<[string, (context: RunContext, sizes: Sizes) => Promise<Section>]> = [
  ['claims', measureClaimLatencies],
  ['classes', measureManyClasses],
  ['functions', measureFunctionCostsSection],
  ['api', measureApi],
  ['webhooks', measureWebhooksSection],
  ['cluster', measureClusterSection],
  ['cluster', measureShardedPoolSection],
  ['cluster', measureShardClaimsSection],
];

/** What `--only` takes: the side-by-side sections, then the emp-only ones. */
const SECTION_NAMES = ['throughput', 'latency', 'memory', 'claims', 'classes', 'functions', 'api', 'webhooks', 'cluster'] as const;

/**
 * Redis Cluster on loopback (its own servers, not the bench's redis-server): what a durable
 * submit costs on 3 masters + 3 replicas, and several pools on 1 node vs 3 masters (docs/scale-out.md).
 */
async function measureClusterSection(_context: RunContext, sizes: Sizes): Promise<Section> {
  const { cluster } = sizes;
  const result = await measureCluster(cluster);
  const row = (scenario: string, value: number): Row => ({ scenario, values: { [OURS]: value } });
  const nodes = [...result.cluster.nodes].sort((a, b) => b.commands - a.commands);
  const mean = 1 / nodes.length;
  return {
    title: `Redis Cluster on loopback: durable submit on 3 masters + 3 replicas (${cluster.durableSubmits} sequential, then ${cluster.durableSubmits * 2} with ${cluster.inFlight} in flight, x2 alternated); ${cluster.pools} pools x ${cluster.jobsPerPool} jobs (submit, claim, start, complete) on 1 node vs 3 masters (emp only)`,
    rows: [
      row('submit p50 (ms), plain', result.durable.off.p50),
      row('submit p50 (ms), durable', result.durable.replica.p50),
      row('submit p99 (ms), plain', result.durable.off.p99),
      row('submit p99 (ms), durable', result.durable.replica.p99),
      row(`submits/s with ${cluster.inFlight} in flight, plain`, result.durable.off.perSecond),
      row(`submits/s with ${cluster.inFlight} in flight, durable`, result.durable.replica.perSecond),
      row('jobs/s, 1 node', result.single.jobsPerSecond),
      row('jobs/s, 3 masters', result.cluster.jobsPerSecond),
      ...nodes.map((node, i) => row(`3 masters: node ${i + 1} (${node.pools} pools) share of commands (%)`, node.commands * 100)),
      ...nodes.map((node, i) => row(`3 masters: node ${i + 1} share of Redis CPU (%)`, node.cpu * 100)),
      row('3 masters: busiest node commands / mean', nodes[0]!.commands / mean),
      row('3 masters: cross-slot errors', result.cluster.crossSlotErrors),
    ],
  };
}

/**
 * One pool sharded (docs/scale-out.md, "Shards within a pool, measured"): jobs/s
 * end to end on one node (1 shard, and each cluster run's shard count) and on
 * 3 and 6 masters; per master its shards and share of commands and Redis CPU.
 */
async function measureShardedPoolSection(_context: RunContext, sizes: Sizes): Promise<Section> {
  const { shardedPool } = sizes;
  const runs = await measureShardedPool(shardedPool);
  const row = (scenario: string, value: number): Row => ({ scenario, values: { [OURS]: value } });
  const where = (run: (typeof runs)[number]) => `${run.masters === 1 ? '1 node' : `${run.masters} masters`}, ${run.shards} shard${run.shards === 1 ? '' : 's'}`;
  const reference = runs.find((run) => run.masters === 1 && run.shards === 1)!;
  const rows: Row[] = [];
  for (const run of runs) rows.push(row(`jobs/s, ${where(run)}`, run.jobsPerSecond));
  for (const run of runs.filter((each) => each.masters > 1)) rows.push(row(`${where(run)}: jobs/s / 1 node, 1 shard`, run.jobsPerSecond / reference.jobsPerSecond));
  for (const run of runs) rows.push(row(`Redis CPU per job (us), ${where(run)}`, run.redisCpuUs));
  for (const run of runs) rows.push(row(`client CPU per job (us), ${where(run)}`, run.clientCpuUs));
  for (const run of runs) rows.push(row(`FCALLs per job, ${where(run)}`, run.fcalls));
  for (const run of runs) rows.push(row(`Redis socket reads per job, ${where(run)}`, run.reads));
  for (const run of runs.filter((each) => each.masters > 1)) {
    const nodes = [...run.nodes].sort((a, b) => b.commands - a.commands);
    const mean = 1 / nodes.length;
    nodes.forEach((node, i) => rows.push(row(`${where(run)}: node ${i + 1} (${node.shards} shards) share of commands (%)`, node.commands * 100)));
    nodes.forEach((node, i) => rows.push(row(`${where(run)}: node ${i + 1} share of Redis CPU (%)`, node.cpu * 100)));
    // the shards a node serves predict its share: a shard's slot is the CRC16 of its name, so they spread unevenly
    rows.push(row(`${where(run)}: busiest node shards / mean`, Math.max(...nodes.map((node) => node.shards)) / (run.shards / nodes.length)));
    rows.push(row(`${where(run)}: busiest node commands / mean`, nodes[0]!.commands / mean));
    rows.push(row(`${where(run)}: busiest node Redis CPU / mean`, Math.max(...nodes.map((node) => node.cpu)) / mean));
    rows.push(row(`${where(run)}: cross-slot errors, all nodes`, run.crossSlotErrors));
  }
  return {
    title: `One pool sharded (${shardedPool.masters.filter((m) => m > 1).map((m) => `${shardCountFor(m)} shards on ${m} masters`).join(', ')}): ${shardedPool.jobs} jobs submitted at once, drained by ${shardedPool.drainers} workers (claimInShards up to ${shardedPool.claimCount}, complete), median of ${shardedPool.rounds} alternated round(s) (emp only)`,
    rows,
  };
}

/** Claim latency and commands per claim against a pool's shard count, on one node. */
async function measureShardClaimsSection(_context: RunContext, sizes: Sizes): Promise<Section> {
  const { shardClaims } = sizes;
  const runs = await measureShardClaims(shardClaims);
  const rows: Row[] = runs.flatMap((run) => {
    const label = `${run.shards} shard${run.shards === 1 ? '' : 's'}, ${run.case}`;
    return [
      { scenario: `${label}: claim p50 (ms)`, values: { [OURS]: run.p50 } },
      { scenario: `${label}: claim p99 (ms)`, values: { [OURS]: run.p99 } },
      { scenario: `${label}: FCALLs per claim`, values: { [OURS]: run.fcalls } },
      { scenario: `${label}: Redis commands per claim (inside functions too)`, values: { [OURS]: run.commands } },
    ];
  });
  return { title: `Claim (claimInShards, one job) against the pool's shard count on one node, ${shardClaims.samples} claims each (emp only)`, rows };
}

/** The longest single call of every function that walks classes, with many classes queued (SLOWLOG). Target: under 5 ms. */
async function measureFunctionCostsSection(context: RunContext, sizes: Sizes): Promise<Section> {
  const { classes, rounds } = sizes.functionCosts;
  const rows: Row[] = [];
  for (const count of classes) {
    const longest = await context.isolated(`emp function costs with ${count} classes`, () => measureFunctionCosts(context.redisUrl, count, rounds));
    for (const [name, ms] of [...longest].sort(([a], [b]) => a.localeCompare(b))) {
      rows.push({ scenario: `${count} classes queued: longest ${name} call`, values: { [OURS]: ms } });
    }
  }
  return { title: `Longest function call with many requirement classes queued, ${rounds} rounds of each (ms, lower is better; emp only)`, rows };
}

/**
 * Claim cost with many distinct workflow ids and tenants (which made a class
 * each until 2026-12-06) and with many real requirement classes (up to the
 * default limit of queued classes): claim round trip for a broad and a narrow
 * worker, and the longest single claim call Redis ran (SLOWLOG). Targets: p99
 * within 2x of the 1k figure, longest call under 5 ms.
 */
async function measureManyClasses(context: RunContext, sizes: Sizes): Promise<Section> {
  const { workflows, classes, samples } = sizes.manyClasses;
  const rows: Row[] = [];
  const runs = [...workflows.map((n) => ['workflows', n] as const), ...classes.map((n) => ['classes', n] as const)];
  for (const [kind, distinct] of runs) {
    const result = await context.isolated(`emp claims with ${distinct} distinct ${kind}`, () =>
      measureManyClassClaims(context.redisUrl, distinct, kind, samples),
    );
    const what = kind === 'workflows' ? `${distinct} workflow ids over ${Math.min(distinct, 10_000)} tenants` : `${distinct} classes`;
    for (const [worker, all] of [['broad', result.broad], ['narrow', result.narrow]] as const) {
      const summary = summarizeLatencies(all);
      rows.push({ scenario: `${what}, ${worker} worker p50`, values: { [OURS]: summary.p50 } });
      rows.push({ scenario: `${what}, ${worker} worker p99`, values: { [OURS]: summary.p99 } });
    }
    rows.push({ scenario: `${what}, longest claim call`, values: { [OURS]: result.longestCallMs } });
  }
  return { title: `Claims with many tenants, workflows and classes, ${samples} claims per worker (ms, lower is better; emp only)`, rows };
}

/** Through the HTTP API (auth on): submit throughput and latency, and submit-to-completed latency with ?wait. */
async function measureApi(context: RunContext, sizes: Sizes): Promise<Section> {
  const { api } = sizes;
  // a fresh API, workers and Redis data each run: one run's figures move with whatever else the machine does
  const results: ApiLoadResult[] = [];
  for (let run = 0; run < api.runs; run++) {
    const result = await context.isolated(`emp API load (run ${run + 1}/${api.runs})`, () => measureApiLoad({ redisUrl: context.redisUrl, ...api }));
    if (result.errors > 0) throw new Error(`the API answered ${result.errors} request(s) with an error under load`);
    results.push(result);
  }
  const row = (scenario: string, pick: (result: ApiLoadResult) => number): Row => ({ scenario, values: { [OURS]: median(results.map(pick)) } });
  return {
    title: `HTTP API (its own process), ${api.connections} connections for ${api.durationSeconds} s each after ${api.warmupSeconds} s of warm-up, ${api.workers} simulation workers in their own process (emp only; median of ${api.runs} runs)`,
    rows: [
      row('submits/s', (r) => r.submitsPerSec),
      row('submit latency p50 (ms)', (r) => r.submitP50Ms),
      row('submit latency p99 (ms)', (r) => r.submitP99Ms),
      row('submit-to-completed jobs/s (?wait)', (r) => r.completedPerSec),
      row('submit-to-completed p50 (ms)', (r) => r.completedP50Ms),
      row('submit-to-completed p99 (ms)', (r) => r.completedP99Ms),
      row('API process CPU per submit (µs)', (r) => r.apiCpuMicrosPerSubmit),
    ],
  };
}

/**
 * The webhook service (apps/webhooks, in a process of its own) delivering to
 * loopback receivers on the bench's redis-server, jobs run through the broker:
 * deliveries/s draining a backlog fanned out to every endpoint; event ->
 * receiver latency at a paced rate (aim: p50 < 20 ms, p99 < 100 ms); the
 * service's RSS and heap over the paced run (flat, aim of issue 12).
 */
async function measureWebhooksSection(context: RunContext, sizes: Sizes): Promise<Section> {
  const options = sizes.webhooks;
  const r = await context.isolated('emp webhook service', () => measureWebhooks({ redisUrl: context.redisUrl, ...options }));
  const row = (scenario: string, value: number): Row => ({ scenario, values: { [OURS]: value } });
  const deliveries = r.backlog.deliveries.toLocaleString('en-US');
  const paced = `${options.eventsPerSec.toLocaleString('en-US')} events/s`;
  return {
    title: `Webhook service, ${options.endpoints} loopback endpoints; paced run ${options.seconds} s after ${options.warmupSeconds} s of warm-up (emp only)`,
    rows: [
      row(`backlog of ${r.backlog.events} events x ${options.endpoints} endpoints (${deliveries} deliveries): deliveries/s`, r.backlog.deliveriesPerSec),
      row('  service CPU per delivery (µs)', r.backlog.serviceCpuUsPerDelivery),
      row(`${paced}, one endpoint per tenant: events/s achieved`, r.paced.achievedEventsPerSec),
      row('  event -> receiver p50 (ms)', r.paced.latency.p50),
      row('  event -> receiver p95 (ms)', r.paced.latency.p95),
      row('  event -> receiver p99 (ms)', r.paced.latency.p99),
      row('  event -> receiver max (ms)', r.paced.latency.max),
      row('  service CPU per delivery (µs)', r.paced.serviceCpuUsPerDelivery),
      row('  redis-server CPU per delivery (µs)', r.paced.redisCpuUsPerDelivery),
      row('  bench process CPU per delivery: jobs + receivers (µs)', r.paced.benchCpuUsPerDelivery),
      row('  most events not yet read by the service (stream lag)', r.paced.maxIntakeLag),
      row('  deliveries missing after 30 s (count)', r.paced.missing),
      row('  repeated webhook-ids / a job\'s events out of order (count)', r.paced.repeats + r.paced.outOfOrder),
      row(`  service RSS, first of ${r.memory.samples} samples (MiB)`, r.memory.rssStartMiB),
      row('  service RSS, last (MiB)', r.memory.rssEndMiB),
      row('  service RSS, max (MiB)', r.memory.rssMaxMiB),
      row('  service RSS slope (MiB/min)', r.memory.rssSlopeMiBPerMin),
      row('  service heap used, first (MiB)', r.memory.heapStartMiB),
      row('  service heap used, last (MiB)', r.memory.heapEndMiB),
      row('  service heap used, max (MiB)', r.memory.heapMaxMiB),
      row('  service heap slope (MiB/min)', r.memory.heapSlopeMiBPerMin),
    ],
  };
}

/**
 * Claim round trip with jobs spread over 50 requirement classes: a worker that
 * can run every class, and one that can run only the class served last (each
 * of its claims walks all class heads). The claim cost must not grow with depth.
 */
async function measureClaimLatencies(context: RunContext, sizes: Sizes): Promise<Section> {
  const { depths, samples } = sizes.claimLatency;
  // every depth twice, deepest last and then first, so that a machine whose speed drifts over the
  // minutes this takes does not show up as a cost of depth
  const latencies = new Map<number, { broad: number[]; narrow: number[] }>();
  for (const depth of [...depths, ...[...depths].reverse()]) {
    const result = await context.isolated(`emp claim latency at ${depth} queued`, () => measureClaimLatency(context.redisUrl, depth, samples));
    const pooled = latencies.get(depth) ?? { broad: [], narrow: [] };
    latencies.set(depth, { broad: [...pooled.broad, ...result.broad], narrow: [...pooled.narrow, ...result.narrow] });
  }
  const rows: Row[] = [];
  for (const depth of depths) {
    const pooled = latencies.get(depth)!;
    for (const [worker, all] of [['broad', pooled.broad], ['narrow', pooled.narrow]] as const) {
      const summary = summarizeLatencies(all.sort((a, b) => a - b));
      rows.push({ scenario: `${depth} queued, ${worker} worker p50`, values: { [OURS]: summary.p50 } });
      rows.push({ scenario: `${depth} queued, ${worker} worker p99`, values: { [OURS]: summary.p99 } });
    }
  }
  return {
    title: `Claim latency, ${51} requirement classes, 2 x ${samples} claims per worker and depth (ms, lower is better; emp only)`,
    rows,
  };
}

async function main(): Promise<void> {
  const { values: flags } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      long: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (flags.help) {
    console.log(
      `npm run bench [-- --quick] [-- --only ${SECTION_NAMES.join(',')}] [-- --long]\n  --quick  small job counts (CI smoke run)\n  --only   run these sections only (results go to latest-partial.json)\n  --long   the webhooks section's paced run for ${LONG_WEBHOOK_SECONDS / 60} minutes (memory flat?); EMP_BENCH_WEBHOOKS_SECONDS=n sets it to n s, EMP_BENCH_WEBHOOKS_RATE=n the events/s`,
    );
    return;
  }
  const only = flags.only === undefined ? new Set(SECTION_NAMES) : new Set(flags.only.split(',').map((name) => name.trim()));
  const unknown = [...only].filter((name) => !(SECTION_NAMES as readonly string[]).includes(name));
  if (unknown.length > 0) {
    console.error(`error: unknown bench section ${unknown.join(', ')}; sections: ${SECTION_NAMES.join(', ')}`);
    process.exitCode = 2;
    return;
  }
  const quick = flags.quick ?? false;
  const base = quick ? QUICK : FULL;
  const webhookSeconds = flags.long ? LONG_WEBHOOK_SECONDS : Number(process.env.EMP_BENCH_WEBHOOKS_SECONDS) || base.webhooks.seconds;
  const webhookRate = Number(process.env.EMP_BENCH_WEBHOOKS_RATE) || base.webhooks.eventsPerSec;
  const sizes: Sizes = { ...base, webhooks: { ...base.webhooks, seconds: webhookSeconds, eventsPerSec: webhookRate } };

  const redis = await startRedis();
  const admin = new Redis(redis.url);
  try {
    const context: RunContext = {
      redisUrl: redis.url,
      quick,
      isolated: (what, measure) => isolated(admin, what, measure),
      cpuMicros: () => cpuMicros(admin),
    };
    const sections: Section[] = [];
    const report = (section: Section): void => {
      sections.push(section);
      console.log(`\n${section.title}\n${renderSection(section)}`);
    };
    console.log(`bench${quick ? ' --quick' : ''}: ${systems.map((s) => s.name).join(', ')} against redis-server at ${redis.url}`);

    if (only.has('throughput')) {
      await warmUp(context, sizes.throughput);
      const throughput = await measureThroughput(context, sizes.throughput, sizes.runs);
      report(throughput.rates);
      report(throughput.cpu);
    }
    if (only.has('latency')) report(await measureSubmitToStart(context, sizes.submitToStart, sizes.runs));
    if (only.has('memory')) {
      const memory = await measureMemory(context, sizes.memory);
      report(memory.perJob);
      report(memory.byKey);
    }
    // emp-only sections (claim latency at 1k/100k/1M queued jobs, ...) print here
    for (const [name, section] of empOnlySections) if (only.has(name)) report(await section(context, sizes));

    const machine = await describeMachine(admin);
    const date = new Date().toISOString();
    console.log(
      `\nmachine: ${machine.cpu} x${machine.cores}, ${machine.memoryGiB} GiB, ${machine.os}; node ${machine.node}; redis ${machine.redis}\ndate: ${date}`,
    );
    const partial = flags.only !== undefined;
    const file = await writeResults({ date, quick, partial, sizes, machine, systems: systems.map((s) => s.name), sections });
    console.log(`results: ${file}`);
  } finally {
    await admin.quit().catch(() => admin.disconnect());
    await redis.stop();
  }
}

/** One unmeasured drain per system first, so no system's first measurement also pays for JIT compilation. */
async function warmUp(context: RunContext, sizes: Sizes['throughput']): Promise<void> {
  for (const system of systems) {
    await context.isolated(`${system.name} warm-up`, () =>
      system.throughput({ redisUrl: context.redisUrl, jobs: Math.min(sizes.jobs, 2_000), concurrency: 10 }),
    );
  }
}

/**
 * The systems in the order of run `run`: alternating, so that neither always
 * goes first on a machine whose speed drifts (a shared VM's does).
 */
function inRunOrder(run: number): BenchSystem[] {
  return run % 2 === 0 ? systems : [...systems].reverse();
}

/**
 * Jobs per second, and the CPU time each job cost the client process and the
 * Redis server (submit + drain). On a shared machine the rates move with what
 * else runs; CPU per job moves much less, so it shows the work each system does.
 */
async function measureThroughput(context: RunContext, sizes: Sizes['throughput'], runs: number): Promise<{ rates: Section; cpu: Section }> {
  const rows: Row[] = [];
  const cpuRows: Row[] = [];
  const add = (figures: Map<string, number[]>, name: string, value: number) => figures.set(name, [...(figures.get(name) ?? []), value]);
  for (const concurrency of sizes.concurrencies) {
    const drains = new Map<string, number[]>();
    const totals = new Map<string, number[]>();
    const clientCpu = new Map<string, number[]>();
    const redisCpu = new Map<string, number[]>();
    for (let run = 0; run < runs; run++) {
      for (const system of inRunOrder(run)) {
        const result = await context.isolated(`${system.name} throughput c=${concurrency} (run ${run + 1}/${runs})`, async () => {
          const before = await context.cpuMicros();
          const measured = await system.throughput({ redisUrl: context.redisUrl, jobs: sizes.jobs, concurrency });
          const after = await context.cpuMicros();
          return { ...measured, clientUs: (after.client - before.client) / sizes.jobs, redisUs: (after.redis - before.redis) / sizes.jobs };
        });
        add(drains, system.name, result.drainJobsPerSec);
        add(totals, system.name, result.totalJobsPerSec);
        add(clientCpu, system.name, result.clientUs);
        add(redisCpu, system.name, result.redisUs);
      }
    }
    const medians = (figures: Map<string, number[]>) =>
      Object.fromEntries([...figures].map(([name, values]) => [name, median(values)]));
    rows.push(
      { scenario: `drain ${sizes.jobs} jobs, concurrency ${concurrency}`, values: medians(drains) },
      { scenario: `submit + drain, concurrency ${concurrency}`, values: medians(totals) },
    );
    cpuRows.push(
      { scenario: `client process, concurrency ${concurrency}`, values: medians(clientCpu) },
      { scenario: `redis-server, concurrency ${concurrency}`, values: medians(redisCpu) },
    );
  }
  return {
    rates: { title: `Throughput, one worker (jobs/s, higher is better; median of ${runs} runs)`, rows },
    cpu: { title: `CPU time per job, submit + drain (microseconds, lower is better; median of ${runs} runs)`, rows: cpuRows },
  };
}

async function measureSubmitToStart(context: RunContext, sizes: Sizes['submitToStart'], runs: number): Promise<Section> {
  const percentiles = ['p50', 'p95', 'p99', 'max'] as const;
  const rows: Row[] = percentiles.map((p) => ({ scenario: p, values: {} }));
  const latencies = new Map<string, number[]>();
  for (let run = 0; run < runs; run++) {
    for (const system of inRunOrder(run)) {
      const measured = await context.isolated(`${system.name} submit-to-start (run ${run + 1}/${runs})`, () =>
        system.submitToStart({ redisUrl: context.redisUrl, ...sizes }),
      );
      latencies.set(system.name, [...(latencies.get(system.name) ?? []), ...measured]);
    }
  }
  for (const [name, all] of latencies) {
    const summary = summarizeLatencies(all.sort((a, b) => a - b));
    percentiles.forEach((p, i) => (rows[i]!.values[name] = summary[p]));
  }
  return {
    title: `Submit to start, ${sizes.workers} idle workers, one job every ${sizes.intervalMs} ms, ${runs} x ${sizes.jobs} jobs (ms, lower is better)`,
    rows,
  };
}

async function measureMemory(context: RunContext, sizes: Sizes['memory']): Promise<{ perJob: Section; byKey: Section }> {
  const row: Row = { scenario: `${sizes.jobs} queued jobs, ${sizes.payloadBytes}-byte payload`, values: {} };
  const byKey: Row[] = [];
  for (const system of systems) {
    const measured = await context.isolated(`${system.name} memory`, () => system.memoryPerJob({ redisUrl: context.redisUrl, ...sizes }));
    row.values[system.name] = measured.bytesPerJob;
    for (const kind of measured.byKey) {
      byKey.push({ scenario: `${system.name} ${kind.kind} (${kind.encoding}, ${kind.keys.toLocaleString('en-US')} key${kind.keys === 1 ? '' : 's'})`, values: { [system.name]: kind.bytesPerJob } });
    }
  }
  return {
    perJob: { title: 'Redis memory per queued job (bytes, lower is better)', rows: [row] },
    byKey: { title: 'Where those bytes are: MEMORY USAGE per kind of key, per queued job (bytes; the keyspace\'s own ~30 B a key not counted)', rows: byKey },
  };
}

function renderSection(section: Section): string {
  return formatTable(
    ['scenario', OURS, REFERENCE, `ratio ${OURS}/${REFERENCE}`],
    section.rows.map((row) => [
      row.scenario,
      formatNumber(row.values[OURS]),
      formatNumber(row.values[REFERENCE]),
      ratio(row.values[OURS], row.values[REFERENCE]),
    ]),
  );
}

/** CPU time used so far (µs): this process (user + system) and the Redis server (INFO cpu). */
async function cpuMicros(admin: Redis): Promise<{ client: number; redis: number }> {
  const usage = process.cpuUsage();
  return { client: usage.user + usage.system, redis: await redisCpuMicros(admin) };
}

/** The private server is ours: flush it before each measurement, and insist every connection is gone after. */
async function isolated<T>(admin: Redis, what: string, measure: () => Promise<T>): Promise<T> {
  await admin.flushall();
  process.stderr.write(`  running ${what}\n`);
  const result = await measure();
  const deadline = Date.now() + 3_000;
  for (;;) {
    const others = (await clientList(admin)).filter((client) => !client.includes(' cmd=client|list'));
    if (others.length === 0) return result;
    if (Date.now() > deadline) {
      throw new Error(`${what} left ${others.length} Redis connection(s) open:\n${others.join('\n')}`);
    }
    await sleep(50);
  }
}

async function clientList(admin: Redis): Promise<string[]> {
  const text = (await admin.call('CLIENT', 'LIST', 'TYPE', 'normal')) as string;
  return text.split('\n').filter((line) => line.trim() !== '');
}

async function describeMachine(admin: Redis) {
  const cpu = cpus();
  return {
    cpu: cpu[0]?.model.trim() ?? 'unknown',
    cores: cpu.length,
    memoryGiB: Number((totalmem() / 2 ** 30).toFixed(1)),
    os: `${platform()} ${release()}`,
    node: process.version,
    redis: (await infoField(admin, 'server', 'redis_version')) ?? 'unknown',
  };
}

/** A quick run writes beside the full one, so a CI smoke run never replaces real figures. */
async function writeResults(results: { quick: boolean; partial: boolean } & Record<string, unknown>): Promise<string> {
  const dir = fileURLToPath(new URL('../results/', import.meta.url));
  await mkdir(dir, { recursive: true });
  // a run of some sections (--only) does not replace the full run's file
  const file = `${dir}${results.quick ? 'latest-quick' : 'latest'}${results.partial ? '-partial' : ''}.json`;
  await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
  return file;
}

try {
  await main();
} catch (error) {
  console.error(error);
  process.exitCode = 1;
}
// every scenario closes what it opened; if something still holds the process open, say so and leave
setTimeout(() => {
  console.error(`bench: handles still open 5 s after finishing (${process.getActiveResourcesInfo().join(', ')}); exiting`);
  process.exit(process.exitCode ?? 1);
}, 5_000).unref();
