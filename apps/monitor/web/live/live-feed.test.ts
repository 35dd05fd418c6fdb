import { EmpClient } from '@emp/client';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { WebSocket as NodeWebSocket } from 'ws';
import type { LiveEvent } from '../state/live-event';
import { type FeedStatus, LiveFeed } from './live-feed';
import { MonitorStore } from './monitor-store';

/**
 * The page's feed client against the real API (Node stands in for the
 * browser: `ws` provides the same WebSocket interface): snapshot, deltas in
 * batches, and a dropped connection resumed without a gap or a repeat.
 */

let stack: ApiStack;
let client: EmpClient;
let key: string;

beforeAll(async () => {
  (globalThis as { WebSocket?: unknown }).WebSocket ??= NodeWebSocket;
  stack = await startApiStack({ worker: { durationMs: 60, steps: 2 } });
  key = (await stack.server.app.apiKeys.create({ role: 'operator' })).key;
  client = new EmpClient({ baseUrl: stack.url, apiKey: key });
});
afterAll(async () => {
  await stack?.stop();
});

function openFeed(options: { apiKey?: string } = {}) {
  const store = new MonitorStore();
  const received: LiveEvent[] = [];
  const statuses: FeedStatus[] = [];
  let snapshots = 0;
  const feed = new LiveFeed({
    apiUrl: stack.url,
    ...options,
    cursors: () => store.getState().cursors,
    onSnapshot: (snapshot) => {
      snapshots += 1;
      store.dispatch({ type: 'snapshot', snapshot, at: Date.now() });
    },
    onEvents: (events) => {
      received.push(...events);
      store.dispatch({ type: 'events', events });
    },
    onStatus: (status) => statuses.push(status),
    minRetryMs: 300,
    maxRetryMs: 600,
  });
  feed.start();
  return { feed, store, received, statuses, snapshots: () => snapshots };
}

describe('the live feed client', () => {
  it('resumes after a dropped connection with every event once, in order, and no second snapshot', async () => {
    const { feed, store, received, statuses, snapshots } = openFeed({ apiKey: key });
    try {
      await vi.waitFor(() => expect(snapshots()).toBe(1), { timeout: 10_000 });
      const first = await client.submit({ service: 'simulation' }, { waitSeconds: 30 });
      await vi.waitFor(() => expect(store.getState().jobs[first.id]?.state).toBe('succeeded'), { timeout: 10_000 });

      // the server drops every socket; jobs run while the page is away
      for (const socket of stack.server.app.websocketServer.clients) socket.terminate();
      const missed = await Promise.all([client.submit({ service: 'simulation' }), client.submit({ service: 'simulation' })]);
      await vi.waitFor(() => expect(statuses.some((s) => s.state === 'reconnecting')).toBe(true), { timeout: 10_000 });
      for (const job of missed) await client.get(job.id, { waitSeconds: 30 });

      await vi.waitFor(() => {
        for (const job of missed) expect(store.getState().jobs[job.id]?.state).toBe('succeeded');
      }, { timeout: 10_000 });
      expect(statuses.at(-1)).toMatchObject({ state: 'live', message: 'resumed after the last event seen' });
      expect(snapshots()).toBe(1);

      // exactly the jobs' histories, each event once
      const ids = received.map((e) => e.id);
      expect(new Set(ids).size).toBe(ids.length);
      for (const job of [first, ...missed]) {
        const history = (await client.events(job.id)).events.map((e) => `${e.id} ${e.type}`);
        expect(received.filter((e) => 'job' in e && e.job === job.id).map((e) => `${e.id} ${e.event}`)).toEqual(history);
      }
    } finally {
      feed.stop();
    }
  });

  it('stops trying when the key may not follow the whole feed, and says why', async () => {
    const clientKey = (await stack.server.app.apiKeys.create({ role: 'client', tenant: 'acme' })).key;
    const { feed, statuses } = openFeed({ apiKey: clientKey });
    try {
      await vi.waitFor(() => expect(statuses.at(-1)).toMatchObject({ state: 'refused', message: expect.stringMatching(/operator/) }), { timeout: 10_000 });
    } finally {
      feed.stop();
    }
  });
});
