import { type Broker, FAILURE_KINDS, type FailureKind, PLANNER_ACTIONS, decodeMachine, decodeWorker, isInvalidRecord, isTerminalEvent, isUnreadable, poolOfShard, type StreamEvent } from '@emp/core';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EventHub } from './live/event-hub';
import { z } from 'zod';
import { queueReport } from './routes/fleet';
import type { InvalidFrameReason } from './live/socket';

declare module 'fastify' {
  interface FastifyInstance {
    /** counters other plugins feed */
    apiMetrics: { invalidLiveFrames: Counter<'reason'> };
  }
}

/** Job states a job leaves for good; their events are counted, since finished jobs expire from Redis. */
const FINISHED = ['succeeded', 'failed', 'canceled', 'expired'] as const;

/**
 * A failed attempt, told by the event that followed it: job.retrying (backing
 * off), job.queued with a failure kind (worker lost, infrastructure: retried at
 * once) or job.failed (the job ended; its kind since the event records it).
 */
function failureOf(event: StreamEvent): { service: string; kind: FailureKind; outcome: 'retrying' | 'requeued' | 'failed' } | undefined {
  switch (event.type) {
    case 'job.retrying':
      return followed('retrying', event.service, event.reason);
    case 'job.queued':
      return followed('requeued', event.service, event.reason);
    case 'job.failed':
      return followed('failed', event.service, event.reason);
    default:
      return undefined;
  }
}

/** A failed attempt's labels when `reason` is a failure kind (a function of its own: it runs for every event the hub reads). */
function followed(outcome: 'retrying' | 'requeued' | 'failed', service: string, reason: string | undefined) {
  return (FAILURE_KINDS as readonly (string | undefined)[]).includes(reason) ? { service, kind: reason as FailureKind, outcome } : undefined;
}

/** A reading shared by the gauges of one scrape (prom-client collects them concurrently). */
function perScrape<T>(read: () => Promise<T>): () => Promise<T> {
  let last: { at: number; value: Promise<T> } | undefined;
  return () => {
    if (!last || Date.now() - last.at > 1_000) last = { at: Date.now(), value: read() };
    return last.value;
  };
}

/**
 * Prometheus metrics at /metrics (each listed in docs/metrics.md): request
 * rates and latencies per route; from the event streams the hub reads anyway,
 * job transitions, finished jobs, failed attempts by kind, machine state
 * changes and the queue wait (submit -> claimed); collected on each scrape,
 * live jobs per state, queue depth and age per pool and service, workers and
 * machines per state, and Redis's memory.
 */
