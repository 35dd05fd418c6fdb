import { type Broker, QueueHistory, type QueueReport, type QueueSample } from '@emp/core';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { queueReport } from './routes/fleet';
import { QueueHistoryQuery, answers } from './schemas';

export const QUEUE_HISTORY_MS = 3_600_000;
export const DEFAULT_QUEUE_SAMPLE_MS = 30_000;

/** One sample per pool of a queue report: the depths and oldest ages, without what the chart does not draw. */
export function queueSamples(report: QueueReport): QueueSample[] {
  return report.pools.map((pool) => ({
    ts: report.now,
    pool: pool.pool,
    depth: pool.depth,
    oldest_age_ms: pool.oldest_age_ms,
    services: pool.services.map(({ service, depth, oldest_age_ms }) => ({ service, depth, oldest_age_ms })),
    classes: pool.classes.map(({ requirement_class, depth, oldest_age_ms }) => ({ requirement_class, depth, oldest_age_ms })),
  }));
}

/**
 * Records the queue report every `intervalMs` into each pool's queue-history
 * stream, so that every API instance (and one restarted) answers the same last
 * hour. The entry id is the slot's start (Redis's clock): of several instances
 * sampling the same slot the first one writes it and the others' XADD is
 * refused as not newer, and MINID trims what is older than an hour.
 */
export class QueueSampler {
  private timer: NodeJS.Timeout | undefined;
  private sampling: Promise<void> | undefined;

  constructor(
    private readonly broker: Broker,
    readonly intervalMs: number,
    private readonly log: FastifyBaseLogger,
  ) {}

  start(): void {
    if (this.timer) return;
    const tick = () => {
      this.sampling ??= this.sample()
        .catch((error: unknown) => this.log.warn({ err: error }, 'queue sample failed'))
        .finally(() => (this.sampling = undefined));
    };
    tick();
    this.timer = setInterval(tick, this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.sampling;
  }

  /** Takes this slot's sample of every pool, unless another instance already did. */
  async sample(): Promise<void> {
    const report = await queueReport(this.broker, await this.broker.pools());
    const slot = report.now - (report.now % this.intervalMs);
    await this.broker.recordQueueSamples(slot, queueSamples(report).map((sample) => ({ pool: sample.pool, sample })), QUEUE_HISTORY_MS);
  }
}

/** The recorded samples of the pools from `since` on (at most the last hour), oldest first per pool. */
export async function readQueueHistory(broker: Broker, pools: string[], since: number, intervalMs: number, log: FastifyBaseLogger): Promise<QueueSample[]> {
  // an entry's id is its slot's start, the sample a little later
  const { samples, unreadable } = await broker.readQueueHistory(pools, since - intervalMs);
  for (const skipped of unreadable) log.warn(skipped, 'unreadable queue sample skipped');
  return samples.filter((sample) => sample.ts >= since);
}

/** GET /v1/queues/history: what the samplers recorded, for a chart that is full when the page opens. */
export async function queueHistoryRoutes(app: FastifyInstance, options: { intervalMs: number }): Promise<void> {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const { broker } = app;

  api.get('/v1/queues/history', {
    config: { access: 'fleet' },
    schema: {
      summary: 'Queue depth and oldest-job age per pool, service and requirement class over the last hour',
      description: `One sample per pool every ${options.intervalMs / 1_000} s (configurable), recorded by the API instances and kept for an hour. \`since\` (ms since the epoch or ISO 8601) answers only the newer samples.`,
      tags: ['fleet'],
      querystring: QueueHistoryQuery,
      response: answers({ 200: QueueHistory }),
    },
  }, async (request) => {
    const now = await broker.serverTime();
    const pools = request.query.pool ? [request.query.pool] : await broker.pools();
    const since = Math.max(request.query.since ?? 0, now - QUEUE_HISTORY_MS);
    return { now, interval_ms: options.intervalMs, samples: await readQueueHistory(broker, pools, since, options.intervalMs, request.log) };
  });
}
