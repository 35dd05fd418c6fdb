import { setTimeout as sleep } from 'node:timers/promises';
import { type Broker, type EventTail, type EventsMissed, type StreamEvent, type StreamEventType, compareStreamIds, isTerminalEvent, jobOfEvent } from '@emp/core';
import type { Logger } from 'pino';
import { ApiError } from '../errors';

interface Subscriber {
  jobId: string | undefined;
  /** the last event id delivered: nothing at or before it is delivered again */
  last: string;
  /** live events held back while the subscriber catches up from Redis; null once live */
  pending: StreamEvent[] | null;
  deliver(event: StreamEvent): void;
}

/** Where the hub stood when a request was about to submit a job (EventHub.mark). */
export interface HubMark {
  /** terminal job events dispatched so far */
  readonly ended: number;
  /** the hub's clock then: a pool reader ready later may have started after the job's events */
  readonly at: number;
}

/** Terminal job events the hub remembers, newest first, for EventHub.endedSince. */
const RECENT_ENDINGS = 10_000;

/** Event types after which queued jobs of the pool may have moved up. */
const QUEUE_MOVES: ReadonlySet<string> = new Set<StreamEventType>(['job.starting', 'job.canceled', 'job.expired']);

/**
 * Tails each pool's event stream with one blocking reader (XREAD BLOCK on a
 * connection of its own), shared by every socket, SSE stream and waiting
 * request. Subscribers of one job are indexed by job id, so idle subscribers
 * cost nothing per event. A subscriber resuming from a cursor catches up from
 * Redis first and then goes live, with each event delivered once, in order.
 */
export class EventHub {
  // a promise, so that every caller waits until the reader knows where it starts
  private readonly readers = new Map<string, Promise<PoolReader>>();
  private readonly eventListeners = new Set<(event: StreamEvent) => void>();
  private readonly poolListeners = new Set<(pool: string) => void>();
  private readonly queueListeners = new Set<(pool: string) => void>();
  private readonly queueMoveTimers = new Map<string, NodeJS.Timeout>();
  private readonly queueMovePending = new Set<string>();
  private discovery: NodeJS.Timeout | undefined;
  private closed = false;
  /** orders marks and readers becoming ready */
  private clock = 0;
  /** when each pool's reader knew where it starts, by the clock */
  private readonly readyAt = new Map<string, number>();
  /** terminal job events dispatched so far, the job of each of the latest (a ring) and each job's latest one */
  private endings = 0;
  private readonly recentEndings: Array<string | undefined>;
  private readonly endingOf = new Map<string, number>();

  constructor(
    readonly broker: Broker,
    private readonly logger: Logger,
    private readonly options: { blockMs?: number; poolDiscoveryMs?: number; recentEndings?: number } = {},
  ) {
    this.recentEndings = new Array(options.recentEndings ?? RECENT_ENDINGS);
  }