export const metrics = fp(async (app: FastifyInstance, options: { broker: Broker; hub: EventHub }) => {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'emp_api_' });

  const requests = new Histogram({
    name: 'emp_api_http_request_duration_seconds',
    help: 'HTTP requests by method, route and status',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30, 90],
    registers: [registry],
  });
  const transitions = new Counter({
    name: 'emp_events_total',
    help: 'Events read from the pools\' streams, by type (job.queued, job.succeeded, ...)',
    labelNames: ['pool', 'type'],
    registers: [registry],
  });
  const queueWait = new Histogram({
    name: 'emp_queue_wait_seconds',
    help: 'Time from a job being submitted to a worker claiming it, first attempts (a retry\'s wait would include its backoff), per pool and service',
    labelNames: ['pool', 'service'],
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600],
    registers: [registry],
  });
  const attemptFailures = new Counter({
    name: 'emp_job_attempt_failures_total',
    help: 'Failed attempts per pool, service, failure kind and what followed (retrying: backing off, requeued: retried at once, failed: the job ended)',
    labelNames: ['pool', 'service', 'kind', 'outcome'],
    registers: [registry],
  });
  const machineTransitions = new Counter({
    name: 'emp_machine_state_changes_total',
    help: 'Machines entering a state, per pool (draining: an operator drain or a stop, SIGTERM included; offline: stopped or gone silent)',
    labelNames: ['pool', 'state'],
    registers: [registry],
  });
  const finished = new Counter({
    name: 'emp_jobs_finished_total',
    help: 'Jobs that reached a terminal state, per pool, service and state (counted from the events this API instance read since it started)',
    labelNames: ['pool', 'service', 'state'],
    registers: [registry],
  });
  // from the pools' streams too: the planner writes each decision as an event (it serves no /metrics of its own, and its
  // hash keeps only the last round), so any planner instance's decisions are counted, as the other event counters are
  const plannerDecisions = new Counter({
    name: 'emp_planner_decisions_total',
    help: 'Commands the planner sent to machines, per pool and action (prefetch, evict, load), from its planner.decision events',
    labelNames: ['pool', 'action'],
    registers: [registry],
  });
  const fallbackClaims = new Counter({
    name: 'emp_fallback_claims_total',
    help: "Jobs of a pool claimed by another pool's worker (cross-pool fallback: job.starting events with a fallback reason), per the job's pool",
    labelNames: ['pool'],
    registers: [registry],
  });
  const invalidLiveFrames = new Counter<'reason'>({
    name: 'emp_api_live_invalid_frames_total',
    help: 'WebSocket frames of clients refused on /v1/live: validation (not JSON, binary, not a known message), error (the server failed on it)',
    labelNames: ['reason'],
    registers: [registry],
  });
  for (const reason of ['validation', 'error'] satisfies InvalidFrameReason[]) invalidLiveFrames.inc({ reason }, 0);
  new Gauge({
    name: 'emp_redis_memory_used_bytes',
    help: 'Memory Redis uses (INFO memory used_memory), per server',
    labelNames: ['node'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const server of await currentMemory()) this.set({ node: server.node }, server.usedBytes);
    },
  });
  new Gauge({
    name: 'emp_redis_memory_max_bytes',
    help: 'The maxmemory limit of each Redis server (0: none set)',
    labelNames: ['node'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const server of await currentMemory()) this.set({ node: server.node }, server.maxBytes);
    },
  });
  app.decorate('apiMetrics', { invalidLiveFrames });
  const { broker, hub } = options;
  const currentReport = perScrape(async () => queueReport(broker, await broker.pools()));
  const currentMemory = perScrape(() => broker.redisMemory());
  const currentFleet = perScrape(async () =>
    Promise.all((await broker.pools()).map(async (pool) => ({ pool, workers: await broker.workers(pool), machines: await broker.machines(pool) }))),
  );
  const currentCounts = perScrape(async () => Promise.all((await broker.pools()).map(async (pool) => ({ pool, services: await broker.jobCounts(pool) }))));
  new Gauge({
    name: 'emp_jobs',
    help: 'Live jobs per pool, service and state (queued includes delayed jobs), exact at scrape time',
    labelNames: ['pool', 'service', 'state'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const { pool, services } of await currentCounts()) {
        for (const c of services) {
          for (const state of ['queued', 'starting', 'running', 'retrying'] as const) this.set({ pool, service: c.service, state }, c[state]);
        }
      }
    },
  });
  new Gauge({
    name: 'emp_jobs_delayed',
    help: 'Queued jobs per pool and service whose run_at has not come yet (part of emp_jobs{state="queued"})',
    labelNames: ['pool', 'service'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const { pool, services } of await currentCounts()) for (const c of services) this.set({ pool, service: c.service }, c.delayed);
    },
  });
  new Gauge({
    name: 'emp_queue_depth',
    help: 'Queued jobs per pool and service',
    labelNames: ['pool', 'service'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const pool of (await currentReport()).pools) for (const s of pool.services) this.set({ pool: pool.pool, service: s.service }, s.depth);
    },
  });
  new Gauge({
    name: 'emp_queue_oldest_age_seconds',
    help: 'Age of the oldest queued job per pool and service',
    labelNames: ['pool', 'service'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const pool of (await currentReport()).pools) {
        for (const s of pool.services) this.set({ pool: pool.pool, service: s.service }, (s.oldest_age_ms ?? 0) / 1_000);
      }
    },
  });
  new Gauge({
    name: 'emp_workers',
    help: 'Workers per pool: online, idle, offline',
    labelNames: ['pool', 'state'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const pool of (await currentReport()).pools) {
        for (const [state, count] of Object.entries(pool.workers)) this.set({ pool: pool.pool, state }, count);
      }
    },
  });

  new Gauge({
    name: 'emp_service_workers',
    help: 'Registered workers per pool, service and state (idle, busy, draining, offline); a worker of several services counts for each',
    labelNames: ['pool', 'service', 'state'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const { pool, workers } of await currentFleet()) {
        for (const hash of workers) {
          const worker = decodeWorker(pool, hash);
          if (isInvalidRecord(worker) || !worker.state || !worker.capabilities || isUnreadable(worker.capabilities)) continue;
          for (const service of worker.capabilities.services ?? []) this.inc({ pool, service, state: worker.state });
        }
      }
    },
  });
  new Gauge({
    name: 'emp_machines',
    help: 'Registered machines per pool and state (starting, ready, degraded, draining, offline)',
    labelNames: ['pool', 'state'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const { pool, machines } of await currentFleet()) {
        for (const hash of machines) {
          const machine = decodeMachine(pool, hash);
          if (!isInvalidRecord(machine) && machine.state) this.inc({ pool, state: machine.state });
        }
      }
    },
  });

  new Gauge({
    name: 'emp_pool_capacity_hint_machines',
    help: "Machines that would have met the pool's wait target over the last hour (the planner's M/M/c capacity hint; docs/planner.md)",
    labelNames: ['pool'],
    registers: [registry],
    async collect() {
      this.reset();
      const states = await Promise.all((await broker.pools()).map((pool) => broker.plannerState(pool)));
      for (const state of states) if (state?.capacity) this.set({ pool: state.pool }, state.capacity.machines);
    },
  });

  // every known service's finished counters exist from the start, so that rate() sees their first increase
  // a sharded pool's streams are its shards' (pool-shards.ts): its counters are the pool's
  hub.onPool((shard) => {
    const pool = poolOfShard(shard);
    for (const service of broker.config.services) for (const state of FINISHED) finished.inc({ pool, service, state }, 0);
    for (const action of PLANNER_ACTIONS) plannerDecisions.inc({ pool, action }, 0);
    fallbackClaims.inc({ pool }, 0);
  });
  hub.onEvent((event) => {
    const { pool } = event;
    transitions.inc({ pool, type: event.type === 'unknown' ? (event.raw.type ?? 'unknown') : event.type });
    if (isTerminalEvent(event) && (FINISHED as readonly string[]).includes(event.state)) finished.inc({ pool, service: event.service, state: event.state });
    // first attempts only: a retry's wait includes its backoff
    if (event.type === 'job.starting' && event.attempt === 1 && event.submitted_at !== undefined) {
      queueWait.observe({ pool, service: event.service }, Math.max(0, event.ts - event.submitted_at) / 1_000);
    }
    if (event.type === 'job.starting' && event.fallback) fallbackClaims.inc({ pool });
    if (event.type === 'planner.decision') plannerDecisions.inc({ pool, action: event.action });
    const failure = failureOf(event);
    if (failure) attemptFailures.inc({ pool, ...failure });
    // machine.<state> (not machine.process, whose state is a process's)
    if ('machine' in event && 'state' in event && event.type === `machine.${event.state}` && event.state !== 'gone') {
      machineTransitions.inc({ pool, state: event.state });
    }
  });

  app.addHook('onResponse', async (request, reply) => {
    requests.observe(
      { method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) },
      reply.elapsedTime / 1_000,
    );
  });

  // public, for scrapers without a key: it tells counts, never a job or a tenant
  app.get('/metrics', {
    config: { access: 'public' },
    schema: {
      summary: 'Prometheus metrics',
      tags: ['health'],
      response: { 200: { description: 'the Prometheus text format', content: { 'text/plain': { schema: z.string() } } } },
    },
  }, async (_request, reply) => {
    reply.header('content-type', registry.contentType);
    return registry.metrics();
  });
});
