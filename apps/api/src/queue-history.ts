import { type Broker, QueueHistory, type QueueHistoryRange, type QueueReport, type QueueSample } from '@emp/core';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { EventHub } from './live/event-hub';
import { FlowCounter, coarseSample, flowSummary, withFlow } from './queue-flow';
import { queueReport } from './routes/fleet';
import { QueueHistoryQuery, answers } from './schemas';

export const QUEUE_HISTORY_MS = 3_600_000;
export const QUEUE_HISTORY_DAY_MS = 24 * QUEUE_HISTORY_MS;
export const DEFAULT_QUEUE_SAMPLE_MS = 30_000;
/** a day's slot spans this many sampling slots (5 minutes at the default 30 s) */
export const DAY_SLOT_SAMPLES = 10;

const RANGE_MS: Record<QueueHistoryRange, number> = { hour: QUEUE_HISTORY_MS, day: QUEUE_HISTORY_DAY_MS };

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
 * stream, with what went through each queue in the interval before (jobs that
 * ended, waits of jobs that started: counted from the event hub's feed), so
 * that every API instance (and one restarted) answers the same last hour. The
 * entry id is the slot's start (Redis's clock): of several instances sampling
 * the same slot the first one writes it and the others' XADD is refused as not
 * newer, and MINID trims what is older than an hour. Every DAY_SLOT_SAMPLES
 * slots, the slots just passed are summed into the day's stream, once.
 */
export class QueueSampler {
  private timer: NodeJS.Timeout | undefined;
  private sampling: Promise<void> | undefined;
  private stopListening: (() => void) | undefined;
  private readonly flow: FlowCounter;
  /** the last day slot this instance summed (or found summed) */
  private daySlotDone = -Infinity;

  constructor(
    private readonly broker: Broker,
    private readonly hub: Pick<EventHub, 'onEvent'>,
    readonly intervalMs: number,
    private readonly log: FastifyBaseLogger,
  ) {
    this.flow = new FlowCounter(intervalMs);
  }

  get dayIntervalMs(): number {
    return this.intervalMs * DAY_SLOT_SAMPLES;
  }

  start(): void {
    if (this.timer) return;
    this.stopListening = this.hub.onEvent((event) => this.flow.note(event));
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
    this.stopListening?.();
    this.stopListening = undefined;
    await this.sampling;
  }

  /** Takes this slot's sample of every pool, unless another instance already did, then the day's slot that just passed. */
  async sample(): Promise<void> {
    const report = await queueReport(this.broker, await this.broker.pools());
    const slot = report.now - (report.now % this.intervalMs);
    const flows = this.flow.take(slot);
    const samples = queueSamples(report).map((sample) => (flows ? withFlow(sample, flows.get(sample.pool)) : sample));
    await this.broker.recordQueueSamples(slot, samples.map((sample) => ({ pool: sample.pool, sample })), QUEUE_HISTORY_MS);
    await this.recordDay(slot, report.pools.map((pool) => pool.pool));
  }

  /** Sums the last whole day slot before `slot` into the day's stream (another instance's write of it wins). */
  private async recordDay(slot: number, pools: string[]): Promise<void> {
    const day = slot - (slot % this.dayIntervalMs) - this.dayIntervalMs;
    if (day <= this.daySlotDone || pools.length === 0) return;
    this.daySlotDone = day;
    const { samples } = await this.broker.readQueueHistory(pools, day);
    const writes = pools.flatMap((pool) => {
      const sample = coarseSample(pool, day, samples.filter((s) => s.pool === pool && s.ts < day + this.dayIntervalMs));
      return sample ? [{ pool, sample, range: 'day' as const }] : [];
    });
    await this.broker.recordQueueSamples(day, writes, QUEUE_HISTORY_DAY_MS);
  }
}

/** The recorded samples of the pools from `since` on (at most the range), oldest first per pool. */
export async function readQueueHistory(
  broker: Broker,
  pools: string[],
  since: number,
  intervalMs: number,
  log: FastifyBaseLogger,
  range: QueueHistoryRange = 'hour',
): Promise<QueueSample[]> {
  // an entry's id is its slot's start, the sample a little later
  const { samples, unreadable } = await broker.readQueueHistory(pools, since - intervalMs, range);
  for (const skipped of unreadable) log.warn(skipped, 'unreadable queue sample skipped');
  return samples.filter((sample) => sample.ts >= since);
}

/** GET /v1/queues/history: what the samplers recorded, for a chart that is full when the page opens. */
export async function queueHistoryRoutes(app: FastifyInstance, options: { intervalMs: number }): Promise<void> {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const { broker } = app;
  const dayIntervalMs = options.intervalMs * DAY_SLOT_SAMPLES;

  api.get('/v1/queues/history', {
    config: { access: 'fleet' },
    schema: {
      summary: 'Queue depth, throughput and waits per pool and service over the last hour or day',
      description: [
        `\`range=hour\` (default): one sample per pool every ${options.intervalMs / 1_000} s (configurable), recorded by the API instances and kept for an hour.`,
        `\`range=day\`: one per ${dayIntervalMs / 60_000} min, kept for a day (highest depth and age of its samples, jobs ended summed, waits merged).`,
        'Each sample carries the jobs that ended and the submit-to-start waits of the interval before it; `summary` sums them over the answer, per pool and in all.',
        '`since` (ms since the epoch or ISO 8601) answers only the newer samples.',
      ].join(' '),
      tags: ['fleet'],
      querystring: QueueHistoryQuery,
      response: answers({ 200: QueueHistory }),
    },
  }, async (request) => {
    const now = await broker.serverTime();
    const { range } = request.query;
    const interval = range === 'day' ? dayIntervalMs : options.intervalMs;
    const pools = request.query.pool ? [request.query.pool] : await broker.pools();
    const since = Math.max(request.query.since ?? 0, now - RANGE_MS[range]);
    const samples = await readQueueHistory(broker, pools, since, interval, request.log, range);
    const byPool = [...new Set(samples.map((s) => s.pool))].sort();
    return {
      now,
      range,
      interval_ms: interval,
      samples,
      summary: {
        all: flowSummary(samples, interval),
        pools: byPool.map((pool) => ({ pool, ...flowSummary(samples.filter((s) => s.pool === pool), interval) })),
      },
    };
  });
}
