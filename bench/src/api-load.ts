import { startApiServer } from '@emp/api';
import { Broker } from '@emp/core';
import { Worker, simulationConnector } from '@emp/worker';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import { pino } from 'pino';

export interface ApiLoadOptions {
  redisUrl: string;
  /** how long each load runs (the generator stops on time, not on a count) */
  durationSeconds: number;
  /** concurrent HTTP connections */
  connections: number;
  /** simulation workers completing the jobs (in this process) */
  workers: number;
}

export interface ApiLoadResult {
  /** HTTP submits answered per second */
  submitsPerSec: number;
  submitP50Ms: number;
  submitP99Ms: number;
  /** submit with ?wait: the answer comes when the job has completed */
  completedPerSec: number;
  completedP50Ms: number;
  completedP99Ms: number;
  /** answers that were not 2xx (should be 0) */
  errors: number;
}

async function load(url: string, path: string, key: string, options: ApiLoadOptions) {
  return autocannon({
    url: `${url}${path}`,
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ service: 'simulation', payload: { duration_ms: 0, steps: 0 } }),
    connections: options.connections,
    duration: options.durationSeconds,
  });
}

/**
 * Submits through the API (auth on, as in production) under a time-bounded
 * load: first plain submits (throughput and latency of the HTTP submit), then
 * submits that wait for the job (`?wait=30`), whose latency is submit to
 * completed by a real worker with the simulation connector.
 */
export async function measureApiLoad(options: ApiLoadOptions): Promise<ApiLoadResult> {
  const redis = new Redis(options.redisUrl);
  const broker = await Broker.connect({ redis });
  const logger = pino({ level: 'warn' });
  const workers = Array.from({ length: options.workers }, (_, i) => new Worker({
    broker,
    id: `bench-api-worker-${i}`,
    pool: 'standard',
    capabilities: { services: ['simulation'] },
    connectors: [simulationConnector({ durationMs: 0, steps: 0 })],
    logger,
  }));
  await Promise.all(workers.map((w) => w.start()));
  const server = await startApiServer({ broker, logger, auth: true, rateLimit: false, port: 0 });
  try {
    const { key } = await server.app.apiKeys.create({ role: 'client', tenant: 'bench' });
    const submits = await load(server.url, '/v1/jobs', key, options);
    await drain(broker);
    const completed = await load(server.url, '/v1/jobs?wait=30', key, options);
    return {
      submitsPerSec: submits.requests.average,
      submitP50Ms: submits.latency.p50,
      submitP99Ms: submits.latency.p99,
      completedPerSec: completed.requests.average,
      completedP50Ms: completed.latency.p50,
      completedP99Ms: completed.latency.p99,
      errors: submits.non2xx + submits.errors + completed.non2xx + completed.errors,
    };
  } finally {
    await server.close();
    await Promise.all(workers.map((w) => w.stop({ graceMs: 5_000 })));
    await redis.quit().catch(() => redis.disconnect());
  }
}

/** Lets the workers finish the backlog of the submit run, so it does not slow the next one. */
async function drain(broker: Broker): Promise<void> {
  for (;;) {
    const stats = await broker.queueStats('standard');
    if (stats.classes.every((c) => c.depth === 0)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
