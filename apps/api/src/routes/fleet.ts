import { type Broker, MachineList, PoolReport, PoolShards, QueueReport, type RegistryEntry, ShardReport, WorkerList, decodeMachine, decodeWorker, isInvalidRecord, isUnreadable } from '@emp/core';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { z } from 'zod';
import { PoolParams, PoolQuery, ShardCountBody, answers } from '../schemas';

interface Depth {
  depth: number;
  oldest_age_ms?: number;
}

function addDepth(into: Depth, depth: number, age: number | undefined): void {
  into.depth += depth;
  if (age !== undefined && (into.oldest_age_ms === undefined || age > into.oldest_age_ms)) into.oldest_age_ms = age;
}

/** Queue depth and age of the oldest job per pool, service and requirement class, with paused services and worker counts. */
export async function queueReport(broker: Broker, pools: string[]): Promise<QueueReport> {
  const now = await broker.serverTime();
  const reports = await Promise.all(
    pools.map(async (pool) => {
      const [stats, paused] = await Promise.all([broker.queueStats(pool), broker.pausedServices(pool)]);
      const total: Depth = { depth: 0 };
      const services = new Map<string, Depth>();
      const classes = stats.classes.map((c) => {
        const age = c.headSubmittedAt === undefined ? undefined : now - c.headSubmittedAt;
        const service = String(c.definition.service ?? '');
        if (!services.has(service)) services.set(service, { depth: 0 });
        addDepth(services.get(service)!, c.depth, age);
        addDepth(total, c.depth, age);
        return {
          requirement_class: c.requirementClass,
          definition: c.definition,
          routable: c.routable,
          depth: c.depth,
          head_job: c.headJob,
          oldest_age_ms: age,
        };
      });
      return {
        pool,
        ...total,
        services: [...services.entries()].map(([service, d]) => ({ service, ...d, paused: paused.some((p) => p.service === service) })),
        classes: classes.filter((c) => c.depth > 0),
        paused,
        on_timers: stats.timers,
        workers: { online: stats.onlineWorkers, idle: stats.idleWorkers, offline: stats.offlineWorkers },
      };
    }),
  );
  return { now, pools: reports };
}

/**
 * A worker as listed: its hash as stored, decoded through core/registry.ts,
 * with its capabilities and model report (stored as canonical JSON) parsed, and `problems`
 * naming each field that cannot be read.
 */
function workerView(pool: string, worker: RegistryEntry) {
  const { capabilities: _, models: __, ...rest } = worker;
  const record = decodeWorker(pool, worker);
  if (isInvalidRecord(record)) return { pool, ...rest, problems: [record.invalid] };
  const capabilities = record.capabilities && !isUnreadable(record.capabilities) ? record.capabilities : undefined;
  const models = record.models && !isUnreadable(record.models) ? record.models : undefined;
  return { pool, ...rest, capabilities, models, problems: record.problems.length ? record.problems : undefined };
}

/** A machine as listed: its hash as stored, with `problems` naming each field that cannot be read (core/registry.ts). */
function machineView(pool: string, machine: RegistryEntry) {
  const record = decodeMachine(pool, machine);
  const problems = isInvalidRecord(record) ? [record.invalid] : record.problems;
  return { pool, ...machine, problems: problems.length ? problems : undefined };
}

/** Queues, workers and machines: what operators, monitors and workers read about the fleet. */
export async function fleetRoutes(app: FastifyInstance): Promise<void> {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const { broker } = app;
  /** A read of the fleet: of one pool (?pool=) or of every pool. */
  const fleetRead = <R extends z.ZodType>(summary: string, response: R) => ({
    config: { access: 'fleet' as const },
    schema: { summary, tags: ['fleet'], querystring: PoolQuery, response: answers({ 200: response }) },
  });
  const poolsOf = async (pool: string | undefined) => (pool ? [pool] : broker.pools());
  /** The registry entries of one pool or of every pool, each as listed. */
  const listed = async <T>(pool: string | undefined, entries: (pool: string) => Promise<RegistryEntry[]>, view: (pool: string, entry: RegistryEntry) => T) =>
    (await Promise.all((await poolsOf(pool)).map(async (p) => (await entries(p)).map((entry) => view(p, entry))))).flat();

  api.get('/v1/queues', fleetRead('Queue depth and age of the oldest job per pool, service and requirement class', QueueReport), async (request) =>
    queueReport(broker, await poolsOf(request.query.pool)),
  );

  api.get(
    '/v1/pools',
    {
      config: { access: 'fleet' as const },
      schema: {
        summary: 'The configured pools by expected duration: cutoffs, target wait, profile, queue, workers and the learned duration classes each takes (docs/pools.md)',
        tags: ['fleet'],
        response: answers({ 200: PoolReport }),
      },
    },
    async () => broker.poolReport(),
  );

  api.get(
    '/v1/shards',
    {
      // Redis servers' addresses and load: the operator's, not a worker's or a service's
      config: { access: 'operate' as const },
      schema: {
        summary: "Where each pool lives: each pool's shard counts and served shards; every shard (a pool's, or webhook delivery's) with its cluster slot, the node serving it, its queued and running jobs and workers; and each Redis node with its slots, shards, memory and ops/s (docs/scale-out.md)",
        tags: ['fleet'],
        response: answers({ 200: ShardReport }),
      },
    },
    async () => broker.shardReport(),
  );

  api.put(
    '/v1/pools/:pool/shards',
    {
      config: { access: 'operate' as const },
      schema: {
        summary: "Set how many shards a pool's submits go to (1..64): growing takes effect at once; shards taken out of placement stay served until their jobs are done (docs/scale-out.md)",
        description:
          'Answers the counts as stored: `count`, the shards submits go to; `serve`, the shards workers claim in (more than `count` while left-over shards still hold live jobs). Workers learn a change within 2 s. ' +
          "`onto` (a grow on a Redis Cluster): masters (host:port) the added shards are put on, in turn: their slots, still empty, move there first, listed in `moved`; a slot holding keys is refused (409 BAD_STATE) and nothing moves.",
        tags: ['operator'],
        params: PoolParams,
        body: ShardCountBody,
        response: answers({ 200: PoolShards }),
      },
    },
    async (request) => broker.setShardCount(request.params.pool, request.body.count, request.body.onto ? { onto: request.body.onto } : {}),
  );

  api.get('/v1/workers', fleetRead('Registered workers (offline ones stay listed until their retention passes)', WorkerList), async (request) => {
    // read before the clock, so that no record is newer than `now`
    const workers = await listed(request.query.pool, (pool) => broker.workers(pool), workerView);
    return { now: await broker.serverTime(), workers };
  });

  api.get('/v1/machines', fleetRead('Registered machines with their last status snapshot and last operator command', MachineList), async (request) => {
    // read before the clock, so that no record is newer than `now`
    const machines = await listed(request.query.pool, (pool) => broker.machines(pool), machineView);
    return { now: await broker.serverTime(), machines };
  });
}
