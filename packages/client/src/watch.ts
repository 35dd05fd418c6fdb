import { setTimeout as sleep } from 'node:timers/promises';
import { type EventView, type LiveClientMessage, type LiveServerMessage, compareStreamIds } from '@emp/core';
import WebSocket from 'ws';
import { EmpApiError } from './errors';

/**
 * A job event as `watch` yields it: `type` is the event type (job.queued,
 * job.progress, job.succeeded, ...), or `events.missed` when events after the
 * cursor were trimmed from the stream before they were read (its `id` is that
 * cursor, `first_id` the oldest event kept): read the job again with `get`.
 */
export type JobEvent = EventView;

const TERMINAL = new Set(['job.succeeded', 'job.failed', 'job.canceled', 'job.expired']);

export interface WatchOptions {
  /** resume after this event id; 'start' (the default) yields every event of the job */
  after?: string;
  signal?: AbortSignal;
  /** backoff between reconnects */
  minReconnectMs?: number;
  maxReconnectMs?: number;
}

type Received = { message: LiveServerMessage } | { closed: { code: number; reason: string } } | { refused: EmpApiError };

/** Messages of one socket, awaited one at a time. */
class Inbox {
  private readonly items: Received[] = [];
  private waiting: ((item: Received) => void) | undefined;
  push(item: Received): void {
    if (this.waiting) {
      const resolve = this.waiting;
      this.waiting = undefined;
      resolve(item);
    } else this.items.push(item);
  }
  next(): Promise<Received> {
    const item = this.items.shift();
    return item ? Promise.resolve(item) : new Promise((resolve) => (this.waiting = resolve));
  }
}

function connect(url: string, apiKey: string | undefined, inbox: Inbox): WebSocket {
  const socket = new WebSocket(url, apiKey ? { headers: { authorization: `Bearer ${apiKey}` } } : {});
  socket.on('message', (data) => {
    try {
      inbox.push({ message: JSON.parse(data.toString()) as LiveServerMessage });
    } catch {
      // not ours to understand; the protocol sends JSON only
    }
  });
  socket.on('unexpected-response', (_request, response) => {
    let text = '';
    response.on('data', (chunk: Buffer) => (text += chunk.toString()));
    response.on('end', () => {
      response.destroy();
      let error = new EmpApiError(response.statusCode ?? 0, 'UNEXPECTED_RESPONSE', `WebSocket upgrade refused: ${response.statusCode}`);
      try {
        const body = JSON.parse(text) as { error?: { code: string; message: string } };
        if (body.error) error = new EmpApiError(response.statusCode ?? 0, body.error.code, body.error.message);
      } catch {
        // keep the generic error
      }
      inbox.push({ refused: error });
    });
  });
  socket.on('close', (code, reason) => inbox.push({ closed: { code, reason: reason.toString() } }));
  socket.on('error', () => undefined); // 'close' follows and reconnects
  return socket;
}

/**
 * Every event of a job over the WebSocket feed, in order, each once, until its
 * terminal event. A dropped connection is reopened (with backoff) and resumed
 * after the last event seen, so nothing is missed or repeated.
 */
export async function* watchJob(baseUrl: string, apiKey: string | undefined, jobId: string, options: WatchOptions = {}): AsyncGenerator<JobEvent> {
  const url = `${baseUrl.replace(/^http/, 'ws')}/v1/live`;
  let last = options.after ?? 'start';
  let failures = 0;
  // the cursor a gap was last reported for: a reconnect from the same cursor reports it once
  let missedAfter: string | undefined;
  while (!options.signal?.aborted) {
    const inbox = new Inbox();
    const socket = connect(url, apiKey, inbox);
    const onAbort = () => socket.close(1000, 'done');
    options.signal?.addEventListener('abort', onAbort, { once: true });
    socket.once('open', () => {
      const subscribe: LiveClientMessage = { type: 'subscribe', job: jobId, after: last };
      socket.send(JSON.stringify(subscribe));
    });
    try {
      for (;;) {
        const item = await inbox.next();
        if ('refused' in item) {
          // 5xx and proxies' errors are worth another try; a refused key or a missing job is not
          if (item.refused.status >= 400 && item.refused.status < 500) throw item.refused;
          break;
        }
        if ('closed' in item) break;
        const message = item.message;
        if (message.type === 'error') {
          if (message.job === undefined || message.job === jobId) {
            throw new EmpApiError(message.code === 'NOT_FOUND' ? 404 : 400, message.code, message.message, message.issues ?? []);
          }
          continue;
        }
        if (message.type === 'events.missed' && message.job === jobId && message.after !== missedAfter) {
          missedAfter = message.after;
          yield { ...message, id: message.after, ts: Date.now() } as JobEvent;
          continue;
        }
        if (message.type !== 'event' || message.job !== jobId) continue;
        if (last !== 'start' && compareStreamIds(message.id, last) <= 0) continue;
        failures = 0;
        last = message.id;
        const { event, type: _message, ...fields } = message;
        yield { ...fields, type: event } as JobEvent;
        if (TERMINAL.has(event)) return;
      }
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING) socket.close(1000, 'done');
    }
    if (options.signal?.aborted) return;
    failures += 1;
    const min = options.minReconnectMs ?? 100;
    await sleep(Math.min(options.maxReconnectMs ?? 10_000, min * 2 ** Math.min(failures - 1, 10)) * (0.5 + Math.random() / 2));
  }
}
