import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { Broker } from './broker';
import { poolOfShard, shardIndex } from './pool-shards';

/** How often a scheduler checks whether a reshard's left-over shards are empty (ms). */
const SETTLE_INTERVAL_MS = 10_000;

export interface SchedulerOptions {
  /** longest sleep between ticks of a pool, so new pools and new timers are seen (ms) */
  maxIntervalMs?: number;
  logger?: Logger;
}

/**
 * Runs each pool's clock work (promotions, lease reaping, deadlines, offline
 * detection) when it is due. Several schedulers may run at once: every tick is
 * one atomic function call, so they never double-apply anything. Each tick
 * records its time in the pool's shard; a tick that finds the previous one older
 * than `clockGapMs` (Redis was down, or no scheduler ran) gives leases that ran
 * out meanwhile a grace to be renewed (docs/broker.md, "Clock work").
 */
export class Scheduler {
  private running = false;
  private loop: Promise<void> | undefined;
  private readonly wakeUp = new AbortController();
  private readonly maxIntervalMs: number;
  private settledAt = 0;

  constructor(
    private readonly broker: Broker,
    private readonly options: SchedulerOptions = {},
  ) {
    this.maxIntervalMs = options.maxIntervalMs ?? 1_000;
    // a tick later than clockGapMs after the previous one means the clock went unwatched (leases get a grace)
    if (this.maxIntervalMs >= broker.config.clockGapMs) {
      throw new RangeError(`scheduler: maxIntervalMs (${this.maxIntervalMs}) must be below the broker's clockGapMs (${broker.config.clockGapMs})`);
    }
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.wakeUp.abort();
    await this.loop;
  }

  /** Ticks every shard of every pool once; returns ms until the earliest has more due. */
  async tickAll(): Promise<number> {
    let wait = this.maxIntervalMs;
    const shards = await this.broker.shards();
    // a pool resharded to fewer shards stops serving the others once their jobs are done
    if (Date.now() - this.settledAt >= SETTLE_INTERVAL_MS) {
      this.settledAt = Date.now();
      for (const pool of new Set(shards.filter((shard) => shardIndex(shard) > 0).map(poolOfShard))) await this.broker.settleShards(pool);
    }
    for (const pool of shards) {
      let result = await this.broker.tick(pool);
      // a full batch means more may be due right now
      while (result.handled >= this.broker.config.tickLimit && this.running) result = await this.broker.tick(pool);
      if (result.nextDueInMs !== undefined) wait = Math.min(wait, result.nextDueInMs);
    }
    return wait;
  }

  private async run(): Promise<void> {
    while (this.running) {
      let wait = this.maxIntervalMs;
      try {
        wait = await this.tickAll();
      } catch (error) {
        this.options.logger?.error({ err: error }, 'scheduler tick failed');
      }
      try {
        await sleep(Math.max(5, wait), undefined, { signal: this.wakeUp.signal });
      } catch {
        return; // stopped
      }
    }
  }
}
