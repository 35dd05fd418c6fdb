import type { Broker, BrokerEvent, RedisClient } from '@emp/core';
import type { Logger } from 'pino';

export type EventListener = (event: BrokerEvent) => void;

const BLOCK_MS = 5_000;
const READ_COUNT = 500;
const RETRY_MS = 1_000;

/** Stream ids are `<ms>-<seq>`; true when `a` comes after `b`. */
export function isAfter(a: string, b: string): boolean {
  const [am = 0, as = 0] = a.split('-').map(Number);
  const [bm = 0, bs = 0] = b.split('-').map(Number);
  return am !== bm ? am > bm : as > bs;
}

export const TERMINAL_EVENTS = new Set(['job.succeeded', 'job.failed', 'job.canceled', 'job.expired']);

/**
 * The live feed of each pool's event stream, shared by every subscriber of the
 * process: one blocking XREAD loop per pool (on a connection of its own),
 * however many sockets listen. Subscribers that need what came before (a
 * resume after a reconnect) replay it with `replay` from their cursor.
 */
export class EventFeed {
  private readonly loops = new Map<string, { listeners: Set<EventListener>; stop: () => void }>();
  private closed = false;

  constructor(
    private readonly broker: Broker,
    private readonly logger: Logger,
  ) {}

  /** Calls `listener` for every event of `pool` from now on; returns the unsubscribe. */
  subscribe(pool: string, listener: EventListener): () => void {
    if (this.closed) throw new Error('the event feed is closed');
    let loop = this.loops.get(pool);
    if (!loop) {
      const listeners = new Set<EventListener>();
      const connection = this.broker.redis.duplicate();
      connection.on('error', (error: unknown) => this.logger.debug({ err: error, pool }, 'event feed connection error'));
      let stopped = false;
      void this.follow(pool, connection, listeners, () => stopped);
      loop = {
        listeners,
        stop: () => {
          stopped = true;
          connection.disconnect();
        },
      };
      this.loops.set(pool, loop);
    }
    loop.listeners.add(listener);
    return () => {
      loop.listeners.delete(listener);
    };
  }

  /** Every event of `pool` after `cursor` that is kept in the stream, oldest first, passed to `onEvent`; returns the last id seen. */
  async replay(pool: string, cursor: string, onEvent: EventListener): Promise<string> {
    let last = cursor;
    for (;;) {
      const events = await this.broker.readEvents(pool, last, { count: READ_COUNT });
      for (const event of events) onEvent(event);
      if (events.length < READ_COUNT) return events.at(-1)?.id ?? last;
      last = events.at(-1)!.id;
    }
  }

  /** The id of the newest event of `pool` ('0' when it has none): a cursor for "from now on". */
  async latestId(pool: string): Promise<string> {
    const [last] = await this.broker.redis.xrevrange(this.broker.keys.events(pool), '+', '-', 'COUNT', 1);
    return last?.[0] ?? '0';
  }

  close(): void {
    this.closed = true;
    for (const loop of this.loops.values()) loop.stop();
    this.loops.clear();
  }

  private async follow(pool: string, connection: RedisClient, listeners: Set<EventListener>, stopped: () => boolean): Promise<void> {
    // a concrete cursor from the start ('$' would skip whatever arrives between two reads)
    let cursor: string | undefined;
    while (!stopped()) {
      try {
        cursor ??= await this.latestId(pool);
        const events = await this.broker.readEvents(pool, cursor, { count: READ_COUNT, blockMs: BLOCK_MS, connection });
        for (const event of events) {
          cursor = event.id;
          for (const listener of listeners) listener(event);
        }
      } catch (error) {
        if (stopped()) return;
        this.logger.warn({ err: error, pool }, 'reading the event stream failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      }
    }
  }
}