  /** Starts a reader for every pool now and for every pool that appears later. */
  async start(): Promise<void> {
    await this.discoverPools();
    this.discovery = setInterval(() => {
      this.discoverPools().catch((error: unknown) => this.logger.warn({ err: error }, 'pool discovery failed'));
    }, this.options.poolDiscoveryMs ?? 5_000);
    this.discovery.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.discovery);
    for (const timer of this.queueMoveTimers.values()) clearTimeout(timer);
    await Promise.allSettled([...this.readers.values()].map(async (reader) => (await reader).stop()));
    this.readers.clear();
  }

  pools(): string[] {
    return [...this.readers.keys()].sort();
  }

  /** Every event any reader reads (metrics). */
  onEvent(listener: (event: StreamEvent) => void): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  /** A pool seen for the first time (the monitor feed follows it from its first event). */
  onPool(listener: (pool: string) => void): () => void {
    this.poolListeners.add(listener);
    return () => this.poolListeners.delete(listener);
  }

  /** Queued jobs of a pool may have moved up; at most every 250 ms per pool. */
  onQueueMove(listener: (pool: string) => void): () => void {
    this.queueListeners.add(listener);
    return () => this.queueListeners.delete(listener);
  }

  /** The id of the pool's newest event ('0-0' when none): a cursor for "from now on". */
  latestId(pool: string): Promise<string> {
    return this.broker.latestEventId(pool);
  }

  /**
   * Whether events after `after` may be gone from the pool's stream, trimmed
   * (`eventsMaxLen`) before a client resuming from that cursor read them: the
   * stream has lost entries and its oldest kept one comes after the cursor.
   * Trimming takes the oldest entries first, so everything from `first_id` on is
   * still there; `first_id` is absent when nothing is left. Null when nothing is missing.
   */
  async missedAfter(pool: string, after: string): Promise<EventsMissed | null> {
    const info = await this.broker.eventStreamInfo(pool);
    if (!info || info.entriesAdded <= info.length) return null;
    const first = info.firstId;
    if (first === undefined ? compareStreamIds(after, info.lastGeneratedId) >= 0 : compareStreamIds(after, first) >= 0) return null;
    return { type: 'events.missed', pool, after, first_id: first };
  }

  /**
   * Delivers the pool's events (only `jobId`'s when given) after `after`, first
   * those already in Redis, then live ones, each once and in stream order.
   * Returns the unsubscribe function.
   */
  async follow(pool: string, after: string, deliver: (event: StreamEvent) => void, jobId?: string): Promise<() => void> {
    const reader = await this.reader(pool);
    const subscriber: Subscriber = { jobId, last: after, pending: [], deliver };
    reader.add(subscriber);
    const unsubscribe = () => reader.remove(subscriber);
    try {
      let cursor = after;
      for (;;) {
        const batch = await this.broker.readEvents(pool, cursor, { count: 1_000 });
        for (const event of batch) {
          cursor = event.id;
          // the history, in order: live events that arrive meanwhile wait in `pending`
          if (jobId === undefined || jobOfEvent(event) === jobId) deliverInOrder(subscriber, event);
        }
        if (batch.length < 1_000) break;
      }
    } catch (error) {
      unsubscribe();
      throw error;
    }
    const held = subscriber.pending ?? [];
    subscriber.pending = null;
    for (const event of held) deliverOnce(subscriber, event);
    return unsubscribe;
  }

  /**
   * Delivers the live events of one job from now on, none of its history: for a
   * caller that reads the job after this resolves. An event the reader handed
   * out before then was written before that read, so the read shows its effect;
   * every later one is delivered. No cursor and no catch-up read are needed, so a
   * waiting request costs no stream read of its own. Returns the unsubscribe function.
   */
  async watchJob(pool: string, jobId: string, deliver: (event: StreamEvent) => void): Promise<() => void> {
    const reader = await this.reader(pool);
    const subscriber: Subscriber = { jobId, last: '0-0', pending: null, deliver };
    reader.add(subscriber);
    return () => reader.remove(subscriber);
  }

  /** Where the hub stands now: taken before a submit whose job read back is then waited for (endedSince). */
  mark(): HubMark {
    return { ended: this.endings, at: ++this.clock };
  }

  /**
   * Whether a job, read after `mark` was taken and not finished then (as a submit reads its job back), has
   * ended since: true once its terminal event was dispatched, false while not (a later one reaches
   * watchJob's subscribers). Its terminal event was written after that read, so it is dispatched after
   * the mark, by the pool's reader if that reader was ready before the mark. Undefined when the hub
   * cannot tell: the reader was not ready then, or more than the remembered endings came since.
   */
  endedSince(pool: string, jobId: string, mark: HubMark): boolean | undefined {
    const ready = this.readyAt.get(pool);
    if (ready === undefined || ready > mark.at) return undefined;
    if (this.endings - this.recentEndings.length > mark.ended) return undefined;
    return (this.endingOf.get(jobId) ?? 0) > mark.ended;
  }

  private rememberEnding(jobId: string): void {
    const ending = ++this.endings;
    const slot = ending % this.recentEndings.length;
    const forgotten = this.recentEndings[slot];
    if (forgotten !== undefined && this.endingOf.get(forgotten) === ending - this.recentEndings.length) this.endingOf.delete(forgotten);
    this.recentEndings[slot] = jobId;
    this.endingOf.set(jobId, ending);
  }

  private reader(pool: string): Promise<PoolReader> {
    // a request still running while the server shuts down must not start a reader nobody will stop
    if (this.closed) return Promise.reject(new ApiError(503, 'UNAVAILABLE', 'the server is shutting down'));
    let reader = this.readers.get(pool);
    if (!reader) {
      reader = (async () => {
        const from = await this.latestId(pool);
        this.readyAt.set(pool, ++this.clock);
        const created = new PoolReader(pool, this, this.logger, this.broker.openEventTail(pool, from, { blockMs: this.options.blockMs ?? 5_000, count: 1_000 }));
        created.start();
        for (const listener of this.poolListeners) listener(pool);
        return created;
      })();
      this.readers.set(pool, reader);
      reader.catch(() => this.readers.delete(pool));
    }
    return reader;
  }

  private async discoverPools(): Promise<void> {
    if (this.closed) return;
    // one reader per shard's stream (a pool's name is its shard 0; pool-shards.ts)
    for (const shard of await this.broker.shards()) await this.reader(shard);
  }

  /** Called by a reader for every event it reads. */
  dispatched(pool: string, event: StreamEvent): void {
    if (isTerminalEvent(event)) this.rememberEnding(event.job);
    for (const listener of this.eventListeners) listener(event);
    if (QUEUE_MOVES.has(event.type)) this.queueMoved(pool);
  }

  /** Tells queue listeners at once, then at most once more per 250 ms while moves keep coming. */
  private queueMoved(pool: string): void {
    const timer = this.queueMoveTimers.get(pool);
    if (timer) {
      this.queueMovePending.add(pool);
      return;
    }
    for (const listener of this.queueListeners) listener(pool);
    this.queueMoveTimers.set(
      pool,
      setTimeout(() => {
        this.queueMoveTimers.delete(pool);
        if (this.queueMovePending.delete(pool)) this.queueMoved(pool);
      }, 250),
    );
  }
}

