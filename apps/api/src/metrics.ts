import type { Broker } from '@emp/core';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EventHub } from './live/event-hub';
import { queueReport } from './routes/fleet';

/**
 * Prometheus metrics at /metrics: request rates and latencies per route, job
 * transitions and claim latency (submit -> claimed, from the event streams the
 * hub reads anyway), and, collected on each scrape, queue depth and age per
 * pool and service and workers per state.
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
  const claimLatency = new Histogram({
    name: 'emp_claim_latency_seconds',
    help: 'Time from a job being submitted to a worker claiming it (first attempts)',
    labelNames: ['pool'],
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800],
    registers: [registry],
  });
  const { broker, hub } = options;
  // one queue report per scrape, shared by the gauges below (prom-client collects them concurrently)
  let report: { at: number; value: ReturnType<typeof queueReport> } | undefined;
  const currentReport = async () => {
    if (!report || Date.now() - report.at > 1_000) report = { at: Date.now(), value: queueReport(broker, await broker.pools()) };
    return report.value;
  };
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

  hub.onEvent((event) => {
    transitions.inc({ pool: event.pool, type: event.type });
    // first attempts only: a retry's wait includes its backoff
    if (event.type === 'job.starting' && event.fields.attempt === '1' && event.fields.submitted_at) {
      claimLatency.observe({ pool: event.pool }, Math.max(0, event.ts - Number(event.fields.submitted_at)) / 1_000);
    }
  });

  app.addHook('onResponse', async (request, reply) => {
    requests.observe(
      { method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) },
      reply.elapsedTime / 1_000,
    );
  });

  app.get('/metrics', { schema: { summary: 'Prometheus metrics', tags: ['health'] } }, async (_request, reply) => {
    reply.header('content-type', registry.contentType);
    return registry.metrics();
  });
});
