import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { Broker } from './broker';

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

  /** Ticks every pool once; returns ms until the earliest pool has more due. */
  async tickAll(): Promise<number> {
    let wait = this.maxIntervalMs;
    for (const pool of await this.broker.pools()) {
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
