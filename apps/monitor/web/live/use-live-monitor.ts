import { QueueHistory, type QueueHistoryRange, type QueueReport } from '@emp/core';
import { useEffect, useMemo, useState } from 'react';
import type { Connection } from '../api/connection';
import { type FeedStatus, LiveFeed } from './live-feed';
import { MonitorStore } from './monitor-store';

/** How often registry fields the feed does not carry (GPU figures, queue depth) are read again. */
const MACHINES_EVERY_MS = 5_000;
const QUEUES_EVERY_MS = 5_000;
const WORKERS_EVERY_MS = 15_000;
/** The API's queue history (throughput, waits): the hour is re-read often, the day's coarse slots seldom. */
const HOUR_HISTORY_EVERY_MS = 15_000;
const DAY_HISTORY_EVERY_MS = 60_000;

export type MonitorStatus = FeedStatus | { state: 'polling'; since: number; message: string; rate: 0; attempts: 0 };

/**
 * The live state of the fleet for one connection: the WebSocket feed for an
 * operator key (snapshot, deltas, reconnects), plus periodic reads of what
 * the feed does not carry; a key that may not follow the feed gets the reads alone.
 */
export function useLiveMonitor(connection: Connection): { store: MonitorStore; status: MonitorStatus; feed: LiveFeed | undefined } {
  const store = useMemo(() => new MonitorStore(), [connection]);
  const [status, setStatus] = useState<MonitorStatus>(() =>
    connection.isOperator
      ? { state: 'connecting', since: Date.now(), attempts: 0, rate: 0 }
      : { state: 'polling', since: Date.now(), message: 'the live feed needs an operator key; reading every few seconds', rate: 0, attempts: 0 },
  );
  const [feed, setFeed] = useState<LiveFeed>();

  useEffect(() => {
    if (!connection.isOperator) return;
    const live = new LiveFeed({
      apiUrl: connection.settings.apiUrl,
      apiKey: connection.settings.apiKey,
      cursors: () => store.getState().cursors,
      onSnapshot: (snapshot) => {
        store.dispatch({ type: 'snapshot', snapshot, at: Date.now() });
        // a snapshot opens the feed and follows every reconnect: fill the chart's gap from what the API recorded
        void loadQueueHistory(connection, store, 'hour');
      },
      onEvents: (events) => store.dispatch({ type: 'events', events }),
      onStatus: setStatus,
    });
    live.start();
    setFeed(live);
    return () => live.stop();
  }, [connection, store]);

  useEffect(() => {
    if (!connection.seesFleet) return;
    const { client } = connection;
    let stopped = false;
    const every = (ms: number, read: () => Promise<void>) => {
      const run = () => void read().catch(() => undefined);
      run();
      const timer = setInterval(run, ms);
      return () => clearInterval(timer);
    };
    const stops = [
      // throughput and waits come only from the API's history: read at once, then kept current
      every(HOUR_HISTORY_EVERY_MS, () => loadQueueHistory(connection, store, 'hour', () => stopped)),
      every(DAY_HISTORY_EVERY_MS, () => loadQueueHistory(connection, store, 'day', () => stopped)),
      every(QUEUES_EVERY_MS, async () => {
        const report = (await client.queues()) as QueueReport;
        if (!stopped) store.dispatch({ type: 'queues', report });
      }),
      every(MACHINES_EVERY_MS, async () => {
        const { machines } = await client.machines();
        if (!stopped) store.dispatch({ type: 'machines', machines });
      }),
      every(WORKERS_EVERY_MS, async () => {
        const { workers } = await client.workers();
        if (!stopped) store.dispatch({ type: 'workers', workers });
      }),
    ];
    return () => {
      stopped = true;
      for (const stop of stops) stop();
    };
  }, [connection, store]);

  return { store, status, feed };
}

/** The queue history the API recorded over the last hour (or day), for the charts and figures; a failed read leaves the last one shown. */
async function loadQueueHistory(connection: Connection, store: MonitorStore, range: QueueHistoryRange, stopped = () => false): Promise<void> {
  try {
    const history = QueueHistory.safeParse(await connection.client.queueHistory({ range }));
    if (stopped()) return;
    if (history.success) store.dispatch({ type: 'queue-history', history: { range, ...history.data } });
    else console.warn('queue history unreadable', history.error.issues[0]);
  } catch (error) {
    console.warn('queue history not loaded', error);
  }
}

/** The current time, refreshed every `everyMs`, for relative times ("12 s ago"). */
export function useNow(everyMs = 1_000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), everyMs);
    return () => clearInterval(timer);
  }, [everyMs]);
  return now;
}
