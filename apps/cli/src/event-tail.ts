import { type Broker, type RedisClient, type StreamEvent, toStreamEvent } from '@emp/core';
import { closeConnection } from './connection';

/** The id of the newest event of a pool's stream ('0-0' when it is empty): a cursor for "only what comes next". */
export async function latestEventId(broker: Broker, pool: string): Promise<string> {
  const newest = await broker.redis.xrevrange(broker.keys.events(pool), '+', '-', 'COUNT', 1);
  return newest[0]?.[0] ?? '0-0';
}

/**
 * A connection of its own for blocking reads (XREAD BLOCK would hold up every
 * other command queued on a shared one).
 */
export function blockingConnection(broker: Broker): RedisClient {
  const connection = broker.redis.duplicate();
  connection.on('error', () => undefined); // the blocked read reports it
  return connection;
}

/**
 * Reads a pool's events after `cursor` until `signal` aborts, handing each to
 * `onEvent`. Waits on Redis (XREAD BLOCK) between events, never polls.
 */
export async function tailPool(
  broker: Broker,
  pool: string,
  cursor: string,
  onEvent: (event: StreamEvent) => void,
  signal: AbortSignal,
): Promise<void> {
  const connection = blockingConnection(broker);
  const abort = () => closeConnection(connection);
  signal.addEventListener('abort', abort, { once: true });
  try {
    while (!signal.aborted) {
      let events: StreamEvent[];
      try {
        events = (await broker.readEvents(pool, cursor, { blockMs: 5_000, count: 1_000, connection })).map(toStreamEvent);
      } catch (error) {
        if (signal.aborted) return;
        throw error;
      }
      for (const event of events) {
        cursor = event.id;
        onEvent(event);
      }
    }
  } finally {
    signal.removeEventListener('abort', abort);
    closeConnection(connection);
  }
}
