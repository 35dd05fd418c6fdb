import type { Broker, StreamEvent } from '@emp/core';

/**
 * Reads a pool's events after `cursor` until `signal` aborts, handing each to
 * `onEvent`. Waits on Redis (XREAD BLOCK, on a connection of the tail's own)
 * between events, never polls.
 */
export async function tailPool(
  broker: Broker,
  pool: string,
  cursor: string,
  onEvent: (event: StreamEvent) => void,
  signal: AbortSignal,
): Promise<void> {
  const tail = broker.openEventTail(pool, cursor, { blockMs: 5_000, count: 1_000 });
  const abort = () => tail.close();
  signal.addEventListener('abort', abort, { once: true });
  try {
    while (!signal.aborted) {
      let events: StreamEvent[];
      try {
        events = await tail.read();
      } catch (error) {
        if (signal.aborted) return;
        throw error;
      }
      for (const event of events) onEvent(event);
    }
  } finally {
    signal.removeEventListener('abort', abort);
    tail.close();
  }
}
