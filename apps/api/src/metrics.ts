import type { Broker } from '@emp/core';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The API's Prometheus metrics; queue depths and worker counts are read from Redis at scrape time. */
export function createMetrics(broker: Broker) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'emp_api_' });
  const requests = new Histogram({
    name: 'emp_http_request_duration_seconds',
    help: 'HTTP requests by route, method and status',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30, 90],
    registers: [registry],
  });
  const jobsSubmitted = new Counter({
    name: 'emp_jobs_submitted_total',
    help: 'Jobs accepted through this API process',
    labelNames: ['service'] as const,
    registers: [registry],
  });
  new Gauge({
    name: 'emp_queue_depth',
    help: 'Queued jobs per pool and requirement class',
    labelNames: ['pool', 'class', 'routable'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      for (const pool of await broker.pools()) {
        for (const c of (await broker.queueStats(pool)).classes) {
          this.set({ pool, class: c.requirementClass, routable: String(c.routable) }, c.depth);
        }
      }
    },
  });
  new Gauge({
    name: 'emp_workers',
    help: 'Registered workers per pool by presence',
    labelNames: ['pool', 'presence'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      for (const pool of await broker.pools()) {
        const stats = await broker.queueStats(pool);
        this.set({ pool, presence: 'online' }, stats.onlineWorkers);
        this.set({ pool, presence: 'idle' }, stats.idleWorkers);
        this.set({ pool, presence: 'offline' }, stats.offlineWorkers);
      }
    },
  });
  return { registry, requests, jobsSubmitted };
}

export type ApiMetrics = ReturnType<typeof createMetrics>;
