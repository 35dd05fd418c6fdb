import { type Broker, type StreamEvent, TERMINAL_EVENT_TYPES, poolOfShard } from '@emp/core';

export const MINUTE_MS = 60_000;
export const HOUR_MS = 3_600_000;
/** Waits are taken over the jobs that started in this window. */
export const WAIT_WINDOW_MS = 5 * MINUTE_MS;
/** Failures kept for the frame, newest first. */
const RECENT_FAILURES = 5;
/** Events read per call of XRANGE; a pool's update reads at most BUDGET of them, and goes on where it stopped next time. */
const PAGE = 1_000;
const BUDGET = 20_000;

const COUNTED_TYPES = new Set<string>(['job.starting', ...TERMINAL_EVENT_TYPES]);

/** A job that failed, as its job.failed event tells (the job's error message is looked up for the frame). */
export interface RecentFailure {
  ts: number;
  pool: string;
  job: string;
  service: string;
  worker?: string;
  reason?: string;
}

/** What the events of one pool say about the last hour. */
export interface PoolActivity {
  /** jobs finished (succeeded, failed, canceled or expired) in the last minute and the last hour */
  finishedLastMinute: number;
  finishedLastHour: number;
  failedLastHour: number;
  /** when the counts start: an hour ago, or later when the stream kept less (it is trimmed) */
  countedSince: number;
  /** false while the events of the last hour are still being read (a busy pool takes a few frames) */
  complete: boolean;
  /** per service: the median time from submission to start of the first attempts that started in the last WAIT_WINDOW_MS */
  medianWaitMs: Map<string, number>;
}

interface PoolHistory {
  cursor: string;
  countedSince: number;
  complete: boolean;
  /** times of finished jobs, oldest first, and whether each failed */
  finished: Array<{ ts: number; failed: boolean }>;
  starts: Array<{ ts: number; service: string; waitMs: number }>;
}

/**
 * Throughput, waits and failures of the pools, read from their event streams
 * (the last hour's at first, then only what is new on each update), so that a
 * refreshing view asks Redis only for the events since its last frame.
 */
export class FleetActivity {
  /** per shard: each shard of a pool has its own stream (a pool's name is its shard 0) */
  readonly #histories = new Map<string, PoolHistory>();
  /** the shards of each pool, as the last update found them */
  readonly #shards = new Map<string, string[]>();
  #failures: RecentFailure[] = [];

  constructor(private readonly broker: Broker) {}

  /** Reads the pools' new events (at most a budget per shard); `now` is Redis's clock. */
  async update(pools: readonly string[], now: number): Promise<void> {
    const shards = await this.broker.shards();
    for (const pool of pools) this.#shards.set(pool, [pool, ...shards.filter((shard) => shard !== pool && poolOfShard(shard) === pool)]);
    await Promise.all(pools.flatMap((pool) => this.#shardsOf(pool)).map((shard) => this.#updatePool(shard, now)));
  }

  /** Whether every pool's last hour has been read. */
  complete(pools: readonly string[]): boolean {
    return pools.every((pool) => this.#shardsOf(pool).every((shard) => this.#histories.get(shard)?.complete ?? false));
  }

  #shardsOf(pool: string): string[] {
    return this.#shards.get(pool) ?? [pool];
  }

  /** A pool's histories merged over its shards (one for an unsharded pool). */
  #history(pool: string): PoolHistory | undefined {
    const histories = this.#shardsOf(pool).flatMap((shard) => this.#histories.get(shard) ?? []);
    if (histories.length <= 1) return histories[0];
    return {
      cursor: '',
      countedSince: Math.max(...histories.map((h) => h.countedSince)),
      complete: histories.every((h) => h.complete),
      finished: histories.flatMap((h) => h.finished).sort((a, b) => a.ts - b.ts),
      starts: histories.flatMap((h) => h.starts),
    };
  }

  activity(pool: string, now: number): PoolActivity {
    const history = this.#history(pool);
    const medianWaitMs = new Map<string, number>();
    if (!history) return { finishedLastMinute: 0, finishedLastHour: 0, failedLastHour: 0, countedSince: now - HOUR_MS, complete: false, medianWaitMs };
    let finishedLastMinute = 0;
    let failedLastHour = 0;
    for (const { ts, failed } of history.finished) {
      if (ts > now - MINUTE_MS) finishedLastMinute++;
      if (failed) failedLastHour++;
    }
    const waits = new Map<string, number[]>();
    for (const start of history.starts) waits.set(start.service, [...(waits.get(start.service) ?? []), start.waitMs]);
    for (const [service, list] of waits) medianWaitMs.set(service, median(list));
    return {
      finishedLastMinute,
      finishedLastHour: history.finished.length,
      failedLastHour,
      countedSince: Math.max(history.countedSince, now - HOUR_MS),
      complete: history.complete,
      medianWaitMs,
    };
  }

  /** The newest failures of the pools read, newest first. */
  recentFailures(): RecentFailure[] {
    return this.#failures;
  }

  async #updatePool(pool: string, now: number): Promise<void> {
    let history = this.#histories.get(pool);
    if (!history) {
      const info = await this.broker.eventStreamInfo(pool);
      // a trimmed stream starts later than an hour ago: the counts say from when
      const oldestKept = info && info.entriesAdded > info.length && info.firstId ? Number.parseInt(info.firstId, 10) : 0;
      history = { cursor: `${now - HOUR_MS}-0`, countedSince: Math.max(now - HOUR_MS, oldestKept), complete: false, finished: [], starts: [] };
      this.#histories.set(pool, history);
    }
    let read = 0;
    for (;;) {
      const events = await this.broker.readEvents(pool, history.cursor, { count: PAGE });
      for (const event of events) this.#record(history, event);
      if (events.length > 0) history.cursor = events.at(-1)!.id;
      read += events.length;
      if (events.length < PAGE) {
        history.complete = true;
        break;
      }
      if (read >= BUDGET) break;
    }
    const hourAgo = now - HOUR_MS;
    history.finished = dropBefore(history.finished, hourAgo);
    history.starts = dropBefore(history.starts, now - WAIT_WINDOW_MS);
  }

  #record(history: PoolHistory, event: StreamEvent): void {
    if (!COUNTED_TYPES.has(event.type)) return;
    switch (event.type) {
      case 'job.starting':
        if (event.attempt === 1 && event.submitted_at !== undefined) history.starts.push({ ts: event.ts, service: event.service, waitMs: Math.max(0, event.ts - event.submitted_at) });
        return;
      case 'job.failed':
        this.#failures = [{ ts: event.ts, pool: event.pool, job: event.job, service: event.service, worker: event.worker, reason: event.reason }, ...this.#failures]
          .sort((a, b) => b.ts - a.ts)
          .slice(0, RECENT_FAILURES);
        history.finished.push({ ts: event.ts, failed: true });
        return;
      case 'job.succeeded':
      case 'job.canceled':
      case 'job.expired':
        history.finished.push({ ts: event.ts, failed: false });
        return;
      default:
        return;
    }
  }
}

function dropBefore<T extends { ts: number }>(list: T[], from: number): T[] {
  const first = list.findIndex((entry) => entry.ts > from);
  return first === -1 ? [] : first === 0 ? list : list.slice(first);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}