/** A live event: held while the subscriber still catches up on the history, else delivered unless already seen. */
function deliverOnce(subscriber: Subscriber, event: StreamEvent): void {
  if (subscriber.pending) {
    subscriber.pending.push(event);
    return;
  }
  deliverInOrder(subscriber, event);
}

function deliverInOrder(subscriber: Subscriber, event: StreamEvent): void {
  if (compareStreamIds(event.id, subscriber.last) <= 0) return;
  subscriber.last = event.id;
  subscriber.deliver(event);
}

class PoolReader {
  private readonly byJob = new Map<string, Set<Subscriber>>();
  private readonly whole = new Set<Subscriber>();
  private running = true;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly pool: string,
    private readonly hub: EventHub,
    private readonly logger: Logger,
    /** the pool's stream from where the reader starts, on a blocking connection of its own */
    private readonly tail: EventTail,
  ) {}

  start(): void {
    this.loop = this.read();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.tail.close();
    await this.loop;
  }

  add(subscriber: Subscriber): void {
    if (subscriber.jobId === undefined) {
      this.whole.add(subscriber);
      return;
    }
    let set = this.byJob.get(subscriber.jobId);
    if (!set) this.byJob.set(subscriber.jobId, (set = new Set()));
    set.add(subscriber);
  }

  remove(subscriber: Subscriber): void {
    if (subscriber.jobId === undefined) {
      this.whole.delete(subscriber);
      return;
    }
    const set = this.byJob.get(subscriber.jobId);
    set?.delete(subscriber);
    if (set?.size === 0) this.byJob.delete(subscriber.jobId);
  }

  private async read(): Promise<void> {
    let failures = 0;
    while (this.running) {
      let events: StreamEvent[];
      try {
        events = await this.tail.read();
        failures = 0;
      } catch (error) {
        if (!this.running) return;
        failures += 1;
        this.logger.warn({ err: error, pool: this.pool }, 'event reader failed; retrying');
        await sleep(Math.min(5_000, 100 * 2 ** failures));
        continue;
      }
      for (const event of events) {
        this.hub.dispatched(this.pool, event);
        for (const subscriber of this.whole) this.safely(subscriber, event);
        const job = jobOfEvent(event);
        if (job !== undefined) for (const subscriber of this.byJob.get(job) ?? []) this.safely(subscriber, event);
      }
    }
  }

  private safely(subscriber: Subscriber, event: StreamEvent): void {
    try {
      deliverOnce(subscriber, event);
    } catch (error) {
      this.logger.error({ err: error, pool: this.pool }, 'event subscriber failed');
    }
  }
}
